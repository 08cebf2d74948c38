"""Wire contract: framing, message round trips, rejection counters, resync, sequence gaps."""
from __future__ import annotations

import math
import zlib

import pytest
from cobs import cobs
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.protocol import framing as p

EXAMPLES = [
    p.Identify(),
    p.IdentifyReply("edgetune-mems", "0.1.0"),
    p.Ack(65535),
    p.Nak(12, p.ErrorCode.OUT_OF_RANGE),
    p.Reset(2**32 - 1),
    p.StatusRequest(),
    p.Status(True, 2**63, *range(1, 13)),
    p.StreamStart(),
    p.StreamStop(),
    p.SetVoltages(1.5, -2.25),
    p.SetDisturbance(p.Disturbance.WIENER, 7, 10.0, 20.0),
    p.Frame(123456, 10**12, 12.5, -3.0625, False),
    p.Frame(1, 2, 0.0, 0.0, True),
]


def test_every_mems_message_has_an_example() -> None:
    assert {type(m) for m in EXAMPLES} == set(p.MEMS.by_id.values())


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: p.Message) -> None:
    wire = p.encode(msg, 513)
    assert wire.endswith(b"\x00") and wire.count(0) == 1
    dec = p.FrameDecoder()
    assert dec.feed(wire) == [(513, msg)]
    assert dec.rejected == 0 and dec.ok == 1


def test_worked_example_in_docs() -> None:
    wire = p.encode(p.SetVoltages(1.5, -2.0), 0x0102)
    assert wire.hex(" ") == "05 01 20 02 01 01 03 c0 3f 01 01 06 c0 fa 32 9f dc 00"
    frame = p.encode(p.Frame(120, 1_000_000, 12.5, -3.25, False), 7)
    doc = open("docs/protocol.md").read()
    assert wire.hex(" ") in doc and frame.hex(" ") in doc and len(frame) == 31


def test_nan_survives_the_wire() -> None:
    [(_, m)] = p.FrameDecoder().feed(p.encode(p.Frame(0, 0, math.nan, math.nan, True), 0))
    assert math.isnan(m.x_px) and m.lost


def test_byte_by_byte_feed() -> None:
    wire = p.encode(EXAMPLES[6], 1) + p.encode(EXAMPLES[9], 2)
    dec, out = p.FrameDecoder(), []
    for b in wire:
        out += dec.feed(bytes([b]))
    assert out == [(1, EXAMPLES[6]), (2, EXAMPLES[9])]


def test_garbage_between_frames_is_counted_and_skipped() -> None:
    a, b = p.encode(p.Ack(1), 0), p.encode(p.Ack(2), 1)
    dec = p.FrameDecoder()
    out = dec.feed(b"\x13\x37garbage\x00" + a + b"\xff" * 50 + b"\x00" + b)
    assert [m for _, m in out] == [p.Ack(1), p.Ack(2)]
    assert dec.rejected == 2 and dec.ok == 2


def test_starting_mid_frame_resyncs() -> None:
    a, b = p.encode(p.Frame(1, 2, 3.0, 4.0), 5), p.encode(p.Frame(2, 3, 4.0, 5.0), 6)
    dec = p.FrameDecoder()
    assert dec.feed(a[10:] + b) == [(6, p.Frame(2, 3, 4.0, 5.0))]
    assert dec.rejected == 1


def test_truncated_payload() -> None:
    dec = p.FrameDecoder()
    assert dec.feed(cobs.encode(b"\x01\x03\x00") + b"\x00") == []
    assert dec.truncated == 1


def test_lost_tail_merges_with_next_frame_then_resyncs() -> None:
    a, b, c = (p.encode(p.Ack(i), i) for i in range(3))
    dec = p.FrameDecoder()
    out = dec.feed(a[:-4] + b + c)  # a's last bytes (and its delimiter) lost on the line
    assert out == [(2, p.Ack(2))]
    assert dec.rejected == 1 and dec.seq_gaps == 0  # first frame seen sets the expectation


def test_corrupted_byte_is_bad_crc() -> None:
    wire = bytearray(p.encode(p.SetVoltages(1.0, 2.0), 3))
    wire[7] ^= 0x10
    dec = p.FrameDecoder()
    assert dec.feed(bytes(wire)) == [] and dec.bad_crc == 1


