"""Wire contract: framing, message round trips, rejection counters, resync, sequence gaps."""
from __future__ import annotations

import math
import zlib

import pytest
from cobs import cobs
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.protocol import common, framing, mems

EXAMPLES = [
    common.Identify(),
    common.IdentifyReply("edgetune-mems", "0.1.0"),
    common.Ack(65535),
    common.Nak(12, common.ErrorCode.OUT_OF_RANGE),
    common.Reset(2**32 - 1),
    common.StatusRequest(),
    common.Status(True, 2**63, *range(1, 13)),
    common.StreamStart(),
    common.StreamStop(),
    mems.SetVoltages(1.5, -2.25),
    mems.SetDisturbance(mems.Disturbance.WIENER, 7, 10.0, 20.0),
    mems.Frame(123456, 10**12, 12.5, -3.0625, False),
    mems.Frame(1, 2, 0.0, 0.0, True),
    common.Pattern(7, 2**40, 2, 3, bytes(range(24))),
]


def test_every_mems_message_has_an_example() -> None:
    assert {type(m) for m in EXAMPLES} == set(mems.MEMS.by_id.values())


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: framing.Message) -> None:
    wire = framing.encode(msg, 513)
    assert wire.endswith(b"\x00") and wire.count(0) == 1
    dec = framing.FrameDecoder(mems.MEMS)
    assert dec.feed(wire) == [(513, msg)]
    assert dec.rejected == 0 and dec.ok == 1


def test_worked_example_in_docs() -> None:
    wire = framing.encode(mems.SetVoltages(1.5, -2.0), 0x0102)
    assert wire.hex(" ") == "05 01 20 02 01 01 03 c0 3f 01 01 06 c0 fa 32 9f dc 00"
    frame = framing.encode(mems.Frame(120, 1_000_000, 12.5, -3.25, False), 7)
    doc = open("docs/protocol.md").read()
    assert wire.hex(" ") in doc and frame.hex(" ") in doc and len(frame) == 31


def test_nan_survives_the_wire() -> None:
    [(_, m)] = framing.FrameDecoder(mems.MEMS).feed(framing.encode(mems.Frame(0, 0, math.nan, math.nan, True), 0))
    assert math.isnan(m.x_px) and m.lost


def test_byte_by_byte_feed() -> None:
    wire = framing.encode(EXAMPLES[6], 1) + framing.encode(EXAMPLES[9], 2)
    dec, out = framing.FrameDecoder(mems.MEMS), []
    for b in wire:
        out += dec.feed(bytes([b]))
    assert out == [(1, EXAMPLES[6]), (2, EXAMPLES[9])]


def test_garbage_between_frames_is_counted_and_skipped() -> None:
    a, b = framing.encode(common.Ack(1), 0), framing.encode(common.Ack(2), 1)
    dec = framing.FrameDecoder(mems.MEMS)
    out = dec.feed(b"\x13\x37garbage\x00" + a + b"\xff" * 50 + b"\x00" + b)
    assert [m for _, m in out] == [common.Ack(1), common.Ack(2)]
    assert dec.rejected == 2 and dec.ok == 2


def test_starting_mid_frame_resyncs() -> None:
    a, b = framing.encode(mems.Frame(1, 2, 3.0, 4.0), 5), framing.encode(mems.Frame(2, 3, 4.0, 5.0), 6)
    dec = framing.FrameDecoder(mems.MEMS)
    assert dec.feed(a[10:] + b) == [(6, mems.Frame(2, 3, 4.0, 5.0))]
    assert dec.rejected == 1


def test_truncated_payload() -> None:
    dec = framing.FrameDecoder(mems.MEMS)
    assert dec.feed(cobs.encode(b"\x01\x03\x00") + b"\x00") == []
    assert dec.truncated == 1


def test_lost_tail_merges_with_next_frame_then_resyncs() -> None:
    a, b, c = (framing.encode(common.Ack(i), i) for i in range(3))
    dec = framing.FrameDecoder(mems.MEMS)
    out = dec.feed(a[:-4] + b + c)  # a's last bytes (and its delimiter) lost on the line
    assert out == [(2, common.Ack(2))]
    assert dec.rejected == 1 and dec.seq_gaps == 0  # first frame seen sets the expectation


