"""The production tick for the benchmarks: the daemon's own `Daemon.tick` (controller/daemon.py: host
commands, policy-slot boundary, mode + safety gate, recorder ring, sealed telemetry to a bound host link)
with the same mode, gate, recorder and link objects as in production, against `SimDriver`, an in-process
simulated device behind the driver interface. So `bench loop` and `bench swap` time what users deploy;
only the serial line is replaced (its write is a copy into the simulated device).

`production_daemon` is the one place that builds the daemon for a benchmark (adapt it there when the
daemon's construction changes).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np

from controller.config import parse_config
from controller.daemon import Daemon
from controller.link.auth import load_keyring, write_keyfile
from controller.link.host_udp import HostClient
from controller.protocol.framing import Message
from controller.protocol.mems import Frame
from controller.recorder import Recorder
from controller.scheduler import Tick
from firmware_sim.mems.physics import MemsStand

LINK_UP_TIMEOUT_S = 10.0  # the bench's host must see the edge answer a ping within this


class SimDriver:
    """What the daemon uses of `controller.driver.SerialDriver`, served in process by the MEMS stand physics
    (firmware_sim.mems.physics): `write_voltages` sets the mirror command, `command` is accepted, and
    `advance(t_ns)` delivers the camera frames due by then to ``on_frame`` at the stand's frame rate, as the
    firmware's stream would between ticks (so the physics costs what the firmware's would, not every tick)."""

    def __init__(self, on_frame: Callable[[Frame, int], None], seed: int = 0, stand: MemsStand | None = None) -> None:
        self.stand = stand or MemsStand()
        self.state = self.stand.reset(seed)
        self.on_frame = on_frame
        self.command_v = np.zeros((1, 2))  # the mirror command [V], held until the next write
        self.frame_dt_ns = round(self.stand.params.dt * 1e9)
        self.next_frame_ns: int | None = None
        self.frame_index = 0
        self.writes = 0

    @property
    def connected(self) -> bool:
        return True

    def write_voltages(self, vx: float, vy: float) -> bool:
        self.command_v[0] = (vx, vy)
        self.writes += 1
        return True

    def send(self, msg: Message) -> bool:
        return True

    async def command(self, msg: Message, timeout_s: float = 0.5) -> None:
        """A device command (e.g. SetDisturbance): acknowledged; the bench's stand runs without disturbance."""

    def advance(self, t_ns: int) -> None:
        """Deliver the frames captured by ``t_ns``."""
        if self.next_frame_ns is None:
            self.next_frame_ns = t_ns
        while t_ns >= self.next_frame_ns:
            self.next_frame_ns += self.frame_dt_ns
            self.state, f = self.stand.step(self.state, self.command_v, self.stand.params.dt)
            self.on_frame(Frame(self.frame_index & 0xFFFFFFFF, round(float(f.t_s[0]) * 1e6), float(f.x_px[0]),
                                float(f.y_px[0]), bool(f.lost[0])), t_ns)
            self.frame_index += 1


def bench_config(workdir: Path, rate_hz: float, port: str, **loop: Any) -> dict[str, Any]:
    """The deployed defaults (deploy/edge.toml) with the bench's rate, timer pacing and loopback ports."""
    key = workdir / "hostlink.keys"
    if not key.exists():
        write_keyfile(key)
    return {
        "device": {"port": port},
        "loop": {"rate_hz": rate_hz, "pacing": "timer", **loop},
        "hostlink": {"host": "127.0.0.1", "port": 0, "key_file": str(key), "state_file": str(workdir / "link-state.json")},
        "recorder": {"path": str(workdir / "bench.sqlite")},
        "metrics": {"port": 0},
        "policy": {"dir": str(workdir / "policies"), "push_port": 0},
    }


@contextlib.asynccontextmanager
async def production_daemon(workdir: Path, rate_hz: float, *, mode: str = "stabilize", policy: dict[str, Any] | None = None,
                            epics: dict[str, Any] | None = None) -> AsyncIterator[tuple[Daemon, Callable[[Tick], None]]]:
    """A `Daemon` built from a bench config with `SimDriver` as its driver, its recorder open and its host link
    bound and up (a host pinged it, so telemetry is sealed and sent to that host's address as in production). Yields (daemon, tick):
    ``tick`` delivers the due frames and runs `Daemon.tick`."""
    master, slave = os.openpty()  # the daemon's start-up checks that its device port is a tty
    try:
        cfg_dict = bench_config(workdir, rate_hz, os.ttyname(slave), mode=mode)
        if policy:
            cfg_dict["policy"].update(policy)
        if epics:
            cfg_dict["epics"] = epics  # the PV server is built, not started (hil/bench/epics.py starts it)
        daemon = Daemon(parse_config(cfg_dict, "bench"))
        driver = SimDriver(daemon._on_frame)
        daemon.driver = driver  # type: ignore[assignment]  # the driver interface, served in process
        daemon.recorder = Recorder.open(daemon.cfg.recorder.path)
        await daemon.hostlink.start()
        receiver = asyncio.get_running_loop().create_task(daemon.hostlink.receive_forever())
        keyring = load_keyring(daemon.cfg.hostlink.key_file)
        host = await HostClient(daemon.hostlink.address, keyring, key_id=keyring.newest).open()
        try:
            async with asyncio.timeout(LINK_UP_TIMEOUT_S):
                await host.ping()  # the link is up: telemetry is sealed and sent to this host from now on
        finally:
            await host.close()  # the host is another machine: its receiving costs the edge nothing
        try:

            def tick(t: Tick) -> None:
                driver.advance(t.t_ns)
                daemon.tick(t)

            yield daemon, tick
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
            await daemon.hostlink.close()
            daemon.recorder.close()
    finally:
        os.close(master)
        os.close(slave)
