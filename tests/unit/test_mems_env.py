"""The MEMS tuning environments: gymnasium contract, reward (eq. 2), Δt, scenarios (the live stand: tests/hil/test_mems_live_env.py)."""
from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from firmware_sim.mems.disturbance import wiener
from learner.mems.env import MemsTuningConfig, MemsTuningEnv, MemsTuningSim, MemsTuningVecEnv, baseline_action


def test_sim_env_passes_gymnasium_check():
    check_env(MemsTuningEnv(), skip_render_check=True)


def test_vec_env_is_deterministic_and_reports_dt():
    def roll(seed):
        env = MemsTuningVecEnv(4)
        env.reset(seed=seed)
        out = [env.step(np.tile(baseline_action(), (4, 1))) for _ in range(3)]
        return np.stack([o[0] for o in out]), out[-1][4]["dt"]

    (a, dt), (b, _) = roll(3), roll(3)
    np.testing.assert_array_equal(a, b)
    lo, hi = MemsTuningConfig().frames_per_decision
    assert np.all(dt >= lo / 12) and np.all(dt <= hi / 12)


def test_baseline_action_matches_its_shadow_and_bad_gains_are_penalised():
    sim = MemsTuningSim(2)
    sim.reset(0)
    for _ in range(5):
        _, r, _, info = sim.step(np.tile(baseline_action(), (2, 1)))
    # the agent's stands run the same gains as their baseline shadows: the same errors up to camera noise
    np.testing.assert_allclose(info["mean_error_px"], info["baseline_error_px"], rtol=0.2)
    assert np.all(r == pytest.approx(-info["mean_error_px"] / 100.0))
    sim.reset(0)
    unstable = np.array([[40.0, 4800.0, 40.0, 4800.0]] * 2, dtype=np.float32)
    for _ in range(10):
        _, r, _, info = sim.step(unstable)
    assert np.all(info["mean_error_px"] > 1.5 * info["baseline_error_px"])
    assert np.all(r <= -1.0)  # eq. 2's extra penalty


def test_scenario_replay_records_the_frames():
    sim = MemsTuningSim(2)
    d = wiener(2, 100, seed=5)
    sim.reset(1, d)
    while sim.frame < 100:
        sim.step(np.tile(baseline_action(), (2, 1)))
    trace = np.stack(sim.trace, axis=1)
    assert trace.shape[0] == 2 and trace.shape[1] >= 100 and trace.shape[2] == 4
    assert np.all(trace[:, :, 2:] == 0.0)  # the target stays at the centre; M1 moves


def test_training_replays_windows_of_a_recorded_disturbance(tmp_path):
    """cfg.disturbance = PATH.csv: each stand's M1 follows the recording from a random frame, a new one each episode."""
    from firmware_sim.mems.disturbance import from_csv

    csv = tmp_path / "stand.csv"
    csv.write_text("t_s,x_px,y_px\n" + "".join(f"{i / 120},{i * 0.1},{-i * 0.05}\n" for i in range(2000)))
    trace = from_csv(csv)[0]
    sim = MemsTuningSim(3, MemsTuningConfig(disturbance=str(csv)))
    firsts = []
    for seed in (1, 2):
        sim.reset(seed)
        sim.step(np.tile(baseline_action(), (3, 1)))
        starts = np.round(sim.m1[:, 0] / 0.1).astype(int) - (sim.frame - 1)  # the window's first frame per stand
        np.testing.assert_allclose(sim.m1, trace[starts + sim.frame - 1])
        firsts.append(starts)
    assert len(set(np.concatenate(firsts).tolist())) == 6  # random starts: per stand and per episode


def test_no_training_disturbance_by_default():
    sim = MemsTuningSim(2, MemsTuningConfig())
    sim.reset(0)
    sim.step(np.tile(baseline_action(), (2, 1)))
    assert sim.drawn is None and not sim.m1.any()
