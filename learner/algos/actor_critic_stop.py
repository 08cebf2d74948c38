"""Algorithm 2 of the CT angle-selection paper: actor-critic with a separate terminal policy.

At state x̂_k (the reconstruction after k−1 angles) the network gives the angle policy π_a(θ | x̂_k)
(masked softmax), the continuation value V̂_C(x̂_k) and the terminal policy p_k = π_ter(d = 1 | x̂_k).
θ_k ~ π_a and d_k ~ π_ter are sampled together; θ_k is acquired either way and d_k = 1 ends the
episode after it (as the environment, learner/ct/env.py). B episodes are stepped together and one
update is made per step on the B transitions (the paper's per-step updates, batched):

  TD error (line 11, with γ on the bootstrap):
      δ_k = −b + γ·[(1 − p_{k+1})·V̂_C(x̂_{k+1}) + p_{k+1}·PSNR(x̂_{k+1})] − V̂_C(x̂_k);
      when the episode ends at this step the bootstrap is the reward it got: δ_k = −b + PSNR(x̂_{k+1}) − V̂_C(x̂_k).
  actor    (line 12, eq. 14, A_C ≈ δ_k):  L_a = −log π_a(θ_k | x̂_k)·δ_k
  critic   (line 14):                     L_c = δ_k²  (target detached; ½·∇L_c = −δ_k·∇V̂_C)
  terminal (line 13, eq. 16):             L_t = −p_k·(PSNR(x̂_k) − V̂_C(x̂_k))  (bracket detached)
  entropy:                                L_e = −H(π_a(· | x̂_k))
  loss = 1.0·L_a + 0.5·L_c + 1.0·L_t + 0.01·L_e   (paper §5.2), batch means, Adam(1e-4, wd 1e-5).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from learner.ct.env import CTBatchEnv, CTObs, CTStep
from learner.ct.net import ACConfig, CTActorCritic, masked_policy, stop_policy


@dataclass
class TerminalConfig(ACConfig):
    w_terminal: float = 1.0


def terminal_losses(cfg: TerminalConfig, cost: float, logp: torch.Tensor, entropy: torch.Tensor,
                    v: torch.Tensor, p: torch.Tensor, psnr: torch.Tensor, v_next: torch.Tensor,
                    p_next: torch.Tensor, psnr_next: torch.Tensor, done: torch.Tensor) -> dict[str, torch.Tensor]:
    """The loss terms above for a batch of transitions x̂_k → x̂_{k+1} (v_next, p_next without grad)."""
    bootstrap = torch.where(done, psnr_next, cfg.gamma * ((1 - p_next) * v_next + p_next * psnr_next))
    delta = -cost + bootstrap - v  # line 11
    adv = delta.detach()
    terms = {
        "actor": -(logp * adv).mean(),
        "critic": (delta**2).mean(),
        "terminal": -(p * (psnr - v).detach()).mean(),
        "entropy": -entropy.mean(),
    }
    terms["loss"] = (cfg.w_actor * terms["actor"] + cfg.w_critic * terms["critic"]
                     + cfg.w_terminal * terms["terminal"] + cfg.w_entropy * terms["entropy"])
    terms["td"] = adv.mean()
    return terms


class TerminalActorCritic:
    algo = "terminal"

    def __init__(self, net: CTActorCritic, cfg: TerminalConfig = TerminalConfig(), seed: int = 0) -> None:
        self.net, self.cfg = net, cfg
        self.device = next(net.parameters()).device
        self.opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.gen = torch.Generator(device="cpu").manual_seed(seed)

    def _heads(self, obs: CTObs):
        logits, v, stop_logit = self.net(obs.image.to(self.device))
        return masked_policy(logits, ~obs.acquired.to(self.device)), v, stop_policy(stop_logit)

    @torch.no_grad()
    def act(self, obs: CTObs, greedy: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Angles (B,) and stop decisions (B,): argmax and p ≥ 0.5 when greedy, else sampled."""
        pi, _, ter = self._heads(obs)
        if greedy:
            return pi.probs.argmax(-1).cpu().numpy(), (ter.probs >= 0.5).cpu().numpy()
        u = torch.rand(pi.probs.shape[0], generator=self.gen)
        angle = torch.multinomial(pi.probs.cpu(), 1, generator=self.gen).squeeze(-1)
        return angle.numpy(), (u < ter.probs.cpu()).numpy()

    def train_step(self, env: CTBatchEnv, obs: CTObs) -> tuple[CTStep, dict[str, float]]:
        """One environment step of all B episodes (all active) and one update (Algorithm 2, lines 5–14)."""
        angle, stop = self.act(obs, greedy=False)
        step = env.step(angle, stop)
        pi, v, ter = self._heads(obs)
        with torch.no_grad():
            _, v_next, ter_next = self._heads(step.obs)
        t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=self.device)  # noqa: E731
        terms = terminal_losses(
            self.cfg, env.cfg.cost, pi.log_prob(torch.as_tensor(angle, device=self.device)), pi.entropy(),
            v, ter.probs, t(obs.psnr), v_next, ter_next.probs, t(step.obs.psnr),
            torch.as_tensor(step.done, device=self.device))
        self.opt.zero_grad()
        terms["loss"].backward()
        self.opt.step()
        return step, {k: float(x.detach()) for k, x in terms.items()}
