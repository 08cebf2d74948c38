"""The scattering forward model batched over scans in torch (CPU or GPU), for training and evaluation.

The same model as controller/modes/scatter/physics.py (its docstring has the equations), from tables built by
it once per grid: for every (frequency f, angle a) the incident plane wave of a transceiver at a
(travelling along a + 180°) and the receiver row k_f²·Φ(x_a, ·)·h²; the Green's operator per frequency as the
FFT of its convolution kernel on a (2n)² periodic grid, which is exact on the n × n window (the kernel spans
2n − 1). A scan's data d[s, r] is source s (angle a_s, frequency f_s) received at the angle a_r with the
receiver row of the source's frequency.
"""
from __future__ import annotations

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
            kernels.append(np.fft.fft2(_periodic_kernel(physics.GreenOperator(grid, k).table)))
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


def _periodic_kernel(table: np.ndarray) -> np.ndarray:
    """The (2n, 2n) periodic kernel K[i, j] = table[|Δi|, |Δj|] with Δ taken modulo 2n (Δ = n unused)."""
    n = table.shape[0]
    idx = np.abs(np.fft.fftfreq(2 * n, 1.0 / (2 * n))).astype(int)  # 0, 1, …, n−1, n, n−1, …, 1
    idx = np.minimum(idx, n - 1)  # the Δ = n entry never meets the window: any value will do
    return table[idx[:, None], idx[None, :]]


def forward(tables: Tables, eta: torch.Tensor, angles: torch.Tensor, freqs: torch.Tensor, order: int) -> torch.Tensor:
    """(B, T, T) data d[b, s, r] of Born order 1–3 for scans with transceivers (angles, freqs) of shape (B, T)."""
    if order not in (1, 2, 3):
        raise ValueError(f"the batched model has Born orders 1, 2, 3, got {order!r}")
    b, n = eta.shape[0], tables.n
    if eta.shape[1:] != (n, n) or angles.shape != freqs.shape or angles.shape[0] != b:
        raise ValueError(f"eta {tuple(eta.shape)}, angles {tuple(angles.shape)}, freqs {tuple(freqs.shape)} do "
                         f"not fit a batch on the {n} × {n} grid")
    e = eta.to(tables.dtype)[:, None]  # (B, 1, n, n)
    u_in = tables.incident[freqs, angles].reshape(*angles.shape, n, n)  # (B, T, n, n)
    u, term = u_in, u_in
    for _ in range(order - 1):
        term = tables.green(e * term, freqs)
        u = u + term
    source = (e * u).reshape(*angles.shape, n * n)  # (B, T, n²)
    rows = tables.receivers[freqs[:, :, None], angles[:, None, :]]  # (B, T_s, T_r, n²)
    return torch.einsum("bsrj,bsj->bsr", rows, source)
