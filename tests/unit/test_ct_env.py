"""CT angle-selection environments: gymnasium contract, masking, rewards, stop semantics, limits."""
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from controller.modes.ct import tomo
from learner.ct.env import CTBatchEnv, CTEnv, CTEnvConfig

CFG = CTEnvConfig(size=31, sirt_iterations=30, max_angles=5, cost=0.5)


def test_check_env_passes():
    check_env(CTEnv(CFG), skip_render_check=True)


def test_reward_is_minus_cost_per_angle_plus_final_psnr():
    env = CTEnv(CFG)
    obs, info = env.reset(seed=3)
    assert obs["image"].shape == (1, 31, 31) and obs["acquired"].sum() == 0
    total, angles = 0.0, [10, 70, 130]
    for i, a in enumerate(angles):
        obs, r, term, trunc, info = env.step({"angle": a, "stop": int(i == len(angles) - 1)})
        total += r
        assert not trunc and term == (i == len(angles) - 1)
        if not term:
            assert r == pytest.approx(-0.5)
    # the stop fired together with angle 130: it was still acquired
    assert info["n_angles"] == 3 and info["angles_deg"] == [10.0, 70.0, 130.0]
    assert set(np.flatnonzero(obs["acquired"])) == set(angles)
    assert total == pytest.approx(-0.5 * 3 + info["psnr"])
    # the final PSNR is that of the observed reconstruction against the phantom
    assert info["psnr"] == pytest.approx(tomo.psnr(obs["image"][0], env._env.truth[0]), rel=1e-6)
    with pytest.raises(RuntimeError):
        env.step({"angle": 1, "stop": 0})


def test_mask_repeated_angle_is_counted_not_measured():
    env = CTEnv(CFG)
    env.reset(seed=0)
    obs, *_ = env.step({"angle": 5, "stop": 0})
    assert not env.action_masks()[5] and env.action_masks().sum() == 179
    img = obs["image"].copy()
    obs, r, term, _, info = env.step({"angle": 5, "stop": 0})
    assert info["invalid_actions"] == 1 and r == pytest.approx(-0.5)
    np.testing.assert_array_equal(obs["image"], img)  # nothing new measured
    with pytest.raises(ValueError):
        env.step({"angle": 180, "stop": 0})


def test_episode_ends_at_max_angles_with_psnr():
    env = CTBatchEnv(CFG, 3, seed=1, device="cpu")
    env.reset()
    for k in range(CFG.max_angles):
        out = env.step(np.array([k, 20 + k, 40 + k]), np.zeros(3, bool))
        assert out.done.all() == (k == CFG.max_angles - 1)
    np.testing.assert_allclose(out.reward, -0.5 + out.obs.psnr)
    assert (out.obs.n_acquired == CFG.max_angles).all() and not env.active.any()
    frozen = env.step(np.array([1, 2, 3]), np.zeros(3, bool))  # finished slots ignore actions
    assert (frozen.reward == 0).all() and (frozen.obs.n_acquired == CFG.max_angles).all()


def test_batch_stop_without_angle_and_more_angles_help():
    env = CTBatchEnv(CFG, 2, seed=2, device="cpu")
    env.reset()
    out = env.step(np.array([180, 0]), np.array([True, False]))  # slot 0: Algorithm 1's stop action
    assert out.done.tolist() == [True, False] and out.obs.n_acquired.tolist() == [0, 1]
    assert out.reward[0] == pytest.approx(out.obs.psnr[0])  # no angle, no cost
    psnr = [env.scan([tomo.to_grid_index(tomo.golden_ratio_angles(k))] * 2)[0] for k in (2, 12)]
    assert psnr[1] > psnr[0] + 3


def test_custom_images_validated():
    with pytest.raises(ValueError):
        CTBatchEnv(CFG, 1, device="cpu", images=np.full((1, 31, 31), 2.0))
    img = np.zeros((2, 31, 31), np.float32)
    img[:, 10:20, 12:18] = 0.62
    env = CTBatchEnv(CFG, 2, device="cpu", images=img)
    env.reset()
    out = env.step(np.array([0, 90]), np.array([True, True]))
    assert (out.obs.psnr > 10).all()
