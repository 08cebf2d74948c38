"""Host link over real loopback UDP sockets: edge endpoint (HostLink) and host client (HostClient)."""
from __future__ import annotations

import asyncio

import asyncio_dgram
import pytest

from controller.config import HostLinkConfig, PidConfig
from controller.link.host_udp import HostClient
from controller.link.edge_udp import HostLink, LinkChange, baseline_gains, clamp_gains
from controller.link.auth import (
    AxisGains, Gains, Keyring, Pong, SetGains, SetTarget, Signer, Telemetry, decode, write_keyfile,
)
from controller.modes.mems import gain_sets
from controller.supervisor import Supervisor

pytestmark = pytest.mark.timeout(20)
BASELINE = baseline_gains(PidConfig())


@pytest.fixture
def ring(tmp_path) -> Keyring:
    return write_keyfile(tmp_path / "keys", (1, 2))


async def started(lk: HostLink) -> Supervisor:
    """Bind, then run the link's tasks under a Supervisor, as the daemon does."""
    await lk.start()
    tasks = Supervisor()
    tasks.spawn("receive", lk.receive_forever)
    tasks.spawn("watchdog", lk.watch_forever)
    return tasks


@pytest.fixture
async def link(tmp_path, ring):
    cfg = HostLinkConfig(port=0, silence_timeout_s=0.3, telemetry_decimation=2,
                         key_file=tmp_path / "keys", state_file=tmp_path / "state.json")
    lk = HostLink(cfg, ring, BASELINE)
    tasks = await started(lk)
    yield lk
    await tasks.close()
    await lk.close()


def drain(mailbox) -> list:
    items = []
    while (item := mailbox.poll()) is not None:
        items.append(item)
    return items


async def test_binds_loopback_by_default(link):
    assert link.address[0] == "127.0.0.1"


async def test_set_gains_is_clamped_acked_and_posted(link, ring):
    wanted = Gains(AxisGains(100.0, 600.0, -1.0), AxisGains(16.0, 816.0, 0.02))
    async with HostClient(link.address, ring, key_id=1) as client:
        ack = await client.set_gains(wanted)
        tgt = await client.set_target(3.0, -4.0)
    # P beyond the default (wide) set's range: P to its end, I to I_max there; D into the box
    _, p_max, i_max = gain_sets.limit("wide", 0, 100.0)
    expected = Gains(AxisGains(p_max, min(600.0, i_max), 0.0), AxisGains(16.0, 816.0, 0.02))
    assert ack.clamped and ack.gains == expected and ack.ack_seq == client.signer.last_seq - 1
    assert tgt.gains is None and not tgt.clamped
    assert drain(link.mailbox) == [LinkChange(up=True), SetGains(expected), SetTarget(3.0, -4.0)]
    assert link.counters["gains_clamped"] == 1 and link.counters["rx_ok"] == 2


def test_clamp_inside_envelope_is_identity():
    env = HostLinkConfig().envelope
    assert clamp_gains(BASELINE, env) == (BASELINE, False)


async def test_silence_makes_link_lost_then_up_again(link, ring):
    async with HostClient(link.address, ring, key_id=1) as client:
        rtt = await client.ping()
        assert 0 < rtt < 1.0 and link.state == "up"
        await asyncio.sleep(0.6)  # > silence_timeout_s (0.3) + one watchdog period
        assert link.state == "lost" and link.counters["link_lost"] == 1
        assert not link.wants_telemetry(0)
        await client.ping()
        assert link.state == "up"
    assert drain(link.mailbox) == [LinkChange(up=True), LinkChange(up=False, gains=BASELINE), LinkChange(up=True)]
    assert link.cfg.state_file.exists()  # replay state persisted by the watchdog


async def test_telemetry_reaches_client_decimated(link, ring):
    async with HostClient(link.address, ring, key_id=2) as client:
        await client.ping()  # the edge sends telemetry to the host it last heard from
        for tick in range(10):
            if link.wants_telemetry(tick):
                link.send_telemetry(Telemetry(tick, tick * 8_333_333, 1.0, 2.0, 0.0, 0.0, 0.1, 0.2, BASELINE))
        got = []
        async for t in client.telemetry():
            got.append(t.tick)
            if len(got) == 5:
                break
    assert got == [0, 2, 4, 6, 8]
    assert link.counters["tx_ok"] == 6  # pong + 5 telemetry


async def test_unauthenticated_and_replayed_datagrams_are_counted_and_dropped(link, ring):
    stranger = Keyring({1: bytes(32)})  # right key id, wrong key
    async with HostClient(link.address, stranger, key_id=1, timeout_s=0.05, retries=0) as intruder:
        with pytest.raises(TimeoutError):
            await intruder.set_gains(BASELINE)
    raw = await asyncio_dgram.connect(link.address)
    captured = Signer(ring, 1).seal(SetTarget(1.0, 1.0))
    for d in (b"hello", b"ET" + bytes(60), captured, captured):
        await raw.send(d)
    reflected = Signer(ring, 1).seal(Pong(1))  # an edge→host message sent to the edge
    await raw.send(reflected)
    assert (await asyncio.wait_for(raw.recv(), 2))[0] == b"ET\x01"  # version 0: the edge's version notice
    ack = decode((await asyncio.wait_for(raw.recv(), 2))[0], ring, expect="to_host").msg
    assert ack.ack_seq == decode(captured, ring).seq  # the genuine command is acked, nothing else answered (but the version)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(raw.recv(), 0.3)
    raw.close()
    assert link.counters["bad_tag"] == 1 and link.counters["malformed"] == 1 and link.counters["bad_version"] == 1
    assert link.counters["replayed"] == 1 and link.counters["unknown_type"] == 1
    assert drain(link.mailbox) == [LinkChange(up=True), SetTarget(1.0, 1.0)]  # the one genuine command


