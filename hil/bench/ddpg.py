"""Our DDPG vs Stable-Baselines3 DDPG on Pendulum-v1, same hyper-parameters, same budget, same process.

Hyper-parameters: RL Zoo's tuned Pendulum set (rl-baselines3-zoo hyperparams/ddpg.yml): γ 0.98,
buffer 200k, 10k random warm-up steps, Gaussian σ 0.1, lr 1e-3, [400, 300], train after every
episode with as many gradient steps as steps collected; SB3 defaults batch 256, τ 0.005.
"""
from __future__ import annotations

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


def _ours(steps: int, seed: int, eval_episodes: int) -> dict:
    import gymnasium as gym

    from learner.algos.ddpg import DDPGConfig, evaluate, train

    z = ZOO_PENDULUM
    cfg = DDPGConfig(
        total_steps=steps, learning_starts=z["learning_starts"], buffer_size=z["buffer_size"], batch_size=z["batch_size"],
        gamma=z["gamma"], tau=z["tau"], actor_lr=z["lr"], critic_lr=z["lr"], hidden=z["net_arch"],
        noise="gaussian", noise_sigma=z["noise_sigma"], train_freq="episode", gradient_steps=-1, seed=seed, device="cpu",
    )
    t0 = time.perf_counter()
    agent = train(gym.make("Pendulum-v1"), cfg)
    wall = time.perf_counter() - t0
    returns = evaluate(agent, gym.make("Pendulum-v1"), episodes=eval_episodes, seed=10_000 + seed)
    return {"steps_per_s": steps / wall, "final_return": float(returns.mean()), "final_return_std": float(returns.std())}


def _sb3(steps: int, seed: int, eval_episodes: int) -> dict:
    import gymnasium as gym
    import numpy as np
    from stable_baselines3 import DDPG
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.noise import NormalActionNoise

    z = ZOO_PENDULUM
    env = gym.make("Pendulum-v1")
    model = DDPG(
        "MlpPolicy", env, learning_rate=z["lr"], buffer_size=z["buffer_size"], learning_starts=z["learning_starts"],
        batch_size=z["batch_size"], tau=z["tau"], gamma=z["gamma"], train_freq=(1, "episode"), gradient_steps=-1,
        action_noise=NormalActionNoise(np.zeros(1), z["noise_sigma"] * np.ones(1)),
        policy_kwargs=dict(net_arch=list(z["net_arch"])), seed=seed, device="cpu",
    )
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    wall = time.perf_counter() - t0
    eval_env = Monitor(gym.make("Pendulum-v1"))
    eval_env.reset(seed=10_000 + seed)
    returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=eval_episodes, deterministic=True, return_episode_rewards=True)
    return {"steps_per_s": steps / wall, "final_return": float(np.mean(returns)), "final_return_std": float(np.std(returns))}


def bench_ddpg(steps: int = 20_000, seed: int = 0, eval_episodes: int = 10) -> dict:
    import torch

    ours = _ours(steps, seed, eval_episodes)
    sb3 = _sb3(steps, seed, eval_episodes)
    return {
        "env": "Pendulum-v1",
        "steps": steps,
        "seed": seed,
        "torch_threads": torch.get_num_threads(),
        "ours": ours,
        "sb3": sb3,
        "speed_ratio": ours["steps_per_s"] / sb3["steps_per_s"],
    }
