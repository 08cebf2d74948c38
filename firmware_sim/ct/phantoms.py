"""Synthetic CT phantoms: one convex polygon (parallelogram, triangle or pentagon) of value 0.62 on 0.

Paper (ct-angle-selection-optimal-stopping, Appendix E, Table 3), for a 239 × 239 image:
circumradius 42–51 px (parallelograms) or 56–89 px (triangles, pentagons); centre (x, y) uniform in
[110, 130]². Other odd sizes scale these numbers by (size − 1)/238. Shapes:
- parallelogram: half-diagonals R and ratio·R (ratio ∈ [0.5, 1]) at an angle ∈ [30°, 90°] apart;
- triangle: right triangle, hypotenuse = circumcircle diameter, apex at 60°–120° on the circle;
- pentagon: regular.
Rotation θ is drawn in [0°, period) with period = 360°/(rotational symmetry order): 180° for the
parallelogram, 360° for the triangle, 72° for the pentagon. Train/validation split: the period is cut
into `ROTATION_BINS` equal bins; bins with index % VAL_EVERY == VAL_EVERY − 1 belong to validation
only, so validation rotations (modulo symmetry) are never seen in training.

Coordinates are (col, row) pixels, the rotation centre is size // 2 (as `controller.modes.ct.tomo`).
A pixel's value is 0.62 × the fraction of its `supersample`² sub-pixel centres inside the polygon.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

OBJECT_VALUE = 0.62
SHAPES = ("parallelogram", "triangle", "pentagon")
MAX_VERTICES = 5
PERIOD_DEG = {"parallelogram": 180.0, "triangle": 360.0, "pentagon": 72.0}
RADIUS_239 = {"parallelogram": (42.0, 51.0), "triangle": (56.0, 89.0), "pentagon": (56.0, 89.0)}
CENTRE_239 = (110.0, 130.0)
ROTATION_BINS = 20
VAL_EVERY = 4


@dataclass(frozen=True)
class Phantoms:
    """A batch of B phantoms. vertices (B, 5, 2) [px, (col, row)], counter-clockwise in (col, row),
    padded by repeating the last vertex; kind (B,) index into SHAPES; rotation_deg (B,);
    images (B, size, size) float32."""

    vertices: np.ndarray
    kind: np.ndarray
    rotation_deg: np.ndarray
    images: np.ndarray

    @property
    def size(self) -> int:
        return self.images.shape[-1]


def rotation_bin(kind: str, rotation_deg: np.ndarray) -> np.ndarray:
    """The rotation bin (0 … ROTATION_BINS−1) of rotations modulo the shape's symmetry period."""
    period = PERIOD_DEG[kind]
    return (np.mod(rotation_deg, period) / period * ROTATION_BINS).astype(np.int64) % ROTATION_BINS


def is_validation_bin(bins: np.ndarray) -> np.ndarray:
    return np.asarray(bins) % VAL_EVERY == VAL_EVERY - 1


