"""The atom forge's messages (type ids 0x90..0x9F, docs/protocol.md, forge section): a focused beam pushes one
atom among fixed background atoms (backward action learning, issue #23). ``FORGE`` = common + these; it expects
the device ``edgetune-forge``.

The forge runs in lockstep with the edge, so that an edge episode is reproducible: :class:`StartEpisode` puts the
atom at a position (step 0) and every :class:`Force` advances the controlled SDE by one step Δt under that force;
each is answered by the :class:`Position` read back after it (a reply carried as data, so that it reaches the
tick loop like a camera frame). The force crosses the wire as the paper's control, a magnitude F ≥ 0 and a
steering angle φ [rad]; ``force_command``/``Force.vector`` convert from and to the force vector u = F (cos φ, sin φ),
the one conversion both sides use. Lengths are in the Lennard-Jones length unit, forces in well depth per length.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from controller.protocol.common import COMMON
from controller.protocol.framing import Message, MessageSet


@dataclass(frozen=True, slots=True)
class StartEpisode(Message):
    """host → device: put the atom at (x, y) and start counting steps from 0. Reply :class:`Position` (step 0,
    zero force); Nak NOT_FINITE, OUT_OF_RANGE (outside the position box)."""

    TYPE_ID: ClassVar[int] = 0x90
    BODY: ClassVar[struct.Struct] = struct.Struct("<ff")
    x: float
    y: float


@dataclass(frozen=True, slots=True)
class Force(Message):
    """host → device: apply the force of magnitude ``magnitude`` and steering angle ``angle_rad`` for one step Δt.
    Reply :class:`Position` (the next step); Nak NOT_FINITE, OUT_OF_RANGE (magnitude < 0 or > F_max, or the atom
    is outside the position box, or the episode's N steps are done: over until the next StartEpisode), BAD_PARAM
    (no episode started)."""

    TYPE_ID: ClassVar[int] = 0x91
    BODY: ClassVar[struct.Struct] = struct.Struct("<ff")
    magnitude: float
    angle_rad: float

    def vector(self) -> np.ndarray:
        """The force vector u = F (cos φ, sin φ) (2,), as the device applies it."""
        return np.array([self.magnitude * math.cos(self.angle_rad), self.magnitude * math.sin(self.angle_rad)])


def force_command(u: np.ndarray) -> Force:
    """The wire command for the force vector ``u`` (2,): F = |u|, φ = atan2(u_y, u_x), both as float32 carries them."""
    ux, uy = float(u[0]), float(u[1])
    return Force(*np.float32([math.hypot(ux, uy), math.atan2(uy, ux)]).tolist())


@dataclass(frozen=True, slots=True)
class Position(Message):
    """device → host, the reply to StartEpisode and Force: the atom's position read back (the centroid of the
    camera's spot image) after ``step`` steps of the episode, ``t_us`` device time, and the force vector
    (fx, fy) that was applied over the step that led here (zero at step 0). ``in_box``: the atom is inside the
    position box (outside it the device refuses forces)."""

    TYPE_ID: ClassVar[int] = 0x92
    BODY: ClassVar[struct.Struct] = struct.Struct("<IQffff?")
    IS_DATA: ClassVar[bool] = True
    step: int
    t_us: int
    x: float
    y: float
    fx: float
    fy: float
    in_box: bool = True


@dataclass(frozen=True, slots=True)
class InfoRequest(Message):
    """host → device. Reply: :class:`Info`."""

    TYPE_ID: ClassVar[int] = 0x93


@dataclass(frozen=True, slots=True)
class Info(Message):
    """device → host: the instrument's set-up, for the edge to check against its own: the step Δt, the force
    limit F_max and the position box [x_low, x_high] × [y_low, y_high]."""

    TYPE_ID: ClassVar[int] = 0x94
    BODY: ClassVar[struct.Struct] = struct.Struct("<6f")
    dt: float
    f_max: float
    x_low: float
    y_low: float
    x_high: float
    y_high: float


FORGE = COMMON | MessageSet("forge", [StartEpisode, Force, Position, InfoRequest, Info], device="edgetune-forge")
