"""Helpers of the ptychography tests: positions and measured data (the lattice object: learner.ptycho.lattice)."""
from __future__ import annotations

import numpy as np

from controller.modes.ptycho import recon
from controller.modes.ptycho.optics import Optics, probe
from firmware_sim.ptycho.detector import counts
from learner.ptycho.lattice import lattice  # noqa: F401  (re-exported for the tests)


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
