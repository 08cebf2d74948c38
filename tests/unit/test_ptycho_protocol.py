"""The ptychography instrument's messages: round trips, the chunked Frame, and malformed input → a clear error
(API misuse raises; bad wire input is counted, never delivered)."""
from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
from cobs import cobs

from controller.protocol import common, ct, framing, ptycho

COUNTS = np.random.default_rng(0).poisson(50.0, (64, 64))
EXAMPLES = [
    ptycho.MoveTo(19.5, 0.25),
    ptycho.Halt(),
    ptycho.StageStatusRequest(),
    ptycho.StageStatus(2**40, 1.5, -0.125, 1.5, 0.0, True, False, True, 7),
    ptycho.Acquire(1000),
    ptycho.Frame.of(3, 10**9, 9.875, 0.25, 2.1e5, 1000, COUNTS),
    ptycho.SetSample(2**32 - 1),
    ptycho.SetDose(123456.789),
    ptycho.InfoRequest(),
    ptycho.Info(42, 2.1e5, 1000, 60e3, 33.0, 20.0, 0.25, 64, 100, 0.0, 19.75),
]


def test_every_ptycho_message_has_an_example_in_its_id_range() -> None:
    own = set(ptycho.PTYCHO.by_id.values()) - set(common.COMMON.by_id.values())
    assert {type(m) for m in EXAMPLES} == own
    assert all(0x60 <= cls.TYPE_ID <= 0x7F for cls in own)
    assert ptycho.PTYCHO.device == "edgetune-ptycho"


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: framing.Message) -> None:
    frames = framing.encode_frames(msg, 65534)  # a chunked message's sequence numbers wrap
    dec = framing.FrameDecoder(ptycho.PTYCHO)
    [(_, got)] = [m for f in frames for m in dec.feed(f)]
    assert got == msg and dec.rejected == 0 and dec.chunk_rejected == 0 and dec.seq_gaps == 0


def test_a_64x64_frame_crosses_in_9_chunks_and_keeps_its_counts_exactly() -> None:
    msg = EXAMPLES[5]
    frames = framing.encode_frames(msg, 0)
    assert len(frames) == 9 and msg.data == COUNTS.astype("<u4").tobytes()
    [(seq, got)] = framing.FrameDecoder(ptycho.PTYCHO).feed(b"".join(frames))
    assert seq == 8 and got.counts().dtype == np.uint32 and np.array_equal(got.counts(), COUNTS)
    assert got.IS_DATA and got.dose == 2.1e5 and got.exposure_us == 1000


def test_a_frame_refuses_counts_it_cannot_carry() -> None:
    for bad in (COUNTS.astype(float), -COUNTS, np.full((2, 2), 1 << 32), COUNTS[0]):
        with pytest.raises(ValueError, match="Frame counts"):
            ptycho.Frame.of(0, 0, 0.0, 0.0, 1.0, 1, bad)
    with pytest.raises(framing.ProtocolError, match="Frame: 12 B of data for 2 × 2"):
        framing.encode(ptycho.Frame(0, 0, 0.0, 0.0, 1.0, 1, 2, 2, bytes(12)), 0)


def _raw_frame(tid: int, body: bytes, seq: int = 0) -> bytes:
    head = bytes([framing.PROTOCOL_VERSION, tid]) + seq.to_bytes(2, "little") + body
    return cobs.encode(head + zlib.crc32(head).to_bytes(4, "little")) + b"\x00"


def test_malformed_wire_input_is_counted_not_delivered() -> None:
    dec = framing.FrameDecoder(ptycho.PTYCHO)
    frame_head = ptycho.Frame.BODY.pack(0, 0, 0.0, 0.0, 1.0, 1, 2, 2)
    bad = [_raw_frame(0x60, struct.pack("<f", 1.0)),  # MoveTo needs x and y
           _raw_frame(0x63, bytes(10)),  # a short StageStatus
           _raw_frame(0x65, frame_head + bytes(15)),  # 2 × 2 counts need 16 B
           _raw_frame(0x67, struct.pack("<f", 1.0)),  # SetDose is an f64
           _raw_frame(0x46, bytes(18))]  # a CT Projection: not in this set
    assert [dec.feed(f) for f in bad] == [[]] * 5
    assert dec.bad_length == 4 and dec.unknown_type == 1 and dec.ok == 0


def test_a_chunked_frame_with_a_lost_or_damaged_chunk_is_dropped() -> None:
    frames = framing.encode_frames(EXAMPLES[5], 0)
    dec = framing.FrameDecoder(ptycho.PTYCHO)
    assert [m for f in frames[:3] + frames[4:] for m in dec.feed(f)] == [] and dec.chunk_missing == 5
    flipped = bytearray(frames[2])
    flipped[100] ^= 0x10
    assert [m for f in frames[:2] + [bytes(flipped)] + frames[3:] for m in dec.feed(f)] == []
    assert dec.bad_crc == 1 and dec.chunk_missing == 11
    assert dec.feed(b"".join(framing.encode_frames(EXAMPLES[5], 20)))[0][1] == EXAMPLES[5]


def test_nan_target_survives_the_wire_for_the_device_to_refuse() -> None:
    [(_, m)] = framing.FrameDecoder(ptycho.PTYCHO).feed(framing.encode(ptycho.MoveTo(math.nan, 1.0), 0))
    assert math.isnan(m.x_A) and m.y_A == 1.0


def test_the_set_cannot_be_combined_with_another_devices() -> None:
    with pytest.raises(framing.ProtocolError, match="two devices"):
        ptycho.PTYCHO | ct.CT
