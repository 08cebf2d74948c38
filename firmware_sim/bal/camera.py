"""The forge's position read-back: a small camera image of the atom's spot and its centroid (seeded noise).

The camera window (``window`` × ``window`` pixels of ``pixel`` length units) is centred on the pixel nearest the
atom, as a tracking camera keeps it; the atom images as a Gaussian spot (``spot_px`` wide, ``peak`` counts) on a
flat background with Gaussian read noise (``read_noise`` counts). The read-back is the centroid of the image above
``threshold`` × peak (background removed, pixels below it weigh nothing): unbiased for a spot well inside the
window, with a scatter of a few hundredths of a pixel at the default settings (tests/unit/test_forge_emulator.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CameraParams:
    pixel: float = 0.02  # length units per pixel
    window: int = 11  # pixels per side (odd: the atom's pixel in the middle)
    spot_px: float = 1.5  # Gaussian spot σ [px]
    peak: float = 1000.0  # spot peak [counts]
    background: float = 100.0  # [counts]
    read_noise: float = 5.0  # σ [counts]
    threshold: float = 0.05  # of the peak, above the background

    def __post_init__(self) -> None:
        if self.window < 3 or self.window % 2 == 0:
            raise ValueError(f"the camera window must be an odd number of pixels ≥ 3, got {self.window}")
        if min(self.pixel, self.spot_px, self.peak) <= 0 or min(self.read_noise, self.background, self.threshold) < 0:
            raise ValueError(f"camera parameters must be positive (noise, background, threshold ≥ 0): {self}")


class Camera:
    """Images the spot and reads back its centroid; ``rng`` seeded by the device."""

    def __init__(self, params: CameraParams, seed: int | tuple[int, ...]) -> None:
        self.p = params
        self.rng = np.random.default_rng(seed)
        self._offsets = np.arange(params.window) - params.window // 2  # pixel offsets from the centre pixel

    def image(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the noisy window image (window, window) [counts], its centre pixel (2,) int) for the atom at x (2,)."""
        p = self.p
        centre = np.rint(np.asarray(x, float) / p.pixel).astype(np.int64)
        d = (centre[:, None] + self._offsets[None, :]) - np.asarray(x, float)[:, None] / p.pixel  # (2, W) [px]
        gx, gy = np.exp(-0.5 * (d / p.spot_px) ** 2)
        img = p.background + p.peak * gy[:, None] * gx[None, :]  # rows: y, columns: x
        return img + p.read_noise * self.rng.standard_normal(img.shape), centre

    def read(self, x: np.ndarray) -> np.ndarray:
        """The read-back position (2,): the thresholded centroid of a fresh image of the atom at x."""
        img, centre = self.image(x)
        p = self.p
        w = np.maximum(img - p.background - p.threshold * p.peak, 0.0)
        total = w.sum()
        if not total > 0:  # the spot drowned in noise: no read-back
            return np.full(2, np.nan)
        cx = (w.sum(axis=0) @ self._offsets) / total
        cy = (w.sum(axis=1) @ self._offsets) / total
        return (centre + np.array([cx, cy])) * p.pixel
