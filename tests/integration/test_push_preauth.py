"""The push channel's wire format (controller/link/push_wire.py) and its pre-authentication budget
(controller/link/edge_push.py) on real loopback sockets: no reply before authentication, deadlines, eviction of
the oldest unauthenticated connection, the connection cap, rate-limited refusal summaries."""
from __future__ import annotations

import asyncio
import logging
import time

import pytest

from controller.config import PolicyConfig
from controller.link.auth import TAG_LEN, Keyring, wall_us
from controller.link.edge_push import PushServer
from controller.link.host_push import PushClient, Unanswered
from controller.link.push_wire import (
    MAX_HEADER, PREAMBLE, REPLY_LEN, PushHeader, PushRefused, check_sizes, decode_reply, encode_reply, encode_request,
    request_tag, verify_header, verify_preamble,
)
from controller.ratelog import Summary
from controller.supervisor import Supervisor

pytestmark = pytest.mark.timeout(30)
KEY = bytes(range(32))
RING = Keyring({1: KEY, 2: bytes(range(32, 64))})


def request(op: str = "status", seq: int = 1, ts: int | None = None, key_id: int = 1, model: bytes = b"") -> bytes:
    return encode_request(PushHeader(op=op), model, key_id, RING.keys[key_id], seq, wall_us() if ts is None else ts)


# --- codec ------------------------------------------------------------------------------------


def test_request_round_trip_and_layout():
    frame = request("push", seq=7, ts=123, model=b"onnx")
    pre = verify_preamble(RING, frame[:PREAMBLE.size])
    assert PREAMBLE.size == 61 and (pre.key_id, pre.seq, pre.timestamp_us, pre.model_len) == (1, 7, 123, 4)
    end = PREAMBLE.size + pre.header_len
    assert verify_header(pre, frame[PREAMBLE.size:end], frame[end:end + TAG_LEN]) == PushHeader(op="push")
    assert frame[end + TAG_LEN:] == b"onnx" and request_tag(frame) == pre.tag


def test_every_preamble_byte_is_authenticated():
    frame = request()[:PREAMBLE.size]
    for i in range(PREAMBLE.size):
        bad = bytearray(frame)
        bad[i] ^= 0x01
        with pytest.raises(PushRefused) as e:
            verify_preamble(RING, bytes(bad))
        reason = "bad_magic" if i < 3 else "bad_version" if i == 3 else "unknown_key" if i == 4 else "bad_signature"
        assert e.value.reason == reason, i


def test_the_header_is_bound_to_its_preamble():
    a, b = request(seq=1), request("rollback", seq=2)
    pre_a = verify_preamble(RING, a[:PREAMBLE.size])
    end_b = PREAMBLE.size + verify_preamble(RING, b[:PREAMBLE.size]).header_len
    with pytest.raises(PushRefused, match="bad_signature"):  # b's header and tag under a's preamble
        verify_header(pre_a, b[PREAMBLE.size:end_b], b[end_b:end_b + TAG_LEN])


def test_sizes_are_checked_once_authenticated():
    pre = verify_preamble(RING, request()[:PREAMBLE.size])
    check_sizes(pre, 10)
    for header_len, model_len, reason in ((0, 0, "bad_frame"), (MAX_HEADER + 1, 0, "bad_frame"), (10, 11, "too_large")):
        with pytest.raises(PushRefused, match=reason):
            check_sizes(pre.__class__(**{**pre.__dict__, "header_len": header_len, "model_len": model_len}), 10)


def test_replies_must_be_authenticated_for_this_request():
    frame, other = request(seq=1), request(seq=2)
    pre = verify_preamble(RING, frame[:PREAMBLE.size])
    wire = encode_reply({"accepted": False, "reason": "busy"}, pre)
    body, tag = wire[REPLY_LEN.size:-TAG_LEN], wire[-TAG_LEN:]
    assert decode_reply(body, tag, KEY, request_tag(frame))["reason"] == "busy"
    for key, ptag, t in ((KEY, request_tag(other), tag), (KEY, request_tag(frame), bytes(TAG_LEN)),
                         (RING.keys[2], request_tag(frame), tag)):
        with pytest.raises(ValueError, match="not authenticated"):  # a refusal included
            decode_reply(body, t, key, ptag)


def test_summary_reports_the_first_at_once_then_at_most_every_interval():
    now, out = [0.0], []
    s = Summary(lambda counts, secs: out.append((counts, secs)), interval_s=10.0, clock=lambda: now[0])
    s.add("a")
    assert out == [({"a": 1}, 0.0)]
    for t in (1.0, 2.0, 5.0):
        now[0] = t
        s.add("b" if t > 1 else "a")
    s.tick()
    assert len(out) == 1  # gathered
    now[0] = 10.5
    s.tick()
    assert out[1] == ({"a": 1, "b": 2}, 9.5)
    now[0] = 11.0
    s.add("c")
    s.flush()
    assert out[2] == ({"c": 1}, 0.0) and len(out) == 3
    s.flush()
    assert len(out) == 3  # nothing pending


