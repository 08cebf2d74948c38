"""Algorithm 1 of the CT angle-selection paper: naive optimal stopping, "stop" as the 181st action.

One masked softmax over the n_angles grid angles plus a terminal action θ_max (never masked); the
value head estimates V̂(x̂). θ_max ends the episode without acquiring an angle (no cost, reward
PSNR(x̂_k)); an angle costs b and the M-th angle ends the episode with PSNR(x̂_{k+1}). Per step, on B
episodes at once (the environment's reward r_k = −b·[angle] + [terminal]·PSNR):
  TD error (line 10):  δ_k = r_k + γ·V̂(x̂_{k+1})·[not terminal] − V̂(x̂_k)
  actor  (line 11):    L_a = −log π(θ_k | x̂_k)·δ_k       critic (line 12): L_c = δ_k² (target detached)
  entropy:             L_e = −H(π(· | x̂_k))
  loss = 1.0·L_a + 0.5·L_c + 0.01·L_e   (paper §5.2), Adam(1e-4, wd 1e-5).
The terminal head of the shared network is unused here.
"""
from __future__ import annotations

import numpy as np
import torch

from learner.ct.env import CTBatchEnv, CTObs, CTStep
from learner.ct.net import ACConfig, CTActorCritic, masked_policy


class NaiveActorCritic:
    algo = "naive"

    def __init__(self, net: CTActorCritic, cfg: ACConfig = ACConfig(), seed: int = 0) -> None:
        self.net, self.cfg = net, cfg
        self.device = next(net.parameters()).device
        self.opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.gen = torch.Generator(device="cpu").manual_seed(seed)

    def _heads(self, obs: CTObs):
        logits, v, _ = self.net(obs.image.to(self.device))
        acq = obs.acquired.to(self.device)
        valid = torch.cat([~acq, torch.ones_like(acq[:, :1])], dim=1)  # θ_max always allowed
        return masked_policy(logits, valid), v

    def _to_env(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return action, action == self.net.n_logits - 1  # index n_angles = θ_max: stop, no angle

    @torch.no_grad()
    def act(self, obs: CTObs, greedy: bool = True) -> tuple[np.ndarray, np.ndarray]:
        pi, _ = self._heads(obs)
        if greedy:
            return self._to_env(pi.probs.argmax(-1).cpu().numpy())
        return self._to_env(torch.multinomial(pi.probs.cpu(), 1, generator=self.gen).squeeze(-1).numpy())

    def train_step(self, env: CTBatchEnv, obs: CTObs) -> tuple[CTStep, dict[str, float]]:
        angle, stop = self.act(obs, greedy=False)
        step = env.step(angle, stop)
        pi, v = self._heads(obs)
        with torch.no_grad():
            _, v_next = self._heads(step.obs)
        done = torch.as_tensor(step.done, device=self.device)
        r = torch.as_tensor(step.reward, dtype=torch.float32, device=self.device)
        delta = r + torch.where(done, 0.0, self.cfg.gamma * v_next) - v  # line 10
        adv = delta.detach()
        terms = {"actor": -(pi.log_prob(torch.as_tensor(angle, device=self.device)) * adv).mean(),
                 "critic": (delta**2).mean(), "entropy": -pi.entropy().mean()}
        terms["loss"] = (self.cfg.w_actor * terms["actor"] + self.cfg.w_critic * terms["critic"]
                         + self.cfg.w_entropy * terms["entropy"])
        terms["td"] = adv.mean()
        self.opt.zero_grad()
        terms["loss"].backward()
        self.opt.step()
        return step, {k: float(x.detach()) for k, x in terms.items()}
