"""Quality of a phase reconstruction: SSIM to a reference, and the finest MoS₂ reflection it resolves.

Both look at the scanned field only (object pixels window/2 … window/2 + grid − 1: 32 … 131 by default), where
every position's probe centre has been; the constant phase is unobservable (optics.py), so means are aligned.
"""
from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

from controller.modes.ptycho.optics import Optics

MOS2_REFLECTIONS_A = (2.74, 1.58, 1.37, 1.03)  # d of MoS₂'s (100), (110), (200), (210) [Å]
ANNULUS_HALF_WIDTH = 0.9  # |k| = 1/d ± this many frequency pixels (keeps the 1.58 and 1.37 Å annuli apart)
PEAK_OVER_MEDIAN = 30.0  # a reflection is resolved when its annulus' brightest pixel is this × the annulus median


def field(phase: np.ndarray, optics: Optics = Optics()) -> np.ndarray:
    """The scanned field (grid × grid px) of an object phase map (object_px², 2-D or flat)."""
    n = optics.object_px
    if phase.size != n * n:
        raise ValueError(f"expected an object of {n} × {n} px, got shape {phase.shape}")
    start = optics.window // 2
    return np.asarray(phase, np.float64).reshape(n, n)[start:start + optics.grid, start:start + optics.grid]


def ssim(phase: np.ndarray, reference: np.ndarray, optics: Optics = Optics()) -> float:
    """SSIM of ``phase`` to ``reference`` over the scanned field, ``phase`` shifted to the reference's mean,
    the data range that of the reference (skimage's structural_similarity, 7 × 7 window)."""
    a, b = field(phase, optics), field(reference, optics)
    span = float(b.max() - b.min())
    if span <= 0:
        raise ValueError("the reference is constant: SSIM has no data range")
    return float(structural_similarity(a - a.mean() + b.mean(), b, data_range=span))


def power_spectrum(phase: np.ndarray, optics: Optics = Optics()) -> tuple[np.ndarray, np.ndarray]:
    """(|F[(φ − mean) · Hann]|², |k| [Å⁻¹]) of the scanned field, zero frequency first."""
    f = field(phase, optics)
    taper = np.outer(np.hanning(f.shape[0]), np.hanning(f.shape[1]))
    power = np.abs(np.fft.fft2((f - f.mean()) * taper)) ** 2
    ky, kx = np.meshgrid(*(np.fft.fftfreq(s, d=optics.pixel_A) for s in f.shape), indexing="ij")
    return power, np.hypot(ky, kx)


def resolved(phase: np.ndarray, optics: Optics = Optics(),
             reflections: tuple[float, ...] = MOS2_REFLECTIONS_A) -> dict[float, bool]:
    """Per reflection d: is it resolved? Its annulus |k| ∈ 1/d ± ANNULUS_HALF_WIDTH·Δk (any lattice rotation)
    has a peak: its brightest pixel ≥ PEAK_OVER_MEDIAN × the annulus' median power (the background: the six
    peaks of a hexagonal lattice cover a few of its pixels). White noise (exponential power) passes with a
    chance of about exp(−0.69 · 30) ≈ 1e-9 per pixel."""
    power, k = power_spectrum(phase, optics)
    dk = 1.0 / (optics.grid * optics.pixel_A)
    out = {}
    for d in reflections:
        if 1.0 / d > 0.5 / optics.pixel_A:
            raise ValueError(f"reflection d = {d} Å is beyond the Nyquist limit {2 * optics.pixel_A} Å")
        ring = power[np.abs(k - 1.0 / d) <= ANNULUS_HALF_WIDTH * dk]
        out[d] = bool(ring.max() >= PEAK_OVER_MEDIAN * np.median(ring))
    return out


def resolution_A(phase: np.ndarray, optics: Optics = Optics(),
                 reflections: tuple[float, ...] = MOS2_REFLECTIONS_A) -> float | None:
    """The finest resolved reflection's d [Å] (``resolved``), None when none is."""
    found = [d for d, ok in resolved(phase, optics, reflections).items() if ok]
    return min(found) if found else None
