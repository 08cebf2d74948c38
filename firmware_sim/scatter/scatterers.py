"""Scatterers η on the n × n grid of the unit square: the training, held-out and private families, and user maps.

Every scatterer is non-negative and scaled to the discrete 2-norm ‖η‖₂ = spec.NORM over the grid values (the
contrast at which the second Born term is ~10 % of the first, issue #22). Shapes are area-sampled: a grid
point's value is the mean over SUPERSAMPLE² sub-points of its h × h cell (grid point (row i, col j) at
(x, y) = (axis[j], axis[i]), physics.Grid).

Training families (FAMILIES; paper §4 and the authors' code):
- "ellipses": 1–3 shapes, each an ellipse (semi-axes 0.06–0.2) or a triangle (circumradius 0.1–0.2, no angle
  under ~20°), at random rotation, intensity 0.5–1 each, overlaps take the larger value;
- "circles": 2–3 circles, radius 0.08–0.15, intensity 0.5–1, apart from each other (gap ≥ 0.03);
- "digits": scikit-learn's bundled handwritten digits (load_digits, 8 × 8, 1797 images; imported on first use:
  the host's `learn` install), bilinearly resampled into a random square of side 0.5–0.8 at a random place.
Held-out families (HELD_OUT), never used in training, each unlike the training shapes in kind:
- "rectangles": 1–3 rotated rectangles, sides 0.06–0.28 (elongated bars with corners);
- "annuli": 1–2 rings, outer radius 0.12–0.3, wall 0.03–0.08 (hollow objects, contrast absent at the centre).
The private family (PRIVATE), evaluated once at the very end and only on the "report" split:
- "blobs": 3–6 smooth Gaussian bumps, σ 0.03–0.1 (no edges at all).

Splits "train", "selection" (λ tuning, design choices) and "report" draw from disjoint seed streams: the split is
part of the seed (numpy SeedSequence entropy (split, family, index)); digits use disjoint image indices
(image i belongs to "train" if i mod 5 < 3, "selection" if 3, "report" if 4; index k of a split takes its
(k mod size)-th image, the placement drawn from the seed, so indices past the split's size re-place images).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates

from controller.modes.scatter.physics import Grid
from controller.modes.scatter.spec import NORM
from firmware_sim.ct.phantoms import inside

FAMILIES = ("ellipses", "circles", "digits")
HELD_OUT = ("rectangles", "annuli")
PRIVATE = "blobs"
ALL_FAMILIES = FAMILIES + HELD_OUT + (PRIVATE,)
SPLITS = ("train", "selection", "report")
SUPERSAMPLE = 4  # sub-points per cell and axis
CENTRE_BOX = 0.3  # shape centres are drawn in [−0.3, 0.3]²; every shape then stays inside the domain (a blob's tails are cut)
CIRCLE_GAP = 0.03  # the circles of one scatterer do not touch
DIGIT_FOLDS = 5  # digit image i: fold i mod 5 — 0, 1, 2 train, 3 selection, 4 report
DIGIT_SPLIT_FOLDS = {"train": (0, 1, 2), "selection": (3,), "report": (4,)}

Field = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (x, y) arrays -> values of one shape


def _check(family: str, split: str, n: int) -> None:
    if family not in ALL_FAMILIES:
        raise ValueError(f"unknown scatterer family {family!r}; expected one of {ALL_FAMILIES}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if family == PRIVATE and split != "report":
        raise ValueError(f"the private family {PRIVATE!r} exists only on the 'report' split")
    Grid(n)  # validates n


def normalise(eta: np.ndarray) -> np.ndarray:
    """η scaled to ‖η‖₂ = NORM (float64); a map that is zero everywhere has no scale and is refused."""
    eta = np.asarray(eta, dtype=np.float64)
    norm = float(np.linalg.norm(eta))
    if not norm > 0:
        raise ValueError("the scatterer is zero on every grid point: it cannot be scaled to the training norm")
    return eta * (NORM / norm)


def _area_sampled(shapes: list[tuple[float, Field]], n: int, combine: str = "max") -> np.ndarray:
    """(n, n) map of intensity-weighted shape indicators averaged over each cell's sub-points; overlapping
    shapes take the maximum ("max") or add ("sum")."""
    grid = Grid(n)
    sub = ((np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5) * grid.h
    fine = (grid.axis[:, None] + sub).ravel()  # n·S sub-point coordinates
    x, y = np.meshgrid(fine, fine, indexing="xy")  # row ↔ y, column ↔ x
    values = np.stack([value * f(x, y) for value, f in shapes])
    fine_map = values.max(axis=0) if combine == "max" else values.sum(axis=0)
    return fine_map.reshape(n, SUPERSAMPLE, n, SUPERSAMPLE).mean(axis=(1, 3))


def _rotated(cx: float, cy: float, angle: float, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of (x, y) in the frame centred at (cx, cy) and rotated by ``angle`` [rad]."""
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = x - cx, y - cy
    return c * dx + s * dy, -s * dx + c * dy


