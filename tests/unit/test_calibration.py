"""The default stand reproduces the paper's baseline behaviour (docs/calibration.md)."""
import numpy as np

from controller.modes.mems.pid import BASELINE_GAINS, per_frame_to_si
from firmware_sim.mems import disturbance
from firmware_sim.mems.physics import MemsStand
from learner.mems.calibration import grid_search, wiener_test
from learner.mems.closed_loop import simulate, tracking_stats

# best per-frame gains of the coarse grid in docs/calibration.md (rows x, y; P, I, D)
GRID_BEST = np.array([[5.0, 25.0, 10.0], [15.0, 35.0, 10.0]])
PAPER_A_TEST = np.array([[15.0, 15.3, 0.0], [13.0, 13.8, 2.5]])


def test_baseline_wiener_matches_table2():
    s = wiener_test(MemsStand(), BASELINE_GAINS, seeds=16, seed=0)
    assert abs(s["delta_mean"] - 7.8) < 0.15 * 7.8
    assert abs(s["delta_x_mean"] - 4.96) < 0.2 * 4.96 and abs(s["delta_y_mean"] - 4.97) < 0.2 * 4.97
    assert s["lost_frac"] == 0.0


def test_baseline_stable_on_100px_steps():
    stand = MemsStand()
    hold = 60
    d = disturbance.steps(8, 20 * hold, 0, step_px=100.0, hold_frames=hold)
    traj = simulate(stand, BASELINE_GAINS, d, seed=1)
    assert not traj.lost.any()
    err = np.abs(traj.true_positions - traj.targets).reshape(8, 20, hold, 2)
    assert err[:, :, -10:].max() < 2.0  # settled (noise 0.3 px rms) before every next step
    assert err.max() < 110.0  # no overshoot beyond the step itself
    assert np.abs(traj.commands).max() < stand.params.v_limit  # never saturates


def test_better_gains_exist():
    stand = MemsStand()
    base = wiener_test(stand, BASELINE_GAINS, seeds=8, seed=10)
    best = wiener_test(stand, per_frame_to_si(GRID_BEST), seeds=8, seed=10)
    assert best["delta_mean"] < 0.7 * base["delta_mean"]
    paper_test = wiener_test(stand, per_frame_to_si(PAPER_A_TEST), seeds=8, seed=10)
    assert paper_test["delta_mean"] < base["delta_mean"]  # the paper's a_test also improves


def test_small_grid_finds_improvement():
    stand = MemsStand()
    best_pf, err = grid_search(stand, [10, 20], [5, 25], [0, 5], seeds=2, seed=3)
    assert best_pf.shape == (2, 3) and best_pf[0, 1] == 25  # more integral action helps
    s = tracking_stats(simulate(stand, per_frame_to_si(best_pf), disturbance.wiener(4, 1000, 4), seed=5))
    base = tracking_stats(simulate(stand, BASELINE_GAINS, disturbance.wiener(4, 1000, 4), seed=5))
    assert s["delta_mean"] < base["delta_mean"]
