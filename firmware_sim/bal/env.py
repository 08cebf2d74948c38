"""The BAL environments: Euler–Maruyama steps of a problem's controlled SDE with the TRUE θ, batched.

X_{n+1} = X_n + b(X_n, u_n; θ*) Δt + σ √Δt ξ_n (paper Eq. 12/17). The observed step cost is f(X_n, u_n; θ*) Δt,
plus the cost meter's noise where the problem has one (the maze: its agent learns θ from these costs).
Controls are projected onto the problem's control set before they act.
"""
from __future__ import annotations

import numpy as np

from controller.modes.bal.problem import Problem


class SdeEnv:
    def __init__(self, problem: Problem, batch: int = 1, seed: int | np.random.Generator = 0) -> None:
        if batch < 1:
            raise ValueError("SdeEnv: batch ≥ 1")
        self.problem, self.batch = problem, batch
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.x = np.zeros((batch, 2))
        self.n = 0

    def starts(self) -> np.ndarray:
        """Initial states: x0, or uniform in the problem's start box."""
        p = self.problem
        if p.start_low is None:
            return np.broadcast_to(p.x0, (self.batch, 2)).copy()
        return p.start_low + (p.start_high - p.start_low) * self.rng.random((self.batch, 2))

    def reset(self, x0: np.ndarray | None = None) -> np.ndarray:
        self.x = self.starts() if x0 is None else np.broadcast_to(np.asarray(x0, np.float64), (self.batch, 2)).copy()
        self.n = 0
        return self.x.copy()

    def step(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply u (B, m) for one Δt: (next state (B, 2), observed step cost (B,))."""
        p, m = self.problem, self.problem.model
        if self.n >= p.steps:
            raise ValueError(f"SdeEnv: the episode has {p.steps} steps; reset first")
        u = m.project(np.asarray(u, np.float64).reshape(self.batch, m.control_dim))
        cost = m.running(self.x, u, p.theta_true) * p.dt
        if p.cost_noise > 0:
            cost = cost + p.cost_noise * self.rng.standard_normal(self.batch)
        drift = m.drift(self.x, u, p.theta_true)
        self.x = self.x + drift * p.dt + p.sigma * np.sqrt(p.dt) * self.rng.standard_normal((self.batch, 2))
        self.n += 1
        return self.x.copy(), cost

    def terminal_cost(self, x: np.ndarray | None = None) -> np.ndarray:
        return self.problem.model.terminal(self.x if x is None else x)
