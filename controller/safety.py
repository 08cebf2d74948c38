"""The safety gates every mode's command passes through just before it is written: ``SafetyGate`` for
voltages (the mirror), ``StageGate`` for positioning axes (the rotation stage's angle; scanner positions).

Commands are clamped to the configured limits; a non-finite command is replaced by the safe
value. The gate counts what it had to correct (``clamped``, ``non_finite``: the metrics' faults
``command_clamped`` and ``command_non_finite``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class SafetyGate:
    low: np.ndarray  # per-axis lower command limit (V)
    high: np.ndarray  # per-axis upper command limit (V)
    safe: np.ndarray  # per-axis safe command (V): used on faults and for non-finite commands
    clamped: int = 0  # ticks whose command exceeded a limit
    non_finite: int = 0  # ticks whose command was NaN/inf and was replaced by `safe`
    _out: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.low = np.asarray(self.low, dtype=np.float64)
        self.high = np.asarray(self.high, dtype=np.float64)
        self.safe = np.clip(np.asarray(self.safe, dtype=np.float64), self.low, self.high)
        if np.any(self.low > self.high):
            raise ValueError(f"safety limits inverted: low={self.low} high={self.high}")
        self._out = self.safe.copy()

    def __call__(self, command: np.ndarray) -> np.ndarray:
        """Return the command that may be written (a view of an internal buffer)."""
        out = self._out
        if not np.all(np.isfinite(command)):
            self.non_finite += 1
            out[:] = self.safe
            return out
        np.clip(command, self.low, self.high, out=out)
        if not np.array_equal(out, command):
            self.clamped += 1
        return out

    def ratio(self, command: np.ndarray) -> float:
        """max |command| relative to its limit on that side (≤ 1 means inside the limits)."""
        lim = np.where(command >= 0, np.abs(self.high), np.abs(self.low))
        return float(np.max(np.abs(command) / np.where(lim > 0, lim, np.inf)))


@dataclass
class StageGate:
    """The gate for a positioning axis (the rotation stage's angle [deg], a scanner's position): the target is
    clamped to [low, high], to ``max_step`` from the current position and to ``max_rate`` × the time since
    the previous command; a non-finite target becomes the safe command (stay where it is)."""

    low: float
    high: float
    max_step: float
    max_rate: float  # per second
    clamped: int = 0  # commands that exceeded a limit
    non_finite: int = 0  # commands that were NaN/inf (replaced by the current position)
    _last_s: float | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.low > self.high or self.max_step <= 0 or self.max_rate <= 0:
            raise ValueError(f"bad stage limits: {self}")

    def __call__(self, target: float, current: float, now_s: float) -> float:
        """The target that may be commanded from ``current`` at time ``now_s`` [s, monotonic]."""
        if not (math.isfinite(target) and math.isfinite(current)):
            self.non_finite += 1
            return current
        reach = self.max_step if self._last_s is None else min(self.max_step, self.max_rate * (now_s - self._last_s))
        out = min(max(target, self.low, current - reach), self.high, current + reach)
        out = min(max(out, self.low), self.high)
        self._last_s = now_s
        if out != target:
            self.clamped += 1
        return out
