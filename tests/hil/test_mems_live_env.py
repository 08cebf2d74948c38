"""The live MEMS tuning environment (learner/mems/live_env.py) stepping a running daemon over the host link, and
the link's failures (an edge that does not answer, one of another protocol version, a client that cannot open)
as the errors training stops on with a checkpoint (LinkLost, StandMismatch)."""
from __future__ import annotations

import socket
import threading

import numpy as np
import pytest

from controller.link import auth
from controller.link.auth import Keyring
from controller.link.host_udp import HostClient
from controller.modes.mems.pid import BASELINE_GAINS
from learner.mems.env import MemsTuningConfig, baseline_action, gains_from_action
from learner.mems.live_env import LinkLost, MemsLiveEnv, StandMismatch

RING = Keyring({1: bytes(range(32))})


async def test_live_env_steps_the_running_daemon(mems_stand):
    await mems_stand.client.close()  # one sender per key id (docs/hostlink.md)
    mems_stand.client = None
    addr, ring = mems_stand.edge_addr, mems_stand.keyring

    async def factory():
        return await HostClient(addr, ring, key_id=ring.newest).open()

    import asyncio

    env = await asyncio.to_thread(MemsLiveEnv, factory, MemsTuningConfig(decisions_per_episode=3))
    try:
        obs, _ = await asyncio.to_thread(env.reset, seed=0)
        assert env.observation_space.contains(obs)
        obs, r, term, trunc, info = await asyncio.to_thread(env.step, baseline_action())
        assert info["frames"] >= 6 and 0.5 < info["dt"] < 3.0  # ~12 frames of telemetry per 100 ms
        assert np.isfinite(r) and not term and env.observation_space.contains(obs)
        np.testing.assert_allclose(info["gains"], BASELINE_GAINS, rtol=1e-9)
        action = np.array([14.0, 500.0, 20.0, 700.0], dtype=np.float32)  # not the daemon's start-up gains
        obs, r, term, trunc, info = await asyncio.to_thread(env.step, action)
        # the gains the daemon reports running (its telemetry) are the ones the env sent
        np.testing.assert_allclose(info["gains"], gains_from_action(action)[0], rtol=1e-9)
        assert not np.allclose(info["gains"], BASELINE_GAINS) and env.observation_space.contains(obs)
    finally:
        await asyncio.to_thread(env.close)


def env_threads() -> int:
    return sum(t.name == "live-env" and t.is_alive() for t in threading.enumerate())


class Edge:
    """A UDP socket on 127.0.0.1 as the edge: silent, or answering every datagram with a version notice of
    ``version``."""

    def __init__(self, version: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.version, self.done = version, threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                _, peer = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            if self.version is not None:
                self.sock.sendto(auth.NOTICE.pack(auth.MAGIC, self.version), peer)

    def env(self) -> MemsLiveEnv:
        addr = self.sock.getsockname()

        async def factory():
            return await HostClient(addr, RING, key_id=1, timeout_s=0.1, retries=1).open()

        return MemsLiveEnv(factory, MemsTuningConfig(), link_timeout_s=0.5)

    def close(self) -> None:
        self.done.set()
        self.thread.join(2)
        self.sock.close()


@pytest.mark.parametrize("version, error, message", [
    (None, LinkLost, "does not answer: TimeoutError: no reply"),
    (auth.VERSION + 1, StandMismatch, f"this host speaks version {auth.VERSION}, the edge at .* speaks version {auth.VERSION + 1}"),
])
def test_an_edge_that_does_not_answer_or_speaks_another_version_stops_training(version, error, message):
    edge = Edge(version)
    try:
        env = edge.env()
        try:
            with pytest.raises(error, match=message):
                env.reset(seed=0)
        finally:
            env.close()
    finally:
        edge.close()
    assert env_threads() == 0


def test_a_client_that_cannot_open_is_link_lost_and_stops_the_envs_thread():
    async def factory():  # as HostClient.open when the address does not resolve (socket.gaierror is an OSError)
        raise OSError("unreachable")

    with pytest.raises(LinkLost, match="cannot open the host link: OSError: unreachable"):
        MemsLiveEnv(factory, MemsTuningConfig())
    assert env_threads() == 0
