"""The forge mode's settings: the daemon config's [forge] section (a leaf module, so controller/config.py imports no
mode). The loop itself is [loop]: the forge mode runs timer-paced (``pacing = "timer"``; the device answers
commands, it does not stream), at 100 Hz unless [loop] says otherwise (LOOP_DEFAULTS)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import ConfigDict


@dataclass(frozen=True)
class ForgeConfig:
    """Also the daemon config's [forge] section (controller/config.py): unknown keys and inf/nan are errors."""

    __pydantic_config__ = ConfigDict(extra="forbid", allow_inf_nan=False)
    MODE: ClassVar[str] = "forge"
    LOOP_DEFAULTS: ClassVar[dict[str, Any]] = {"rate_hz": 100.0, "pacing": "timer"}
    problem: str = "forge"  # controller/modes/bal/problem.load_problem: a name or a TOML path (the device's)
    particles: int = 0  # the direct filter's particles; 0: the problem file's
    filter_seed: int = 0  # the filter's seed
    position_std: float = 1e-4  # the read-back's scatter [length unit] (the forge camera's centroid: ~1e-4)
    x0: tuple[float, float] | None = None  # where an episode starts; None: the problem's x0
    decision_budget_s: float = 0.002  # one policy decision (wall) before it counts as failed [s]
    reply_timeout_s: float = 0.1  # a command's Position must come back within this, else the episode stops [s]
    episode_timeout_s: float = 120.0  # the `episode` push op waits at most this long for its episode [s]

    def __post_init__(self) -> None:
        if self.particles < 0 or self.filter_seed < 0 or not 0 <= self.position_std < math.inf:
            raise ValueError(f"need particles ≥ 0 (0: the problem's), filter_seed ≥ 0 and position_std ≥ 0: {self}")
        if self.x0 is not None and not all(math.isfinite(v) for v in self.x0):
            raise ValueError(f"x0 must be finite, got {self.x0}")
        if min(self.decision_budget_s, self.reply_timeout_s, self.episode_timeout_s) <= 0:
            raise ValueError(f"need a positive decision budget and timeouts: {self}")
