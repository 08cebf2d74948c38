"""The scattering forward model batched over scans in torch (CPU or GPU), for training and evaluation.

The same model as controller/modes/scatter/physics.py (its docstring has the equations), from tables built by
it once per grid: for every (frequency f, angle a) the incident plane wave of a transceiver at a
(travelling along a + 180°) and the receiver row k_f²·Φ(x_a, ·)·h²; the Green's operator per frequency as the
spectrum of its periodic kernel (physics.GreenOperator.spectrum). A scan's data d[s, r] is source s (angle a_s,
frequency f_s) received at the angle a_r with the receiver row of the source's frequency.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from controller.modes.scatter import physics, spec


class Tables:
    """Incident fields, receiver rows and Green's kernels for every (frequency, angle) on an n × n grid."""

    def __init__(self, n: int, device: str | torch.device = "cpu", dtype: torch.dtype = torch.complex64) -> None:
        grid = physics.Grid(n)
        self.n, self.device, self.dtype = n, torch.device(device), dtype
        self.k = torch.as_tensor(spec.wavenumbers(n), device=self.device, dtype=_real(dtype))
        angles = np.arange(spec.N_ANGLES, dtype=float)
        incident, receivers, kernels = [], [], []
        for k in spec.wavenumbers(n):
            incident.append(physics.plane_wave(grid, k, spec.incident_direction_deg(angles)).T)
            receivers.append(k**2 * physics.receiver_matrix(grid, k, physics.ring(angles)))
            kernels.append(physics.GreenOperator(grid, k).spectrum)
        self.incident = self._tensor(np.stack(incident))  # (F, 360, n²)
        self.receivers = self._tensor(np.stack(receivers))  # (F, 360, n²)
        self.kernels = self._tensor(np.stack(kernels))  # (F, 2n, 2n), k² included below

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, device=self.device).to(self.dtype)

    def green(self, v: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
        """k²·G·v for fields v (..., n, n), each at its wavenumber index in ``freqs`` (shape ``...``)."""
        n = self.n
        padded = torch.fft.fft2(v, s=(2 * n, 2 * n))
        out = torch.fft.ifft2(padded * self.kernels[freqs])[..., :n, :n]
        return out * (self.k[freqs] ** 2)[..., None, None]


def _real(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.complex128 else torch.float32


@dataclass(frozen=True)
class Geometry:
    """What a batch of scans needs from the tables, gathered once (a reconstruction evaluates many η on it):
    the incident fields (B, T, n, n), the receiver rows (B, T_s, T_r, n²) and the frequency indices (B, T)."""

    incident: torch.Tensor
    rows: torch.Tensor
    freqs: torch.Tensor

    def __getitem__(self, scans: torch.Tensor) -> "Geometry":
        return Geometry(self.incident[scans], self.rows[scans], self.freqs[scans])


def geometry(tables: Tables, angles: torch.Tensor, freqs: torch.Tensor) -> Geometry:
    """The geometry of scans with transceivers (angles, freqs) of shape (B, T)."""
    if angles.shape != freqs.shape or angles.dim() != 2:
        raise ValueError(f"angles {tuple(angles.shape)} and freqs {tuple(freqs.shape)} must both be (B, T)")
    n = tables.n
    return Geometry(tables.incident[freqs, angles].reshape(*angles.shape, n, n),
                    tables.receivers[freqs[:, :, None], angles[:, None, :]], freqs)


def forward(tables: Tables, eta: torch.Tensor, angles: torch.Tensor, freqs: torch.Tensor, order: int) -> torch.Tensor:
    """(B, T, T) data d[b, s, r] of Born order 1–3 for scans with transceivers (angles, freqs) of shape (B, T)."""
    if eta.shape[0] != angles.shape[0]:
        raise ValueError(f"eta {tuple(eta.shape)} and angles {tuple(angles.shape)} differ in batch size")
    return born(tables, eta, geometry(tables, angles, freqs), order)


def born(tables: Tables, eta: torch.Tensor, geo: Geometry, order: int) -> torch.Tensor:
    """`forward` on a gathered geometry."""
    if order not in (1, 2, 3):
        raise ValueError(f"the batched model has Born orders 1, 2, 3, got {order!r}")
    b, n = eta.shape[0], tables.n
    if eta.shape[1:] != (n, n) or geo.freqs.shape[0] != b:
        raise ValueError(f"eta {tuple(eta.shape)} does not fit a batch of {geo.freqs.shape[0]} scans on the "
                         f"{n} × {n} grid")
    e = eta.to(tables.dtype)[:, None]  # (B, 1, n, n)
    u, term = geo.incident, geo.incident
    for _ in range(order - 1):
        term = tables.green(e * term, geo.freqs)
        u = u + term
    source = (e * u).reshape(*geo.freqs.shape, n * n)  # (B, T, n²)
    return torch.einsum("bsrj,bsj->bsr", geo.rows, source)
