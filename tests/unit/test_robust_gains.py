"""learner/mems/robust_gains.py: the actor's map into the robust gains, in numpy and inside the exported graph."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from controller.modes.mems.pid import BASELINE_GAINS, PAPER_A_TEST_GAINS
from firmware_sim.mems.physics import MemsParams
from learner.mems.env import MemsTuningConfig, action_bounds, baseline_action
from learner.mems.train import MemsTrainConfig, gain_map
from learner.mems.robust_gains import MAX_PEAK, WIDE_PEAK, baseline_crossover_hz, gain_set_map, is_robust

CFG = MemsTuningConfig()
PARAMS = MemsParams()


@pytest.fixture(scope="module")
def gmap():
    return gain_set_map("robust", CFG.p_bounds, CFG.i_bounds, PARAMS)


def robust(gains: np.ndarray) -> list[bool]:
    """Per axis, whether (P, I) of a (4,) action are robust."""
    below = baseline_crossover_hz(PARAMS)
    return [is_robust(gains[2 * ax], gains[2 * ax + 1], ax, PARAMS, below[ax]) for ax in range(2)]


def test_every_action_the_actor_can_emit_is_robust(gmap):
    rng = np.random.default_rng(0)
    corners = np.array(np.meshgrid(*[[-1.0, 1.0]] * 4)).reshape(4, -1).T
    actor_out = np.concatenate([corners, rng.uniform(-1, 1, (24, 4)), [[0.0, 2.0, -3.0, 0.5]]])  # out of range: clamped
    gains = gmap.gains(actor_out)
    lo, hi = action_bounds(CFG)
    assert np.all(gains >= lo - 1e-3) and np.all(gains <= hi + 1e-3)
    assert all(all(robust(g)) for g in gains)


def test_the_limit_binds_and_the_baseline_is_on_the_boundary(gmap):
    # I 10 % above I_max(P) amplifies: the set is no larger than it needs to be
    a = np.array([[0.0, 1.0, 0.0, 1.0]])
    top = gmap.gains(a)[0]
    above = top * np.array([1.0, 1.1, 1.0, 1.1])
    assert robust(top) == [True, True] and robust(above) == [False, False]
    # the crossover bound is the baseline's own: the baseline gains sit on the boundary, where at the
    # baseline's P the table (2 % tighter) allows a little less I than the baseline's
    a_base = gmap.actions(baseline_action())[0]
    assert np.all(np.abs(a_base[0::2]) < 1.0) and np.all((a_base[1::2] > 1.0) & (a_base[1::2] < 1.2))
    assert MAX_PEAK == 2.0 and robust(baseline_action().astype(float)) == [True, True]
    # more I needs more P: the set's largest I exceeds the baseline's, at a P above the baseline's
    i_max = gmap.integral_limit(gmap.knots.T).numpy()  # (K, 2): I_max at every knot
    best = i_max.argmax(axis=0)
    assert np.all(i_max.max(axis=0) > BASELINE_GAINS[:, 1])
    assert np.all(gmap.knots.numpy()[[0, 1], best] > BASELINE_GAINS[:, 0])


def test_inverse_round_trip(gmap):
    a = np.random.default_rng(1).uniform(-1, 1, (50, 4))
    np.testing.assert_allclose(gmap.actions(gmap.gains(a)), a, atol=1e-4)


def test_the_wide_set_keeps_the_peak_bound_only_and_contains_the_robust_set(gmap):
    wide = gain_set_map("wide", CFG.p_bounds, CFG.i_bounds)
    rng = np.random.default_rng(3)
    gains = wide.gains(np.concatenate([np.array(np.meshgrid(*[[-1.0, 1.0]] * 4)).reshape(4, -1).T,
                                       rng.uniform(-1, 1, (24, 4))]))
    assert all(is_robust(g[2 * ax], g[2 * ax + 1], ax, PARAMS, 0.0, max_peak=WIDE_PEAK) for g in gains for ax in range(2))
    paper = baseline_action(PAPER_A_TEST_GAINS)[None]  # inside the wide set, outside the robust one
    assert np.all(np.abs(wide.actions(paper)) < 1.0) and not np.all(np.abs(gmap.actions(paper)) <= 1.0)
    np.testing.assert_allclose(wide.gains(wide.actions(paper)), paper, rtol=1e-4)
    top_robust, top_wide = gmap.gains(np.array([[0.0, 1.0, 0.0, 1.0]]))[0], wide.gains(np.array([[0.0, 1.0, 0.0, 1.0]]))[0]
    p = np.array([top_robust[0], top_robust[2]])
    assert np.all(wide.integral_limit(torch.tensor(p[None], dtype=torch.float32)).numpy() >
                  gmap.integral_limit(torch.tensor(p[None], dtype=torch.float32)).numpy())  # more I allowed
    assert not all(robust(top_wide))  # and some of it amplifies a band the baseline rejects


def test_a_run_without_the_set_maps_affinely_to_the_box(gmap):
    lo, hi = action_bounds(CFG)
    a = np.random.default_rng(2).uniform(-1, 1, (20, 4))
    want = lo + (a + 1.0) * 0.5 * (hi - lo)
    np.testing.assert_allclose(gain_map(MemsTrainConfig(gain_set="box")).gains(a), want, rtol=1e-5)
    assert gain_map(MemsTrainConfig()) is gmap  # the default run is robust; the table is built once


def test_the_map_exports_to_onnx(gmap, tmp_path):
    import onnxruntime as ort

    path = tmp_path / "map.onnx"
    torch.onnx.export(gmap, (torch.zeros(1, 4),), str(path), dynamo=False, input_names=["a"], output_names=["g"],
                      dynamic_axes={"a": {0: "b"}, "g": {0: "b"}}, opset_version=17)
    a = np.random.default_rng(3).uniform(-1, 1, (64, 4)).astype(np.float32)
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"a": a})
    np.testing.assert_allclose(got, gmap.gains(a), rtol=1e-5, atol=1e-3)


def test_a_run_keeps_the_gain_set_of_the_plant_it_was_trained_on(tmp_path):
    import json
    from dataclasses import asdict

    from learner.mems.train import ONE_POINT_PLANT, load_run_config

    raw = {"env": asdict(CFG), "ddpg": {}, "num_envs": 4, "robust": True}  # a run from before plants were stored
    (tmp_path / "config.json").write_text(json.dumps(raw))
    old = load_run_config(tmp_path)
    assert old.plant == ONE_POINT_PLANT and old.gain_set == "robust"
    assert not np.allclose(gain_map(old).gains(np.ones((1, 4))), gain_map(MemsTrainConfig()).gains(np.ones((1, 4))))
    (tmp_path / "config.json").write_text(json.dumps({**raw, "gain_set": "wide", "plant": asdict(PARAMS)}))
    assert gain_map(load_run_config(tmp_path)) is gain_set_map("wide", CFG.p_bounds, CFG.i_bounds, PARAMS)
    (tmp_path / "config.json").write_text(json.dumps({**raw, "gain_set": "wider"}))
    with pytest.raises(ValueError, match="unknown gain set 'wider'"):
        load_run_config(tmp_path)

