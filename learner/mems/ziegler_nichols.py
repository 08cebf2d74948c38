"""Ziegler–Nichols tuning found automatically on the simulator (closed-loop ultimate-gain method).

Per axis, with I = D = 0, the proportional gain is raised until the loop oscillates with a constant
amplitude: that gain is the ultimate gain Ku and the oscillation period the ultimate period Tu.
The classic ZN rule for a PI controller then gives Kp = 0.45·Ku, Ki = Kp / (Tu / 1.2) = 0.54·Ku/Tu
(Ziegler & Nichols 1942). D stays at the baseline, like the RL tuner's action.
"""
from __future__ import annotations

import numpy as np

from controller.modes.mems.pid import BASELINE_GAINS
from firmware_sim.mems.physics import MemsStand
from learner.mems.closed_loop import simulate

STEP_PX = 50.0
SUSTAINED = 0.5  # late oscillation amplitude / first transient amplitude that counts as sustained
FRAMES = 480


def _growth(p: np.ndarray, stand: MemsStand) -> tuple[np.ndarray, np.ndarray]:
    """P-only step responses for gains p (N,) on both axes: late/first amplitude ratio and period [s] (N, 2)."""
    n = len(p)
    gains = np.zeros((n, 2, 3))
    gains[:, :, 0] = p[:, None]
    target = np.full((n, FRAMES, 2), STEP_PX)
    traj = simulate(stand, gains, np.zeros((n, FRAMES, 2)), target, seed=0)
    err = np.nan_to_num(traj.true_positions - target, nan=1e4)
    err -= err[:, FRAMES // 2:].mean(axis=1, keepdims=True)  # P-only loops settle off target
    third = FRAMES // 3
    first = np.abs(err[:, :third]).max(axis=1)
    late = np.abs(err[:, 2 * third:]).max(axis=1)
    growth = late / np.maximum(first, 1e-9)
    period = np.full((n, 2), np.nan)
    for i in range(n):
        for ax in range(2):
            s = np.signbit(err[i, third:, ax])
            crossings = np.flatnonzero(s[1:] != s[:-1])
            if len(crossings) >= 3:
                period[i, ax] = 2 * np.mean(np.diff(crossings)) * stand.params.dt
    return growth, period


def ultimate_gain(stand: MemsStand | None = None, lo: float = 10.0, hi: float = 400.0,
                  rounds: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(Ku (2,) [V/px], Tu (2,) [s]) per axis: the smallest P whose oscillation is sustained (batched log-grid
    search from ``lo``, a gain known to be stable: far below it the P-only loop creeps too slowly to judge)."""
    stand = stand or MemsStand()
    lo_, hi_ = np.full(2, lo), np.full(2, hi)
    for _ in range(rounds):
        grid = np.geomspace(lo_.min(), hi_.max(), 24)  # both axes in one batch
        growth, _ = _growth(grid, stand)
        for ax in range(2):
            unstable = np.flatnonzero(growth[:, ax] >= SUSTAINED)
            if len(unstable) == 0:
                raise RuntimeError(f"axis {ax}: no oscillation up to P = {hi_[ax]}")
            k = unstable[0]
            lo_[ax], hi_[ax] = grid[max(k - 1, 0)], grid[k]
    ku = np.sqrt(lo_ * hi_)
    tu = np.array([_growth(np.array([ku[ax]]), stand)[1][0, ax] for ax in range(2)])
    return ku, tu


def ziegler_nichols_gains(stand: MemsStand | None = None) -> np.ndarray:
    """(2, 3) [axis][P, I, D] SI gains by the ZN PI rule; D from the baseline."""
    ku, tu = ultimate_gain(stand)
    g = BASELINE_GAINS.copy()
    g[:, 0] = 0.45 * ku
    g[:, 1] = 0.54 * ku / tu
    return g
