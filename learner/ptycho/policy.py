"""The scan policy of the adaptive-scanning paper (Schloz et al., Fig. 2), one sub-sequence per call.

    z_t = Enc(V_t)                      convolutional encoder of the reconstruction (the paper's autoencoder half)
    C_t = FC_θz(z_t)                    eq. 5: processed structure information
    L_t = FC_θR(R_Pt)                   eq. 4: processed location information (the last sub-sequence's positions)
    X_t = FC_θLC([C_t ‖ L_t])           the hybrid input
    H_{t+1} = GRU²(X_t, H_t)            2 stacked GRU layers carry the history h_t
    μ_θ(h_t) = sigmoid(FC_θH(H_{t+1}))  eq. 3: the next sub-sequence's M positions in [0, 1]²
    π_θ(a_t | h_t) = N(μ_θ(h_t), σ²I)   eq. 6, σ = 0.0125 fixed (per coordinate, per position)

The reconstruction is normalised per sample to zero mean and unit variance (as the paper's encoder input).
`forward(recon (B, 1, G, G), last_positions (B, M, 2), hidden (L, B, H)) -> (means (B, M, 2), hidden)` has the
recurrent state as an explicit input and output, so it exports to ONNX as one step (the edge carries the state).
Sizes in `PolicyConfig`: `cpu()` trains on this machine, `paper()` is the paper's 2 × 2048 GRU (for a GPU).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Normal


@dataclass(frozen=True)
class PolicyConfig:
    positions: int = 50  # M per sub-sequence
    field: int = 100  # G: the reconstruction's side [px]
    channels: tuple[int, ...] = (8, 16, 32, 32)  # encoder: one stride-2 3 × 3 conv per entry
    features: int = 128  # width of C_t, L_t and X_t
    hidden: int = 256  # H: GRU state per layer
    layers: int = 2
    sigma: float = 0.0125  # σ of eq. 6

    @classmethod
    def cpu(cls, positions: int = 50) -> "PolicyConfig":
        return cls(positions=positions)

    @classmethod
    def paper(cls, positions: int = 50) -> "PolicyConfig":
        return cls(positions=positions, channels=(16, 32, 64, 128, 256, 512), features=1024, hidden=2048)


class ScanPolicy(nn.Module):
    """Fig. 2's network; see the module docstring for the equations."""

    def __init__(self, cfg: PolicyConfig = PolicyConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        convs: list[nn.Module] = []
        for c_in, c_out in zip((1, *cfg.channels), cfg.channels):
            convs += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
        self.encoder = nn.Sequential(*convs, nn.Flatten())
        with torch.no_grad():
            z = self.encoder(torch.zeros(1, 1, cfg.field, cfg.field)).shape[1]
        f = cfg.features
        self.fc_z = nn.Sequential(nn.Linear(z, f), nn.ReLU())  # eq. 5
        self.fc_r = nn.Sequential(nn.Linear(2 * cfg.positions, f), nn.ReLU())  # eq. 4
        self.fc_lc = nn.Sequential(nn.Linear(2 * f, f), nn.ReLU())
        self.gru = nn.GRU(f, cfg.hidden, cfg.layers, batch_first=True)
        self.fc_h = nn.Linear(cfg.hidden, 2 * cfg.positions)  # eq. 3

    def initial_hidden(self, batch: int) -> torch.Tensor:
        return torch.zeros(self.cfg.layers, batch, self.cfg.hidden, device=self.fc_h.weight.device)

    def forward(self, recon: torch.Tensor, last_positions: torch.Tensor,
                hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = recon.mean((1, 2, 3), keepdim=True)
        std = recon.std((1, 2, 3), keepdim=True) + 1e-6
        c = self.fc_z(self.encoder((recon - mean) / std))
        l_t = self.fc_r(last_positions.flatten(1))
        x = self.fc_lc(torch.cat([c, l_t], 1))
        out, hidden = self.gru(x[:, None], hidden)
        means = torch.sigmoid(self.fc_h(out[:, 0])).view(-1, self.cfg.positions, 2)
        return means, hidden

    def distribution(self, means: torch.Tensor) -> Normal:
        """π_θ(· | h_t) of eq. 6 for every position and coordinate."""
        return Normal(means, torch.full_like(means, self.cfg.sigma))
