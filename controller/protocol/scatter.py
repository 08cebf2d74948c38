"""The inverse-scattering transceiver ring's messages (type ids 0x80..0x8F, docs/protocol.md): the rotating
source arm (move, halt, status), the frequency setting, acquisitions and their complex data, and the instrument's
set-up. ``SCATTER`` = common + these; it expects the device ``edgetune-scatter``.

Angles are degrees on the ring (receivers: integer degrees 0 … 359); the frequency is an index 0 … 3 into
``controller.modes.scatter.spec.wavenumbers(n)``. An :class:`Acquire` is answered by its :class:`Data` (a reply,
not a stream): the edge may ask again when it is lost (each answer is a fresh acquisition with its own index).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from controller.protocol.common import COMMON
from controller.protocol.framing import Message, MessageSet, ProtocolError

MAX_RECEIVERS = 10  # the budget K: a scan never has more transceivers
N_FREQUENCIES = 4


@dataclass(frozen=True, slots=True)
class MoveArm(Message):
    """host → device: rotate the source arm to ``angle_deg``. Ack when the move starts. Nak NOT_FINITE, BUSY
    (moving), OUT_OF_RANGE (outside the arm's limits); a refused move leaves the target."""

    TYPE_ID: ClassVar[int] = 0x80
    BODY: ClassVar[struct.Struct] = struct.Struct("<f")
    angle_deg: float


@dataclass(frozen=True, slots=True)
class Halt(Message):
    """host → device: brake the arm at the acceleration limit and hold where it stops. Always Ack."""

    TYPE_ID: ClassVar[int] = 0x81


@dataclass(frozen=True, slots=True)
class ArmStatusRequest(Message):
    """host → device. Reply: :class:`ArmStatus`."""

    TYPE_ID: ClassVar[int] = 0x82


@dataclass(frozen=True, slots=True)
class ArmStatus(Message):
    """device → host: the arm now. ``angle_deg`` the encoder read-back (noisy, quantised), ``target_deg`` the
    commanded angle, ``t_us`` device time, ``frequency`` the index set; ``busy_refused``: MoveArm/Acquire refused
    because the arm was moving or not in position (u32, since power-on)."""

    TYPE_ID: ClassVar[int] = 0x83
    BODY: ClassVar[struct.Struct] = struct.Struct("<Qff??BI")
    t_us: int
    angle_deg: float
    target_deg: float
    moving: bool
    in_position: bool
    frequency: int
    busy_refused: int


@dataclass(frozen=True, slots=True)
class SetFrequency(Message):
    """host → device: the source's wavenumber, as an index 0 … 3 into the allowed set. Ack; Nak OUT_OF_RANGE."""

    TYPE_ID: ClassVar[int] = 0x84
    BODY: ClassVar[struct.Struct] = struct.Struct("<B")
    index: int


@dataclass(frozen=True, slots=True)
class Acquire(Message):
    """host → device: fire the source at the arm's angle and read the receivers at ``receivers`` (1 … 10 integer
    degrees, in the order wanted). Reply :class:`Data`; Nak BUSY (arm not in position), OUT_OF_RANGE (an angle
    ≥ 360), BAD_PARAM (none, more than 10, or repeated)."""

    TYPE_ID: ClassVar[int] = 0x85
    receivers: tuple[int, ...]

    def pack_body(self) -> bytes:
        r = self.receivers
        if not 0 < len(r) <= MAX_RECEIVERS or not all(isinstance(a, int) and 0 <= a < 1 << 16 for a in r):
            raise ProtocolError(f"Acquire: 1 … {MAX_RECEIVERS} receiver angles as u16, got {r!r}")
        return struct.pack(f"<B{len(r)}H", len(r), *r)

    @classmethod
    def unpack_body(cls, body: bytes) -> Acquire:
        if not body or len(body) != 1 + 2 * body[0]:
            raise ValueError(f"Acquire: {len(body)} B for {body[0] if body else 0} receivers")
        return cls(struct.unpack_from(f"<{body[0]}H", body, 1))


@dataclass(frozen=True, slots=True)
class Data(Message):
    """device → host, the reply to :class:`Acquire`: the scattered field at each receiver, (re, im) float32
    pairs in the order asked. ``index`` counts acquisitions since power-on or Reset (it keys the noise; the
    sample is fixed when the device starts), ``t_us`` device time, ``source_deg`` the ring angle the source fired at (the arm's actual angle,
    to the nearest degree), ``frequency`` the index used."""

    TYPE_ID: ClassVar[int] = 0x86
    BODY: ClassVar[struct.Struct] = struct.Struct("<IQHBB")  # index, t_us, source_deg, frequency, count
    index: int
    t_us: int
    source_deg: int
    frequency: int
    values: bytes  # count × (re, im) float32, little endian

    def pack_body(self) -> bytes:
        count, rest = divmod(len(self.values), 8)
        if rest or not 0 < count <= MAX_RECEIVERS:
            raise ProtocolError(f"Data: {len(self.values)} B is not 1 … {MAX_RECEIVERS} complex float32 values")
        return self.BODY.pack(self.index, self.t_us, self.source_deg, self.frequency, count) + self.values

    @classmethod
    def unpack_body(cls, body: bytes) -> Data:
        *head, count = cls.BODY.unpack_from(body)
        values = body[cls.BODY.size:]
        if len(values) != 8 * count:
            raise ValueError(f"Data: {len(values)} B for {count} complex values")
        return cls(*head, values)

    @classmethod
    def of(cls, index: int, t_us: int, source_deg: int, frequency: int, field: np.ndarray) -> Data:
        """A reply carrying the complex ``field`` (1-D, finite) as float32 pairs."""
        f = np.asarray(field)
        if f.ndim != 1 or not np.all(np.isfinite(f)):
            raise ValueError(f"Data field must be a finite 1-D array, got shape {f.shape}")
        return cls(index, t_us, source_deg, frequency, f.astype("<c8").tobytes())

    def field(self) -> np.ndarray:
        """The complex values as complex64 (count,)."""
        return np.frombuffer(self.values, "<c8")


@dataclass(frozen=True, slots=True)
class InfoRequest(Message):
    """host → device. Reply: :class:`Info`."""

    TYPE_ID: ClassVar[int] = 0x87


@dataclass(frozen=True, slots=True)
class Info(Message):
    """device → host: the instrument's set-up, for the edge to check against its own: the sample ``key``, grid
    ``n``, Born ``order`` (1 … 3), ``snr_db`` (+inf: noise-free) and the arm's limits [deg]."""

    TYPE_ID: ClassVar[int] = 0x88
    BODY: ClassVar[struct.Struct] = struct.Struct("<IHBfff")
    key: int
    n: int
    order: int
    snr_db: float
    min_deg: float
    max_deg: float


SCATTER = COMMON | MessageSet("scatter", [MoveArm, Halt, ArmStatusRequest, ArmStatus, SetFrequency, Acquire, Data,
                                          InfoRequest, Info], device="edgetune-scatter")
