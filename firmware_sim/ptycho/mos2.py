"""Monolayer 2H-MoS₂ samples: the object's transmission phase φ = σ·v_z, one random sample per key (docs/ptycho.md
"Sample").

Structure: a hexagonal lattice, a = 3.16 Å, a₁ = a(1, 0), a₂ = a(1/2, √3/2); Mo at fractional (1/3, 2/3) and an
S site at (2/3, 1/3), which holds two S atoms, 1.56 Å above and below the Mo plane (the same point in projection).
Projected Mo–S distance a/√3 = 1.82 Å; the first reflections d_hk = (√3/2) a / √(h² + hk + k²) are 2.74, 1.58,
1.37 and 1.03 Å (`lattice_reflections`).

Each key draws (`MoS2Params`): an in-plane rotation uniform in [0, 2π), a lateral shift uniform over the unit
cell, each S atom missing with probability `vacancy_rate` (independently: a site may lose one or both), and
optionally a Gaussian thermal displacement of every atom (`thermal_rms_A` per axis; frozen phonon).

Potential: `kirkland.projected_potential` (Fourier series of Kirkland's f_e times the exact structure factor).
A rotated lattice is not periodic on the object box, so the series is summed on a larger periodic box, the object
centred in it with at least PAD_A = 8 Å on every side, filled with atoms, then cropped: the box's wrap-around
seam lies ≥ 8 Å from the object, where the slowest tail (Mo, exp(−2π√b₁ r)) is down to 5e-7 of its 1 Å value.
Band limit: a disc |k| ≤ k_c = 1/(2Δx) = 2.5 Å⁻¹ (the DFT's Nyquist frequency, inscribed in its square), so a
rotated sample holds the same frequencies as an unrotated one (the square would favour its diagonals), with a
raised-cosine edge from 0.9 k_c to k_c (TAPER): a sharp edge rings far enough that the padded box's size changed
the object by 0.5 % (relative L2, 8 vs 24 Å padding), the tapered edge by 1e-4.

Keys: `SPLITS` gives each split its own range of keys (disjoint by construction), `keys(split, n)` its first n.
"""
from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import fft as sfft

from controller.modes.ptycho.optics import Optics
from firmware_sim.ptycho import kirkland

A_LATTICE = 3.16  # Å
S_HEIGHT_A = 1.56  # each S plane's height above/below the Mo plane [Å] (only a 3-D export uses it)
MO, S = 42, 16
PAD_A = 8.0  # least distance from the object box to the padded box's seam [Å]
CELLS = 40  # lattice indices −CELLS … CELLS along a₁ and a₂ (boxes up to ~ 100 Å)
TAPER = 0.1  # the band limit's raised-cosine edge, as a fraction of k_c
REFLECTIONS = ((1, 0), (1, 1), (2, 0), (2, 1))  # (h, k) of the first reflections

SPLITS: dict[str, range] = {
    "train": range(0, 1 << 30),
    "selection": range(1 << 30, (1 << 30) + (1 << 20)),
    "report": range((1 << 30) + (1 << 20), (1 << 30) + (1 << 21)),
}


@dataclass(frozen=True)
class MoS2Params:
    """The randomisation of a sample (see the module doc)."""

    vacancy_rate: float = 0.03  # probability that an S atom is missing
    thermal_rms_A: float = 0.0  # per-axis RMS displacement of each atom [Å]; 0: none
    lattice_A: float = A_LATTICE

    def __post_init__(self) -> None:
        if not 0.0 <= self.vacancy_rate <= 1.0:
            raise ValueError(f"vacancy_rate must lie in [0, 1], got {self.vacancy_rate}")
        if self.thermal_rms_A < 0.0 or self.lattice_A <= 0.0:
            raise ValueError(f"need thermal_rms_A ≥ 0 and lattice_A > 0, got {self}")


def lattice_reflections(lattice_A: float = A_LATTICE) -> tuple[float, ...]:
    """d-spacings [Å] of MoS₂'s first reflections {100}, {110}, {200}, {210}: (2.74, 1.58, 1.37, 1.03) Å."""
    return tuple(math.sqrt(3.0) / 2.0 * lattice_A / math.sqrt(h * h + h * k + k * k) for h, k in REFLECTIONS)


