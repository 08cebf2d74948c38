"""Our DDPG vs Stable-Baselines3 DDPG on Pendulum-v1: same hyper-parameters, budget, cores and process.

Hyper-parameters: RL Zoo's tuned Pendulum set (rl-baselines3-zoo hyperparams/ddpg.yml): γ 0.98,
buffer 200k, 10k random warm-up steps, Gaussian σ 0.1, lr 1e-3, [400, 300], train after every
episode with as many gradient steps as steps collected; SB3 defaults batch 256, τ 0.005.

Fair by construction: both sides run in this process with the same torch thread count (``threads``,
default 1) on the same training seeds, alternating seed by seed and each going first on every other seed
(a change in the machine's load falls on both). Each times its set-up (networks, optimisers, replay
buffer, first reset) apart from training: ``steps_per_s`` counts only the transitions collected in the
training loop, over that loop's wall time. ``final_return`` is the mean deterministic return over the
same ``eval_episodes`` episodes for both (the first reset seeded with 10 000 + training seed, the next
ones continuing its generator). Each side reports mean ± σ (sample standard deviation over the training
seeds) and the per-seed values.
"""
from __future__ import annotations

import importlib.util
import statistics
import time

ZOO_PENDULUM = dict(
    gamma=0.98,
    buffer_size=200_000,
    learning_starts=10_000,
    noise_sigma=0.1,
    lr=1e-3,
    net_arch=(400, 300),
    batch_size=256,
    tau=0.005,
)
EVAL_SEED_OFFSET = 10_000  # evaluation resets from 10 000 + training seed (training uses the seed itself)


def ours_config(steps: int, seed: int):
    """Our DDPGConfig for the Zoo settings (also the slow Pendulum anchor's, tests/integration/test_learning.py)."""
    from learner.algos.ddpg import DDPGConfig

    z = ZOO_PENDULUM
    return DDPGConfig(
        total_steps=steps, learning_starts=z["learning_starts"], buffer_size=z["buffer_size"], batch_size=z["batch_size"],
        gamma=z["gamma"], tau=z["tau"], actor_lr=z["lr"], critic_lr=z["lr"], hidden=z["net_arch"],
        noise="gaussian", noise_sigma=z["noise_sigma"], train_freq="episode", gradient_steps=-1, seed=seed, device="cpu",
    )


def ours(steps: int, seed: int, eval_episodes: int) -> dict:
    import gymnasium as gym

    from learner.algos.ddpg import TrainEvent, evaluate, train

    first: list[tuple[float, int]] = []  # (time, transitions) at the first step: set-up ends there

    def mark(ev: TrainEvent) -> None:
        if not first:
            first.append((time.perf_counter(), ev.step))

    t0 = time.perf_counter()
    agent = train(gym.make("Pendulum-v1"), ours_config(steps, seed), mark)
    t1 = time.perf_counter()
    (t_first, n_first), = first
    returns = evaluate(agent, gym.make("Pendulum-v1"), episodes=eval_episodes, seed=EVAL_SEED_OFFSET + seed)
    return {"setup_s": t_first - t0, "train_s": t1 - t_first, "steps_per_s": (steps - n_first) / (t1 - t_first),
            "final_return": float(returns.mean())}


def sb3(steps: int, seed: int, eval_episodes: int) -> dict:
    import gymnasium as gym
    import numpy as np
    from stable_baselines3 import DDPG
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.noise import NormalActionNoise
    from stable_baselines3.common.vec_env import DummyVecEnv

    class Start(BaseCallback):
        """Marks the end of learn()'s set-up (called before the first step)."""

        def _on_training_start(self) -> None:
            self.t = time.perf_counter()

        def _on_step(self) -> bool:
            return True

    z = ZOO_PENDULUM
    t0 = time.perf_counter()
    model = DDPG(
        "MlpPolicy", gym.make("Pendulum-v1"), learning_rate=z["lr"], buffer_size=z["buffer_size"],
        learning_starts=z["learning_starts"], batch_size=z["batch_size"], tau=z["tau"], gamma=z["gamma"],
        train_freq=(1, "episode"), gradient_steps=-1,
        action_noise=NormalActionNoise(np.zeros(1), z["noise_sigma"] * np.ones(1)),
        policy_kwargs=dict(net_arch=list(z["net_arch"])), seed=seed, device="cpu",
    )
    start = Start()
    model.learn(total_timesteps=steps, callback=start)
    t1 = time.perf_counter()
    eval_env = DummyVecEnv([lambda: Monitor(gym.make("Pendulum-v1"))])
    eval_env.seed(EVAL_SEED_OFFSET + seed)  # the first reset seeded, the next ones not: our evaluate()'s episodes
    returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=eval_episodes, deterministic=True,
                                 return_episode_rewards=True)
    return {"setup_s": start.t - t0, "train_s": t1 - start.t, "steps_per_s": steps / (t1 - start.t),
            "final_return": float(np.mean(returns))}


def _spread(runs: list[dict]) -> dict:
    """mean ± σ over training seeds of each measure, and the per-seed runs."""
    out: dict = {}
    for key in ("final_return", "steps_per_s", "setup_s"):
        values = [r[key] for r in runs]
        out[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    return {**out, "per_seed": runs}


def bench_ddpg(steps: int = 20_000, seeds: int = 5, eval_episodes: int = 10, threads: int = 1) -> dict:
    """Both learners on training seeds 0 … seeds − 1, each with `threads` torch threads."""
    import torch

    torch.set_num_threads(threads)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # the first optimiser imports torch._dynamo (~2 s): untimed
    sides = {"ours": ours, "sb3": sb3}
    if importlib.util.find_spec("stable_baselines3") is None:  # the peer: `make bench` installs it, CI does not
        del sides["sb3"]
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for seed in range(seeds):
        for side in sorted(sides, reverse=seed % 2 == 1):  # who goes first alternates (one-time warm-up costs)
            runs[side].append({"seed": seed, **sides[side](steps, seed, eval_episodes)})
    result = {"env": "Pendulum-v1", "steps": steps, "seeds": list(range(seeds)), "eval_episodes": eval_episodes,
              "torch_threads": torch.get_num_threads(), **{side: _spread(r) for side, r in runs.items()}}
    if "sb3" not in sides:
        return {**result, "sb3": {"error": "stable-baselines3 unavailable (pip install -e '.[bench]')"},
                "speed_ratio": None}
    result["speed_ratio"] = result["ours"]["steps_per_s"]["mean"] / result["sb3"]["steps_per_s"]["mean"]
    return result
