"""Stand calibration checks: the paper's Wiener test (Table 2) and a coarse per-axis gain grid.

``python -m learner.mems.calibration`` prints the numbers quoted in docs/calibration.md.
"""
from __future__ import annotations

import itertools

import numpy as np

from controller.modes.mems.pid import BASELINE_GAINS, per_frame_to_si
from firmware_sim.mems import disturbance
from firmware_sim.mems.physics import MemsStand
from learner.mems.closed_loop import simulate, tracking_stats

WIENER_FRAMES = 1000  # the paper's test length [frames]


def wiener_test(stand: MemsStand, gains: np.ndarray, seeds: int = 16, seed: int = 0) -> dict[str, float]:
    """Table 2 statistics of ``gains`` (SI, (2, 3)) over ``seeds`` Wiener runs of 1000 frames."""
    d = disturbance.wiener(seeds, WIENER_FRAMES, seed, frame_rate=stand.params.frame_rate_hz)
    return tracking_stats(simulate(stand, gains, d, seed=seed + 1))


def grid_search(
    stand: MemsStand,
    p: list[float],
    i: list[float],
    d: list[float],
    seeds: int = 6,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis grid over per-frame gains (P, I, D), all stands in one batch.

    Every grid point runs on both axes at once (the axes are coupled only weakly); returns the
    best per-frame gains (2, 3) by mean |error| per axis and that mean error (2,) [px].
    """
    grid = np.array(list(itertools.product(p, i, d)), dtype=np.float64)
    n = len(grid)
    gains = np.repeat(per_frame_to_si(np.stack([grid, grid], axis=1), stand.params.frame_rate_hz), seeds, axis=0)
    dist = np.tile(disturbance.wiener(seeds, WIENER_FRAMES, seed, frame_rate=stand.params.frame_rate_hz), (n, 1, 1))
    traj = simulate(stand, gains, dist, seed=seed + 1)
    err = np.abs(traj.positions - traj.targets)
    err = np.where(np.isnan(err), np.inf, err).reshape(n, seeds, WIENER_FRAMES, 2).mean(axis=(1, 2))
    best = err.argmin(axis=0)
    return np.stack([grid[best[0]], grid[best[1]]]), err[best, [0, 1]]


def main() -> None:
    stand = MemsStand()
    base = wiener_test(stand, BASELINE_GAINS)
    best_pf, _ = grid_search(stand, [5, 10, 15, 20, 30, 40, 60], [3, 5, 8, 12, 18, 25, 35, 50], [0, 2.5, 5, 10])
    best = wiener_test(stand, per_frame_to_si(best_pf, stand.params.frame_rate_hz))
    print("baseline", {k: round(v, 2) for k, v in base.items()})
    print("best per-frame gains x, y:", best_pf.tolist())
    print("best", {k: round(v, 2) for k, v in best.items()})
    print(f"reduction of mean Δ: {1 - best['delta_mean'] / base['delta_mean']:.1%}")


if __name__ == "__main__":
    main()
