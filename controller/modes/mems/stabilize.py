"""Stabilize mode: camera frame → PID → mirror voltages, every tick (docs/design.md)."""
from __future__ import annotations

import numpy as np

from controller.modes.mems.pid import Pid
from controller.safety import SafetyGate


class StabilizeMode:
    """Keeps the spot on the target with a PID per axis; gains change only between ticks."""

    def __init__(self, pid: Pid, gate: SafetyGate, baseline_gains: np.ndarray, target_px: np.ndarray) -> None:
        self.pid = pid
        self.gate = gate
        self.baseline_gains = np.array(baseline_gains, dtype=np.float64)
        self.target = np.array(target_px, dtype=np.float64)
        self._measured = np.zeros(2)
        pid.set_gains(self.baseline_gains)

    @property
    def gains(self) -> np.ndarray:
        return self.pid.gains

    def set_gains(self, gains: np.ndarray) -> None:
        self.pid.set_gains(gains)

    def restore_baseline(self) -> None:
        self.pid.set_gains(self.baseline_gains)

    def set_target(self, x_px: float, y_px: float) -> None:
        self.target[0], self.target[1] = x_px, y_px

    def step(self, x_px: float, y_px: float, t_s: float) -> np.ndarray:
        """One tick: returns the command that passed the safety gate [V] (a view; copy to keep)."""
        m = self._measured
        m[0], m[1] = x_px, y_px  # NaN for a lost spot: the PID holds that axis
        return self.gate(self.pid.update(m, self.target, t_s))

    def safe(self) -> np.ndarray:
        """The command for a tick without a valid reading (device lost): the configured safe value."""
        self.pid.reset()
        return self.gate.safe