def _raw_frame(ver: int, tid: int, body: bytes, seq: int = 0) -> bytes:
    head = bytes([ver, tid]) + seq.to_bytes(2, "little") + body
    return cobs.encode(head + zlib.crc32(head).to_bytes(4, "little")) + b"\x00"


def test_unknown_type_bad_version_bad_length() -> None:
    dec = p.FrameDecoder()
    assert dec.feed(_raw_frame(1, 0x7F, b"")) == []
    assert dec.feed(_raw_frame(2, 0x01, b"")) == []
    assert dec.feed(_raw_frame(1, 0x20, b"\x00" * 7)) == []  # SetVoltages needs 8
    assert dec.feed(_raw_frame(1, 0x04, b"\x01\x00\x63")) == []  # Nak with an unknown error code
    assert (dec.unknown_type, dec.bad_version, dec.bad_length, dec.ok) == (1, 1, 2, 0)


def test_ct_type_is_unknown_to_mems_decoder_but_sets_compose() -> None:
    class Angle(p.Message):  # a stand-in for a CT message in the reserved range
        TYPE_ID = 0x40

    ct = p.COMMON | p.MessageSet("ct", [Angle])
    assert 0x40 in ct.by_id and 0x20 not in ct.by_id and 0x40 not in p.MEMS.by_id
    with pytest.raises(p.ProtocolError, match="0x03"):
        p.MEMS | p.MessageSet("clash", [type("Clash", (p.Message,), {"TYPE_ID": 0x03})])


def test_over_long_run_without_delimiter_is_dropped() -> None:
    dec = p.FrameDecoder()
    for _ in range(10):
        assert dec.feed(b"\x01" * 1000) == []
    assert dec.garbage == 3
    assert dec.feed(b"\x00" + p.encode(p.Ack(9), 0)) == [(0, p.Ack(9))]


def test_sequence_gaps_wrap_and_reorder() -> None:
    dec = p.FrameDecoder()
    wire = b"".join(p.encode(p.Ack(0), s) for s in (65533, 65534, 1, 2, 5, 4))
    assert len(dec.feed(wire)) == 6
    assert dec.seq_gaps == 2 + 2 and dec.seq_reorder == 1  # 65535, 0 and 3, 4 missing; 4 late
    dec.reset_sequence()
    dec.feed(p.encode(p.Ack(0), 100))
    assert dec.seq_gaps == 4


@pytest.mark.parametrize("bad", [
    lambda: p.encode(p.Ack(1), 65536),
    lambda: p.encode(p.Ack(1), -1),
    lambda: p.encode(p.Ack(70000), 0),
    lambda: p.encode("not a message", 0),  # type: ignore[arg-type]
    lambda: p.encode(p.IdentifyReply("x" * 17, "1"), 0),
    lambda: p.encode(p.IdentifyReply("µ", "1"), 0),
])
def test_api_misuse_raises_protocol_error(bad) -> None:
    with pytest.raises(p.ProtocolError):
        bad()


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_fuzz_feed_never_raises_and_recovers(chunks: list[bytes]) -> None:
    dec = p.FrameDecoder()
    for c in chunks:
        for _, msg in dec.feed(c):
            assert isinstance(msg, p.Message)
    good = p.encode(p.Frame(9, 9, 1.0, 2.0), 42)
    assert dec.feed(b"\x00" + good) == [(42, p.Frame(9, 9, 1.0, 2.0))]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(width=32, allow_nan=False), st.booleans(),
       st.integers(0, 65535), st.integers(0, 30), st.integers(0, 255))
def test_fuzz_single_byte_corruption_never_yields_a_wrong_message(idx, x, lost, seq, pos, val) -> None:
    msg = p.Frame(idx, 0, x, -x, lost)
    wire = bytearray(p.encode(msg, seq))
    pos %= len(wire)
    wire[pos] = val
    out = p.FrameDecoder().feed(bytes(wire) + b"\x00")
    assert out in ([], [(seq, msg)])  # rejected, or the byte was unchanged
