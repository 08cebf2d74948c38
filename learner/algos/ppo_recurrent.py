"""Recurrent PPO for the transceiver policy (Jiang–Khoo–Yang §3.3, Algorithm 1; Schulman et al. 2017).

Episodes are short (K = 10 steps) and all start from the zero GRU state, so the update re-runs whole episodes
through both GRUs (full back-propagation through time), no truncation or stored states:

    Â_t = Σ_l (γλ)^l δ_{t+l},  δ_t = r_t + γ V(s_{t+1}) − V(s_t)    GAE, γ = 1, λ = 0.995 (the authors')
    L^CLIP = E[min(ρ_t Â_t, clip(ρ_t, 1 − ε, 1 + ε) Â_t)],   ρ_t = π_θ(a_t|s_≤t) / π_old(a_t|s_≤t)
    L = −L^CLIP + c_V·E[(V(s_≤t) − R̂_t)²] − c_H·E[H(π_θ)]

advantages normalised over the batch; Adam (lr 1e-4), 5 epochs over each batch of 6 episodes, gradients
clipped to norm 1.0 — the authors' settings. π(a_t) is the learned part of the action (learner/scatter/policy.py
`log_prob`: angle and frequency, angle only, or frequency only).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from learner.scatter.policy import Actor, Critic, log_prob


@dataclass(frozen=True)
class PPOConfig:
    lr: float = 1e-4
    epochs: int = 5
    clip: float = 0.2  # ε
    gamma: float = 1.0
    gae_lambda: float = 0.995
    value_coef: float = 0.5  # c_V
    entropy_coef: float = 1e-3  # c_H
    grad_clip: float = 1.0


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns (B, T) for episodes that all end after T steps (V after the end = 0)."""
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        following = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        running = rewards[:, t] + gamma * following - values[:, t] + gamma * lam * running
        adv[:, t] = running
    return adv, adv + values


class RecurrentPPO:
    """Actor, critic and their optimiser (all in a checkpoint)."""

    def __init__(self, actor: Actor, critic: Critic, mode: str, cfg: PPOConfig = PPOConfig()) -> None:
        self.actor, self.critic, self.mode, self.cfg = actor, critic, mode, cfg
        self.params = [*actor.parameters(), *critic.parameters()]
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr)

    def update(self, obs: torch.Tensor, angles: torch.Tensor, freqs: torch.Tensor,
               rewards: torch.Tensor) -> dict[str, float]:
        """One PPO update from B whole episodes: obs (B, T, OBS), actions and rewards (B, T)."""
        cfg = self.cfg
        with torch.no_grad():
            old, _ = log_prob(*self.actor.sequence(obs), angles, freqs, self.mode)
            adv, returns = gae(rewards, self.critic(obs), cfg.gamma, cfg.gae_lambda)
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        for _ in range(cfg.epochs):
            logp, entropy = log_prob(*self.actor.sequence(obs), angles, freqs, self.mode)
            ratio = torch.exp(logp - old)
            surrogate = torch.min(ratio * adv, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv).mean()
            value_loss = (self.critic(obs) - returns).pow(2).mean()
            loss = -surrogate + cfg.value_coef * value_loss - cfg.entropy_coef * entropy.mean()
            self.opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            self.opt.step()
        return {"loss": float(loss.detach()), "value_loss": float(value_loss.detach()),
                "entropy": float(entropy.mean().detach()), "return": float(rewards.sum(1).mean())}
