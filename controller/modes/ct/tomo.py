"""Parallel-beam tomography on the edge: angle grid, system matrix, SIRT, PSNR (numpy/scipy).

Geometry (matches `skimage.transform.radon(image, theta, circle=True)`): an N×N image (N odd),
N detector bins, rotation centre c = N // 2 in (col, row) pixel coordinates. Bin j (offset
s = j − c) at angle θ integrates along the ray
    (col, row)(t) = (c + s·cosθ + t·sinθ,  c − s·sinθ + t·cosθ),
so θ = 0 gives column sums. The ray model is Joseph's (ASTRA's 'linear' projector): step one
pixel along the ray's dominant image axis, interpolate linearly between the two neighbouring
pixels on the other axis (zero outside the image), weight 1/|dominant direction cosine|.

SIRT is ASTRA's (van der Sluis & van der Vorst):
    x ← clip(x + C·Wᵀ·R·(p − W·x), lo, hi),  R = 1/row sums of W, C = 1/column sums (0 where the sum is 0).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.sparse as sp

GOLDEN_STEP_DEG = 111.2461  # the golden-ratio angle increment 180°/φ (φ = (1 + √5)/2; 111.24612° rounded)
PSNR_PEAK = 0.62  # the phantoms' object value; PSNR = 20·log10(0.62 / RMSE)
SIRT_ITERATIONS = 150


def angle_grid(n_angles: int = 180) -> np.ndarray:
    """The candidate angles [deg]: a uniform grid over [0°, 180°) (1° for 180 angles)."""
    return np.arange(n_angles) * (180.0 / n_angles)


def golden_ratio_angles(n: int, start: int = 0) -> np.ndarray:
    """θₙ = mod(n · 111.2461°, 180°) for n = start … start+n−1 [deg]."""
    return np.mod(np.arange(start, start + n) * GOLDEN_STEP_DEG, 180.0)


def to_grid_index(angles_deg: np.ndarray, n_angles: int = 180) -> np.ndarray:
    """Nearest index on `angle_grid(n_angles)` (wrapping at 180°)."""
    step = 180.0 / n_angles
    return np.rint(np.asarray(angles_deg) / step).astype(np.int64) % n_angles


def _angle_block(size: int, theta_deg: float) -> sp.csr_matrix:
    """Joseph-model rows (size bins × size² pixels) for one angle, float64."""
    c = size // 2
    th = np.deg2rad(theta_deg)
    u = np.array([np.cos(th), -np.sin(th)])  # detector direction (col, row)
    d = np.array([np.sin(th), np.cos(th)])  # ray direction (col, row)
    s = np.arange(size, dtype=np.float64) - c  # bin offsets
    k = np.arange(size, dtype=np.float64)  # steps along the dominant axis
    dom = 1 if abs(d[1]) >= abs(d[0]) else 0  # 1: step over rows, 0: step over columns
    oth = 1 - dom
    # Ray point where its dominant coordinate equals k: t = (k − c − s·u_dom) / d_dom.
    t = (k[None, :] - c - s[:, None] * u[dom]) / d[dom]
    x = c + s[:, None] * u[oth] + t * d[oth]  # the other coordinate, shape (bins, steps)
    x0 = np.floor(x)
    frac = x - x0
    w = 1.0 / abs(d[dom])
    bins = np.broadcast_to(np.arange(size)[:, None], x.shape)
    steps = np.broadcast_to(k.astype(np.int64)[None, :], x.shape)
    rows, cols, vals = [], [], []
    for off, wt in ((0, 1.0 - frac), (1, frac)):
        o = x0.astype(np.int64) + off
        ok = (o >= 0) & (o < size) & (wt > 0)
        r_img, c_img = (steps[ok], o[ok]) if dom == 1 else (o[ok], steps[ok])
        rows.append(bins[ok])
        cols.append(r_img * size + c_img)
        vals.append(w * wt[ok])
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(size, size * size)
    )


@lru_cache(maxsize=8)
def _cached_matrix(size: int, angles: tuple[float, ...], dtype: str) -> sp.csr_matrix:
    w = sp.vstack([_angle_block(size, a) for a in angles], format="csr").astype(dtype)
    w.sum_duplicates()
    w.sort_indices()
    return w


def system_matrix(size: int, angles_deg, dtype: str = "float32") -> sp.csr_matrix:
    """W: rows (angle, bin) in the given angle order, columns row-major pixels. Cached per geometry."""
    if size < 3 or size % 2 == 0:
        raise ValueError(f"size must be odd and >= 3, got {size}")
    angles = tuple(float(a) for a in np.atleast_1d(np.asarray(angles_deg, dtype=np.float64)))
    if not angles or not all(np.isfinite(angles)):
        raise ValueError("angles_deg must be a non-empty list of finite angles")
    return _cached_matrix(size, angles, dtype)


def _inverse(v: np.ndarray) -> np.ndarray:
    """1/v where v > 0, else 0 (ASTRA's zero-safe normalisation)."""
    out = np.zeros_like(v)
    np.divide(1.0, v, out=out, where=v > 0)
    return out


def sirt_weights(w: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(R, C): inverse row sums and inverse column sums of W."""
    r = _inverse(np.asarray(w.sum(axis=1)).ravel())
    col = _inverse(np.asarray(w.sum(axis=0)).ravel())
    return r.astype(w.dtype), col.astype(w.dtype)


def sirt(
    w: sp.csr_matrix,
    sinogram: np.ndarray,
    iterations: int = SIRT_ITERATIONS,
    x0: np.ndarray | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    """SIRT (ASTRA's update, see module doc) from x0 (default 0); returns the image (size, size).

    `sinogram` has one row per angle of W (shape (n_angles, size)) or is flat in W's row order.
    """
    p = np.asarray(sinogram, dtype=w.dtype).ravel()
    if p.shape[0] != w.shape[0]:
        raise ValueError(f"sinogram has {p.shape[0]} values, the system matrix {w.shape[0]} rows")
    size = int(round(np.sqrt(w.shape[1])))
    r, c = sirt_weights(w)
    wt = w.T.tocsr()
    x = np.zeros(w.shape[1], w.dtype) if x0 is None else np.asarray(x0, w.dtype).ravel().copy()
    for _ in range(iterations):
        x += c * (wt @ (r * (p - w @ x)))
        np.clip(x, bounds[0], bounds[1], out=x)
    return x.reshape(size, size)


def psnr(image: np.ndarray, reference: np.ndarray, peak: float = PSNR_PEAK) -> float:
    """20·log10(peak / RMSE) [dB]; inf for an exact match."""
    rmse = float(np.sqrt(np.mean((np.asarray(image, np.float64) - np.asarray(reference, np.float64)) ** 2)))
    return float("inf") if rmse == 0 else 20.0 * np.log10(peak / rmse)
