"""The CT rotation stage + detector's messages (type ids 0x40..0x5F, docs/protocol.md): homing, moves,
stage status, exposures and their projections, sample and noise set-up. ``CT`` = common + these; it
expects the device ``edgetune-ct``."""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar

from controller.protocol.common import COMMON
from controller.protocol.framing import Message, MessageSet


class SampleKind(enum.IntEnum):
    """Phantom shapes for :class:`SetSample` (names as ``firmware_sim.ct.phantoms.SHAPES``)."""

    PARALLELOGRAM = 0
    TRIANGLE = 1
    PENTAGON = 2
    ANY = 255  # drawn uniformly from the three


class NoiseModel(enum.IntEnum):
    """Detector noise for :class:`SetNoise`."""

    NONE = 0
    GAUSSIAN = 1  # σ = level × std of the projection (paper §5.3)
    POISSON = 2  # flux [photons/bin/s] × exposure, Beer–Lambert


class Split(enum.IntEnum):
    TRAIN = 0
    VAL = 1


@dataclass(frozen=True, slots=True)
class Home(Message):
    """host → device: drive to the home mark and reference the encoder. Ack when the move starts;
    poll :class:`StageStatus` for ``homed``. Nak BUSY while moving or exposing."""

    TYPE_ID: ClassVar[int] = 0x40


@dataclass(frozen=True, slots=True)
class MoveTo(Message):
    """host → device: move to ``angle_deg`` [deg]. Ack when the move starts. Nak NOT_HOMED, BUSY (moving
    or exposing), OUT_OF_RANGE (beyond the soft limits), NOT_FINITE; a refused move leaves the target."""

    TYPE_ID: ClassVar[int] = 0x41
    BODY: ClassVar[struct.Struct] = struct.Struct("<f")
    angle_deg: float


@dataclass(frozen=True, slots=True)
class Halt(Message):
    """host → device: brake to rest at the acceleration limit and hold there; cancels a running exposure
    (its Projection is never sent) and a homing move. Always Ack."""

    TYPE_ID: ClassVar[int] = 0x42


@dataclass(frozen=True, slots=True)
class StageStatusRequest(Message):
    """host → device. Reply: :class:`StageStatus`."""

    TYPE_ID: ClassVar[int] = 0x43


@dataclass(frozen=True, slots=True)
class StageStatus(Message):
    """device → host: the stage now. ``angle_deg`` is the encoder read-back (NaN until homed), ``t_us``
    device time; ``at_min``/``at_max``: at a soft limit; ``busy_refused``: Home/MoveTo/Acquire refused
    because the stage was moving or exposing (u32, since power-on)."""

    TYPE_ID: ClassVar[int] = 0x44
    BODY: ClassVar[struct.Struct] = struct.Struct("<Qff??????I")
    t_us: int
    angle_deg: float
    target_deg: float
    moving: bool
    in_position: bool
    homed: bool
    exposing: bool
    at_min: bool
    at_max: bool
    busy_refused: int


@dataclass(frozen=True, slots=True)
class Acquire(Message):
    """host → device: expose for ``exposure_s`` (0 < e ≤ 10 s) at the current angle. Ack at once; the
    :class:`Projection` follows when the exposure ends. Nak NOT_HOMED, BUSY (moving or exposing),
    OUT_OF_RANGE, NOT_FINITE."""

    TYPE_ID: ClassVar[int] = 0x45
    BODY: ClassVar[struct.Struct] = struct.Struct("<f")
    exposure_s: float


@dataclass(frozen=True, slots=True)
class Projection(Message):
    """device → host data: one detector line. ``angle_deg`` is the encoder angle during the exposure,
    ``t_us`` device time at its end, ``data`` the n_bins line integrals (float32). Variable length:
    header then ``n_bins × f32`` (at most 505 bins in MAX_PAYLOAD)."""

    TYPE_ID: ClassVar[int] = 0x46
    BODY: ClassVar[struct.Struct] = struct.Struct("<fQfH")  # angle_deg, t_us, exposure_s, n_bins
    IS_DATA: ClassVar[bool] = True
    angle_deg: float
    t_us: int
    exposure_s: float
    data: tuple[float, ...]

    def pack_body(self) -> bytes:
        n = len(self.data)
        return self.BODY.pack(self.angle_deg, self.t_us, self.exposure_s, n) + struct.pack(f"<{n}f", *self.data)

    @classmethod
    def unpack_body(cls, body: bytes) -> Projection:
        angle, t_us, exposure, n = cls.BODY.unpack_from(body)
        return cls(angle, t_us, exposure, struct.unpack(f"<{n}f", body[cls.BODY.size:]))  # size checked here


@dataclass(frozen=True, slots=True)
class SetSample(Message):
    """host → device: put a synthetic phantom on the stage: ``kind`` (:class:`SampleKind`), ``seed``,
    ``split`` (:class:`Split`: rotations of the train or validation bins), ``size`` (odd, 15..505 px = detector
    bins). Ack; Nak BAD_PARAM, BUSY while exposing."""

    TYPE_ID: ClassVar[int] = 0x47
    BODY: ClassVar[struct.Struct] = struct.Struct("<BIBH")
    kind: int
    seed: int
    split: int
    size: int


@dataclass(frozen=True, slots=True)
class SetNoise(Message):
    """host → device: detector noise ``model`` (:class:`NoiseModel`), Gaussian ``level`` (fraction of the
    projection's std, 0..1), Poisson ``flux`` [photons/bin/s] > 0. Ack; Nak BAD_PARAM, OUT_OF_RANGE, NOT_FINITE."""

    TYPE_ID: ClassVar[int] = 0x48
    BODY: ClassVar[struct.Struct] = struct.Struct("<Bff")
    model: int
    level: float = 0.05
    flux: float = 2.0e5


CT = COMMON | MessageSet("ct", [Home, MoveTo, Halt, StageStatusRequest, StageStatus, Acquire, Projection,
                                SetSample, SetNoise], device="edgetune-ct")
