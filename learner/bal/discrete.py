"""Discretisations shared by the tabular references (Q-learning, the DP oracle) and their Monte-Carlo score.

- `polar_actions`: the control set {0} ∪ speeds × directions (the paper's force magnitude F and steering angle
  φ; for a scalar control ±speeds), magnitudes k·u_max/speeds, k = 1..speeds.
- `Cells`: a uniform grid of G×G cells over the problem's domain; positions outside are clamped to the edge
  cells.
- `straight_line`: the naive baseline, the constant velocity that reaches the goal at T, u = (goal − x)/(T − t_n),
  projected onto |u| ≤ u_max (it ignores the costs and, in the forge, the atoms).
Policies are scored by learner/bal/rollout.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from learner.bal.rollout import Policy

__all__ = ["polar_actions", "Cells", "straight_line"]


def polar_actions(control_dim: int, u_max: float, speeds: int, directions: int) -> np.ndarray:
    """(A, m) controls: zero, then speeds × directions (m = 2: angles 2πk/directions; m = 1: ±, directions unused)."""
    if speeds < 1 or u_max <= 0:
        raise ValueError(f"need speeds >= 1 and u_max > 0, got {speeds}, {u_max}")
    mags = u_max * np.arange(1, speeds + 1) / speeds
    if control_dim == 1:
        return np.concatenate([[0.0], mags, -mags])[:, None]
    if control_dim != 2:
        raise ValueError(f"polar actions need a 1- or 2-D control, got {control_dim}")
    if directions < 1:
        raise ValueError(f"need directions >= 1, got {directions}")
    phi = 2 * np.pi * np.arange(directions) / directions
    unit = np.stack([np.cos(phi), np.sin(phi)], axis=1)
    return np.concatenate([np.zeros((1, 2)), (mags[:, None, None] * unit[None]).reshape(-1, 2)])


@dataclass(frozen=True)
class Cells:
    """G×G uniform cells over [low, high]; cell index = i·G + j with i along x, j along y."""
    low: np.ndarray
    high: np.ndarray
    count: int  # G, cells per axis

    def __post_init__(self) -> None:
        if self.count < 1 or np.any(np.asarray(self.high) <= np.asarray(self.low)):
            raise ValueError(f"need count >= 1 and high > low, got {self.count}, {self.low}, {self.high}")

    @classmethod
    def of(cls, problem, count: int) -> "Cells":
        return cls(np.asarray(problem.domain_low, np.float64), np.asarray(problem.domain_high, np.float64), count)

    @property
    def size(self) -> int:
        return self.count ** 2

    def index(self, x: np.ndarray) -> np.ndarray:
        """(B,) cell index of positions x (B,2)."""
        ij = np.floor((np.asarray(x) - self.low) / (self.high - self.low) * self.count).astype(np.int64)
        ij = np.clip(ij, 0, self.count - 1)
        return ij[:, 0] * self.count + ij[:, 1]

    def centres(self) -> np.ndarray:
        """(G², 2) cell centres in index order."""
        h = (self.high - self.low) / self.count
        c = [self.low[k] + h[k] * (np.arange(self.count) + 0.5) for k in range(2)]
        return np.stack(np.meshgrid(c[0], c[1], indexing="ij"), axis=-1).reshape(-1, 2)


def straight_line(problem) -> Policy:
    """policy(n, x) = (goal − x)/(T − t_n), projected by the model onto the control set."""
    if problem.goal is None:
        raise ValueError(f"straight_line needs a goal; problem {problem.name!r} has none")
    goal = np.asarray(problem.goal, np.float64)

    def policy(n: int, x: np.ndarray) -> np.ndarray:
        return problem.model.project((goal - x) / ((problem.steps - n) * problem.dt))

    return policy
