"""Test fixtures of the transceiver task (issue #22): a disk scatterer at the training norm, and a tiny recurrent
policy with the ONNX contract of `controller.modes.scatter.spec` (the real one, learner/scatter/policy.py, exposes
its `.actor` with the same signature)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from controller.modes.scatter import physics, spec


def disk(n: int = 32, centre: tuple[float, float] = (0.1, -0.05), radius: float = 0.2) -> np.ndarray:
    """A homogeneous disk (x, y centre) scaled to ‖η‖₂ = spec.NORM."""
    g = physics.Grid(n)
    x, y = np.meshgrid(g.axis, g.axis, indexing="xy")
    eta = (np.hypot(x - centre[0], y - centre[1]) <= radius).astype(float)
    return eta * spec.NORM / np.linalg.norm(eta)


class TinyTransceiverNet(nn.Module):
    """obs → a linear layer → 3 stacked GRU layers → angle logits (used angles masked, as the real actor) and a
    frequency row per angle. ``bias`` is added to the angle logits (NaN: a policy that emits NaN)."""

    def __init__(self, hidden: int = 8, seed: int = 0, bias: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.hidden = hidden
        self.encode = nn.Linear(spec.obs_size(), hidden)
        self.gru = nn.GRU(hidden, hidden, num_layers=spec.LAYERS, batch_first=True)
        self.angle = nn.Linear(hidden, spec.N_ANGLES)
        self.freq = nn.Linear(hidden, spec.N_ANGLES * len(spec.FREQUENCY_FACTORS))
        with torch.no_grad():
            self.encode.weight.mul_(5.0)  # the data block is of order one: let it move the choices
            self.angle.weight.mul_(10.0)  # … and the state rather than the biases pick the angle
            self.angle.bias.add_(bias)

    def forward(self, obs: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y, h = self.gru(torch.tanh(self.encode(obs))[:, None], hidden.transpose(0, 1).contiguous())
        used = obs[:, 2 * spec.BUDGET : 2 * spec.BUDGET + spec.N_ANGLES] > 0
        angle = self.angle(y[:, 0]).masked_fill(used, spec.MASKED)
        return angle, self.freq(y[:, 0]).reshape(-1, spec.N_ANGLES, len(spec.FREQUENCY_FACTORS)), h.transpose(0, 1)
