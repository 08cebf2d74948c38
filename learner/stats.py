"""Small statistics shared by the applications' evaluations."""
from __future__ import annotations

import numpy as np
from scipy import stats


def mean_ci95(x: np.ndarray) -> tuple[float, float]:
    """Mean and 95 % confidence half-width (Student t) of paired differences x; the half-width is NaN for n < 2."""
    x = np.asarray(x, np.float64)
    if len(x) < 2:
        return float(np.mean(x)), float("nan")
    return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
