"""Where a scan goes and in which order, defined once for the edge (controller/modes/ptycho/scan.py) and the
learner (learner/ptycho): Halton positions, snapping policy outputs to unvisited grid points, and ordering a
sub-sequence's positions to shorten the stage's path.

Positions are grid indices (row i, column j), 0 … grid − 1; a policy works in normalised coordinates
p = index / (grid − 1) ∈ [0, 1]. The first sub-sequence is the unscrambled Halton sequence (bases 2, 3); a
sub-sequence the policy could not choose continues it.

Snapping (`snap_unvisited`): index = round(p · (grid − 1)) after clipping p to [0, 1]; a point already visited
(earlier, or earlier in the same sub-sequence) moves to the nearest unvisited grid point (Euclidean; ties to the
first in row-major order), so a sub-sequence always adds distinct new positions.

Ordering (`order_path`): nearest neighbour from where the stage is, then 2-opt on the open path, both on the
estimated move time of `StageModel` (each axis a rest-to-rest trapezoid, the move taking the slower axis's
time, then the settle time).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from controller.modes.ptycho.spec import M_MAX


def halton(n: int, start: int = 0) -> np.ndarray:
    """Points start … start + n − 1 of the 2-D unscrambled Halton sequence, (n, 2) in [0, 1)."""
    if n < 0 or start < 0:
        raise ValueError(f"need n ≥ 0 and start ≥ 0, got n={n}, start={start}")
    from scipy.stats import qmc  # here, not at import: scipy.stats costs every daemon ~1 s of start-up

    sampler = qmc.Halton(d=2, scramble=False)
    if start:
        sampler.fast_forward(start)
    return sampler.random(n)


def prior(done: int) -> np.ndarray:
    """The edge's own next sub-sequence after ``done`` positions, the policy's ``prior`` input (spec.py): the
    Halton continuation, M_MAX points (M_MAX, 2) in [0, 1) (a sub-sequence of M takes the first M)."""
    return halton(M_MAX, start=done)


def snap_unvisited(points: np.ndarray, visited: np.ndarray) -> np.ndarray:
    """Grid positions (M, 2) int for normalised ``points`` (M, 2), none in ``visited`` (grid, grid) bool nor
    repeated (module doc). ValueError for non-finite points or fewer unvisited positions than points."""
    points = np.asarray(points, np.float64)
    grid = visited.shape[0]
    if points.ndim != 2 or points.shape[1] != 2 or visited.shape != (grid, grid):
        raise ValueError(f"need points (M, 2) and a square visited mask, got {points.shape} and {visited.shape}")
    if not np.isfinite(points).all():
        raise ValueError("points must be finite")
    taken = visited.copy()
    if len(points) > taken.size - taken.sum():
        raise ValueError(f"{len(points)} points but only {taken.size - taken.sum()} unvisited grid positions")
    snapped = np.rint(np.clip(points, 0.0, 1.0) * (grid - 1)).astype(np.int64)
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    out = np.empty_like(snapped)
    for m, (i, j) in enumerate(snapped):
        if taken[i, j]:
            d2 = np.where(taken.ravel(), np.iinfo(np.int64).max, (rows - i) ** 2 + (cols - j) ** 2)
            i, j = divmod(int(np.argmin(d2)), grid)  # argmin: the first (row-major) of equal distances
        taken[i, j] = True
        out[m] = i, j
    return out


@dataclass(frozen=True)
class StageModel:
    """The edge's estimate of the stage's motion (per-axis trapezoids) for ordering and reporting."""

    pixel_A: float = 0.2  # grid step [Å]
    speed_A_s: float = 2.0e4  # per-axis top speed [Å/s]
    accel_A_s2: float = 4.0e7  # per-axis acceleration [Å/s²]
    settle_s: float = 1.0e-4  # after arrival [s]

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) and v > 0 for v in (self.pixel_A, self.speed_A_s, self.accel_A_s2)) or not (
                math.isfinite(self.settle_s) and self.settle_s >= 0):
            raise ValueError(f"stage model needs positive pixel, speed, acceleration and settle ≥ 0: {self}")

    def axis_time_s(self, distance_A: np.ndarray) -> np.ndarray:
        """Rest-to-rest time over ``distance_A`` (≥ 0): a triangle below 2·(v²/2a), a trapezoid above."""
        d = np.asarray(distance_A, np.float64)
        v, a = self.speed_A_s, self.accel_A_s2
        return np.where(d < v * v / a, 2.0 * np.sqrt(d / a), d / v + v / a)

    def move_time_s(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Move + settle time between grid positions ``a`` and ``b`` (…, 2); 0 when they are equal."""
        delta = np.abs(np.asarray(b, np.float64) - np.asarray(a, np.float64)) * self.pixel_A
        t = self.axis_time_s(delta).max(-1)
        return np.where(t > 0, t + self.settle_s, 0.0)

    def cost(self, start: np.ndarray, positions: np.ndarray) -> tuple[float, float]:
        """(path length [Å], estimated move time [s]) visiting ``positions`` (M, 2) in order from ``start``."""
        path = np.vstack([np.reshape(start, (1, 2)), positions]).astype(np.float64)
        steps = np.diff(path, axis=0)
        length = float(np.hypot(steps[:, 0], steps[:, 1]).sum() * self.pixel_A)
        return length, float(self.move_time_s(path[:-1], path[1:]).sum())


def raster_order(positions: np.ndarray) -> np.ndarray:
    """Row-major order of ``positions`` (M, 2): the permutation."""
    return np.lexsort((positions[:, 1], positions[:, 0]))


def order_path(start: np.ndarray, positions: np.ndarray, stage: StageModel, max_sweeps: int = 20) -> np.ndarray:
    """A short open path from ``start`` through ``positions`` (M, 2): nearest neighbour, then 2-opt (module
    doc). Returns the permutation of ``positions``."""
    m = len(positions)
    nodes = np.vstack([np.reshape(start, (1, 2)), positions])
    cost = stage.move_time_s(nodes[:, None, :], nodes[None, :, :])  # (M + 1)², node 0 = start
    tour = [0]
    left = set(range(1, m + 1))
    while left:
        here = tour[-1]
        nxt = min(left, key=lambda n: (cost[here, n], n))
        tour.append(nxt)
        left.remove(nxt)
    path = np.array(tour)
    for _ in range(max_sweeps):  # 2-opt: reverse path[i..j] when that shortens it (the start stays first)
        improved = False
        for i in range(1, m):
            j = np.arange(i + 1, m + 1)
            before = cost[path[i - 1], path[i]] + np.where(j < m, cost[path[j], path[np.minimum(j + 1, m)]], 0.0)
            after = cost[path[i - 1], path[j]] + np.where(j < m, cost[path[i], path[np.minimum(j + 1, m)]], 0.0)
            gain = before - after
            best = int(np.argmax(gain))
            if gain[best] > 1e-12:
                path[i:j[best] + 1] = path[i:j[best] + 1][::-1].copy()
                improved = True
        if not improved:
            break
    return path[1:] - 1
