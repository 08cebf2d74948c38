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
from typing import Any

import numpy as np

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


def gradient(phase: Any, probe: Any, data: Measured) -> tuple[Any, Any]:
    """(∂L/∂φ, L) for a batch: φ (B, H·W) → gradient (B, H·W), L (B,)."""
    xp = _xp(phase)
    batch, k_total = data.weights.shape
    n = probe.shape[-1]
    flat = phase.reshape(-1)
    grad = xp.zeros_like(flat)
    loss = xp.zeros_like(phase[:, 0])
    for start in range(0, k_total, CHUNK):
        idx = data.indices[:, start:start + CHUNK]
        w = data.weights[:, start:start + CHUNK]
        psi = probe * xp.exp(1j * flat[idx.reshape(-1)].reshape(*idx.shape[:2], n, n))
        far = xp.fft.fft2(psi, norm="ortho")
        modulus = xp.abs(far)
        error = modulus - data.amplitudes[:, start:start + CHUNK]
        loss = loss + (w * (error * error).sum((-2, -1))).sum(1)
        residual = far * (error / xp.clip(modulus, MODULUS_FLOOR, None))
        g = 2.0 * (psi.conj() * xp.fft.ifft2(residual, norm="ortho")).imag * w[:, :, None, None]
        grad = grad + xp.bincount(idx.reshape(-1), weights=g.reshape(-1), minlength=flat.shape[0])
    return grad.reshape(phase.shape), loss


def reconstruct(phase: Any, probe: Any, data: Measured, iterations: int, step: float = STEP) -> Any:
    """``iterations`` gradient steps from ``phase`` (B, H·W); returns the new phase (the input is not changed)."""
    xp = _xp(phase)
    size = phase.shape[0] * phase.shape[1]
    illumination = _illumination(xp.abs(probe) ** 2, data, size).reshape(phase.shape)
    scale = step / xp.amax(illumination, 1)
    scale = scale * (scale < 1e12)  # no positions: no step
    for _ in range(iterations):
        grad, _ = gradient(phase, probe, data)
        phase = phase - scale[:, None] * grad
    return phase
