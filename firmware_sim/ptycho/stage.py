"""The ptychography instrument's (x, y) scan stage: where the probe sits on the sample.

Positions are in Å, (x, y) = (column, row): grid position (i, j) of the 100 × 100 scan is (y, x) = (i, j) ·
Optics.pixel_A, so the range is 0 … 19.8 Å on both axes by default (`StageParams.range_A`, configurable).

Motion is analytic (no integration step): each axis follows its own rest-to-rest trapezoid (speed and
acceleration limited; a short move is a triangle), so a move takes `move_time_s` =
max over the axes of `axis_time_s(|Δ|)` — it depends on the distance, which is what an edge that orders its
positions to shorten the path gains from. "In position" comes `settle_s` after both axes have arrived (the
ringing of a real deflection is not rendered; `settle_s` is the firmware's wait for it). The stage then rests
at the target plus a repeatability error (Gaussian, σ = `settle_error_A` per axis, drawn per move); the
read-back adds fresh Gaussian noise (σ = `readback_noise_A`) and is quantised to `readback_step_A`.
`halt` brakes each axis at the acceleration limit and holds where it comes to rest.

Defaults are those of a slew-limited STEM probe deflection (assumed, not a measured instrument): 2·10⁴ Å/s
(2 µm/s) top speed reached in 0.5 ms (4·10⁷ Å/s²), so a one-pixel step (0.2 Å) takes 0.14 ms and a jump
across the 19.8 Å field 1.5 ms; 0.1 ms settle; at rest within 0.01 Å (1 pm, a twentieth of a pixel);
read-back noise 5 pm, quantised to 1 pm. With the detector's 1 ms exposure, a scan in a random order spends
about as long moving as exposing, a short path much less.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from controller.modes.ptycho.optics import Optics


@dataclass(frozen=True)
class StageParams:
    max_speed_A_s: float = 2.0e4  # per-axis speed limit [Å/s]
    accel_A_s2: float = 4.0e7  # per-axis acceleration / deceleration limit [Å/s²]
    settle_s: float = 1.0e-4  # from arrival on both axes to "in position" [s]
    settle_error_A: float = 0.01  # σ of the rest position about the target, per axis and move [Å]
    readback_noise_A: float = 0.005  # σ of the read-back noise, fresh per reading [Å]
    readback_step_A: float = 0.001  # read-back quantisation [Å]
    range_A: tuple[float, float] = (0.0, (Optics().grid - 1) * Optics().pixel_A)  # both axes [Å]

    def __post_init__(self) -> None:
        positive = (self.max_speed_A_s, self.accel_A_s2, self.readback_step_A)
        if not all(math.isfinite(v) and v > 0 for v in positive):
            raise ValueError(f"stage speed, acceleration and read-back step must be finite and > 0: {self}")
        if not all(math.isfinite(v) and v >= 0 for v in (self.settle_s, self.settle_error_A, self.readback_noise_A)):
            raise ValueError(f"stage settle time and errors must be finite and ≥ 0: {self}")
        lo, hi = self.range_A
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"stage range must be finite with min < max, got {self.range_A}")

    @classmethod
    def for_optics(cls, optics: Optics, **kw) -> StageParams:
        """Defaults with the range spanning ``optics``' scan grid: 0 … (grid − 1) · pixel_A."""
        return cls(range_A=(0.0, (optics.grid - 1) * optics.pixel_A), **kw)

    def in_range(self, x_A: float, y_A: float) -> bool:
        lo, hi = self.range_A
        return lo <= x_A <= hi and lo <= y_A <= hi


def axis_time_s(p: StageParams, distance_A: np.ndarray | float) -> np.ndarray:
    """Duration of a rest-to-rest move over ``distance_A`` on one axis: a trapezoid d/v + v/a when the axis
    reaches top speed (d ≥ v²/a), else a triangle 2·√(d/a)."""
    d = np.abs(np.asarray(distance_A, np.float64))
    v, a = p.max_speed_A_s, p.accel_A_s2
    return np.where(d >= v * v / a, d / v + v / a, 2.0 * np.sqrt(d / a))


def move_time_s(p: StageParams, start_A: np.ndarray, end_A: np.ndarray) -> np.ndarray:
    """Time from the command to "in position" for moves (..., 2) → (...): the slower axis plus the settle
    time (0 for a move of zero length, which is in position at once)."""
    delta = np.asarray(end_A, np.float64) - np.asarray(start_A, np.float64)
    t = axis_time_s(p, delta).max(axis=-1)
    return np.where(t > 0, t + p.settle_s, 0.0)


