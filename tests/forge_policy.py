"""Test fixtures of the forge (issue #23): a small feedback table over a θ grid with the forge contract, steering
toward the goal with a force that depends on θ (so θ̂ moves the policy), random elsewhere when ``noise``."""
from __future__ import annotations

import numpy as np

from learner.bal.table import PolicyTable


def goal_table(problem, grid: int = 5, noise: float = 0.0, seed: int = 0) -> PolicyTable:
    """A (3 × 3 θ grid, N, G, G, 2) table on the whole domain: towards the goal at 3 + θ_0 + θ_1 (+ noise)."""
    axes = (np.array([0.0, 1.0, 3.0]), np.array([0.0, 2.0, 4.0]))
    n = problem.steps
    low, high = np.tile(problem.domain_low, (n, 1)), np.tile(problem.domain_high, (n, 1))
    s = np.linspace(0.0, 1.0, grid)
    pts = np.stack(np.meshgrid(*(lo + s * (hi - lo) for lo, hi in zip(problem.domain_low, problem.domain_high)),
                               indexing="ij"), -1)
    d = problem.goal - pts
    d /= np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-9)
    mag = 3.0 + axes[0][:, None] + axes[1][None, :]  # (3, 3)
    u = mag[:, :, None, None, None, None] * np.broadcast_to(d, (n, grid, grid, 2))
    u = u + noise * np.random.default_rng(seed).standard_normal(u.shape)
    return PolicyTable(axes, low, high, u, problem.u_max)
