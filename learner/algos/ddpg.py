"""DDPG (Lillicrap et al.) with a semi-Markov TD target, in one file (CleanRL style).

Paper: shared/papers/mems-mirror-pid-rl.txt.
- eq. 3 (semi-Markov Bellman, Sutton, Precup & Singh 1999): the TD target discounts by γ^Δt, where Δt
  is the time since the previous decision in units of the nominal decision period (Δt = 1 is DDPG).
- eq. 5 (Ornstein–Uhlenbeck exploration): temporally correlated noise whose scale σ decays over training.
- eq. 2 (reward) lives in the environment; this file only sees r.
- actor/critic: MLPs, the paper uses two hidden layers of 100 and 60 units.

The environment reports Δt through `info[cfg.dt_key]` (float, decision periods); absent means 1.
Works with a single gymnasium env or a gymnasium vector env (NEXT_STEP or SAME_STEP autoreset)
with Box spaces; the actor acts in [-1, 1] (tanh) and actions are scaled to the env's bounds.
Checkpoints (torch.save of state dicts) are for the host only; the edge runs the ONNX export.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DDPGConfig:
    total_steps: int = 20_000  # environment transitions (summed over vector envs)
    learning_starts: int = 10_000  # random warm-up transitions (uniform actions) before any update
    buffer_size: int = 200_000
    batch_size: int = 256
    gamma: float = 0.98  # per nominal decision period; eq. 3 raises it to Δt
    tau: float = 0.005  # soft target update rate
    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    hidden: tuple[int, ...] = (400, 300)  # paper: (100, 60)
    noise: Literal["gaussian", "ou"] = "gaussian"
    noise_sigma: float = 0.1  # Gaussian σ, or the initial OU σ (paper: 0.2), in [-1, 1] action units
    noise_sigma_final: float = 1e-4  # OU σ at the end of training (paper), geometric decay
    ou_theta: float = 0.15
    train_freq: int | Literal["episode"] = 1  # transitions between update bursts, or after each episode end
    gradient_steps: int = 1  # updates per burst; -1: one per transition collected since the last burst
    dt_key: str = "dt"  # info key holding Δt in decision periods (eq. 3)
    seed: int = 0
    device: str = "auto"  # "auto": cuda if available else cpu
    torch_threads: int | None = None  # None: leave torch's default


def resolve_device(name: str = "auto") -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def mlp(sizes: list[int], out_act: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)


class Actor(nn.Module):
    """μ(s): normalised observation -> action in [-1, 1]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.net = mlp([obs_dim, *hidden, act_dim], nn.Tanh())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


class Critic(nn.Module):
    """Q(s, a) with a in [-1, 1]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.net = mlp([obs_dim + act_dim, *hidden, 1])

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, act], dim=-1)).squeeze(-1)


def td_target(reward: torch.Tensor, done: torch.Tensor, dt: torch.Tensor, next_q: torch.Tensor, gamma: float) -> torch.Tensor:
    """eq. 3: y = r + γ^Δt · Q'(s', μ'(s')) · (1 − done)."""
    return reward + torch.pow(gamma, dt) * next_q * (1.0 - done)


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """θ' ← (1 − τ) θ' + τ θ, one fused foreach op over all parameters."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


class GaussianNoise:
    def __init__(self, shape: tuple[int, ...], sigma: float, rng: np.random.Generator):
        self.shape, self.sigma, self.rng = shape, sigma, rng

    def __call__(self, progress: float) -> np.ndarray:
        return self.sigma * self.rng.standard_normal(self.shape)

    def reset(self, mask: np.ndarray) -> None:
        pass


class OUNoise:
    """eq. 5, discretised with a unit step: x ← x + θ(μ − x) + σ(p)·N(0, 1), μ = 0.

    σ decays geometrically from sigma0 to sigma1 as training progress p goes 0 → 1 (the paper's
    ε_i = 0.2 → ε_f = 1e-4). The paper writes the increment with U(0, 1); we use the standard
    Gaussian increment of Uhlenbeck & Ornstein / Lillicrap et al. (zero-mean, as exploration needs).
    """

    def __init__(self, shape: tuple[int, ...], theta: float, sigma0: float, sigma1: float, rng: np.random.Generator):
        self.theta, self.sigma0, self.sigma1, self.rng = theta, sigma0, sigma1, rng
        self.x = np.zeros(shape)

    def sigma(self, progress: float) -> float:
        return self.sigma0 * (self.sigma1 / self.sigma0) ** min(max(progress, 0.0), 1.0)

    def __call__(self, progress: float) -> np.ndarray:
        self.x += -self.theta * self.x + self.sigma(progress) * self.rng.standard_normal(self.x.shape)
        return self.x.copy()

    def reset(self, mask: np.ndarray) -> None:
        self.x[mask] = 0.0


