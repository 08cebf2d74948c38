"""A small recurrent scan policy with the export signature (learner/ptycho/export.py), for the ptycho tests:
pooled reconstruction + the mean of the last sub-sequence + its count → a linear layer → 2 stacked GRU layers
→ the means (sigmoid). ``bias`` shifts the means' logits (a large one drives them to the field's edge)."""
from __future__ import annotations

import torch
from torch import nn

from controller.modes.ptycho import spec


class TinyScanNet(nn.Module):
    def __init__(self, hidden: int = 8, seed: int = 0, bias: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.encode = nn.Linear(16 + 3, hidden)
        self.gru = nn.GRU(hidden, hidden, num_layers=spec.LAYERS, batch_first=True)
        self.head = nn.Linear(hidden, 2 * spec.M_MAX)
        with torch.no_grad():
            self.head.weight.mul_(20.0)  # spread the means over the field
            self.head.bias.add_(bias)

    def forward(self, recon: torch.Tensor, positions: torch.Tensor, count: torch.Tensor,
                hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean_position = positions.sum(1) / count.clamp(min=1.0)
        x = torch.cat([self.pool(recon).flatten(1) * 10.0, mean_position, count / spec.M_MAX], 1)
        y, h = self.gru(torch.tanh(self.encode(x))[:, None, :], hidden.transpose(0, 1).contiguous())
        means = torch.sigmoid(self.head(y[:, 0])).reshape(-1, spec.M_MAX, 2)
        return means, h.transpose(0, 1)
