"""Per-position Voronoi rewards (the paper's shaped reward, §II D and Fig. 3b).

Each scan position is a seed; its Voronoi cell is the set of field pixels nearer to that probe centre than to
any other (exact nearest neighbour on the pixel grid, scipy's cKDTree; a pixel equidistant from two centres
goes to one of them, deterministically). The reward of position m is

    r^m = P⁻¹ Σ_{r ∈ Cell^m} (φ(r) − φ̄)                              (paper: r^m = P⁻¹ Σ_{Cell^m} V(r))

with φ the reconstructed phase over the scanned field, φ̄ its mean over the field and P the number of positions.
Mean alignment: the constant phase is unobservable (recon.py), so a reconstruction's absolute level is
arbitrary; subtracting the field mean makes the rewards independent of it. The rewards of one scan then sum to
zero: a position gains when its cell covers phase above the field's average (the bright atomic columns).

Coordinates: grid position (i, j) puts the probe's centre on field pixel (i, j) (optics.py: window top-left at
object pixel (i, j), centre at object pixel (i + 32, j + 32), the field = object pixels 32 … 131).
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def cells(positions: np.ndarray, field: int) -> np.ndarray:
    """Voronoi labels (field, field): for each field pixel, the index of the nearest position (K, 2)."""
    positions = np.asarray(positions)
    if positions.ndim != 2 or positions.shape[1] != 2 or len(positions) == 0:
        raise ValueError(f"positions must have shape (K ≥ 1, 2), got {positions.shape}")
    if positions.min() < 0 or positions.max() >= field:
        raise ValueError(f"positions must lie on the {field} × {field} field")
    rows, cols = np.meshgrid(np.arange(field), np.arange(field), indexing="ij")
    _, label = cKDTree(positions).query(np.stack([rows.ravel(), cols.ravel()], 1))
    return label.reshape(field, field)


def rewards(phase: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """r^m (K,) of one scan: ``phase`` (field, field) the reconstruction over the field, ``positions`` (K, 2)."""
    phase = np.asarray(phase, np.float64)
    if phase.ndim != 2 or phase.shape[0] != phase.shape[1]:
        raise ValueError(f"phase must be a square field, got shape {phase.shape}")
    label = cells(positions, phase.shape[0])
    aligned = phase - phase.mean()
    return np.bincount(label.ravel(), weights=aligned.ravel(), minlength=len(positions)) / len(positions)