def keys(split: str, n: int) -> list[int]:
    """The first n sample keys of `split` (a pure function: the same list every call)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLITS)}")
    if not 0 <= n <= len(SPLITS[split]):
        raise ValueError(f"split {split!r} holds {len(SPLITS[split])} keys, asked for {n}")
    return list(SPLITS[split][:n])


def atoms(key: int, box_A: float, params: MoS2Params = MoS2Params(),
          centre_A: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sample `key`'s atoms filling the square [0, box_A)²: positions (J, 3) = (y, x, z) [Å] and numbers (J,).

    The lattice is rotated about (centre_A, centre_A) (default: the box's centre) and shifted; S atoms are vacant
    and all atoms displaced as `params` says. Atoms out of the box are dropped (the box is a caller's periodic
    cell). The same key and centre give the same atoms wherever two boxes overlap."""
    rng = np.random.default_rng(key)
    theta = rng.uniform(0.0, 2.0 * np.pi)
    shift = rng.uniform(0.0, 1.0, 2)
    a = params.lattice_A
    cell = a * np.array([[1.0, 0.0], [0.5, math.sqrt(3.0) / 2.0]])  # rows a₁, a₂ as (x, y)
    centre = box_A / 2.0 if centre_A is None else centre_A
    if math.ceil(2.0 * max(centre, box_A - centre) / (a * math.sqrt(3.0) / 2.0)) + 1 > CELLS:
        raise ValueError(f"a {box_A} Å box centred at {centre} Å needs more than ±{CELLS} cells")
    n = np.arange(-CELLS, CELLS + 1)  # a fixed index range: each atom's random draws do not depend on the box
    frac = np.stack(np.meshgrid(n, n, indexing="ij"), axis=-1).reshape(-1, 2) + shift
    basis = np.array([[1 / 3, 2 / 3], [2 / 3, 1 / 3], [2 / 3, 1 / 3]])  # Mo, S below, S above
    heights = np.array([0.0, -S_HEIGHT_A, S_HEIGHT_A])
    xy = ((frac[:, None, :] + basis[None]) @ cell).reshape(-1, 2)  # (cells·3, 2) as (x, y)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    xy = xy @ rot.T + centre
    z = np.tile(heights, len(frac))
    numbers = np.tile([MO, S, S], len(frac))
    keep = (numbers == MO) | (rng.random(len(numbers)) >= params.vacancy_rate)
    if params.thermal_rms_A > 0.0:
        xy = xy + rng.normal(0.0, params.thermal_rms_A, xy.shape)
    keep &= np.all((xy >= 0.0) & (xy < box_A), axis=1)
    positions = np.column_stack([xy[keep, 1], xy[keep, 0], z[keep]])
    return positions, numbers[keep]


@functools.lru_cache(maxsize=4)
def _padded_box(optics: Optics) -> tuple[int, int, np.ndarray]:
    """(padded side [px], the object's offset in it [px], the band limit's weights on its half-plane frequencies)."""
    side = sfft.next_fast_len(optics.object_px + 2 * math.ceil(PAD_A / optics.pixel_A), real=True)
    ky, kx = kirkland.frequencies((side, side), optics.pixel_A)
    k_c = 0.5 / optics.pixel_A
    edge = np.clip((k_c - np.hypot(ky[:, None], kx[None, :])) / (TAPER * k_c), 0.0, 1.0)  # 0 at k_c, 1 inside
    return side, (side - optics.object_px) // 2, 0.5 - 0.5 * np.cos(np.pi * edge)


def draw_phase(key: int, optics: Optics = Optics(), params: MoS2Params = MoS2Params()) -> np.ndarray:
    """Sample `key`'s transmission phase σ·v_z [rad]: (optics.object_px,)² float64 at optics.pixel_A."""
    side, offset, band = _padded_box(optics)
    positions, numbers = atoms(key, side * optics.pixel_A, params, (offset + optics.object_px / 2) * optics.pixel_A)
    v = kirkland.projected_potential(positions[:, :2], numbers, (side, side), optics.pixel_A, band_limit=band)
    crop = slice(offset, offset + optics.object_px)
    return optics.sigma * v[crop, crop]


def main(argv: list[str]) -> None:
    """`python -m firmware_sim.ptycho.mos2 PNG`: four samples of the train split, with the scanned field marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(argv) != 1:
        raise SystemExit("usage: python -m firmware_sim.ptycho.mos2 PNG")
    optics = Optics()
    extent = optics.object_px * optics.pixel_A
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4), constrained_layout=True)
    for ax, key in zip(axes, keys("train", 4)):
        phase = draw_phase(key, optics)
        im = ax.imshow(phase, cmap="magma", extent=(0, extent, extent, 0))
        lo, hi = optics.window // 2 * optics.pixel_A, (optics.window // 2 + optics.grid - 1) * optics.pixel_A
        ax.add_patch(plt.Rectangle((lo, lo), hi - lo, hi - lo, fill=False, ec="c", lw=1, ls="--"))
        ax.set_title(f"key {key}: φ ∈ [{phase.min():.2f}, {phase.max():.2f}] rad")
        ax.set_xlabel("x [Å]")
        fig.colorbar(im, ax=ax, shrink=0.8, label="σ·v_z [rad]")
    axes[0].set_ylabel("y [Å]")
    fig.suptitle("MoS₂ samples (Kirkland potential, 60 kV; dashed: the probe centres' 20 Å scan field)")
    Path(argv[0]).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(argv[0], dpi=60)


if __name__ == "__main__":
    main(sys.argv[1:])