def test_corrupted_byte_is_bad_crc() -> None:
    wire = bytearray(framing.encode(mems.SetVoltages(1.0, 2.0), 3))
    wire[7] ^= 0x10
    dec = framing.FrameDecoder(mems.MEMS)
    assert dec.feed(bytes(wire)) == [] and dec.bad_crc == 1


def _raw_frame(ver: int, tid: int, body: bytes, seq: int = 0) -> bytes:
    head = bytes([ver, tid]) + seq.to_bytes(2, "little") + body
    return cobs.encode(head + zlib.crc32(head).to_bytes(4, "little")) + b"\x00"


def test_unknown_type_bad_version_bad_length() -> None:
    dec = framing.FrameDecoder(mems.MEMS)
    assert dec.feed(_raw_frame(1, 0x7F, b"")) == []
    assert dec.feed(_raw_frame(2, 0x01, b"")) == []
    assert dec.feed(_raw_frame(1, 0x20, b"\x00" * 7)) == []  # SetVoltages needs 8
    assert dec.feed(_raw_frame(1, 0x04, b"\x01\x00\x63")) == []  # Nak with an unknown error code
    assert (dec.unknown_type, dec.bad_version, dec.bad_length, dec.ok) == (1, 1, 2, 0)


def test_ct_type_is_unknown_to_mems_decoder_but_sets_compose() -> None:
    class Angle(framing.Message):  # a stand-in for a CT message in the reserved range
        TYPE_ID = 0x40

    ct = common.COMMON | framing.MessageSet("ct", [Angle])
    assert 0x40 in ct.by_id and 0x20 not in ct.by_id and 0x40 not in mems.MEMS.by_id
    with pytest.raises(framing.ProtocolError, match="0x03"):
        mems.MEMS | framing.MessageSet("clash", [type("Clash", (framing.Message,), {"TYPE_ID": 0x03})])


def test_over_long_run_without_delimiter_is_dropped() -> None:
    dec = framing.FrameDecoder(mems.MEMS)
    for _ in range(10):
        assert dec.feed(b"\x01" * 1000) == []
    assert dec.garbage == 3
    assert dec.feed(b"\x00" + framing.encode(common.Ack(9), 0)) == [(0, common.Ack(9))]


def test_sequence_gaps_wrap_and_reorder() -> None:
    dec = framing.FrameDecoder(mems.MEMS)
    wire = b"".join(framing.encode(common.Ack(0), s) for s in (65533, 65534, 1, 2, 5, 4))
    assert len(dec.feed(wire)) == 6
    assert dec.seq_gaps == 2 + 2 and dec.seq_reorder == 1  # 65535, 0 and 3, 4 missing; 4 late
    dec.reset_sequence()
    dec.feed(framing.encode(common.Ack(0), 100))
    assert dec.seq_gaps == 4


@pytest.mark.parametrize("bad", [
    lambda: framing.encode(common.Ack(1), 65536),
    lambda: framing.encode(common.Ack(1), -1),
    lambda: framing.encode(common.Ack(70000), 0),
    lambda: framing.encode("not a message", 0),  # type: ignore[arg-type]
    lambda: framing.encode(common.IdentifyReply("x" * 17, "1"), 0),
    lambda: framing.encode(common.IdentifyReply("µ", "1"), 0),
])
def test_api_misuse_raises_protocol_error(bad) -> None:
    with pytest.raises(framing.ProtocolError):
        bad()


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_fuzz_feed_never_raises_and_recovers(chunks: list[bytes]) -> None:
    dec = framing.FrameDecoder(mems.MEMS)
    for c in chunks:
        for _, msg in dec.feed(c):
            assert isinstance(msg, framing.Message)
    good = framing.encode(mems.Frame(9, 9, 1.0, 2.0), 42)
    assert dec.feed(b"\x00" + good) == [(42, mems.Frame(9, 9, 1.0, 2.0))]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(width=32, allow_nan=False), st.booleans(),
       st.integers(0, 65535), st.integers(0, 30), st.integers(0, 255))
def test_fuzz_single_byte_corruption_never_yields_a_wrong_message(idx, x, lost, seq, pos, val) -> None:
    msg = mems.Frame(idx, 0, x, -x, lost)
    wire = bytearray(framing.encode(msg, seq))
    pos %= len(wire)
    wire[pos] = val
    out = framing.FrameDecoder(mems.MEMS).feed(bytes(wire) + b"\x00")
    assert out in ([], [(seq, msg)])  # rejected, or the byte was unchanged