# --- server -----------------------------------------------------------------------------------


class Edge:
    """A PushServer on a free loopback port, supervised, with a "status" op, a "hold" op that blocks until
    ``release`` is set (so a test can keep authenticated connections open) and a "resume" op that raises."""

    def __init__(self, tmp_path, **cfg) -> None:  # noqa: ANN001, ANN003
        self.release = asyncio.Event()
        self.records: list[tuple[str, dict]] = []

        async def status(header: PushHeader) -> dict:
            return {"accepted": True, "reason": "ok"}

        async def hold(header: PushHeader) -> dict:
            await self.release.wait()
            return {"accepted": True, "reason": "held"}

        async def resume(header: PushHeader) -> dict:  # a bug in an op
            raise RuntimeError("boom")

        self.server = PushServer(PolicyConfig(dir=tmp_path, push_port=0, **cfg), RING, None, nominal_period_s=0.1,
                                 max_clock_skew_s=5.0, replay_window=64,
                                 record=lambda k, d: self.records.append((k, d)),
                                 ops={"status": status, "hold": hold, "resume": resume})
        self.tasks = Supervisor()

    async def __aenter__(self) -> Edge:
        await self.server.start()
        self.tasks.spawn("push", self.server.serve_forever)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        await self.tasks.close()
        await self.server.close()

    def client(self, key_id: int = 1) -> PushClient:
        return PushClient(self.server.address, RING, key_id, timeout_s=5)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(*self.server.address)

    def refused(self) -> dict[str, int]:
        return {k: v for k, v in self.server.counters.items() if k.startswith("refused:")}


async def until(condition, within_s: float = 2.0) -> None:  # noqa: ANN001
    async with asyncio.timeout(within_s):
        while not condition():
            await asyncio.sleep(0.01)


async def closed_without_a_byte(reader: asyncio.StreamReader, within_s: float = 2.0) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1024), within_s) == b""
    except ConnectionResetError:
        return True


async def test_refused_preambles_are_closed_without_a_reply(tmp_path):
    async with Edge(tmp_path) as edge:
        frame = request(seq=10)
        stale = request(seq=11, ts=wall_us() - 60_000_000)
        unsigned = frame[:PREAMBLE.size - TAG_LEN] + bytes(TAG_LEN) + frame[PREAMBLE.size:]
        stranger = encode_request(PushHeader(op="status"), b"", 9, KEY, 12, wall_us())
        assert (await asyncio.to_thread(edge.client().send, frame))["accepted"]
        for bad in (frame, stale, unsigned, stranger, b"XTP2" + frame[4:], b"GET / HTTP/1.1\r\n" * 8):
            reader, writer = await edge.connect()
            writer.write(bad)
            assert await closed_without_a_byte(reader), bad[:8]
            writer.close()
        reader, writer = await edge.connect()  # another protocol version: told this edge's (tests/integration/test_versions.py)
        writer.write(b"ETP1" + frame[4:])
        assert await asyncio.wait_for(reader.read(), 2) == b"ETP2"
        writer.close()
        with pytest.raises(Unanswered, match="refused before authentication"):
            await asyncio.to_thread(edge.client().send, frame)
    assert edge.refused() == {"refused:replayed": 2, "refused:stale": 1, "refused:bad_signature": 1,
                              "refused:unknown_key": 1, "refused:bad_magic": 2, "refused:bad_version": 1}


async def test_an_authenticated_request_is_told_why(tmp_path):
    async with Edge(tmp_path, max_model_bytes=10) as edge:
        client = edge.client()
        assert (await asyncio.to_thread(client.send, request("push", seq=1, model=bytes(11))))["reason"] == "too_large"
        frame = bytearray(request("rollback", seq=2))
        frame[PREAMBLE.size + 3] ^= 1  # the header, not the preamble
        assert (await asyncio.to_thread(client.send, bytes(frame)))["reason"] == "bad_signature"
        assert (await asyncio.to_thread(client.rollback))["reason"] == "no_policy_mode"
    assert edge.server.counters["rejected:too_large"] == 1 and edge.server.counters["rejected:bad_signature"] == 1


async def test_slow_preambles_meet_the_preauth_deadline(tmp_path):
    async with Edge(tmp_path, preauth_timeout_s=0.3) as edge:
        reader, writer = await edge.connect()
        t0 = time.monotonic()
        writer.write(request()[:PREAMBLE.size - 1])  # all but one byte
        assert await closed_without_a_byte(reader)
        assert 0.25 < time.monotonic() - t0 < 1.5
        writer.close()
    assert edge.refused() == {"refused:preauth_timeout": 1}


