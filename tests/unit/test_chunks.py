"""Chunked payloads: a 16 KiB Pattern splits into chunk frames and reassembles bit-exact; every chunk the
decoder cannot use is counted in one counter, nothing wrong is ever delivered, and memory stays bounded."""
from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.protocol import common, framing, mems


def pattern(index: int, h: int = 64, w: int = 64) -> common.Pattern:
    rng = random.Random(index)
    data = struct.pack(f"<{h * w}f", *(rng.uniform(-1e3, 1e3) for _ in range(h * w)))
    return common.Pattern(index, 1000 * index, h, w, data)


def decoded(dec: framing.FrameDecoder, frames: list[bytes]) -> list[framing.Message]:
    return [m for f in frames for _, m in dec.feed(f)]


def test_a_64x64_float32_pattern_crosses_in_chunks_bit_exact() -> None:
    msg = pattern(1)
    frames = framing.encode_frames(msg, 65530)  # the chunks' sequence numbers wrap
    total = 1 + common.Pattern.BODY.size + 64 * 64 * 4
    assert len(frames) == -(-total // framing.CHUNK_DATA) == 9
    assert all(len(f) <= framing.MAX_PAYLOAD + framing.MAX_PAYLOAD // 254 + 2 for f in frames)
    dec = framing.FrameDecoder(mems.MEMS)
    out = dec.feed(b"".join(frames))
    assert out == [((65530 + 8) % framing.SEQ_MOD, msg)] and out[0][1].data == msg.data
    assert dec.chunked_ok == 1 and dec.chunk_rejected == 0 and dec.seq_gaps == 0 and dec.ok == 9


def test_a_message_that_fits_one_frame_is_not_chunked() -> None:
    msg = mems.Frame(120, 1_000_000, 12.5, -3.25, False)
    assert framing.encode_frames(msg, 7) == [framing.encode(msg, 7)]


def _chunk(transfer: int, offset: int, total: int, crc: int, data: bytes, seq: int = 0) -> bytes:
    return framing.encode(framing.Chunk(transfer, offset, total, crc, data), seq)


def test_every_bad_chunk_is_counted_and_later_payloads_get_through() -> None:
    a, b = pattern(1), pattern(2)
    fa, fb = framing.encode_frames(a, 0, chunk_data=2000), framing.encode_frames(b, 100, chunk_data=2000)
    dec = framing.FrameDecoder(mems.MEMS)
    # a chunk lost: the one after the gap and every later chunk of that transfer are missing
    assert decoded(dec, fa[:3] + fa[4:]) == [] and dec.chunk_missing == len(fa) - 4
    # a new transfer before the last one ended: the old one is superseded, the new one delivered
    assert decoded(dec, fa[:2] + fb) == [b] and dec.chunk_superseded == 1
    # the reassembled CRC does not match (each chunk frame itself is valid)
    payload = bytes([common.Pattern.TYPE_ID]) + pattern(1, 4, 4).pack_body()
    half = len(payload) // 2
    forged = [_chunk(9, 0, len(payload), 1234, payload[:half]), _chunk(9, half, len(payload), 1234, payload[half:])]
    assert decoded(dec, forged) == [] and dec.chunk_bad_crc == 1
    # a chunk whose total differs from its transfer's, an empty chunk, a chunk past its total
    crc = framing.zlib.crc32(payload)
    bad = [_chunk(3, 0, len(payload), crc, payload[:10]), _chunk(3, 10, len(payload) + 1, crc, payload[10:20]),
           _chunk(4, 0, 10, 0, b""), _chunk(5, 8, 10, 0, b"abc")]
    assert decoded(dec, bad) == [] and dec.chunk_mismatch == 3
    # larger than the decoder accepts: refused before a byte is kept
    small = framing.FrameDecoder(mems.MEMS, max_chunked=8 * 1024)
    assert decoded(small, fa) == [] and small.chunk_too_large == len(fa) and small.chunk_missing == 0
    assert len(small._parts) == 0
    assert decoded(dec, framing.encode_frames(a, 500)) == [a]
    assert dec.chunked_ok == 2 and dec.rejected == 0


def test_a_stalled_transfer_times_out() -> None:
    now = [0.0]
    dec = framing.FrameDecoder(mems.MEMS, chunk_timeout_s=1.0, clock=lambda: now[0])
    frames = framing.encode_frames(pattern(3), 0)
    decoded(dec, frames[:4])
    now[0] = 5.0
    assert decoded(dec, frames[4:]) == []
    assert dec.chunk_timeout == 1 and dec.chunk_missing == len(frames) - 4
    assert decoded(dec, framing.encode_frames(pattern(4), 20)) == [pattern(4)]


def test_a_reassembled_payload_is_checked_like_a_frame() -> None:
    dec = framing.FrameDecoder(mems.MEMS)

    def send(payload: bytes) -> list[framing.Message]:
        crc = framing.zlib.crc32(payload)
        return decoded(dec, [_chunk(1, 0, len(payload), crc, payload[:5]),
                             _chunk(1, 5, len(payload), crc, payload[5:])])

    assert send(bytes([0x7F]) + bytes(40)) == [] and dec.unknown_type == 1
    assert send(bytes([common.Pattern.TYPE_ID]) + struct.pack("<IQHH", 0, 0, 2, 2) + bytes(15)) == []
    assert dec.bad_length == 1 and dec.chunked_ok == 0


def test_encode_frames_refuses_misuse() -> None:
    with pytest.raises(framing.ProtocolError):
        framing.encode_frames(pattern(1), 0, chunk_data=framing.CHUNK_DATA + 1)
    with pytest.raises(framing.ProtocolError):
        framing.encode_frames(common.Pattern(0, 0, 2, 2, b"\x00" * 15), 0)
    with pytest.raises(framing.ProtocolError, match="0x0a"):
        framing.MessageSet("x", [type("Clash", (framing.Message,), {"TYPE_ID": 0x0A})])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 20)), max_size=6), st.integers(0, 65535))
def test_damaged_chunk_streams_never_deliver_a_wrong_pattern(damage: list[tuple[int, int]], seq: int) -> None:
    """Three 24 × 24 patterns in 256-byte chunks; frames lost, cut, bit-flipped or duplicated at random."""
    sent = [pattern(i, 24, 24) for i in range(3)]
    frames = [f for i, m in enumerate(sent) for f in framing.encode_frames(m, (seq + 10 * i) % 65536, chunk_data=256)]
    for op, x in damage:
        i = x % len(frames)
        f = frames[i]
        if op == 0:
            del frames[i]
        elif op == 1:
            frames[i] = f[:len(f) // 2] + b"\x00"
        elif op == 2:
            bit = (x >> 5) % ((len(f) - 1) * 8)
            frames[i] = f[:bit // 8] + bytes([f[bit // 8] ^ (1 << bit % 8)]) + f[bit // 8 + 1:]
        else:
            frames.insert(i, f)
    dec = framing.FrameDecoder(mems.MEMS)
    out = decoded(dec, frames)
    assert all(m in sent for m in out)
    assert len(out) == dec.chunked_ok <= 3
    assert decoded(dec, framing.encode_frames(sent[0], 40000, chunk_data=256)) == [sent[0]]