@dataclass(frozen=True)
class Profile:
    """One axis's motion: piecewise constant acceleration from ``t_s[k]`` on (position ``x_A[k]``, velocity
    ``v_A_s[k]``, acceleration ``a_A_s2[k]``); the last piece is at rest."""

    t_s: np.ndarray
    x_A: np.ndarray
    v_A_s: np.ndarray
    a_A_s2: np.ndarray

    @classmethod
    def rest(cls, t_s: float, x_A: float) -> Profile:
        return cls(*(np.array([v], np.float64) for v in (t_s, x_A, 0.0, 0.0)))

    @classmethod
    def move(cls, p: StageParams, t_s: float, start_A: float, end_A: float) -> Profile:
        """Rest-to-rest trapezoid (or triangle) from ``start_A`` at ``t_s`` to ``end_A``."""
        d = end_A - start_A
        if d == 0.0:
            return cls.rest(t_s, end_A)
        sign, a = math.copysign(1.0, d), p.accel_A_s2
        v_peak = min(p.max_speed_A_s, math.sqrt(abs(d) * a))
        t_acc = v_peak / a
        t_total = float(axis_time_s(p, d))
        x_acc = start_A + sign * a * t_acc * t_acc / 2.0
        x_dec = end_A - sign * a * t_acc * t_acc / 2.0
        return cls(np.array([t_s, t_s + t_acc, t_s + t_total - t_acc, t_s + t_total]),
                   np.array([start_A, x_acc, x_dec, end_A]), np.array([0.0, sign * v_peak, sign * v_peak, 0.0]),
                   np.array([sign * a, 0.0, -sign * a, 0.0]))

    def at(self, t_s: float) -> tuple[float, float]:
        """(position, velocity) at time ``t_s`` (before the first piece: its start)."""
        k = max(int(np.searchsorted(self.t_s, t_s, side="right")) - 1, 0)
        dt = max(t_s - self.t_s[k], 0.0)
        a = self.a_A_s2[k]
        return float(self.x_A[k] + self.v_A_s[k] * dt + a * dt * dt / 2.0), float(self.v_A_s[k] + a * dt)

    @property
    def end_s(self) -> float:
        """When the axis comes to rest."""
        return float(self.t_s[-1])

    def brake(self, p: StageParams, t_s: float) -> Profile:
        """Brake from the motion at ``t_s`` at the acceleration limit and rest where the axis stops."""
        x, v = self.at(t_s)
        if v == 0.0 or t_s >= self.end_s:
            return Profile.rest(t_s, x)
        t_stop = abs(v) / p.accel_A_s2
        return Profile(np.array([t_s, t_s + t_stop]), np.array([x, x + v * abs(v) / (2.0 * p.accel_A_s2)]),
                       np.array([v, 0.0]), np.array([-math.copysign(p.accel_A_s2, v), 0.0]))


class ScanStage:
    """One (x, y) stage in device time. ``command`` and ``halt`` take the current time; the state is the
    commanded target and the two axes' profiles, which end at the target plus the move's rest error."""

    def __init__(self, params: StageParams = StageParams(), seed: int = 0, t_s: float = 0.0) -> None:
        self.p = params
        # separate streams: the rest errors do not depend on how often the position was read
        self.rng_rest, self.rng_readback = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
        centre = sum(params.range_A) / 2.0  # power-up: at rest in the middle of the range
        self.target_A = np.array([centre, centre])
        self.axes = [Profile.rest(t_s, centre), Profile.rest(t_s, centre)]

    def position_A(self, t_s: float) -> np.ndarray:
        """The actual (x, y) [Å]."""
        return np.array([ax.at(t_s)[0] for ax in self.axes])

    def moving(self, t_s: float) -> bool:
        return t_s < max(ax.end_s for ax in self.axes)

    def in_position(self, t_s: float) -> bool:
        return t_s >= max(ax.end_s for ax in self.axes) + self.p.settle_s

    def readback_A(self, t_s: float) -> np.ndarray:
        """What the position sensor reports: actual + noise, quantised."""
        q = self.p.readback_step_A
        noisy = self.position_A(t_s) + self.p.readback_noise_A * self.rng_readback.standard_normal(2)
        return np.round(noisy / q) * q

    def command(self, t_s: float, x_A: float, y_A: float) -> None:
        """Start a move to (x, y) from rest. ValueError when the target is out of range or not finite, or the
        stage still moves (the emulator answers these with a Nak first)."""
        if not (math.isfinite(x_A) and math.isfinite(y_A)) or not self.p.in_range(x_A, y_A):
            raise ValueError(f"target ({x_A}, {y_A}) Å outside the stage range {self.p.range_A} Å")
        if self.moving(t_s):
            raise ValueError("the stage is moving")
        self.target_A = np.array([x_A, y_A], np.float64)
        rest = self.target_A + self.p.settle_error_A * self.rng_rest.standard_normal(2)
        self.axes = [Profile.move(self.p, t_s, float(s), float(e)) for s, e in zip(self.position_A(t_s), rest)]

    def halt(self, t_s: float) -> None:
        """Brake both axes and hold where they stop (the new target)."""
        self.axes = [ax.brake(self.p, t_s) for ax in self.axes]
        self.target_A = np.array([ax.x_A[-1] for ax in self.axes])
