"""For the ptycho tests: a small recurrent scan policy with the export signature (learner/ptycho/export.py),
a smooth phase sample, and the scan run in process (`reference`) that the mode must reproduce."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from controller.modes.ptycho import recon, spec
from controller.modes.ptycho.config import PtychoConfig
from controller.modes.ptycho.optics import Optics, probe
from controller.modes.ptycho.path import halton, prior, snap_unvisited
from controller.modes.ptycho.scan import policy_field
from controller.modes.ptycho.policy import ScanPolicy
from firmware_sim.ptycho.detector import counts

KEY = 9




class TinyScanNet(nn.Module):
    """Pooled reconstruction + the mean of the last sub-sequence + its count → a linear layer → 2 stacked GRU
    layers → the means (sigmoid). ``bias`` shifts the means' logits (a large one drives them to the edge)."""

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

    def forward(self, recon: torch.Tensor, positions: torch.Tensor, count: torch.Tensor, prior: torch.Tensor,
                hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean_position = positions.sum(1) / count.clamp(min=1.0)
        x = torch.cat([self.pool(recon).flatten(1) * 10.0, mean_position, count / spec.M_MAX], 1)
        y, h = self.gru(torch.tanh(self.encode(x))[:, None, :], hidden.transpose(0, 1).contiguous())
        means = torch.sigmoid(self.head(y[:, 0]).reshape(-1, spec.M_MAX, 2) + prior)
        return means, h.transpose(0, 1)


def sample(key: int = KEY) -> np.ndarray:
    """A smooth phase object (MoS₂ samples are the PHYS helper's; the mode takes any phase map)."""
    n = Optics().object_px
    rng = np.random.default_rng(key)
    y, x = np.mgrid[:n, :n] / n
    return 0.3 * np.sin(2 * np.pi * (rng.uniform(2, 5) * x + rng.uniform(0, 1))) * np.cos(
        2 * np.pi * rng.uniform(2, 5) * y) + 0.3


def reference(policy: ScanPolicy | None, cfg: PtychoConfig, key: int = KEY) -> tuple[list[list], np.ndarray]:
    """The scan in process: each sub-sequence's positions (the policy's order) and the final reconstruction."""
    o, phase = cfg.optics, sample(key)
    wave, visited = probe(o), np.zeros((o.grid, o.grid), bool)
    dose = cfg.dose * cfg.exposure_us / 1000  # the emulator's nominal exposure is 1 ms
    image, last, idx, amps, chosen, done = np.zeros((o.object_px, o.object_px)), np.zeros((0, 2)), [], [], [], 0
    if policy is not None:
        policy.reset()
    for t, size in enumerate(cfg.sizes):
        means = policy.decide(policy_field(image, o.grid, o.window), last, prior(done)) if policy and t else None
        planned = snap_unvisited(halton(size, done) if means is None else means[:size], visited)
        for p in planned:
            visited[tuple(p)] = True
            idx.append(recon.window_indices(p[None], o.object_px, o.window)[0])
            amps.append(recon.amplitudes(counts(wave, phase, tuple(p), dose, key).astype(np.float64), dose))
        data = recon.Measured(np.stack(idx)[None], np.stack(amps)[None], np.ones((1, len(idx))))
        image = recon.reconstruct(image.reshape(1, -1), wave, data, cfg.iterations).reshape(image.shape)
        last, done = planned / (o.grid - 1), done + size
        chosen.append(planned.tolist())
    return chosen, image