def _unit_polygon(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Vertices on (or inside) the unit circle, counter-clockwise, before rotation."""
    if kind == "parallelogram":
        ratio, alpha = rng.uniform(0.5, 1.0), np.deg2rad(rng.uniform(30.0, 90.0))
        a, b = np.array([1.0, 0.0]), ratio * np.array([np.cos(alpha), np.sin(alpha)])
        return np.stack([a, b, -a, -b])
    if kind == "triangle":
        apex = np.deg2rad(rng.uniform(60.0, 120.0))
        return np.array([[1.0, 0.0], [np.cos(apex), np.sin(apex)], [-1.0, 0.0]])
    if kind == "pentagon":
        phi = np.deg2rad(90.0 + 72.0 * np.arange(5))
        return np.stack([np.cos(phi), np.sin(phi)], axis=1)
    raise ValueError(f"unknown shape {kind!r}; expected one of {SHAPES}")


def inside(vertices: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Point-in-convex-polygon for counter-clockwise `vertices` (V, 2); points (..., 2) -> bool (...)."""
    edge = np.roll(vertices, -1, axis=0) - vertices  # (V, 2); a padded (zero) edge constrains nothing
    rel = points[..., None, :] - vertices  # (..., V, 2)
    cross = edge[:, 0] * rel[..., 1] - edge[:, 1] * rel[..., 0]
    return np.all(cross >= 0.0, axis=-1)


def pixel_box(lo: np.ndarray, hi: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The pixel index range [lo, hi) per (col, row) axis, clipped to the image, that covers the
    points lo … hi [px] with a one-pixel margin."""
    return (np.clip(np.floor(lo).astype(int) - 1, 0, size - 1),
            np.clip(np.ceil(hi).astype(int) + 2, 0, size))


def subpixel_mean(f: Callable[[np.ndarray], np.ndarray], lo: np.ndarray, hi: np.ndarray,
                  supersample: int) -> np.ndarray:
    """Mean of f over the supersample² sub-pixel centres of each pixel in the box [lo, hi) (col, row):
    f maps points (..., 2) as (col, row) to values (...); returns (rows, cols) float32."""
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    cols = (np.arange(lo[0], hi[0])[:, None] + sub).ravel()
    rows = (np.arange(lo[1], hi[1])[:, None] + sub).ravel()
    pts = np.stack(np.meshgrid(cols, rows, indexing="xy"), axis=-1)  # (rows, cols, 2) as (col, row)
    vals = f(pts).astype(np.float32)
    h, w = hi[1] - lo[1], hi[0] - lo[0]
    return vals.reshape(h, supersample, w, supersample).mean(axis=(1, 3))


def rasterise(vertices: np.ndarray, size: int, supersample: int = 4) -> np.ndarray:
    """Area-sampled image (size, size) float32 of one polygon of value OBJECT_VALUE."""
    image = np.zeros((size, size), np.float32)
    lo, hi = pixel_box(vertices.min(axis=0), vertices.max(axis=0), size)
    frac = subpixel_mean(lambda pts: inside(vertices, pts), lo, hi, supersample)
    image[lo[1] : hi[1], lo[0] : hi[0]] = OBJECT_VALUE * frac
    return image


def make_phantoms(
    n: int,
    size: int = 239,
    seed: int = 0,
    split: str = "train",
    shapes: tuple[str, ...] = SHAPES,
    supersample: int = 4,
) -> Phantoms:
    """n phantoms (shapes drawn uniformly from `shapes`) whose rotations lie in `split`'s bins."""
    if size < 15 or size % 2 == 0:
        raise ValueError(f"size must be odd and >= 15, got {size}")
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    rng = np.random.default_rng(seed)
    scale, c = (size - 1) / 238.0, size // 2
    all_bins = np.arange(ROTATION_BINS)
    bins = all_bins[is_validation_bin(all_bins) == (split == "val")]
    verts = np.empty((n, MAX_VERTICES, 2))
    kinds = rng.integers(0, len(shapes), n)
    rots = np.empty(n)
    images = np.empty((n, size, size), np.float32)
    for i in range(n):
        kind = shapes[kinds[i]]
        period = PERIOD_DEG[kind]
        rots[i] = (rng.choice(bins) + rng.uniform(0.0, 1.0)) * period / ROTATION_BINS
        th = np.deg2rad(rots[i])
        rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        radius = scale * rng.uniform(*RADIUS_239[kind])
        centre = scale * rng.uniform(*CENTRE_239, size=2) + (c - scale * 119.0)
        v = centre + radius * _unit_polygon(kind, rng) @ rot.T
        if np.max(np.hypot(*(v - c).T)) > c:
            raise ValueError("phantom leaves the reconstruction circle")  # cannot happen for Table 3
        verts[i] = np.concatenate([v, np.repeat(v[-1:], MAX_VERTICES - len(v), axis=0)])
        images[i] = rasterise(verts[i], size, supersample)
    kind_idx = np.array([SHAPES.index(shapes[k]) for k in kinds], dtype=np.int64)
    return Phantoms(verts, kind_idx, rots, images)
