"""The single safety gate every mode's command passes through just before it is written.

Commands are clamped to the configured limits; a non-finite command is replaced by the safe
value. The gate counts what it had to correct so the daemon can report it.
"""
from __future__ import annotations

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