def _ellipse(rng: np.random.Generator) -> Field:
    cx, cy = rng.uniform(-CENTRE_BOX, CENTRE_BOX, 2)
    a, b = rng.uniform(0.06, 0.2, 2)
    angle = rng.uniform(0.0, np.pi)
    def f(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u, v = _rotated(cx, cy, angle, x, y)
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    return f


def _polygon(vertices: np.ndarray) -> Field:
    """Indicator of a convex polygon with counter-clockwise (x, y) vertices."""
    return lambda x, y: inside(vertices, np.stack([x, y], axis=-1))


def _triangle(rng: np.random.Generator) -> Field:
    """Vertices on a circle, the three arcs between them at least 40° (every angle ≥ 20°), counter-clockwise."""
    centre = rng.uniform(-CENTRE_BOX, CENTRE_BOX, 2)
    radius = rng.uniform(0.1, 0.2)
    arcs = np.deg2rad(40.0 + 240.0 * rng.dirichlet(np.ones(3)))
    phi = rng.uniform(0.0, 2 * np.pi) + np.concatenate([[0.0], np.cumsum(arcs[:2])])
    return _polygon(centre + radius * np.stack([np.cos(phi), np.sin(phi)], axis=1))


def _rectangle(rng: np.random.Generator) -> Field:
    centre = rng.uniform(-CENTRE_BOX, CENTRE_BOX, 2)
    half = rng.uniform(0.03, 0.14, 2)
    angle = rng.uniform(0.0, np.pi)
    corners = np.array([[1, -1], [1, 1], [-1, 1], [-1, -1]]) * half  # counter-clockwise
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return _polygon(centre + corners @ rot.T)


def _disk(cx: float, cy: float, radius: float) -> Field:
    return lambda x, y: np.hypot(x - cx, y - cy) <= radius


def _disjoint_circles(rng: np.random.Generator) -> np.ndarray:
    """(2 or 3, 3) circles (x, y, radius), radius 0.08–0.15, at least CIRCLE_GAP apart (redrawn until so)."""
    count = rng.integers(2, 4)
    while True:
        c = np.column_stack([rng.uniform(-CENTRE_BOX, CENTRE_BOX, (count, 2)), rng.uniform(0.08, 0.15, count)])
        gap = np.hypot(*(c[:, None, :2] - c[None, :, :2]).transpose(2, 0, 1)) - c[:, None, 2] - c[None, :, 2]
        if np.all(gap[np.triu_indices(count, 1)] >= CIRCLE_GAP):
            return c


def _annulus(rng: np.random.Generator) -> Field:
    outer = rng.uniform(0.12, 0.3)
    cx, cy = rng.uniform(-(0.45 - outer), 0.45 - outer, 2)
    inner = outer - rng.uniform(0.03, 0.08)
    return lambda x, y: (np.hypot(x - cx, y - cy) <= outer) & (np.hypot(x - cx, y - cy) > inner)


def _blob(rng: np.random.Generator) -> Field:
    cx, cy = rng.uniform(-CENTRE_BOX, CENTRE_BOX, 2)
    sigma = rng.uniform(0.03, 0.1)
    return lambda x, y: np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))


def _intensity(rng: np.random.Generator) -> float:
    return float(rng.uniform(0.5, 1.0))


def _shapes(family: str, rng: np.random.Generator) -> tuple[list[tuple[float, Field]], str]:
    """The intensity-weighted shapes of one scatterer of a geometric family, and how overlaps combine."""
    if family == "ellipses":
        return [(_intensity(rng), (_ellipse if rng.random() < 0.5 else _triangle)(rng))
                for _ in range(rng.integers(1, 4))], "max"
    if family == "circles":
        return [(_intensity(rng), _disk(cx, cy, r)) for cx, cy, r in _disjoint_circles(rng)], "max"
    if family == "rectangles":
        return [(_intensity(rng), _rectangle(rng)) for _ in range(rng.integers(1, 4))], "max"
    if family == "annuli":
        return [(_intensity(rng), _annulus(rng)) for _ in range(rng.integers(1, 3))], "max"
    if family == PRIVATE:
        return [(_intensity(rng), _blob(rng)) for _ in range(rng.integers(3, 7))], "sum"
    raise AssertionError(family)  # unreachable: families are checked first


