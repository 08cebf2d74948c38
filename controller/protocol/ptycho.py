"""The ptychography scan stage + pixel detector's messages (type ids 0x60..0x7F, docs/protocol.md): moves,
stage status, exposures and their diffraction frames (chunked on the wire), sample, dose and instrument set-up.
``PTYCHO`` = common + these; it expects the device ``edgetune-ptycho``.

Positions are (x, y) in Å (grid position (i, j) ↔ (y, x) = (i, j) · pixel_A); exposures are whole
microseconds, so the dose of an exposure (``dose × exposure_us / nominal_us``) is exact on both sides.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from controller.protocol.common import COMMON
from controller.protocol.framing import Message, MessageSet, ProtocolError


@dataclass(frozen=True, slots=True)
class MoveTo(Message):
    """host → device: move the stage to (``x_A``, ``y_A``) [Å]. Ack when the move starts. Nak NOT_FINITE,
    BUSY (moving or exposing), OUT_OF_RANGE (outside the stage's range); a refused move leaves the target."""

    TYPE_ID: ClassVar[int] = 0x60
    BODY: ClassVar[struct.Struct] = struct.Struct("<ff")
    x_A: float
    y_A: float


@dataclass(frozen=True, slots=True)
class Halt(Message):
    """host → device: brake both axes at the acceleration limit and hold where they stop; cancels a running
    exposure (its Frame is never sent). Always Ack."""

    TYPE_ID: ClassVar[int] = 0x61


@dataclass(frozen=True, slots=True)
class StageStatusRequest(Message):
    """host → device. Reply: :class:`StageStatus`."""

    TYPE_ID: ClassVar[int] = 0x62


@dataclass(frozen=True, slots=True)
class StageStatus(Message):
    """device → host: the stage now. ``x_A``/``y_A`` the read-back (noisy, quantised), ``target_*`` the
    commanded position, ``t_us`` device time; ``busy_refused``: MoveTo/Acquire/SetSample refused because the
    stage was moving, not in position or exposing (u32, since power-on)."""

    TYPE_ID: ClassVar[int] = 0x63
    BODY: ClassVar[struct.Struct] = struct.Struct("<Qffff???I")
    t_us: int
    x_A: float
    y_A: float
    target_x_A: float
    target_y_A: float
    moving: bool
    in_position: bool
    exposing: bool
    busy_refused: int


@dataclass(frozen=True, slots=True)
class Acquire(Message):
    """host → device: expose the detector for ``exposure_us`` (1 µs … 10 s) at the stage's position. Ack at
    once; the :class:`Frame` follows when the exposure ends. Nak BUSY (not in position or exposing),
    OUT_OF_RANGE."""

    TYPE_ID: ClassVar[int] = 0x64
    BODY: ClassVar[struct.Struct] = struct.Struct("<I")
    exposure_us: int


@dataclass(frozen=True, slots=True)
class Frame(Message):
    """device → host data: one diffraction pattern, ``height × width`` u32 electron counts, row major.
    ``index`` counts frames since power-on, ``t_us`` device time at the exposure's end, ``x_A``/``y_A`` the
    stage read-back during it, ``dose`` its electrons (the beam's, before the noise). 16 KiB at 64 × 64:
    crosses the wire as chunks."""

    TYPE_ID: ClassVar[int] = 0x65
    BODY: ClassVar[struct.Struct] = struct.Struct("<IQffdIHH")  # index, t_us, x, y, dose, exposure_us, h, w
    IS_DATA: ClassVar[bool] = True
    index: int
    t_us: int
    x_A: float
    y_A: float
    dose: float
    exposure_us: int
    height: int
    width: int
    data: bytes  # height × width × u32, little endian

    def pack_body(self) -> bytes:
        if len(self.data) != 4 * self.height * self.width:
            raise ProtocolError(f"Frame: {len(self.data)} B of data for {self.height} × {self.width} u32")
        return self.BODY.pack(self.index, self.t_us, self.x_A, self.y_A, self.dose, self.exposure_us,
                              self.height, self.width) + self.data

    @classmethod
    def unpack_body(cls, body: bytes) -> Frame:
        head = cls.BODY.unpack_from(body)
        data = body[cls.BODY.size:]
        if len(data) != 4 * head[-2] * head[-1]:
            raise ValueError(f"Frame: {len(data)} B of data for {head[-2]} × {head[-1]} u32")
        return cls(*head, data)

    @classmethod
    def of(cls, index: int, t_us: int, x_A: float, y_A: float, dose: float, exposure_us: int,
           counts: np.ndarray) -> Frame:
        """A frame carrying the 2-D ``counts`` (non-negative integers < 2³²; ValueError otherwise)."""
        c = np.asarray(counts)
        if c.ndim != 2 or not np.issubdtype(c.dtype, np.integer) or c.min() < 0 or c.max() >= 1 << 32:
            raise ValueError(f"Frame counts must be a 2-D array of integers in [0, 2³²), got {c.dtype} {c.shape}")
        return cls(index, t_us, x_A, y_A, dose, exposure_us, *c.shape, c.astype("<u4").tobytes())

    def counts(self) -> np.ndarray:
        """The counts as a (height, width) uint32 array."""
        return np.frombuffer(self.data, "<u4").reshape(self.height, self.width)


@dataclass(frozen=True, slots=True)
class SetSample(Message):
    """host → device: put the sample with ``key`` on the stage (the emulator draws it; the key also keys the
    detector noise). Ack; Nak UNSUPPORTED (the device has a fixed sample), BAD_PARAM (no such sample),
    BUSY (exposing)."""

    TYPE_ID: ClassVar[int] = 0x66
    BODY: ClassVar[struct.Struct] = struct.Struct("<I")
    key: int


@dataclass(frozen=True, slots=True)
class SetDose(Message):
    """host → device: the beam current, as ``dose`` electrons per pattern at the nominal exposure
    (0 < dose ≤ 1e9). Ack; Nak NOT_FINITE, OUT_OF_RANGE, BUSY (exposing)."""

    TYPE_ID: ClassVar[int] = 0x67
    BODY: ClassVar[struct.Struct] = struct.Struct("<d")
    dose: float


@dataclass(frozen=True, slots=True)
class InfoRequest(Message):
    """host → device. Reply: :class:`Info`."""

    TYPE_ID: ClassVar[int] = 0x68


@dataclass(frozen=True, slots=True)
class Info(Message):
    """device → host: the instrument's set-up, for the edge to check against its own: the sample ``key``,
    ``dose`` at the nominal exposure ``exposure_us``, the optics (energy, convergence semi-angle, defocus,
    object pixel = scan step, window, grid) and the stage range [Å] on both axes."""

    TYPE_ID: ClassVar[int] = 0x69
    BODY: ClassVar[struct.Struct] = struct.Struct("<IdIffffHHff")
    key: int
    dose: float
    exposure_us: int
    energy_eV: float
    aperture_mrad: float
    defocus_A: float
    pixel_A: float
    window: int
    grid: int
    min_A: float
    max_A: float


PTYCHO = COMMON | MessageSet("ptycho", [MoveTo, Halt, StageStatusRequest, StageStatus, Acquire, Frame, SetSample,
                                        SetDose, InfoRequest, Info], device="edgetune-ptycho")