class ReplayBuffer:
    """Preallocated circular buffer of (s, a, r, s', done, Δt) tensors on the training device."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device):
        self.capacity, self.device, self.ptr, self.size = capacity, device, 0, 0
        z = lambda *s: torch.zeros((capacity, *s), dtype=torch.float32, device=device)  # noqa: E731
        self.obs, self.next_obs, self.act = z(obs_dim), z(obs_dim), z(act_dim)
        self.rew, self.done, self.dt = z(), z(), z()

    def add(self, obs, act, rew, next_obs, done, dt) -> None:
        """Add n transitions (arrays or tensors, leading axis n); wraps around, overwriting the oldest."""
        n = len(rew)
        first = min(n, self.capacity - self.ptr)  # rows before the wrap
        for buf, x in ((self.obs, obs), (self.act, act), (self.rew, rew), (self.next_obs, next_obs), (self.done, done), (self.dt, dt)):
            x = torch.as_tensor(x, device=self.device).to(torch.float32)
            buf[self.ptr : self.ptr + first] = x[:first]
            buf[: n - first] = x[first:]
        self.ptr = (self.ptr + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        i = torch.randint(0, self.size, (batch_size,), device=self.device)
        return self.obs[i], self.act[i], self.rew[i], self.next_obs[i], self.done[i], self.dt[i]

    def state_dict(self) -> dict:
        n = self.size
        return {"ptr": self.ptr, "size": n, **{k: getattr(self, k)[:n].cpu() for k in ("obs", "act", "rew", "next_obs", "done", "dt")}}

    def load_state_dict(self, sd: dict) -> None:
        self.ptr, self.size = sd["ptr"], sd["size"]
        for k in ("obs", "act", "rew", "next_obs", "done", "dt"):
            getattr(self, k)[: self.size] = sd[k].to(self.device)


class DDPG:
    """Actor, critic, their targets and optimisers. Observations are normalised with a fixed
    (mean, std) given at construction (the same pair the ONNX export bakes into its graph)."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: DDPGConfig, obs_mean=None, obs_std=None):
        self.cfg, self.device = cfg, resolve_device(cfg.device)
        dev = self.device
        self.obs_mean = torch.as_tensor(np.zeros(obs_dim) if obs_mean is None else obs_mean, dtype=torch.float32, device=dev)
        self.obs_std = torch.as_tensor(np.ones(obs_dim) if obs_std is None else obs_std, dtype=torch.float32, device=dev)
        if not bool((self.obs_std > 0).all()):
            raise ValueError("obs_std must be > 0 everywhere")
        self.actor = Actor(obs_dim, act_dim, cfg.hidden).to(dev)
        self.critic = Critic(obs_dim, act_dim, cfg.hidden).to(dev)
        self.actor_target = Actor(obs_dim, act_dim, cfg.hidden).to(dev)
        self.critic_target = Critic(obs_dim, act_dim, cfg.hidden).to(dev)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        for p in (*self.actor_target.parameters(), *self.critic_target.parameters()):
            p.requires_grad_(False)
        fused = dict(fused=True) if dev.type in ("cuda", "cpu") else {}
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr, **fused)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr, **fused)
        self._actor_params = list(self.actor.parameters())
        self.critic_loss = torch.zeros(())
        self.actor_loss = torch.zeros(())

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    @torch.inference_mode()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic action in [-1, 1] for raw observations of shape (n, obs_dim)."""
        o = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        return self.actor(self.normalize(o)).cpu().numpy()

    def update(self, obs, act, rew, next_obs, done, dt) -> None:
        """One DDPG step on a batch of normalised observations."""
        with torch.no_grad():
            next_q = self.critic_target(next_obs, self.actor_target(next_obs))
            y = td_target(rew, done, dt, next_q, self.cfg.gamma)
        critic_loss = F.mse_loss(self.critic(obs, act), y)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        # Deterministic policy gradient: ascend Q(s, μ(s)); gradients only into the actor's weights.
        actor_loss = -self.critic(obs, self.actor(obs)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward(inputs=self._actor_params)
        self.actor_opt.step()
        soft_update(self.critic_target, self.critic, self.cfg.tau)
        soft_update(self.actor_target, self.actor, self.cfg.tau)
        self.critic_loss, self.actor_loss = critic_loss.detach(), actor_loss.detach()

    def state_dict(self) -> dict:
        return {
            "config": dataclasses.asdict(self.cfg),
            "obs_mean": self.obs_mean.cpu(),
            "obs_std": self.obs_std.cpu(),
            **{k: getattr(self, k).state_dict() for k in ("actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt")},
        }

    def load_state_dict(self, sd: dict) -> None:
        self.obs_mean.copy_(sd["obs_mean"])
        self.obs_std.copy_(sd["obs_std"])
        for k in ("actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt"):
            getattr(self, k).load_state_dict(sd[k])


@dataclass
class TrainEvent:
    """What the callback sees after every environment step (vector step for vector envs)."""

    step: int  # transitions collected so far
    episode_returns: list[float]  # episodes that ended at this step
    agent: DDPG
    updates: int  # gradient steps done so far


Callback = Callable[[TrainEvent], bool | None]  # return False to stop training


class _Stepper:
    """Presents a single env or a vector env as n parallel envs yielding clean transitions."""

    def __init__(self, env: gym.Env | gym.vector.VectorEnv, seed: int, dt_key: str):
        self.env, self.dt_key = env, dt_key
        self.vector = isinstance(env, gym.vector.VectorEnv)
        obs_space = env.single_observation_space if self.vector else env.observation_space
        act_space = env.single_action_space if self.vector else env.action_space
        if not isinstance(obs_space, gym.spaces.Box) or not isinstance(act_space, gym.spaces.Box):
            raise TypeError("DDPG needs Box observation and action spaces")
        if not (np.isfinite(act_space.low).all() and np.isfinite(act_space.high).all()):
            raise ValueError("DDPG needs finite action bounds")
        self.obs_dim, self.act_dim = int(np.prod(obs_space.shape)), int(np.prod(act_space.shape))
        self.act_shape, self.low, self.high = act_space.shape, act_space.low.astype(np.float64), act_space.high.astype(np.float64)
        self.n = env.num_envs if self.vector else 1
        if self.vector:
            mode = env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
            self.mode = gym.vector.AutoresetMode(mode)
            if self.mode == gym.vector.AutoresetMode.DISABLED:
                raise ValueError("vector env with autoreset disabled is not supported")
        obs, _ = env.reset(seed=seed)
        self.obs = self._flat(obs)
        self.valid = np.ones(self.n, dtype=bool)  # False: this env's next step is an autoreset (NEXT_STEP)
        self.ret = np.zeros(self.n)

    def _flat(self, obs) -> np.ndarray:
        return np.asarray(obs, dtype=np.float32).reshape(self.n, self.obs_dim)

    def scale(self, a: np.ndarray) -> np.ndarray:
        """[-1, 1] -> [low, high]."""
        a = self.low + (np.clip(a, -1.0, 1.0) + 1.0) * 0.5 * (self.high - self.low)
        return a.reshape((self.n, *self.act_shape)) if self.vector else a.reshape(self.act_shape)

    def _dt(self, info) -> np.ndarray:
        if self.dt_key not in info:
            return np.ones(self.n)
        dt = np.broadcast_to(np.asarray(info[self.dt_key], dtype=np.float64), (self.n,)).copy()
        if self.vector and f"_{self.dt_key}" in info:
            dt[~info[f"_{self.dt_key}"]] = 1.0
        if not (np.isfinite(dt).all() and (dt > 0).all()):
            raise ValueError(f"info[{self.dt_key!r}] must be finite and > 0 (decision periods), got {dt}")
        return dt

    def step(self, a: np.ndarray):
        """Returns (obs, a, r, next_obs, terminated, dt) of the valid transitions and finished returns."""
        obs, valid = self.obs, self.valid
        nxt, r, term, trunc, info = self.env.step(self.scale(a))
        nxt = self._flat(nxt)
        r = np.asarray(r, dtype=np.float64).reshape(self.n)
        term = np.asarray(term, dtype=bool).reshape(self.n)
        done = term | np.asarray(trunc, dtype=bool).reshape(self.n)
        dt = self._dt(info)
        store_next = nxt
        if self.vector and self.mode == gym.vector.AutoresetMode.SAME_STEP and done.any():
            store_next = nxt.copy()
            for i in np.flatnonzero(done):
                store_next[i] = np.asarray(info["final_obs"][i], dtype=np.float32).reshape(self.obs_dim)
        self.ret += np.where(valid, r, 0.0)
        ended = done & valid
        finished = self.ret[ended].tolist()
        self.ret[ended] = 0.0
        if not self.vector and done[0]:
            nxt = self._flat(self.env.reset()[0])
        self.obs = nxt
        if self.vector and self.mode == gym.vector.AutoresetMode.NEXT_STEP:
            self.valid = ~done
        out = (obs[valid], a[valid], r[valid], store_next[valid], term[valid], dt[valid])
        return out, finished, ended


def train(
    env: gym.Env | gym.vector.VectorEnv,
    cfg: DDPGConfig,
    callback: Callback | None = None,
    obs_mean=None,
    obs_std=None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: str | Path | None = None,
    init: dict | None = None,
    stop_on: tuple[type[BaseException], ...] = (),
) -> DDPG:
    """Train DDPG on `env` for cfg.total_steps transitions.

    checkpoint/checkpoint_every: save the agent, replay buffer and step counter every that many
    transitions (and at the end). resume: continue from such a checkpoint (the env is reset).
    init: an agent's state dict to start from (fine-tuning; a fresh buffer and step counter).
    stop_on: exceptions that end training (a live stand's link lost, Ctrl-C): the checkpoint is saved
    with the transitions so far, then the exception propagates.
    """
    if checkpoint_every and checkpoint is None:
        raise ValueError("checkpoint_every needs a checkpoint path")
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    stepper = _Stepper(env, cfg.seed, cfg.dt_key)
    agent = DDPG(stepper.obs_dim, stepper.act_dim, cfg, obs_mean, obs_std)
    buf = ReplayBuffer(cfg.buffer_size, stepper.obs_dim, stepper.act_dim, agent.device)
    step = updates = 0
    if init is not None:
        agent.load_state_dict(init)
    if resume is not None:
        sd = torch.load(resume, map_location=agent.device, weights_only=False)
        agent.load_state_dict(sd["agent"])
        buf.load_state_dict(sd["buffer"])
        step, updates = sd["step"], sd["updates"]
        rng.bit_generator.state = sd["rng"]

    def save() -> None:
        torch.save({"agent": agent.state_dict(), "buffer": buf.state_dict(), "step": step, "updates": updates, "rng": rng.bit_generator.state}, checkpoint)

    shape = (stepper.n, stepper.act_dim)
    noise = (
        OUNoise(shape, cfg.ou_theta, cfg.noise_sigma, cfg.noise_sigma_final, rng)
        if cfg.noise == "ou"
        else GaussianNoise(shape, cfg.noise_sigma, rng)
    )
    since_update = 0
    next_ckpt = step + checkpoint_every if checkpoint_every else None
    try:
        while step < cfg.total_steps:
            if step < cfg.learning_starts:
                a = rng.uniform(-1.0, 1.0, shape)
            else:
                a = np.clip(agent.act(stepper.obs) + noise(step / cfg.total_steps), -1.0, 1.0)
            (o, a_, r, o2, term, dt), finished, ended = stepper.step(a)
            if ended.any():
                noise.reset(ended)
            if len(r):
                buf.add(agent.normalize(torch.as_tensor(o, device=agent.device)), a_, r, agent.normalize(torch.as_tensor(o2, device=agent.device)), term, dt)
            step += len(r)
            since_update += len(r)
            burst = bool(finished) if cfg.train_freq == "episode" else since_update >= cfg.train_freq
            if burst and step > cfg.learning_starts and buf.size >= cfg.batch_size:
                n = since_update if cfg.gradient_steps < 0 else cfg.gradient_steps
                for _ in range(n):
                    agent.update(*buf.sample(cfg.batch_size))
                updates += n
                since_update = 0
            elif burst and step <= cfg.learning_starts:
                since_update = 0  # warm-up transitions do not pile up into the first burst
            if callback is not None and callback(TrainEvent(step, finished, agent, updates)) is False:
                break
            if next_ckpt is not None and step >= next_ckpt:
                save()
                next_ckpt += checkpoint_every
    except stop_on:  # anywhere in the loop (Ctrl-C lands in an update as often as in the env's step)
        if checkpoint is not None:
            save()
        raise
    if checkpoint is not None:
        save()
    return agent


def evaluate(agent: DDPG, env: gym.Env, episodes: int = 10, seed: int = 0) -> np.ndarray:
    """Deterministic (noise-free) returns of `episodes` episodes on a single env."""
    stepper = _Stepper(env, seed, agent.cfg.dt_key)
    returns: list[float] = []
    while len(returns) < episodes:
        _, finished, _ = stepper.step(agent.act(stepper.obs))
        returns.extend(finished)
    return np.asarray(returns[:episodes])
