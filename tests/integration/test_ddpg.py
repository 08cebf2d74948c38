"""learner/algos/ddpg.py: the maths of each piece and a smoke training run (learning checks: test_learning.py)."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from learner.algos.ddpg import DDPGConfig, OUNoise, ReplayBuffer, _Stepper, evaluate, soft_update, td_target, train


def test_td_target_discounts_by_gamma_to_the_dt_and_masks_done():
    r = torch.tensor([1.0, 1.0, 1.0, 1.0])
    q = torch.tensor([10.0, 10.0, 10.0, 10.0])
    dt = torch.tensor([1.0, 2.0, 0.5, 3.0])
    done = torch.tensor([0.0, 0.0, 0.0, 1.0])
    y = td_target(r, done, dt, q, gamma=0.9)
    torch.testing.assert_close(y, torch.tensor([1 + 9.0, 1 + 8.1, 1 + 10 * 0.9**0.5, 1.0]))


def test_soft_update_is_polyak_average():
    torch.manual_seed(0)
    src, tgt = nn.Linear(3, 2), nn.Linear(3, 2)
    before = [p.detach().clone() for p in tgt.parameters()]
    soft_update(tgt, src, 0.1)
    for b, s, t in zip(before, src.parameters(), tgt.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * s.detach())


def test_ou_noise_reverts_to_zero_and_sigma_decays():
    rng = np.random.default_rng(0)
    ou = OUNoise((1, 1), theta=0.15, sigma0=0.2, sigma1=1e-4, rng=rng)
    assert ou.sigma(0.0) == pytest.approx(0.2)
    assert ou.sigma(1.0) == pytest.approx(1e-4)
    assert ou.sigma(0.5) == pytest.approx(np.sqrt(0.2 * 1e-4))
    assert ou.sigma(2.0) == pytest.approx(1e-4)  # clamped after the end
    # Mean reversion: with (almost) no noise the state decays by (1 − θ) per step.
    quiet = OUNoise((1, 1), theta=0.15, sigma0=1e-12, sigma1=1e-12, rng=rng)
    quiet.x[:] = 1.0
    for _ in range(10):
        quiet(0.0)
    assert quiet.x[0, 0] == pytest.approx(0.85**10, rel=1e-6)
    quiet.reset(np.array([True]))
    assert quiet.x[0, 0] == 0.0


def test_ou_noise_stationary_statistics():
    ou = OUNoise((4000, 1), theta=0.15, sigma0=0.2, sigma1=0.2, rng=np.random.default_rng(1))
    xs = np.stack([ou(0.0)[:, 0] for _ in range(200)])  # 4000 independent chains, 200 steps
    tail = xs[100:]
    assert abs(tail.mean()) < 0.01
    assert tail.std() == pytest.approx(0.2 / np.sqrt(2 * 0.15 - 0.15**2), rel=0.03)
    lag1 = np.corrcoef(tail[:-1].ravel(), tail[1:].ravel())[0, 1]
    assert lag1 == pytest.approx(0.85, abs=0.01)


def test_replay_buffer_wraps_around():
    buf = ReplayBuffer(5, obs_dim=1, act_dim=1, device=torch.device("cpu"))

    def add(vals):
        v = np.asarray(vals, dtype=np.float32)
        buf.add(v[:, None], v[:, None], v, v[:, None] + 0.5, np.zeros(len(v)), np.full(len(v), 2.0))

    add([0, 1, 2])
    assert (buf.ptr, buf.size) == (3, 3)
    add([3, 4, 5, 6])  # 5 and 6 overwrite slots 0 and 1
    assert (buf.ptr, buf.size) == (2, 5)
    assert buf.rew.tolist() == [5, 6, 2, 3, 4]
    assert buf.next_obs[:, 0].tolist() == [5.5, 6.5, 2.5, 3.5, 4.5]
    obs, act, rew, nxt, done, dt = buf.sample(64)
    assert set(rew.tolist()) <= {2.0, 3.0, 4.0, 5.0, 6.0}
    assert torch.equal(nxt[:, 0], rew + 0.5) and (dt == 2.0).all()


class _DtInfo(gym.Wrapper):
    """Reports a semi-Markov Δt (decision periods) in info, as a delayed link would."""

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        return obs, r, term, trunc, {**info, "dt": 2.5}


def test_stepper_reads_dt_and_scales_actions():
    s = _Stepper(_DtInfo(gym.make("Pendulum-v1")), seed=0, dt_key="dt")
    assert s.scale(np.array([[-1.0]])).tolist() == [-2.0] and s.scale(np.array([[0.5]])).tolist() == [1.0]
    (o, a, r, o2, term, dt), _, _ = s.step(np.zeros((1, 1)))
    assert dt.tolist() == [2.5] and o.shape == o2.shape == (1, 3)


def test_stepper_rejects_bad_dt_with_a_clear_error():
    class BadDt(gym.Wrapper):
        def step(self, action):
            obs, r, term, trunc, info = self.env.step(action)
            return obs, r, term, trunc, {"dt": float("nan")}

    s = _Stepper(BadDt(gym.make("Pendulum-v1")), seed=0, dt_key="dt")
    with pytest.raises(ValueError, match=r"info\['dt'\] must be finite and > 0"):
        s.step(np.zeros((1, 1)))


def test_vector_stepper_drops_autoreset_transitions():
    env = gym.vector.SyncVectorEnv([lambda: gym.make("Pendulum-v1", max_episode_steps=5)] * 2)
    s = _Stepper(env, seed=0, dt_key="dt")
    kept, returns = 0, []
    for _ in range(12):  # per env: 5 steps, 1 reset step, 5 steps, 1 reset step
        (o, *_), finished, _ = s.step(np.zeros((2, 1)))
        kept += len(o)
        returns += finished
    assert kept == 2 * 10 and len(returns) == 4


def test_smoke_training_vector_env_checkpoint_and_resume(tmp_path):
    cfg = DDPGConfig(total_steps=1200, learning_starts=400, gradient_steps=-1, batch_size=64, hidden=(32, 32), noise="ou", noise_sigma=0.2, seed=0, device="cpu")
    env = gym.vector.SyncVectorEnv([lambda: gym.make("Pendulum-v1")] * 2)
    events = []
    ckpt = tmp_path / "ckpt.pt"
    agent = train(env, cfg, callback=events.append, checkpoint=ckpt)
    assert events[-1].step == 1200 and events[-1].updates == 800
    assert sum(len(e.episode_returns) for e in events) == 1200 // 200
    assert np.isfinite(agent.critic_loss.item()) and np.isfinite(agent.actor_loss.item())
    returns = evaluate(agent, gym.make("Pendulum-v1"), episodes=2)
    assert returns.shape == (2,) and np.isfinite(returns).all()
    # Resume: continues from the saved step with the saved weights and buffer.
    cfg2 = DDPGConfig(**{**cfg.__dict__, "total_steps": 1400})
    resumed = train(env, cfg2, callback=events.append, resume=ckpt)
    assert events[-1].step == 1400 and events[-1].updates == 1000
    assert not torch.equal(next(resumed.actor.parameters()), next(agent.actor.parameters()))


def test_callback_false_stops_training():
    cfg = DDPGConfig(total_steps=10_000, learning_starts=100, hidden=(16,), seed=0, device="cpu")
    seen = []
    train(gym.make("Pendulum-v1"), cfg, callback=lambda e: seen.append(e.step) or e.step < 50)
    assert seen[-1] == 50


def test_a_stop_outside_the_envs_step_still_saves_the_checkpoint(tmp_path):
    """stop_on (a lost link, Ctrl-C) anywhere in the loop, here in the callback after an update: the checkpoint
    holds the transitions so far, then the exception propagates."""
    cfg = DDPGConfig(total_steps=10_000, learning_starts=40, batch_size=16, hidden=(16,), seed=0, device="cpu")

    def interrupt(event):
        if event.updates >= 5:
            raise KeyboardInterrupt

    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(KeyboardInterrupt):
        train(gym.make("Pendulum-v1"), cfg, callback=interrupt, checkpoint=ckpt, stop_on=(KeyboardInterrupt,))
    saved = torch.load(ckpt, weights_only=False)
    assert saved["step"] == 45 and saved["updates"] == 5 and saved["buffer"]["size"] == 45
