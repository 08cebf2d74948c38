"""The transceiver policy of the reinforced-inverse-scattering paper (Jiang–Khoo–Yang §3.2, the authors' code):

    x_t = MLP(s_t)                       feature network s_t → 256 → 256 (ReLU)
    h_{t+1} = GRU³(x_t, h_t)             3 stacked GRU layers (256), the history
    π(θ | h) = softmax(A(h) + mask)      angle head, one hidden layer → 360; used angles masked (spec.MASKED)
    π(f | h, θ) = softmax(Φ(h, θ))       frequency head given the chosen angle: [h ‖ onehot(θ)] → 256 → 256 → 4
    V(s_≤t) = Lin(GRU²(MLP₆₄(s_t)))      the value network: its own MLP (64) and 2-layer GRU (64)

`Actor.forward(obs (B, OBS), hidden (B, LAYERS, H)) -> (angle_logits (B, 360), frequency_logits (B, 360, 4),
hidden_next)` is the ONNX contract of controller/modes/scatter/spec.py: the frequency head is evaluated for every
angle at once (its first layer splits into W_h·h + W_θ[:, θ], so all 360 rows cost one matrix product), and the
mask comes from the observation's angle–frequency block, so the exported graph masks by itself.

`mode` chooses what is learned (Table 1's rows): "both"; "angle" (the frequency is fixed to `fixed_freq`);
"frequency" (the angle is drawn uniformly from the unused ones, the policy picks its frequency).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

from controller.modes.scatter import spec
from learner.scatter.batched import Tables
from learner.scatter.episode import Scans

MODES = ("both", "angle", "frequency")
N_FREQ = len(spec.FREQUENCY_FACTORS)


@dataclass(frozen=True)
class PolicyConfig:
    budget: int = spec.BUDGET
    features: int = 256
    hidden: int = 256  # H, per GRU layer (3 layers, spec.LAYERS)
    value_hidden: int = 64
    value_layers: int = 2


def _mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def used_mask(obs: torch.Tensor, budget: int) -> torch.Tensor:
    """(B, 360) bool: angles the observation's angle–frequency block marks as used."""
    return obs[:, 2 * budget : 2 * budget + spec.N_ANGLES] > 0


class Actor(nn.Module):
    """Feature MLP → GRU³ → angle head and angle-conditioned frequency head (module docstring)."""

    def __init__(self, cfg: PolicyConfig = PolicyConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        f, h = cfg.features, cfg.hidden
        self.features = nn.Sequential(_mlp((spec.obs_size(cfg.budget), f, f)), nn.ReLU())
        self.gru = nn.GRU(f, h, spec.LAYERS, batch_first=True)
        self.angle_head = _mlp((h, h, spec.N_ANGLES))
        self.freq_hidden = nn.Linear(h, h)  # W_h (with the bias)
        self.freq_angle = nn.Parameter(torch.randn(spec.N_ANGLES, h) / np.sqrt(spec.N_ANGLES))  # W_θ columns
        self.freq_out = nn.Sequential(nn.ReLU(), _mlp((h, h, N_FREQ)))

    def initial_hidden(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, spec.LAYERS, self.cfg.hidden, device=self.freq_angle.device)

    def heads(self, out: torch.Tensor, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Angle logits (…, 360) masked, frequency logits (…, 360, 4) from GRU outputs (…, H)."""
        angle = self.angle_head(out).masked_fill(used_mask(obs.reshape(-1, obs.shape[-1]), self.cfg.budget)
                                                 .reshape(*obs.shape[:-1], spec.N_ANGLES), spec.MASKED)
        freq = self.freq_out(self.freq_hidden(out)[..., None, :] + self.freq_angle)
        return angle, freq

    def forward(self, obs: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, h = self.gru(self.features(obs)[:, None], hidden.transpose(0, 1).contiguous())
        angle, freq = self.heads(out[:, 0], obs)
        return angle, freq, h.transpose(0, 1)

    def sequence(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits for whole episodes obs (B, T, OBS) from the zero state (PPO's re-evaluation)."""
        out, _ = self.gru(self.features(obs))
        return self.heads(out, obs)


class Critic(nn.Module):
    """V(s_≤t): MLP (64) → GRU² (64) → 1, over whole episodes (B, T, OBS) → (B, T)."""

    def __init__(self, cfg: PolicyConfig = PolicyConfig()) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(spec.obs_size(cfg.budget), cfg.value_hidden), nn.ReLU())
        self.gru = nn.GRU(cfg.value_hidden, cfg.value_hidden, cfg.value_layers, batch_first=True)
        self.out = nn.Linear(cfg.value_hidden, 1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.features(obs))
        return self.out(out)[..., 0]


def log_prob(angle_logits: torch.Tensor, freq_logits: torch.Tensor, angles: torch.Tensor, freqs: torch.Tensor,
             mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """log π of the learned part of the actions and its entropy, for logits (…, 360) / (…, 360, 4) and actions (…)."""
    a_dist = Categorical(logits=angle_logits)
    f_logits = freq_logits.gather(-2, angles[..., None, None].expand(*angles.shape, 1, N_FREQ))[..., 0, :]
    f_dist = Categorical(logits=f_logits)
    if mode == "both":
        return a_dist.log_prob(angles) + f_dist.log_prob(freqs), a_dist.entropy() + f_dist.entropy()
    if mode == "angle":
        return a_dist.log_prob(angles), a_dist.entropy()
    return f_dist.log_prob(freqs), f_dist.entropy()


class PolicyDesigner:
    """Drives episode.run with the actor, carrying the GRU state: greedy (arg-max, as the edge) or sampled.
    Keeps each step's observation (PPO's batch when sampling)."""

    def __init__(self, actor: Actor, tables: Tables, mode: str = "both", fixed_freq: int = N_FREQ - 1,
                 sample: bool = False, generator: torch.Generator | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not 0 <= fixed_freq < N_FREQ:
            raise ValueError(f"fixed_freq must be a frequency index 0..{N_FREQ - 1}, got {fixed_freq}")
        self.actor, self.tables, self.mode, self.fixed_freq = actor, tables, mode, fixed_freq
        self.sample, self.generator = sample, generator
        self.obs: list[torch.Tensor] = []

    def reset(self, scans: Scans, rng: np.random.Generator) -> None:
        self.hidden = self.actor.initial_hidden(scans.eta.shape[0])
        self.rng, self.obs = rng, []

    def _draw(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.sample:
            return logits.argmax(-1)
        u = torch.rand(logits.shape, generator=self.generator).to(logits.device).clamp_(1e-12, 1.0)
        return (logits - torch.log(-torch.log(u))).argmax(-1)  # Gumbel-max: a draw from softmax(logits)

    @torch.no_grad()
    def choose(self, scans: Scans) -> tuple[torch.Tensor, torch.Tensor]:
        obs = scans.observation(self.tables).to(self.hidden.device)
        self.obs.append(obs)
        angle_logits, freq_logits, self.hidden = self.actor(obs, self.hidden)
        b = obs.shape[0]
        if self.mode == "frequency":
            free = (~scans.used()).float().cpu().numpy()
            angles = torch.as_tensor([self.rng.choice(spec.N_ANGLES, p=f / f.sum()) for f in free],
                                     device=obs.device)
        else:
            angles = self._draw(angle_logits)
        rows = freq_logits[torch.arange(b, device=obs.device), angles]
        freqs = torch.full_like(angles, self.fixed_freq) if self.mode == "angle" else self._draw(rows)
        return angles, freqs
