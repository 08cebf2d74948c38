"""The transceiver mode's settings: the daemon config's [scatter] section (a leaf module, so controller/config.py
imports no mode)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import ConfigDict

from controller.modes.scatter import spec

RECON_ORDERS = (1, 2, 3)  # the Born orders the edge reconstructs with (controller/modes/scatter/recon.py)


@dataclass(frozen=True)
class ScatterConfig:
    """Also the daemon config's [scatter] section (controller/config.py): unknown keys and inf/nan are errors. A scan
    places the policy contract's K = spec.BUDGET transceivers."""

    __pydantic_config__ = ConfigDict(extra="forbid", allow_inf_nan=False)
    n: int = 32  # the grid (checked against the device's Info)
    order: int = 2  # the Born order of the instrument and of the reconstruction (checked against the device)
    lam: float = 1e-5  # the reconstruction's L1 weight λ
    iterations: int = 20  # warm-started L-BFGS iterations per step, off the loop
    final_iterations: int = 20  # more after the last step
    min_deg: float = 0.0  # the edge's own arm limits [deg]: a decision outside them falls back
    max_deg: float = 359.0
    max_step_deg: float = 360.0  # the stage gate's largest move per command [deg]
    max_rate_deg_s: float = 1e9  # … and per second since the previous command [deg/s]
    decision_budget_s: float = 0.5  # one policy decision (wall) before it counts as a failure [s]
    poll_s: float = 0.002  # ArmStatus polling period while waiting [s, wall]
    move_timeout_s: float = 10.0  # [s, wall]
    request_timeout_s: float = 0.5  # per command / reply [s, wall]

    def __post_init__(self) -> None:
        if self.n < 2 or self.order not in RECON_ORDERS:
            raise ValueError(f"need n ≥ 2 and order in {RECON_ORDERS}: {self}")
        if self.lam < 0 or self.iterations < 1 or self.final_iterations < 0:
            raise ValueError(f"need lam ≥ 0, iterations ≥ 1 and final_iterations ≥ 0: {self}")
        if not 0.0 <= self.min_deg <= self.max_deg < spec.N_ANGLES or min(self.max_step_deg, self.max_rate_deg_s) <= 0:
            raise ValueError(f"bad arm limits (0 ≤ min_deg ≤ max_deg < 360, positive step and rate): {self}")
        if len(self.allowed_angles) < spec.BUDGET:
            raise ValueError(f"the arm limits hold {len(self.allowed_angles)} integer angles, fewer than the "
                             f"budget K = {spec.BUDGET}")
        if min(self.decision_budget_s, self.poll_s, self.move_timeout_s, self.request_timeout_s) <= 0.0:
            raise ValueError(f"need a positive decision budget, poll_s and timeouts: {self}")

    @property
    def allowed_angles(self) -> range:
        """The integer angles inside the arm limits."""
        return range(math.ceil(self.min_deg), math.floor(self.max_deg) + 1)
