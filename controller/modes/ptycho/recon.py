"""Ptychographic reconstruction with the probe known: gradient descent on the amplitude error, one code for
numpy (the edge: no torch) and torch (training: a batch of samples at once, CPU or GPU).

The object is a pure phase φ (strong phase object, optics.py): O = exp(iφ). With ψ_p = P · O_p (the window at
position p), Ψ_p = F[ψ_p] (unitary DFT) and the measured amplitudes a_p = √(I_p / dose), the error

    L(φ) = Σ_p w_p Σ_k (|Ψ_p(k)| − a_p(k))²                          (the paper's ROP, eq. 2, amplitude form)

has the gradient  ∂L/∂φ = 2 Im(conj(ψ_p) · F⁻¹[Ψ_p − a_p Ψ_p/|Ψ_p|]) summed into each window. One iteration
is one gradient step over all positions acquired so far:

    φ ← φ − α / max_r(Σ_p w_p |P(r − R_p)|²) · ∂L/∂φ

The step is one number per sample (not per pixel): the constant phase is unobservable (its gradient is zero
for every window), so a global step never makes it drift. α = STEP is stable for any density of positions
(tests/unit/test_ptycho_recon.py); α ≈ 1 is the largest that does not overshoot.

Arrays: φ (B, H·W) flattened per sample; `Measured.indices` (B, K, N·N) the flat object pixels of each window
(with the sample's offset b·H·W), `amplitudes` (B, K, N, N) in FFT order, `weights` (B, K) (0 = padding, so
samples with fewer positions share a batch).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import numpy as np
import scipy.fft

STEP = 1.0  # α
CHUNK = 1024  # positions per block (bounds the memory of the full-grid reconstruction)
MODULUS_FLOOR = 1e-4  # |Ψ| below this (normalised amplitude; 2e-3 counts at Table I dose) has no phase to follow


def _xp(array: Any) -> Any:
    """numpy or torch, whichever holds ``array`` (torch is never imported here)."""
    return np if isinstance(array, np.ndarray) else sys.modules["torch"]


def window_indices(positions: np.ndarray, object_px: int, window: int) -> np.ndarray:
    """Flat object-pixel indices (K, N·N) of the windows whose top-left corners are ``positions`` (K, 2)."""
    rows = positions[:, 0, None, None] + np.arange(window)[None, :, None]
    cols = positions[:, 1, None, None] + np.arange(window)[None, None, :]
    return (rows * object_px + cols).reshape(len(positions), window * window)


def amplitudes(patterns: Any, dose: float) -> Any:
    """Centred patterns (…, N, N) [counts] → the amplitudes √(I / dose) in FFT order."""
    xp = _xp(patterns)
    return xp.fft.ifftshift(xp.sqrt(xp.clip(patterns, 0, None) / dose), (-2, -1))


@dataclass
class Measured:
    """What was measured so far, as backend arrays (module doc)."""

    indices: Any  # (B, K, N·N) int64
    amplitudes: Any  # (B, K, N, N) float
    weights: Any  # (B, K) float


def _illumination(probe_intensity: Any, data: Measured, size: int) -> Any:
    """Σ_p w_p |P(r − R_p)|² per sample, flat (B·H·W)."""
    xp = _xp(data.weights)
    spread = data.weights[:, :, None] * probe_intensity.reshape(1, 1, -1)
    return xp.bincount(data.indices.reshape(-1), weights=spread.reshape(-1), minlength=size)


def _fft_pair(xp: Any) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """Unitary 2-D FFT and its inverse over the last two axes: scipy.fft on every core for numpy, torch.fft."""
    if xp is np:
        return (partial(scipy.fft.fft2, norm="ortho", workers=-1, overwrite_x=True),
                partial(scipy.fft.ifft2, norm="ortho", workers=-1, overwrite_x=True))
    return partial(xp.fft.fft2, norm="ortho"), partial(xp.fft.ifft2, norm="ortho")


def _scatter(xp: Any, indices: Any, values: Any, size: int) -> Any:
    """Σ of ``values`` into ``size`` bins at ``indices`` (real values)."""
    return xp.bincount(indices, weights=values, minlength=size)


def _as_dtype_of(array: Any, like: Any) -> Any:
    """``array`` in the real dtype of ``like`` (numpy's bincount always returns float64)."""
    return array.astype(like.dtype, copy=False) if isinstance(array, np.ndarray) else array.to(like.dtype)


def gradient(phase: Any, probe: Any, data: Measured) -> tuple[Any, Any]:
    """(∂L/∂φ, L) for a batch: φ (B, H·W) → gradient (B, H·W), L (B,).

    exp(iφ) is taken once on the object, not per window, and the back-projection is summed as the complex
    Σ_p conj(P) · F⁻¹[residual_p] before the one product with conj(O) (module doc: ∂L/∂φ = 2 Im(conj(ψ) …)).
    """
    xp = _xp(phase)
    fft2, ifft2 = _fft_pair(xp)
    batch, k_total = data.weights.shape
    n = probe.shape[-1]
    size = phase.shape[0] * phase.shape[1]
    obj = xp.exp(1j * phase.reshape(-1))  # O = exp(iφ), (B·H·W)
    probe_conj = probe.conj()
    back = xp.zeros_like(obj)  # Σ_p conj(P) F⁻¹[residual_p] per object pixel
    loss = xp.zeros_like(phase[:, 0])
    for start in range(0, k_total, CHUNK):
        idx = data.indices[:, start:start + CHUNK]
        w = data.weights[:, start:start + CHUNK]
        far = fft2(probe * obj[idx.reshape(-1)].reshape(*idx.shape[:2], n, n))
        modulus = xp.abs(far)
        error = modulus - data.amplitudes[:, start:start + CHUNK]
        loss = loss + (w * (error * error).sum((-2, -1))).sum(1)
        far *= (error / xp.clip(modulus, MODULUS_FLOOR, None)) * w[:, :, None, None]  # the weighted residual
        spread = (probe_conj * ifft2(far)).reshape(-1)
        flat = idx.reshape(-1)
        back = back + (_scatter(xp, flat, spread.real, size) + 1j * _scatter(xp, flat, spread.imag, size))
    grad = 2.0 * (obj.conj() * back).imag
    return _as_dtype_of(grad.reshape(phase.shape), phase), loss


def reconstruct(phase: Any, probe: Any, data: Measured, iterations: int, step: float = STEP) -> Any:
    """``iterations`` gradient steps from ``phase`` (B, H·W); returns the new phase (the input is not changed)."""
    xp = _xp(phase)
    size = phase.shape[0] * phase.shape[1]
    illumination = _illumination(xp.abs(probe) ** 2, data, size).reshape(phase.shape)
    peak = xp.amax(illumination, 1)
    scale = _as_dtype_of(step / xp.clip(peak, 1e-30, None) * (peak > 0), phase)  # no positions: no step
    for _ in range(iterations):
        grad, _ = gradient(phase, probe, data)
        phase = phase - scale[:, None] * grad
    return phase