@lru_cache(maxsize=1)
def _digit_images() -> np.ndarray:
    """scikit-learn's bundled digits (1797, 8, 8), values 0 … 16."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # the edge install has no scikit-learn
        raise ImportError("the 'digits' scatterers need scikit-learn (the host's learn install)") from exc
    return load_digits().images.astype(np.float64)


def digit_indices(split: str) -> np.ndarray:
    """The digit image indices of a split (disjoint across splits)."""
    folds = np.arange(len(_digit_images())) % DIGIT_FOLDS
    return np.flatnonzero(np.isin(folds, DIGIT_SPLIT_FOLDS[split]))


def _digit(split: str, index: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Digit image (index mod split size) of the split, resampled into a random square of side 0.5–0.8
    (its first image row at the top: the largest y)."""
    ids = digit_indices(split)
    image = _digit_images()[ids[index % len(ids)]]
    side = rng.uniform(0.5, 0.8)
    x0, y0 = rng.uniform(-0.5, 0.5 - side, 2)  # the square's lower-left corner
    axis = Grid(n).axis
    x, y = np.meshgrid(axis, axis, indexing="xy")
    size = image.shape[0]
    cols = (x - x0) / side * size - 0.5  # pixel centres of the 8 × 8 image at (k + 0.5)·side/8
    rows = (y0 + side - y) / side * size - 0.5
    return map_coordinates(image, [rows, cols], order=1, mode="constant", cval=0.0)


def scatterer(family: str, split: str, index: int, n: int) -> np.ndarray:
    """Scatterer ``index`` of a family and split on the n × n grid: (n, n) float64, ≥ 0, ‖η‖₂ = NORM."""
    _check(family, split, n)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    rng = np.random.default_rng([SPLITS.index(split), ALL_FAMILIES.index(family), int(index)])
    if family == "digits":
        return normalise(_digit(split, int(index), n, rng))
    shapes, combine = _shapes(family, rng)
    return normalise(_area_sampled(shapes, n, combine))


def batch(family: str, split: str, indices: np.ndarray | range | list[int], n: int) -> np.ndarray:
    """(B, n, n) scatterers of one family and split."""
    indices = [int(i) for i in np.asarray(indices).ravel()]
    if not indices:
        raise ValueError("indices must name at least one scatterer")
    return np.stack([scatterer(family, split, i, n) for i in indices])


def resample(image: np.ndarray, n: int) -> np.ndarray:
    """A square map covering the unit square (its corner samples on the corners, like the grid) resampled to
    n × n bilinearly; when shrinking, a Gaussian pre-filter (σ = (m/n − 1)/2 pixels) removes aliasing."""
    m = image.shape[0]
    if m > n:
        image = gaussian_filter(image, sigma=(m / n - 1.0) / 2.0, mode="nearest")
    coords = np.linspace(0.0, m - 1.0, n)
    rows, cols = np.meshgrid(coords, coords, indexing="ij")
    return map_coordinates(image, [rows, cols], order=1, mode="nearest")


def load_custom(path: str | Path, n: int) -> np.ndarray:
    """A user's η map from a ``.npy`` file holding a real, finite, non-negative square array (at least 2 × 2),
    resampled to the n × n grid (it is taken to span the unit square) and scaled to ‖η‖₂ = NORM."""
    path = Path(path)
    Grid(n)
    if path.suffix != ".npy":
        raise ValueError(f"{path}: a scatterer file must be a .npy array")
    try:
        image = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable .npy array ({exc})") from exc
    if image.ndim != 2 or image.shape[0] != image.shape[1] or image.shape[0] < 2:
        raise ValueError(f"{path}: expected a square 2-D array of at least 2 × 2, got shape {image.shape}")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"{path}: expected real numbers, got dtype {image.dtype}")
    image = image.astype(np.float64)
    if not np.all(np.isfinite(image)):
        raise ValueError(f"{path}: the array holds NaN or infinite values")
    if np.any(image < 0):
        raise ValueError(f"{path}: contrasts must be non-negative (minimum {image.min():g})")
    try:
        return normalise(np.clip(resample(image, n), 0.0, None))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def load_folder(directory: str | Path, n: int) -> tuple[list[str], np.ndarray]:
    """Every ``*.npy`` of a folder, sorted by name: (names, (B, n, n) scatterers) (load_custom each)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{directory}: not a folder")
    files = sorted(directory.glob("*.npy"))
    if not files:
        raise ValueError(f"{directory}: holds no .npy scatterer files")
    return [f.stem for f in files], np.stack([load_custom(f, n) for f in files])
