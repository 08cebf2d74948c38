"""The pixel detector's counts: the pattern at a position with Poisson noise keyed per (sample, position).

The noise of a pattern depends only on the sample's key and the position, never on the order of acquisition,
so the instrument emulator (firmware_sim/ptycho/emulator.py) and the in-process evaluation (learner/ptycho)
see the same counts for the same scan.
"""
from __future__ import annotations

import numpy as np

from controller.modes.ptycho.optics import pattern, window_at


def counts(probe_wave: np.ndarray, phase: np.ndarray, position: tuple[int, int], dose: float,
           key: int) -> np.ndarray:
    """Poisson counts (N × N, int64) of the centred pattern at grid position (i, j) of the object ``phase``."""
    rng = np.random.default_rng((key, int(position[0]), int(position[1])))
    return rng.poisson(pattern(probe_wave, window_at(phase, position, probe_wave.shape[0]), dose))