async def test_restarted_edge_refuses_packets_from_before(tmp_path, ring):
    cfg = HostLinkConfig(port=0, key_file=tmp_path / "keys", state_file=tmp_path / "state.json")
    captured = Signer(ring, 1).seal(SetTarget(5.0, 5.0))
    first = HostLink(cfg, ring, BASELINE)
    await first.start()
    first.handle(captured, ("127.0.0.1", 9))
    await first.close()
    second = HostLink(cfg, ring, BASELINE)
    await second.start()
    try:
        second.handle(captured, ("127.0.0.1", 9))
        assert second.counters["rx_ok"] == 0 and second.counters["replayed"] + second.counters["stale"] == 1
    finally:
        await second.close()


async def test_refused_datagrams_get_no_reply_and_never_move_the_telemetry(link, ring):
    """Reflected (edge→host), replayed and stale datagrams from another address: dropped, counted,
    unanswered; telemetry keeps going to the host that last sent a fresh command."""
    async with HostClient(link.address, ring, key_id=1) as client:
        await client.ping()
        edge_signer = Signer(ring, 1)
        host = link._host
        captured = Signer(ring, 2).seal(SetTarget(1.0, 1.0))
        link.handle(captured, host)  # a genuine command from the host, captured on the way
        intruder = await asyncio_dgram.connect(link.address)
        stale = Signer(ring, 2, clock=lambda: 1_000_000).seal(SetTarget(2.0, 2.0))  # stamped in 1970
        for d in (edge_signer.seal(Telemetry(1, 2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, BASELINE)), captured, stale,
                  edge_signer.seal(Pong(3))):
            await intruder.send(d)
        await asyncio.sleep(0.1)
        assert link._host == host  # unchanged
        link.send_telemetry(Telemetry(7, 0, 1.0, 2.0, 0.0, 0.0, 0.1, 0.2, BASELINE))
        t = await asyncio.wait_for(client.telemetry().__anext__(), 2)
        assert t.tick == 7
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(intruder.recv(), 0.3)
        intruder.close()
    assert link.counters["unknown_type"] == 2 and link.counters["replayed"] == 1 and link.counters["stale"] == 1


async def test_an_unwritable_state_file_is_counted_and_the_watchdog_lives_on(tmp_path, ring, caplog):
    (tmp_path / "not-a-dir").write_text("")
    cfg = HostLinkConfig(port=0, silence_timeout_s=0.3, key_file=tmp_path / "keys",
                         state_file=tmp_path / "not-a-dir" / "state.json")
    lk = HostLink(cfg, ring, BASELINE)
    tasks = await started(lk)
    try:
        async with HostClient(lk.address, ring, key_id=1) as client:
            for _ in range(3):
                await client.ping()
                await asyncio.sleep(0.2)
        await asyncio.sleep(0.6)  # silence: the watchdog still marks the link lost
        assert lk.state == "lost" and lk.counters["state_write_error"] >= 2 and not tasks.restarts
    finally:
        await tasks.close()
        await lk.close()  # its own write fails too, counted, not raised
    errors = [r for r in caplog.records if "cannot persist the replay state" in r.getMessage()]
    assert 1 <= len(errors) <= 2  # the first at once, the rest summarised at close


async def test_kernel_drops_are_counted(tmp_path, ring):
    import socket

    cfg = HostLinkConfig(port=0, key_file=tmp_path / "keys", state_file=tmp_path / "state.json")
    lk = HostLink(cfg, ring, BASELINE)
    await lk.start()  # nothing receives: the socket's buffer fills
    try:
        assert lk.kernel_drops() == 0
        lk._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(200):
                s.sendto(bytes(500), lk.address)
        assert lk.kernel_drops() > 0
        tasks = Supervisor()
        tasks.spawn("watchdog", lk.watch_forever)
        async with asyncio.timeout(5):  # the watchdog reads them once a period
            while lk.counters["rx_kernel_dropped"] == 0:
                await asyncio.sleep(0.02)
        assert lk.counters["rx_kernel_dropped"] == lk.kernel_drops() > 0
        await tasks.close()
    finally:
        await lk.close()
    assert lk.kernel_drops() is None  # closed


async def test_a_bad_gain_set_table_stops_the_link_at_start(tmp_path, ring, monkeypatch):
    """The configured set's table is read when the link starts, not on the first SetGains: a bad one is a
    start-up error and nothing is bound."""
    monkeypatch.setattr(gain_sets, "TABLE_FILE", tmp_path / "missing.json")
    gain_sets.table.cache_clear()
    try:
        lk = HostLink(HostLinkConfig(port=0, key_file=tmp_path / "keys", state_file=tmp_path / "state.json"), ring, BASELINE)
        with pytest.raises(ValueError, match="cannot read gain set 'wide'"):
            await lk.start()
        assert lk._sock is None
    finally:
        monkeypatch.undo()
        gain_sets.table.cache_clear()
