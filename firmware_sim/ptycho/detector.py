"""The pixel detector: the pattern at a position with Poisson noise keyed per (sample, position).

The noise of a pattern depends only on the sample's key and the position, never on the order of acquisition,
so the instrument emulator (firmware_sim/ptycho/emulator.py) and the in-process evaluation (learner/ptycho)
see the same counts for the same scan.

The detector exposes at the stage's ACTUAL position snapped to the nearest object pixel (`snap`): a stage at
rest within half a pixel (0.1 Å) of its commanded grid position gives exactly that position's `counts`.
The beam current is fixed: `DetectorParams.dose` electrons per pattern at the nominal exposure, in proportion
for other exposures (`DetectorParams.dose_for`); the nominal exposure's dose is exactly `dose`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from controller.modes.ptycho.optics import Optics, pattern, window_at

MAX_DOSE = 1e9  # electrons per pattern: every pixel's count stays far below 2³² (sent as u32)
MAX_EXPOSURE_US = 10_000_000  # 10 s


@dataclass(frozen=True)
class DetectorParams:
    dose: float = Optics.dose  # electrons per pattern at the nominal exposure (Table I's dose)
    exposure_us: int = 1000  # nominal exposure [µs]: 1 ms, a 1 kHz pixelated detector

    def __post_init__(self) -> None:
        if not (math.isfinite(self.dose) and 0.0 < self.dose <= MAX_DOSE):
            raise ValueError(f"dose must be in (0, {MAX_DOSE:g}] electrons, got {self.dose}")
        if not 0 < self.exposure_us <= MAX_EXPOSURE_US:
            raise ValueError(f"exposure must be 1 … {MAX_EXPOSURE_US} µs, got {self.exposure_us}")

    def dose_for(self, exposure_us: int) -> float:
        """Electrons in an exposure of ``exposure_us`` at the fixed beam current."""
        return self.dose * (exposure_us / self.exposure_us)


def snap(position_A: np.ndarray, optics: Optics) -> tuple[int, int]:
    """Grid position (i, j) nearest to the stage position (x, y) [Å] (i = y / pixel, j = x / pixel), clipped to
    the grid (the object beyond the scanned field is not simulated)."""
    x, y = (int(np.clip(np.rint(v / optics.pixel_A), 0, optics.grid - 1)) for v in position_A)
    return y, x


def counts(probe_wave: np.ndarray, phase: np.ndarray, position: tuple[int, int], dose: float,
           key: int) -> np.ndarray:
    """Poisson counts (N × N, int64) of the centred pattern at grid position (i, j) of the object ``phase``."""
    rng = np.random.default_rng((key, int(position[0]), int(position[1])))
    return rng.poisson(pattern(probe_wave, window_at(phase, position, probe_wave.shape[0]), dose))