async def test_a_flood_of_unauthenticated_connections_evicts_the_oldest_and_a_client_gets_through(tmp_path):
    async with Edge(tmp_path, max_unauthenticated=4, max_connections=8) as edge:
        idle = [await edge.connect() for _ in range(6)]
        await until(lambda: edge.refused().get("refused:too_many_unauthenticated") == 2)
        assert edge.server.connections == (4, 4)
        for reader, _ in idle[:2]:  # the two oldest made room
            assert await closed_without_a_byte(reader, 0.5)
        assert (await asyncio.to_thread(edge.client().status))["accepted"]  # evicts one more, then authenticates
        assert await closed_without_a_byte(idle[2][0], 0.5)
        for _, writer in idle:
            writer.close()
        await asyncio.sleep(0.1)
    assert edge.refused() == {"refused:too_many_unauthenticated": 3, "refused:incomplete": 3}  # 3 hung up


async def test_the_connection_cap_holds_when_every_connection_is_authenticated(tmp_path):
    async with Edge(tmp_path, max_unauthenticated=1, max_connections=2) as edge:
        holds = []
        for n, k in enumerate((1, 2), 1):  # one at a time: one unauthenticated connection at most
            holds.append(asyncio.create_task(asyncio.to_thread(edge.client(k).hold)))
            await until(lambda: edge.server.connections == (n, 0))
        reader, writer = await edge.connect()
        assert await closed_without_a_byte(reader)  # no room, nothing to evict
        writer.close()
        edge.release.set()
        assert [(await h)["reason"] for h in holds] == ["held", "held"]
        assert (await asyncio.to_thread(edge.client().status))["accepted"]  # room again
    assert edge.refused() == {"refused:too_many_connections": 1}


async def test_refusals_are_summarised_not_logged_one_by_one(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "controller.link.edge_push")
    async with Edge(tmp_path) as edge:
        for _ in range(50):
            reader, writer = await edge.connect()
            writer.write(bytes(PREAMBLE.size))
            await closed_without_a_byte(reader)
            writer.close()
    lines = [r.getMessage() for r in caplog.records if "refused before authentication" in r.getMessage()]
    assert len(lines) == 2 and "(bad_magic=1)" in lines[0] and "(bad_magic=49)" in lines[1]  # at once, then at close
    assert [(k, d["counts"]) for k, d in edge.records] == [("push_refused", {"bad_magic": 1}),
                                                          ("push_refused", {"bad_magic": 49})]


async def test_an_unexpected_error_is_answered_counted_and_logged_once(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "controller.link.edge_push")
    async with Edge(tmp_path) as edge:
        reply = await asyncio.to_thread(edge.client().resume)
        assert (reply["accepted"], reply["reason"]) == (False, "internal_error") and "boom" in reply["detail"]
        assert (await asyncio.to_thread(edge.client(2).status))["accepted"]  # and the server goes on
    assert edge.server.counters["rejected:internal_error"] == 1
    failed = [r for r in caplog.records if "boom" in r.getMessage() or r.exc_info]
    assert len(failed) == 1 and failed[0].exc_info is not None


async def test_a_request_other_than_a_push_carries_no_model(tmp_path):
    async with Edge(tmp_path) as edge:
        reply = await asyncio.to_thread(edge.client().send, request("status", seq=5, model=b"x" * 100))
    assert reply["reason"] == "bad_frame" and edge.server.counters["rejected:bad_frame"] == 1


async def test_close_during_start_leaves_nothing_listening(tmp_path):
    server = Edge(tmp_path).server
    starting = asyncio.create_task(server.start())
    await server.close()
    await starting
    assert not server._server.is_serving()


class Conn:
    """A connection's writer as the server sees it, without a socket: ``abort()`` ends its reader."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.transport, self.reader, self.aborted = self, reader, False

    def abort(self) -> None:
        self.aborted = True
        self.reader.feed_eof()


def conn() -> tuple[asyncio.StreamReader, Conn]:
    reader = asyncio.StreamReader()
    return reader, Conn(reader)


async def test_a_connection_evicted_while_its_preamble_waited_to_be_read_is_not_served(tmp_path):
    server = Edge(tmp_path, max_unauthenticated=1).server
    reader, writer = conn()
    assert server._admit(reader, writer)
    auth = asyncio.create_task(server._authenticate(reader, writer))
    await asyncio.sleep(0)  # waiting for its preamble
    reader.feed_data(request(seq=3)[:PREAMBLE.size])  # arrived; the handler has not resumed yet
    assert server._admit(*conn())  # a newer connection evicts it (the only candidate)
    assert await auth is None and writer.aborted
    assert dict(server.counters) == {"refused:too_many_unauthenticated": 1}


async def test_eviction_spares_a_connection_whose_preamble_has_arrived(tmp_path):
    server = Edge(tmp_path, max_unauthenticated=2).server
    (r_full, w_full), (r_slow, w_slow) = conn(), conn()
    assert server._admit(r_full, w_full) and server._admit(r_slow, w_slow)
    r_full.feed_data(request(seq=4)[:PREAMBLE.size])  # the older one: complete, its handler not run yet
    r_slow.feed_data(b"ETP1")
    assert server._admit(*conn())
    assert w_slow.aborted and not w_full.aborted
    assert (await server._authenticate(r_full, w_full)).seq == 4
