"""The scattering instrument's messages: round trips, the complex Data, and malformed input → a clear error
(API misuse raises; bad wire input is counted, never delivered)."""
from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
from cobs import cobs

from controller.protocol import common, framing, ptycho, scatter

FIELD = np.array([1e-3 - 2e-4j, -3.5e-5 + 0.25j, 0.0, 7.0 + 1j])
EXAMPLES = [
    scatter.MoveArm(123.5),
    scatter.Halt(),
    scatter.ArmStatusRequest(),
    scatter.ArmStatus(2**40, 359.0, 359.0, False, True, 3, 7),
    scatter.SetFrequency(2),
    scatter.Acquire((0, 359, 17)),
    scatter.Data.of(9, 10**9, 17, 1, FIELD),
    scatter.InfoRequest(),
    scatter.Info(42, 32, 2, math.inf, 0.0, 359.0),
]


def test_every_scatter_message_has_an_example_in_its_id_range() -> None:
    own = set(scatter.SCATTER.by_id.values()) - set(common.COMMON.by_id.values())
    assert {type(m) for m in EXAMPLES} == own
    assert all(0x80 <= cls.TYPE_ID <= 0x9F for cls in own)
    assert scatter.SCATTER.device == "edgetune-scatter"


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: framing.Message) -> None:
    [(_, got)] = framing.FrameDecoder(scatter.SCATTER).feed(framing.encode(msg, 65535))
    assert got == msg


def test_data_carries_complex_float32_in_order() -> None:
    got = framing.FrameDecoder(scatter.SCATTER).feed(framing.encode(EXAMPLES[6], 0))[0][1]
    assert got.field().dtype == np.complex64 and np.array_equal(got.field(), FIELD.astype(np.complex64))
    assert (got.index, got.source_deg, got.frequency) == (9, 17, 1) and not got.IS_DATA  # a reply to Acquire
    full = scatter.Data.of(0, 0, 0, 0, np.ones(scatter.MAX_RECEIVERS, complex))
    assert len(framing.encode(full, 0)) < 120  # ten receivers fit one small frame


def test_api_misuse_raises() -> None:
    for bad in ((), tuple(range(11)), (1.5,), (-1,), (70000,)):
        with pytest.raises(framing.ProtocolError, match="Acquire"):
            framing.encode(scatter.Acquire(bad), 0)
    with pytest.raises(ValueError, match="finite 1-D"):
        scatter.Data.of(0, 0, 0, 0, np.array([np.nan]))
    with pytest.raises(ValueError, match="finite 1-D"):
        scatter.Data.of(0, 0, 0, 0, np.ones((2, 2)))
    for values in (b"", bytes(12), bytes(88)):
        with pytest.raises(framing.ProtocolError, match="Data"):
            framing.encode(scatter.Data(0, 0, 0, 0, values), 0)


def _raw_frame(tid: int, body: bytes, seq: int = 0) -> bytes:
    head = bytes([framing.PROTOCOL_VERSION, tid]) + seq.to_bytes(2, "little") + body
    return cobs.encode(head + zlib.crc32(head).to_bytes(4, "little")) + b"\x00"


def test_malformed_wire_input_is_counted_not_delivered() -> None:
    dec = framing.FrameDecoder(scatter.SCATTER)
    data_head = scatter.Data.BODY.pack(0, 0, 0, 0, 2)
    bad = [_raw_frame(0x80, b""),  # MoveArm needs its angle
           _raw_frame(0x85, b""),  # an Acquire without its count
           _raw_frame(0x85, bytes([3]) + bytes(4)),  # 3 receivers need 6 B
           _raw_frame(0x86, data_head + bytes(12)),  # 2 complex values need 16 B
           _raw_frame(0x88, bytes(10)),  # a short Info
           _raw_frame(0x60, struct.pack("<ff", 1.0, 2.0))]  # a ptycho MoveTo: not in this set
    assert [dec.feed(f) for f in bad] == [[]] * 6
    assert dec.bad_length == 5 and dec.unknown_type == 1 and dec.ok == 0


def test_nan_angle_survives_the_wire_for_the_device_to_refuse() -> None:
    [(_, m)] = framing.FrameDecoder(scatter.SCATTER).feed(framing.encode(scatter.MoveArm(math.nan), 0))
    assert math.isnan(m.angle_deg)


def test_the_set_cannot_be_combined_with_another_devices() -> None:
    with pytest.raises(framing.ProtocolError, match="two devices"):
        scatter.SCATTER | ptycho.PTYCHO
