"""The vectorised-environment base (learner.envs.base): spaces, seeding, NEXT_STEP autoreset per slot."""
from __future__ import annotations

import numpy as np

from learner.ct.env import CTEnvConfig, CTVecEnv
from learner.mems.env import MemsTuningConfig, MemsTuningVecEnv, baseline_action

CFG = CTEnvConfig(size=31, sirt_iterations=30, max_angles=3, cost=0.5)


def _act(angle, stop):
    return {"angle": np.asarray(angle), "stop": np.asarray(stop)}


def test_a_finished_episode_restarts_alone_at_the_next_step():
    env = CTVecEnv(2, CFG)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    obs, r, term, trunc, _ = env.step(_act([5, 5], [1, 0]))
    assert term.tolist() == [True, False] and not trunc.any()
    assert r[0] > 0 and r[1] == -CFG.cost  # final PSNR − b  vs  −b
    obs, r, term, _, _ = env.step(_act([9, 9], [0, 0]))
    assert r[0] == 0.0 and obs["acquired"][0].sum() == 0  # slot 0: reset observation, its action ignored
    assert obs["acquired"][1].sum() == 2 and r[1] == -CFG.cost  # slot 1 went on
    assert not term.any()


def test_seeding_is_reproducible_and_later_resets_take_the_next_seed():
    def images(env, seed=None):
        return env.reset(seed=seed)[0]["image"]

    a, b = CTVecEnv(2, CFG), CTVecEnv(2, CFG)
    np.testing.assert_array_equal(images(a, 4), images(b, 4))
    np.testing.assert_array_equal(images(a), images(CTVecEnv(2, CFG), 5))


def test_episodes_that_end_together_reset_together():
    env = MemsTuningVecEnv(2, MemsTuningConfig(decisions_per_episode=2))
    env.reset(seed=1)
    act = np.tile(baseline_action(), (2, 1))
    assert not env.step(act)[3].any()
    assert env.step(act)[3].all()
    obs, r, term, trunc, info = env.step(act)
    np.testing.assert_array_equal(obs, env.sim.observation())
    assert not r.any() and not term.any() and not trunc.any() and info == {}
