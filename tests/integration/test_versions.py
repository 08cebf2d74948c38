"""Versioned handshake: the host link's datagram version and the push channel's magic/version. An edge and a
host of different versions say so in one line naming both: the edge refuses (counted) and answers with its own
version (no more bytes than it got, a datagram notice at most once a second); the host's client raises
`VersionMismatch`. Each end is tested against a peer of another version (a raw socket). The manifest's schema
version: tests/unit/test_manifest_v2.py."""
from __future__ import annotations

import asyncio
import socket
import threading

import asyncio_dgram
import pytest

from controller.config import HostLinkConfig, PidConfig, PolicyConfig
from controller.link import auth, push_wire
from controller.link.auth import Keyring, Ping, Signer, VersionMismatch
from controller.link.edge_push import PushServer
from controller.link.edge_udp import HostLink, baseline_gains
from controller.link.host_push import PushClient
from controller.link.host_udp import HostClient
from controller.supervisor import Supervisor

pytestmark = pytest.mark.timeout(20)
RING = Keyring({1: bytes(range(32))})


def with_version(data: bytes, offset: int, version: bytes) -> bytes:
    return data[:offset] + version + data[offset + len(version):]


async def test_edge_refuses_a_datagram_of_another_version_counts_it_and_names_its_own(tmp_path) -> None:
    cfg = HostLinkConfig(port=0, key_file=tmp_path / "keys", state_file=tmp_path / "state.json")
    link = HostLink(cfg, RING, baseline_gains(PidConfig()))
    await link.start()
    tasks = Supervisor()
    tasks.spawn("receive", link.receive_forever)
    host = await asyncio_dgram.connect(link.address)
    try:
        v2 = with_version(Signer(RING, 1).seal(Ping(7)), 2, bytes([2]))
        async with asyncio.timeout(5):
            await host.send(v2)
            notice, _ = await host.recv()
            await host.send(v2)  # within a second: counted, not answered
            while link.counters["bad_version"] < 2:
                await asyncio.sleep(0.01)
        assert notice == b"ET" + bytes([auth.VERSION])
        assert link.counters["bad_version"] == 2 and link.counters["version_notice"] == 1 and link.state == "idle"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(host.recv(), 0.2)
    finally:
        host.close()
        await tasks.close()
        await link.close()


async def test_host_client_names_both_versions_when_the_edge_speaks_another() -> None:
    edge = await asyncio_dgram.bind(("127.0.0.1", 0))

    async def edge_v3() -> None:
        _, addr = await edge.recv()
        await edge.send(b"ET" + bytes([3]), addr)

    reply = asyncio.create_task(edge_v3())
    try:
        async with HostClient(edge.sockname[:2], RING, key_id=1, timeout_s=2, retries=0) as client:
            with pytest.raises(VersionMismatch) as e:
                await client.ping()
        host, port = edge.sockname[:2]
        assert str(e.value) == (f"host link version mismatch: this host speaks version {auth.VERSION}, the edge at "
                                f"{host}:{port} speaks version 3")
    finally:
        reply.cancel()
        edge.close()


async def test_push_edge_refuses_another_protocol_version_and_answers_its_own(tmp_path) -> None:
    server = PushServer(PolicyConfig(dir=tmp_path, push_port=0), RING, None, nominal_period_s=0.1,
                        max_clock_skew_s=5.0, replay_window=64, record=lambda k, d: None)
    await server.start()
    tasks = Supervisor()
    tasks.spawn("push", server.serve_forever)
    try:
        frame = with_version(PushClient(server.address, RING, 1).frame("status"), 0, b"ETP3")
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(frame)
        async with asyncio.timeout(5):
            answer = await reader.read()
        writer.close()
        assert answer == push_wire.MAGIC == b"ETP2"
        assert server.counters["refused:bad_version"] == 1 and "refused:bad_magic" not in server.counters
    finally:
        await tasks.close()
        await server.close()


def test_push_client_names_both_versions_when_the_edge_speaks_another() -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def edge_v3() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(push_wire.PREAMBLE.size)
            conn.sendall(b"ETP3")

    thread = threading.Thread(target=edge_v3, daemon=True)
    thread.start()
    try:
        host, port = listener.getsockname()
        with pytest.raises(VersionMismatch) as e:
            PushClient((host, port), RING, 1, timeout_s=5).status()
        assert str(e.value) == (f"push protocol version mismatch: this host speaks version {push_wire.VERSION}, the "
                                f"edge at {host}:{port} speaks version 3")
    finally:
        thread.join(5)
        listener.close()
