"""The full-grid reference reconstruction: every one of the grid × grid positions, probe known, run to
convergence; SSIM of a scan is measured against it (the paper's Q_SSIM), cached per (sample key, optics).

ITERATIONS was measured on a lattice object (tests/ptycho_util.py, Table I dose, focused and 20 Å defocused
probe): the loss and the SSIM to the truth stop changing (< 1e-3 relative per 10 iterations) before it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from controller.modes.ptycho import recon
from controller.modes.ptycho.optics import Optics, probe
from firmware_sim.ptycho.detector import counts

ITERATIONS = 100  # to convergence at STEP (module doc)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def full_grid_data(phase: np.ndarray, key: int, optics: Optics, on: torch.device | None = None) -> recon.Measured:
    """The counts (firmware_sim.ptycho.detector, keyed per sample and position) at every grid position, as a
    torch float32 batch of one sample."""
    on = on or device()
    p = probe(optics)
    positions = np.stack(np.unravel_index(np.arange(optics.grid ** 2), (optics.grid, optics.grid)), 1)
    patterns = np.stack([counts(p, phase, (int(i), int(j)), optics.dose, key) for i, j in positions])
    amps = recon.amplitudes(torch.from_numpy(patterns.astype(np.float32)), optics.dose)
    idx = torch.from_numpy(recon.window_indices(positions, optics.object_px, optics.window))
    return recon.Measured(idx[None].to(on), amps[None].to(on), torch.ones(1, len(positions), device=on))


def reconstruct(phase: np.ndarray, key: int, optics: Optics, iterations: int = ITERATIONS) -> np.ndarray:
    """The full-grid reconstruction (object_px², float32) from zero phase, on the GPU when present."""
    n = optics.object_px
    if phase.shape != (n, n):
        raise ValueError(f"expected an object phase of {n} × {n} px, got {phase.shape}")
    on = device()
    data = full_grid_data(phase, key, optics, on)
    wave = torch.from_numpy(probe(optics)).to(torch.complex64).to(on)
    out = recon.reconstruct(torch.zeros(1, n * n, device=on), wave, data, iterations)
    return out.reshape(n, n).cpu().numpy()


def cache_path(key: int, optics: Optics, cache_dir: Path) -> Path:
    """The cache file of sample ``key`` under ``optics`` (the optics and ITERATIONS hashed into the name)."""
    digest = hashlib.sha256(f"{optics!r} {ITERATIONS}".encode()).hexdigest()[:12]
    return Path(cache_dir) / f"reference-{key}-{digest}.npy"


def reference(phase: np.ndarray, key: int, optics: Optics, cache_dir: Path) -> np.ndarray:
    """The full-grid reconstruction of sample ``key``, from ``cache_dir`` when it holds it (else computed and
    kept there as .npy)."""
    path = cache_path(key, optics, cache_dir)
    if path.exists():
        return np.load(path)
    out = reconstruct(phase, key, optics)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, out)
    tmp.replace(path)  # atomic: a reader never sees half a file
    return out
