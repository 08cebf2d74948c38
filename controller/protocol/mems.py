"""The MEMS stand's messages (type ids 0x20..0x3F, docs/protocol.md): mirror voltages, the disturbance
program, camera frames. ``MEMS`` = common + these; it expects the device ``edgetune-mems``."""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar

from controller.protocol.common import COMMON
from controller.protocol.framing import Message, MessageSet


class Disturbance(enum.IntEnum):
    """Disturbance profiles for :class:`SetDisturbance`; p0 is the program duration [s] (0 < p0 ≤ 600)."""

    NONE = 0  # M1 back to 0 px; p0..p3 ignored
    STEPS = 1  # p1 step [px], p2 hold time [s], p3 limit [px]  (paper Eq. 6)
    WIENER = 2  # p1 diffusion σ [px/√s]  (paper Eq. 7)
    SINE = 3  # p1 amplitude [px], p2..p3 frequency range [Hz], 3 random sinusoids per axis


@dataclass(frozen=True, slots=True)
class SetVoltages(Message):
    """host → device: MEMS mirror command [V] per axis. Out of range or non-finite → Nak, mirror keeps its command."""

    TYPE_ID: ClassVar[int] = 0x20
    BODY: ClassVar[struct.Struct] = struct.Struct("<ff")
    vx: float
    vy: float


@dataclass(frozen=True, slots=True)
class SetDisturbance(Message):
    """host → device: disturbance mirror (M1) program: profile, seed, duration p0 [s], parameters p1..p3.

    Plays from the next frame, restarts on Reset, holds its last value when it ends."""

    TYPE_ID: ClassVar[int] = 0x21
    BODY: ClassVar[struct.Struct] = struct.Struct("<BI4f")
    profile: int
    seed: int = 0
    p0: float = 0.0
    p1: float = 0.0
    p2: float = 0.0
    p3: float = 0.0


@dataclass(frozen=True, slots=True)
class Frame(Message):
    """device → host: one camera frame. ``t_us`` is the device clock; ``lost`` means no spot was found."""

    TYPE_ID: ClassVar[int] = 0x22
    BODY: ClassVar[struct.Struct] = struct.Struct("<IQff?")
    IS_DATA: ClassVar[bool] = True
    frame_index: int
    t_us: int
    x_px: float
    y_px: float
    lost: bool = False


MEMS = COMMON | MessageSet("mems", [SetVoltages, SetDisturbance, Frame], device="edgetune-mems")
