"""The actor-critic network of the CT angle-selection paper (Appendix F, Table 4), shared by
Algorithm 1 (`ct_naive`) and Algorithm 2 (`ct_actor_critic`), plus their common hyper-parameters.

Encoder: Conv(3, s2) → GroupNorm(4) → LeakyReLU(0.2) → MaxPool(2) → Conv(3) 12→24 → GN → LReLU →
MaxPool(2) → Conv(3) 24→48 → GN → LReLU → MaxPool(4) → Flatten (48·7·7 = 2352 for 239 × 239).
Heads: angle logits Linear(F, n_logits) (masked softmax: invalid logits set to −1e8, Huang & Ontañón
2020); value Linear(F, F) → ReLU → Linear(F, 1); terminal Linear(F, 1) (sigmoid = π_ter(d = 1 | x̂)).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Bernoulli, Categorical

MASKED_LOGIT = -1e8


@dataclass
class ACConfig:
    """Loss weights and optimiser shared by both algorithms (paper §5.2)."""

    gamma: float = 0.99
    lr: float = 1e-4  # Adam
    weight_decay: float = 1e-5
    w_actor: float = 1.0
    w_critic: float = 0.5
    w_entropy: float = 0.01


def _block(c_in: int, c_out: int, pool: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.GroupNorm(4, c_out),
            nn.LeakyReLU(0.2), nn.MaxPool2d(pool)]


class CTActorCritic(nn.Module):
    """Table 4. forward(image (B, 1, N, N)) -> (angle logits (B, n_logits), value (B,), stop logit (B,))."""

    def __init__(self, size: int, n_logits: int = 180) -> None:
        super().__init__()
        self.size, self.n_logits = size, n_logits
        self.encoder = nn.Sequential(*_block(1, 12, 2, stride=2), *_block(12, 24, 2), *_block(24, 48, 4),
                                     nn.Flatten())
        with torch.no_grad():
            feat = self.encoder(torch.zeros(1, 1, size, size)).shape[1]
        if feat == 0:
            raise ValueError(f"image size {size} too small for the Table 4 encoder")
        self.actor = nn.Linear(feat, n_logits)
        self.critic = nn.Sequential(nn.Linear(feat, feat), nn.ReLU(), nn.Linear(feat, 1))
        self.terminal = nn.Linear(feat, 1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.encoder(image)
        return self.actor(h), self.critic(h).squeeze(-1), self.terminal(h).squeeze(-1)


def masked_policy(logits: torch.Tensor, valid: torch.Tensor) -> Categorical:
    """Softmax over the valid actions only (invalid logits replaced, so their probability is 0)."""
    return Categorical(logits=torch.where(valid, logits, torch.full_like(logits, MASKED_LOGIT)))


def stop_policy(stop_logit: torch.Tensor) -> Bernoulli:
    """π_ter(d | x̂): Bernoulli with p = sigmoid(terminal head)."""
    return Bernoulli(logits=stop_logit)
