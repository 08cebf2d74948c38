"""The direct filter (paper §3.1 and §3.3, Eq. 21–23): online particle estimation of the environment parameter θ.

Each step, given the observed state x_n, the applied control u_n and what followed (the next state x_{n+1}, or
the observed step cost in the maze):
- predict (Eq. 21): θ̃ʲ = θʲ + σ_θ ξʲ, a random walk — the pseudo-dynamics whose noise lets the filter explore;
- simulate (Eq. 22): one Euler step per particle, X̃ʲ = x_n + b(x_n, u_n; θ̃ʲ) Δt (or the step cost f(x_n, u_n; θ̃ʲ) Δt);
- weigh (Eq. 23): wʲ ∝ exp(−‖X̃ʲ − x_{n+1}‖² / (2 v)), v = σ²Δt + 2 s_pos² (position read-back noise counts
  twice: at both ends), or exp(−(ỹʲ − y)² / (2 s_cost²)) for costs;
- resample (systematic) to equal weights; θ̂ is the particle mean.
For a state-dependent θ (paper Remark 3.2: one depth per atom type, one cost per maze block) only the components in
force at x_n (``Model.active``: the nearest atom's type; the maze blocks whose soft edges blend at x_n) move and are
resampled, jointly; the others keep their particles, so the data about one part of the map never thins out the
particles of another.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from controller.modes.bal.models import Model


@dataclass(frozen=True)
class FilterConfig:
    particles: int = 1000
    walk_std: np.ndarray = field(default_factory=lambda: np.zeros(1))  # σ_θ per step, one per component
    cost_std: float = 0.0  # std of an observed step cost (the maze)
    position_std: float = 0.0  # std of a position read back (the edge's camera centroid)

    def __post_init__(self) -> None:
        if self.particles < 2:
            raise ValueError("direct filter: at least 2 particles")
        if np.any(np.asarray(self.walk_std) < 0) or self.cost_std < 0 or self.position_std < 0:
            raise ValueError("direct filter: noise levels must be ≥ 0")


class DirectFilter:
    """Particles θʲ (J, P), updated one observed step at a time."""

    def __init__(self, model: Model, prior_mean: np.ndarray, prior_std: np.ndarray, cfg: FilterConfig, dt: float,
                 sigma: float, seed: int | np.random.Generator = 0) -> None:
        self.model, self.cfg, self.dt = model, cfg, float(dt)
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        mean, std = np.asarray(prior_mean, np.float64), np.asarray(prior_std, np.float64)
        self.particles = mean + std * self.rng.standard_normal((cfg.particles, model.theta_dim))
        self.walk = np.broadcast_to(np.asarray(cfg.walk_std, np.float64), (model.theta_dim,)).copy()
        self.var = float(sigma) ** 2 * self.dt + 2.0 * cfg.position_std ** 2
        if model.observes == "state" and self.var <= 0:
            raise ValueError("direct filter: a state likelihood needs σ > 0 or position noise")
        if model.observes == "cost" and cfg.cost_std <= 0:
            raise ValueError("direct filter: a cost likelihood needs cost_std > 0")
        self.updates = 0

    @classmethod
    def for_problem(cls, problem, seed: int | np.random.Generator = 0, particles: int | None = None,
                    position_std: float = 0.0) -> DirectFilter:
        """The filter a problem file configures (controller/modes/bal/problem.py)."""
        cfg = problem.filter
        cfg = FilterConfig(particles or cfg.particles, cfg.walk_std, cfg.cost_std, position_std)
        return cls(problem.model, problem.prior_mean, problem.prior_std, cfg, problem.dt, problem.sigma, seed)

    def estimate(self) -> np.ndarray:
        return self.particles.mean(axis=0)

    def std(self) -> np.ndarray:
        return self.particles.std(axis=0)

    def update(self, x: np.ndarray, u: np.ndarray, x_next: np.ndarray | None = None,
               cost: float | None = None) -> None:
        """One filter step from (x_n, u_n) and what was observed next (x_{n+1}, or the step cost for the maze)."""
        x, u = np.asarray(x, np.float64), np.asarray(u, np.float64)
        seen = [x, u] + [np.asarray(v, np.float64) for v in (x_next, cost) if v is not None]
        if not all(np.all(np.isfinite(v)) for v in seen):
            raise ValueError("direct filter: a non-finite observation (one NaN would collapse the particles)")
        cols = self.model.active(x)
        j = len(self.particles)
        proposal = self.particles.copy()
        proposal[:, cols] += self.walk[cols] * self.rng.standard_normal((j, len(cols)))  # Eq. 21
        if self.model.observes == "state":
            if x_next is None:
                raise ValueError("direct filter: this model observes the next state")
            pred = x + self.dt * self.model.drift_particles(x, u, proposal)  # Eq. 22
            log_w = -((pred - np.asarray(x_next, np.float64)) ** 2).sum(1) / (2.0 * self.var)  # Eq. 23
        else:
            if cost is None:
                raise ValueError("direct filter: this model observes the step cost")
            pred = self.dt * self.model.running_particles(x, u, proposal)
            log_w = -((pred - float(cost)) ** 2) / (2.0 * self.cfg.cost_std ** 2)
        w = np.exp(log_w - log_w.max())
        cdf = np.cumsum(w)
        picks = np.searchsorted(cdf, (self.rng.random() + np.arange(j)) * (cdf[-1] / j))  # systematic
        self.particles[:, cols] = proposal[np.minimum(picks, j - 1)[:, None], cols]
        self.updates += 1
