"""The ptycho mode's settings: the daemon config's [ptycho] section (a leaf module, so controller/config.py
imports no mode)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import ConfigDict

from controller.modes.ptycho import spec
from controller.modes.ptycho.optics import Optics
from controller.modes.ptycho.path import StageModel

_GRID = Optics().grid


@dataclass(frozen=True)
class PtychoConfig:
    """Also the daemon config's [ptycho] section (controller/config.py): unknown keys and inf/nan are errors."""

    __pydantic_config__ = ConfigDict(extra="forbid", allow_inf_nan=False)
    positions: int = 250  # per scan (of grid² = 10 000)
    subsequences: int = 5  # the first Halton, each next one the policy's (sizes as even as possible)
    iterations: int = 5  # reconstruction iterations per sub-sequence (warm-started)
    defocus_A: float = 0.0  # the instrument's probe defocus (checked against the device's Info)
    dose: float = Optics.dose  # electrons per pattern at the nominal exposure (checked against the device)
    exposure_us: int = 1000  # per pattern
    min_A: float = 0.0  # the edge's own stage limits, both axes [Å] (positions are planned inside them)
    max_A: float = (_GRID - 1) * Optics.pixel_A
    max_step_A: float = 1e3  # largest move per command [Å]
    max_rate_A_s: float = 1e9  # largest move per second since the previous command [Å/s]
    speed_A_s: float = 2.0e4  # the stage's top speed per axis: for ordering and the reported move times [Å/s]
    accel_A_s2: float = 4.0e7  # its acceleration per axis [Å/s²]
    settle_s: float = 1.0e-4  # its settle time [s]
    decision_budget_s: float = 0.5  # one policy decision (wall) before it counts as a failure [s]
    poll_s: float = 0.001  # StageStatus polling period while waiting [s, wall]
    move_timeout_s: float = 10.0  # [s, wall]
    request_timeout_s: float = 0.5  # per command / reply [s, wall]

    def __post_init__(self) -> None:
        if not 1 <= self.subsequences <= self.positions <= _GRID * _GRID:
            raise ValueError(f"need 1 ≤ subsequences ≤ positions ≤ {_GRID * _GRID}: {self}")
        if max(self.sizes) > spec.M_MAX:
            raise ValueError(f"a sub-sequence of {max(self.sizes)} positions exceeds the policy's M_MAX = {spec.M_MAX}")
        if self.iterations < 1 or not 0 < self.exposure_us <= 10_000_000:
            raise ValueError(f"need iterations ≥ 1 and 1 µs ≤ exposure ≤ 10 s: {self}")
        if not self.min_A <= self.max_A or min(self.max_step_A, self.max_rate_A_s) <= 0.0:
            raise ValueError(f"bad stage limits: {self}")
        if min(self.decision_budget_s, self.poll_s, self.move_timeout_s, self.request_timeout_s) <= 0.0:
            raise ValueError(f"need a positive decision budget, poll_s and timeouts: {self}")
        if not math.isfinite(self.defocus_A):
            raise ValueError(f"defocus must be finite: {self}")
        self.optics, self.stage  # raise for bad optics or stage model
        inside = int(self.allowed.sum())
        if inside * inside < self.positions:
            raise ValueError(f"the stage limits [{self.min_A}, {self.max_A}] Å hold {inside * inside} grid "
                             f"positions, fewer than {self.positions}")

    @property
    def allowed(self) -> np.ndarray:
        """Per grid index (both axes): its position index · pixel_A [Å] (as the scan commands it) lies within
        [min_A, max_A]."""
        position = np.arange(self.optics.grid) * self.optics.pixel_A
        return (position >= self.min_A) & (position <= self.max_A)

    @property
    def sizes(self) -> list[int]:
        """Positions per sub-sequence."""
        return [len(a) for a in np.array_split(np.arange(self.positions), self.subsequences)]

    @property
    def optics(self) -> Optics:
        return Optics(defocus_A=self.defocus_A, dose=self.dose)

    @property
    def stage(self) -> StageModel:
        return StageModel(Optics.pixel_A, self.speed_A_s, self.accel_A_s2, self.settle_s)
