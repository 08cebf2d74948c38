"""REINFORCE with per-position rewards for the scan policy (adaptive-scanning paper, eqs. 7–8 and C1).

Each position m of a predicted sub-sequence is an agent with its own reward r^m (its Voronoi cell,
learner/ptycho/voronoi.py). With γ = 0, as the paper, an agent's return is its own reward, G^m = r^m, and

    ∇J^m ≈ 1/N Σ_n Σ_t ∇ log π_θ(a^m_{n,t} | h_{n,t}) · (G^m_n − b^m_n)                   (eq. 8, with b)

over the N = B scans of a batch. Baseline b (the paper had none): for each position slot (sub-sequence t,
index m) the mean reward of that slot over the *other* scans of the batch (leave-one-out, so b^m_n does not
depend on a_n and the gradient stays unbiased). It removes what every scan of the batch shares (the slot's
typical cell size and brightness), leaving how much this draw did better, which lowers the variance; the
advantages are then divided by their batch standard deviation (a per-batch step-size normalisation).
Loss = −mean over (n, t, m) of log π · advantage; Adam. The Halton sub-sequence is not an action: its
positions get rewards (they own cells) but no gradient.

No pre-training: the paper fits its policy to the Halton continuation first (Appendix C, eq. C1, Fig. 7b) so
that RL starts from an even coverage; our policy proposes offsets from that continuation (learner/ptycho/policy.py)
with its last layer at zero, so it starts there exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from learner.ptycho.env import PtychoBatchEnv, PtychoObs, ScanResult, run_scan
from learner.ptycho.policy import ScanPolicy


@dataclass(frozen=True)
class ReinforceConfig:
    lr: float = 1e-4  # Adam (the paper: 1e-5 with 2 × 2048 GRUs and many more updates)
    baseline: bool = True  # leave-one-out batch mean per position slot
    normalise: bool = True  # advantages / their batch std
    grad_clip: float = 1.0  # global gradient norm


class Chooser:
    """Drives `run_scan` with the policy, carrying the GRU state: greedy (the means) or sampled from eq. 6
    (log-probabilities kept for eq. 8)."""

    def __init__(self, policy: ScanPolicy, mode: str = "greedy", gen: torch.Generator | None = None) -> None:
        if mode not in ("greedy", "sample"):
            raise ValueError(f"mode must be greedy or sample, got {mode!r}")
        self.policy, self.mode, self.gen = policy, mode, gen
        self.hidden: torch.Tensor | None = None
        self.logp: list[torch.Tensor] = []  # per call (B, M)
        self.means: list[torch.Tensor] = []  # per call (B, M, 2)

    def __call__(self, obs: PtychoObs) -> np.ndarray:
        if self.hidden is None:
            self.hidden = self.policy.initial_hidden(obs.recon.shape[0])
        means, self.hidden = self.policy.step(obs.recon, obs.last, obs.positions.shape[1], self.hidden)
        self.means.append(means)
        means = means[:, :obs.want]
        if self.mode == "greedy":
            return means.detach().cpu().numpy()
        noise = torch.randn(means.shape, generator=self.gen).to(means.device)
        action = (means + self.policy.cfg.sigma * noise).detach()
        self.logp.append(self.policy.distribution(means).log_prob(action).sum(-1))
        return action.cpu().numpy()


def advantages(rewards: torch.Tensor, cfg: ReinforceConfig) -> torch.Tensor:
    """G − b for the policy's positions, rewards (B, S) → (B, S) (module doc)."""
    adv = rewards
    batch = rewards.shape[0]
    if cfg.baseline and batch > 1:
        adv = rewards - (rewards.sum(0, keepdim=True) - rewards) / (batch - 1)
    if cfg.normalise and adv.numel() > 1:
        adv = adv / (adv.std() + 1e-8)
    return adv


def reinforce_loss(logp: torch.Tensor, rewards: torch.Tensor, cfg: ReinforceConfig) -> torch.Tensor:
    """−mean(log π · (G − b)), logp and rewards (B, S) over the policy's positions (eq. 8)."""
    return -(logp * advantages(rewards, cfg).detach()).mean()


class Reinforce:
    """The agent: a `ScanPolicy`, its optimiser and the sampling generator (all in a checkpoint)."""

    def __init__(self, policy: ScanPolicy, cfg: ReinforceConfig = ReinforceConfig(), seed: int = 0) -> None:
        self.policy, self.cfg = policy, cfg
        self.device = policy.fc_h.weight.device
        self.opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
        self.gen = torch.Generator(device="cpu").manual_seed(seed)

    def _update(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.grad_clip)
        self.opt.step()

    def train_step(self, env: PtychoBatchEnv) -> tuple[ScanResult, dict[str, float]]:
        """One batch of B scans sampled from π_θ and one update of eq. 8."""
        chooser = Chooser(self.policy, "sample", self.gen)
        scan = run_scan(env, chooser)
        rewards = torch.as_tensor(scan.rewards[:, env.cfg.sizes[0]:], dtype=torch.float32, device=self.device)
        loss = reinforce_loss(torch.cat(chooser.logp, 1), rewards, self.cfg)
        self._update(loss)
        return scan, {"loss": float(loss.detach()), "reward": float(rewards.sum(1).mean())}
