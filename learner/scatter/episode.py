"""Scans stepped in lockstep: the batch engine of training and evaluation (paper §3, Algorithm 1).

A scan of budget K on a scatterer η: at step t the designer chooses the new transceiver's angle and frequency
index; the instrument measures that source at every transceiver placed so far (learner/scatter/batched.py,
noise-free or with additive complex Gaussian noise at an SNR relative to that acquisition's RMS, as the
emulator does); the reconstruction is updated by warm-started L1 L-BFGS (learner/scatter/recon.py). After the
last step `final_iterations` more iterations finish the reconstruction. The reward of step t is the PSNR gain
r_t = PSNR(η_t) − PSNR(η_{t−1}) = 10·log10(MSE_{t−1}/MSE_t) (the paper's MAX cancels), η_0 = 0.

A *designer* is anything with `reset(scans, rng)` and `choose(scans) -> (angles (B,), freqs (B,))`: the
learned policies (learner/scatter/policy.py) and the baselines (learner/scatter/designs.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from controller.modes.scatter import spec
from learner.scatter.batched import Tables, forward
from learner.scatter.recon import reconstruct


@dataclass
class Scans:
    eta: torch.Tensor  # (B, n, n) the true scatterers
    angles: torch.Tensor  # (B, K) long integer degrees, −1 = not yet placed
    freqs: torch.Tensor  # (B, K) long frequency indices, −1 = not yet placed
    data: torch.Tensor  # (B, K, K) complex: d[s, r] for r ≤ s, zeros elsewhere
    recon: torch.Tensor  # (B, n, n) the current reconstruction
    t: int = 0  # transceivers placed

    @classmethod
    def start(cls, eta: torch.Tensor, tables: Tables, budget: int = spec.BUDGET) -> "Scans":
        b, dev = eta.shape[0], tables.device
        eta = eta.to(device=dev, dtype=tables.k.dtype)
        none = torch.full((b, budget), -1, dtype=torch.long, device=dev)
        return cls(eta, none, none.clone(), torch.zeros(b, budget, budget, dtype=tables.dtype, device=dev),
                   torch.zeros_like(eta))

    @property
    def budget(self) -> int:
        return self.angles.shape[1]

    @property
    def done(self) -> bool:
        return self.t == self.budget

    def used(self) -> torch.Tensor:
        """(B, 360) bool: angles already holding a transceiver."""
        used = torch.zeros(self.eta.shape[0], spec.N_ANGLES, dtype=torch.bool, device=self.eta.device)
        return used.scatter(1, self.angles[:, : self.t], True) if self.t else used

    def observation(self, tables: Tables) -> torch.Tensor:
        """(B, OBS) float32 s_t, the batched spec.observation."""
        b, k = self.eta.shape[0], self.budget
        obs = torch.zeros(b, spec.obs_size(k), device=self.eta.device)
        if self.t:
            f = self.freqs[:, self.t - 1]
            scale = torch.as_tensor([spec.data_scale(float(kk), tables.n) for kk in tables.k],
                                    device=obs.device)[f]
            newest = self.data[:, self.t - 1, : self.t] * scale[:, None]
            obs[:, 0 : 2 * self.t : 2], obs[:, 1 : 2 * self.t : 2] = newest.real.float(), newest.imag.float()
            levels = (self.freqs[:, : self.t] + 1).float() / len(spec.FREQUENCY_FACTORS)
            obs[:, 2 * k : 2 * k + spec.N_ANGLES] = obs[:, 2 * k : 2 * k + spec.N_ANGLES].scatter(
                1, self.angles[:, : self.t], levels)
        obs[:, 2 * k + spec.N_ANGLES] = (k - self.t) / k
        return obs

    def measure(self, tables: Tables, angles: torch.Tensor, freqs: torch.Tensor, order: int,
                snr_db: float | None = None, generator: torch.Generator | None = None) -> None:
        """Place transceiver t (angles, freqs (B,)) and record its data at every transceiver so far."""
        if self.done:
            raise RuntimeError("the scans have used their budget")
        angles, freqs = angles.to(self.angles), freqs.to(self.freqs)
        bad = (angles < 0) | (angles >= spec.N_ANGLES) | (freqs < 0) | (freqs >= len(spec.FREQUENCY_FACTORS))
        if bad.any() or self.used().gather(1, angles.clamp(0, spec.N_ANGLES - 1)[:, None]).any():
            raise ValueError("a designer chose an angle outside 0..359, an unused frequency index or a used angle")
        self.angles[:, self.t], self.freqs[:, self.t] = angles, freqs
        t = self.t + 1
        row = _source_row(tables, self.eta, self.angles[:, :t], self.freqs[:, :t], order)
        if snr_db is not None:
            rms = row.abs().pow(2).mean(1, keepdim=True).sqrt()
            noise = torch.randn(row.shape, generator=generator, dtype=row.dtype, device="cpu").to(row.device)
            row = row + noise * rms * 10 ** (-snr_db / 20)  # complex randn has E|z|² = 1
        self.data[:, self.t, :t] = row
        self.t = t


def _source_row(tables: Tables, eta: torch.Tensor, angles: torch.Tensor, freqs: torch.Tensor, order: int) -> torch.Tensor:
    """(B, t) data of the last source in (angles, freqs) at all t receivers."""
    return forward(tables, eta, angles, freqs, order)[:, -1]


def mse(recon: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared error over the pixels."""
    return (recon - eta).pow(2).mean(dim=(1, 2))


def psnr_gain(mse_before: torch.Tensor, mse_after: torch.Tensor) -> torch.Tensor:
    """The reward r_t = PSNR(η_t) − PSNR(η_{t−1}) in dB."""
    return 10.0 * torch.log10(mse_before / mse_after)


class Designer(Protocol):
    def reset(self, scans: Scans, rng: np.random.Generator) -> None: ...

    def choose(self, scans: Scans) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class Recipe:
    """How every scan is measured and reconstructed (fixed per evaluation cell)."""

    order: int = 2  # Born order of the data (the reconstruction's model has the same order)
    lam: float = 1e-6  # the L1 weight λ
    iterations: int = 20  # warm-started L-BFGS iterations after each step
    final_iterations: int = 20  # after the last step
    snr_db: float | None = None  # additive noise; None = noise-free


def update(tables: Tables, scans: Scans, recipe: Recipe, iterations: int) -> None:
    """Warm-started reconstruction from all data so far."""
    t = scans.t
    scans.recon = reconstruct(tables, scans.recon, scans.angles[:, :t], scans.freqs[:, :t], scans.data[:, :t, :t],
                              order=recipe.order, lam=recipe.lam, iterations=iterations)


def run(designer: Designer, eta: torch.Tensor, *, tables: Tables, recipe: Recipe, rng: np.random.Generator,
        budget: int = spec.BUDGET) -> tuple[Scans, torch.Tensor]:
    """A whole scan of every scatterer; returns the scans and the MSE (B, K + 1) after each step (column 0 the
    zero image's, column K after the final iterations)."""
    scans = Scans.start(eta, tables, budget)
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    designer.reset(scans, rng)
    errors = [mse(scans.recon, scans.eta)]
    while not scans.done:
        angles, freqs = designer.choose(scans)
        scans.measure(tables, angles, freqs, recipe.order, recipe.snr_db, generator)
        update(tables, scans, recipe, recipe.iterations + (recipe.final_iterations if scans.done else 0))
        errors.append(mse(scans.recon, scans.eta))
    return scans, torch.stack(errors, 1)
