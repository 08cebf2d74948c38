"""Scores of a reconstruction: MSE (the primary metric), the paper's PSNR, and means with 95 % CIs for JSON.

MSE is the mean over the grid's pixels (learner.scatter.episode.mse). The paper's PSNR takes MAX = 4096
(the authors' code): PSNR = 20·log10(4096/√MSE), reported beside the MSE only.
"""
from __future__ import annotations

import numpy as np

from learner.scatter.episode import mse
from learner.stats import mean_ci95

__all__ = ["PSNR_MAX", "mse", "psnr", "summary", "paired"]

PSNR_MAX = 4096.0


def psnr(mse_values: np.ndarray | float) -> np.ndarray:
    """PSNR [dB] with the paper's MAX = 4096 of MSE values (> 0)."""
    m = np.asarray(mse_values, dtype=np.float64)
    if np.any(~(m > 0)) or not np.all(np.isfinite(m)):
        raise ValueError("PSNR needs finite MSE values > 0")
    return 20.0 * np.log10(PSNR_MAX / np.sqrt(m))


def summary(x: np.ndarray) -> dict[str, float | None]:
    """{"mean", "ci95"} over samples: the Student-t 95 % half-width, None for a single sample."""
    mean, half = mean_ci95(x)
    return {"mean": mean, "ci95": None if np.isnan(half) else half}


def paired(a: np.ndarray, b: np.ndarray) -> dict[str, float | None]:
    """summary of the per-sample differences a − b (the same scatterers, in the same order)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be two 1-D arrays of one length, got {a.shape} and {b.shape}")
    return summary(a - b)
