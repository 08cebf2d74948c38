"""The angles mode's settings: the daemon config's [angles] section (a leaf module, so controller/config.py
imports no mode)."""
from __future__ import annotations

from dataclasses import dataclass

from pydantic import ConfigDict


@dataclass(frozen=True)
class AnglesConfig:
    """Also the daemon config's [angles] section (controller/config.py): unknown keys and inf/nan are errors."""

    __pydantic_config__ = ConfigDict(extra="forbid", allow_inf_nan=False)
    size: int = 63  # reconstruction N = detector bins (odd)
    n_angles: int = 180  # candidate grid over [0°, 180°) (tomo.angle_grid)
    max_angles: int = 20  # M
    exposure_s: float = 0.08  # per projection (paper: 80 ms)
    sirt_iterations: int = 30  # per update (warm: ≈ a cold 150-iteration SIRT, see docs/design.md)
    warm_start: bool = True  # start each SIRT from the previous reconstruction
    min_deg: float = 0.0  # the edge's own limits on commanded angles [deg]
    max_deg: float = 180.0
    max_step_deg: float = 180.0  # largest move per command [deg]
    max_rate_deg_s: float = 1e5  # largest move per second since the previous command [deg/s]
    poll_s: float = 0.005  # StageStatus polling period while waiting [s, wall]
    move_timeout_s: float = 30.0  # [s, wall]
    request_timeout_s: float = 0.5  # per command / reply [s, wall]

    def __post_init__(self) -> None:
        if self.size < 3 or self.size % 2 == 0 or not 1 <= self.max_angles <= self.n_angles:
            raise ValueError(f"need an odd size ≥ 3 and 1 ≤ max_angles ≤ n_angles: {self}")
        if not 0.0 < self.exposure_s <= 10.0 or self.min_deg > self.max_deg or min(self.max_step_deg,
                                                                                    self.max_rate_deg_s) <= 0.0:
            raise ValueError(f"bad exposure or angle limits: {self}")
        if self.sirt_iterations < 1 or min(self.poll_s, self.move_timeout_s, self.request_timeout_s) <= 0.0:
            raise ValueError(f"need sirt_iterations ≥ 1 and positive poll_s and timeouts: {self}")
