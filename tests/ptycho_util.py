"""Test objects for the ptychography tests: a hexagonal lattice of Gaussian phase peaks (MoS₂'s a = 3.16 Å,
one peak per cell, so its reflections are MoS₂'s d = 2.74, 1.58, 1.37, 1.03 Å …) and its measured data."""
from __future__ import annotations

import numpy as np

from controller.modes.ptycho import recon
from controller.modes.ptycho.optics import Optics, probe
from firmware_sim.ptycho.detector import counts

MOS2_A = 3.16  # lattice constant [Å]


def lattice(optics: Optics, width_A: float = 0.35, peak: float = 1.0, angle: float = 0.3,
            shift_A: tuple[float, float] = (0.7, 1.1), size: int | None = None) -> np.ndarray:
    """Phase map (size² px, default the object) of Gaussian peaks (σ = ``width_A``, height ``peak`` rad) on a
    hexagonal lattice rotated by ``angle`` [rad]."""
    n = size or optics.object_px
    extent = n * optics.pixel_A
    y, x = np.mgrid[:n, :n] * optics.pixel_A
    a1 = MOS2_A * np.array([np.cos(angle), np.sin(angle)])
    a2 = MOS2_A * np.array([np.cos(angle + np.pi / 3), np.sin(angle + np.pi / 3)])
    m = int(2 * extent / MOS2_A) + 3
    phase = np.zeros((n, n))
    for u in range(-m, m + 1):
        for v in range(-m, m + 1):
            cy, cx = u * a1 + v * a2 + np.asarray(shift_A)
            if -4 * width_A < cy < extent + 4 * width_A and -4 * width_A < cx < extent + 4 * width_A:
                phase += np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * width_A ** 2))
    return peak * phase


def grid_positions(optics: Optics, count: int | None = None, seed: int = 0) -> np.ndarray:
    """(K, 2) grid positions: ``count`` distinct random ones, or all (row-major) when ``count`` is None."""
    flat = np.arange(optics.grid ** 2) if count is None else \
        np.random.default_rng(seed).choice(optics.grid ** 2, count, replace=False)
    return np.stack(np.unravel_index(flat, (optics.grid, optics.grid)), 1)


def measure(optics: Optics, phase: np.ndarray, positions: np.ndarray, key: int = 0) -> recon.Measured:
    """One sample's Poisson data at ``positions`` (numpy, float64, batch of 1)."""
    p = probe(optics)
    patterns = np.stack([counts(p, phase, tuple(q), optics.dose, key) for q in positions]).astype(np.float64)
    return recon.Measured(recon.window_indices(positions, optics.object_px, optics.window)[None],
                          recon.amplitudes(patterns, optics.dose)[None], np.ones((1, len(positions))))
