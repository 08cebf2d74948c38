"""The scan policy of the adaptive-scanning paper (Schloz et al., Fig. 2), one sub-sequence per call.

    z_t = Enc(V_t)                      convolutional encoder of the reconstruction (the paper's autoencoder half)
    C_t = FC_θz(z_t)                    eq. 5: processed structure information
    L_t = FC_θR(R_Pt, M_t, R̄_t)         eq. 4: processed location information (the last sub-sequence's positions,
                                        zero-padded to M_MAX, their count, and the prior R̄_t below)
    X_t = FC_θLC([C_t ‖ L_t])           the hybrid input
    H_{t+1} = GRU²(X_t, H_t)            2 stacked GRU layers carry the history h_t
    μ_θ(h_t) = clip(R̄_t + REACH · tanh(FC_θH(H_{t+1})), 0, 1)
                                        eq. 3 as offsets from the prior R̄_t (the edge's own next sub-sequence, the
                                        Halton continuation: path.prior): M_MAX positions in [0, 1]², a
                                        sub-sequence of M takes the first M
    π_θ(a_t | h_t) = N(μ_θ(h_t), σ²I)   eq. 6, σ = 0.0125 fixed (per coordinate, per position)

The reconstruction is normalised per sample to zero mean and unit variance (as the paper's encoder input).
FC_θH starts at zero, so an untrained policy is the Halton continuation exactly: what the paper's pre-training
(Appendix C, Fig. 7b) reaches by regression is built in, and RL learns where to deviate from it.
`forward(recon (B, 1, G, G), positions (B, M_MAX, 2), count (B, 1), prior (B, M_MAX, 2), hidden (B, L, H))
-> (means (B, M_MAX, 2), hidden_next (B, L, H))` is the ONNX contract of controller/modes/ptycho/spec.py: one step, the recurrent state an
explicit input and output (the edge carries it). One network serves every sub-sequence size M ≤ M_MAX.
Sizes in `PolicyConfig`: `cpu()` trains on this machine, `paper()` is the paper's 2 × 2048 GRU (for a GPU).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Normal

from controller.modes.ptycho.path import prior
from controller.modes.ptycho.spec import LAYERS, M_MAX

REACH = 0.25  # the largest offset from the prior, in units of the field (25 grid steps)


@dataclass(frozen=True)
class PolicyConfig:
    field: int = 100  # G: the reconstruction's side [px]
    channels: tuple[int, ...] = (8, 16, 32, 32)  # encoder: one stride-2 3 × 3 conv per entry
    features: int = 128  # width of C_t, L_t and X_t
    hidden: int = 256  # H: GRU state per layer
    sigma: float = 0.0125  # σ of eq. 6

    @classmethod
    def cpu(cls) -> "PolicyConfig":
        return cls()

    @classmethod
    def paper(cls) -> "PolicyConfig":
        return cls(channels=(16, 32, 64, 128, 256, 512), features=1024, hidden=2048)


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
        self.fc_r = nn.Sequential(nn.Linear(4 * M_MAX + 1, f), nn.ReLU())  # eq. 4
        self.fc_lc = nn.Sequential(nn.Linear(2 * f, f), nn.ReLU())
        self.gru = nn.GRU(f, cfg.hidden, LAYERS, batch_first=True)
        self.fc_h = nn.Linear(cfg.hidden, 2 * M_MAX)  # eq. 3: offsets from the prior
        nn.init.zeros_(self.fc_h.weight)
        nn.init.zeros_(self.fc_h.bias)

    def initial_hidden(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, LAYERS, self.cfg.hidden, device=self.fc_h.weight.device)

    def forward(self, recon: torch.Tensor, positions: torch.Tensor, count: torch.Tensor, prior: torch.Tensor,
                hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = recon.mean((1, 2, 3), keepdim=True)
        std = recon.std((1, 2, 3), keepdim=True) + 1e-6
        c = self.fc_z(self.encoder((recon - mean) / std))
        l_t = self.fc_r(torch.cat([positions.flatten(1), count / M_MAX, prior.flatten(1)], 1))
        x = self.fc_lc(torch.cat([c, l_t], 1))
        out, h = self.gru(x[:, None], hidden.transpose(0, 1).contiguous())
        offsets = REACH * torch.tanh(self.fc_h(out[:, 0])).view(-1, M_MAX, 2)
        return (prior + offsets).clamp(0.0, 1.0), h.transpose(0, 1)

    def step(self, recon: torch.Tensor, last: torch.Tensor, done: int,
             hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward` after ``done`` positions, the last sub-sequence ``last`` (B, M, 2) unpadded: pads and counts
        it, and gives the prior (path.prior(done))."""
        b, device = last.shape[0], last.device
        padded = torch.zeros(b, M_MAX, 2, dtype=last.dtype, device=device)
        padded[:, :last.shape[1]] = last
        default = torch.as_tensor(prior(done), dtype=last.dtype, device=device).expand(b, M_MAX, 2)
        return self(recon, padded, torch.full((b, 1), float(last.shape[1]), device=device), default, hidden)

    def distribution(self, means: torch.Tensor) -> Normal:
        """π_θ(· | h_t) of eq. 6 for every position and coordinate."""
        return Normal(means, torch.full_like(means, self.cfg.sigma))
