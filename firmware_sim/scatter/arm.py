"""The transceiver ring's rotating source arm: commanded angle, slew, settle, encoder read-back, limits.

One rotation axis with the analytic rest-to-rest motion of the ptychography stage (`firmware_sim.ptycho.stage`:
a speed- and acceleration-limited trapezoid, a triangle for short moves; degrees in place of Å). "In position"
comes `settle_s` after arrival; the arm then rests at the target plus a repeatability error (Gaussian, σ =
`settle_error_deg`, drawn per move); the encoder read-back adds fresh Gaussian noise (σ = `readback_noise_deg`)
and is quantised to `encoder_step_deg`. The arm turns within its limits (a cable wrap, no endless rotation):
a move from 350° to 10° goes the long way round, and a target outside the limits is refused.

Defaults (assumed, not a measured instrument): 180°/s top speed reached in 0.25 s (720°/s²), so a 10° step
takes 0.24 s and a half turn 1.25 s; 20 ms settle; at rest within 0.002° (σ); a 17-bit encoder (0.0027°) with
0.001° read-back noise; limits 0 … 359°.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from firmware_sim.ptycho.stage import Profile, StageParams


@dataclass(frozen=True)
class ArmParams:
    slew_dps: float = 180.0  # speed limit [deg/s]
    accel_dps2: float = 720.0  # acceleration / deceleration limit [deg/s²]
    settle_s: float = 0.02  # from arrival to "in position" [s]
    settle_error_deg: float = 0.002  # σ of the rest angle about the target, per move [deg]
    readback_noise_deg: float = 0.001  # σ of the encoder noise, fresh per reading [deg]
    encoder_step_deg: float = 360.0 / 2**17  # read-back quantisation [deg]
    limits_deg: tuple[float, float] = (0.0, 359.0)  # the commanded angle's range [deg]

    @cached_property
    def motion(self) -> StageParams:
        """The same limits as the ptycho stage's axis parameters (validated there): the trapezoid's maths."""
        return StageParams(max_speed_A_s=self.slew_dps, accel_A_s2=self.accel_dps2, settle_s=self.settle_s,
                           settle_error_A=self.settle_error_deg, readback_noise_A=self.readback_noise_deg,
                           readback_step_A=self.encoder_step_deg, range_A=self.limits_deg)

    def __post_init__(self) -> None:
        self.motion  # noqa: B018 — raises ValueError on bad settings

    def in_range(self, angle_deg: float) -> bool:
        lo, hi = self.limits_deg
        return math.isfinite(angle_deg) and lo <= angle_deg <= hi


class Arm:
    """The arm in device time. ``command`` and ``halt`` take the current time; the state is the commanded target
    and one motion profile, which ends at the target plus the move's rest error."""

    def __init__(self, params: ArmParams = ArmParams(), seed: int = 0, t_s: float = 0.0) -> None:
        self.p = params
        # separate streams: the rest errors do not depend on how often the encoder was read
        self.rng_rest, self.rng_readback = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
        home = float(np.clip(0.0, *params.limits_deg))  # power-up: at rest at 0° (or the nearest limit)
        self.target_deg = home
        self.profile = Profile.rest(t_s, home)

    def angle_deg(self, t_s: float) -> float:
        """The actual angle."""
        return self.profile.at(t_s)[0]

    def moving(self, t_s: float) -> bool:
        return t_s < self.profile.end_s

    def in_position(self, t_s: float) -> bool:
        return t_s >= self.profile.end_s + self.p.settle_s

    def readback_deg(self, t_s: float) -> float:
        """What the encoder reports: actual + noise, quantised."""
        q = self.p.encoder_step_deg
        return float(np.round((self.angle_deg(t_s) + self.p.readback_noise_deg * self.rng_readback.standard_normal())
                              / q) * q)

    def command(self, t_s: float, target_deg: float) -> None:
        """Start a move from rest. ValueError when the target is outside the limits or not finite, or the arm
        still moves (the emulator answers these with a Nak first)."""
        if not self.p.in_range(target_deg):
            raise ValueError(f"target {target_deg}° outside the arm's limits {self.p.limits_deg}°")
        if self.moving(t_s):
            raise ValueError("the arm is moving")
        self.target_deg = float(target_deg)
        rest = self.target_deg + self.p.settle_error_deg * self.rng_rest.standard_normal()
        self.profile = Profile.move(self.p.motion, t_s, self.angle_deg(t_s), rest)

    def halt(self, t_s: float) -> None:
        """Brake and hold where the arm stops (the new target)."""
        self.profile = self.profile.brake(self.p.motion, t_s)
        self.target_deg = float(self.profile.x_A[-1])
