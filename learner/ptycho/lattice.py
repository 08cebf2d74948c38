"""A stand-in sample until firmware_sim/ptycho/mos2.py: a hexagonal lattice of Gaussian phase peaks with MoS₂'s
lattice constant, one peak per cell, so its reflections are MoS₂'s (d = 2.74, 1.58, 1.37, 1.03 Å …), damped by
the peaks' width as exp(−2π²σ²/d²)."""
from __future__ import annotations

import numpy as np

from controller.modes.ptycho.optics import Optics

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
