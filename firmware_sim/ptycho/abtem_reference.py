"""abTEM's reference outputs for the MoS₂ sample's cross-check (`make abtem-reference`; docs/ptycho.md "Sample").

Runs in its own venv with abTEM 1.0.x (never imported by the project); writes an .npz that
tests/unit/test_ptycho_sample.py compares our potential and patterns to, without abTEM installed.

The same atoms as ours: `mos2.atoms(REFERENCE_KEY, 12.8 Å, REFERENCE_PARAMS)` in a periodic box of exactly
64 × 64 px at 0.2 Å (the probe window), z = 4 Å ± 1.56 Å in an 8 Å cell. abTEM's x axis is our row axis (y), so
abTEM's arrays index like ours. abTEM settings (config: precision float64, fft numpy):
- potential: `Potential(atoms, gpts=16·64, projection="infinite", parametrization="kirkland",
  slice_thickness=8)` (one slice), then reduced to our 64 × 64 band by keeping its Fourier coefficients at our DFT
  frequencies. abTEM places atoms by bilinear interpolation of delta functions on its grid and divides by a sinc;
  both are exact or negligible (< 3e-4 in our band) for atoms on its grid, so the atoms are snapped to the 0.2 Å
  pixel grid (`potential`). The same atoms unsnapped (`potential_subpixel`) show abTEM's interpolation error.
- patterns: that 64 × 64 potential as a `PotentialArray` (one 8 Å slice), `Probe(energy=60e3,
  semiangle_cutoff=33, soft=False, defocus=Δf, gpts=64, sampling=0.2)` for Δf = 0 and 20 Å at the probe centres
  `PROBE_PX` (object pixels), `probe.multislice(potential)` then `.diffraction_patterns(max_angle="full")`
  (centred, Σ = 1); config antialias.cutoff = 1 and taper = 0: abTEM band-limits the transmission function and
  the propagated wave to the disc |k| < 1/(2Δx) (2.5 Å⁻¹, 122 mrad), which the test applies to ours.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from controller.modes.ptycho.optics import DEFOCUSED_A, Optics
from firmware_sim.ptycho import mos2

REFERENCE_KEY = 2021
REFERENCE_PARAMS = mos2.MoS2Params(vacancy_rate=0.1, thermal_rms_A=0.05)
OVERSAMPLING = 16  # abTEM's potential grid is this much finer than ours
CELL_Z_A = 8.0
PROBE_PX = np.array([[32, 32], [21, 45], [50, 13]])  # probe centres (row, col) in the 64-px box
ANTIALIAS = {"antialias.cutoff": 1.0, "antialias.taper": 0.0}


def reference_atoms(optics: Optics, snapped: bool) -> tuple[np.ndarray, np.ndarray]:
    """The reference atoms (y, x, z) [Å] in the window-sized box, optionally snapped to the pixel grid."""
    positions, numbers = mos2.atoms(REFERENCE_KEY, optics.window * optics.pixel_A, REFERENCE_PARAMS)
    if snapped:
        positions[:, :2] = np.round(positions[:, :2] / optics.pixel_A) % optics.window * optics.pixel_A
    return positions, numbers


def abtem_potential(positions: np.ndarray, numbers: np.ndarray, optics: Optics) -> np.ndarray:
    """abTEM's infinite projection at OVERSAMPLING × finer sampling, reduced to our window's band [V·Å]."""
    import abtem
    import ase

    n, m = optics.window, optics.window * OVERSAMPLING
    box = n * optics.pixel_A
    atoms = ase.Atoms(numbers=numbers, positions=positions + [0.0, 0.0, CELL_Z_A / 2], cell=[box, box, CELL_Z_A],
                      pbc=True)
    fine = abtem.Potential(atoms, gpts=m, projection="infinite", parametrization="kirkland",
                           slice_thickness=CELL_Z_A).build().compute().array[0]
    band = (np.fft.fftfreq(n) * n).astype(int) % m
    return np.fft.ifft2(np.fft.fft2(fine)[np.ix_(band, band)]).real * (n * n) / (m * m)


def abtem_patterns(potential: np.ndarray, optics: Optics, defocus_A: float) -> np.ndarray:
    """abTEM's centred diffraction patterns (P, N, N), Σ = 1 each, at the probe centres PROBE_PX."""
    import abtem

    array = abtem.PotentialArray(potential[None], slice_thickness=CELL_Z_A, sampling=optics.pixel_A)
    probe = abtem.Probe(energy=optics.energy_eV, semiangle_cutoff=optics.aperture_mrad, soft=False,
                        defocus=defocus_A, gpts=optics.window, sampling=optics.pixel_A)
    scan = abtem.CustomScan(PROBE_PX * optics.pixel_A)
    waves = probe.multislice(array, scan=scan)
    return np.asarray(waves.diffraction_patterns(max_angle="full").compute().array, np.float64)


def main(argv: list[str]) -> None:
    import abtem

    if len(argv) != 1:
        raise SystemExit("usage: python -m firmware_sim.ptycho.abtem_reference OUT.npz")
    abtem.config.set({"precision": "float64", "fft": "numpy", "device": "cpu", **ANTIALIAS})
    optics = Optics()
    positions, numbers = reference_atoms(optics, snapped=True)
    subpixel_positions, _ = reference_atoms(optics, snapped=False)
    potential = abtem_potential(positions, numbers, optics)
    out = {
        "abtem_version": np.array(abtem.__version__), "key": np.array(REFERENCE_KEY),
        "positions_A": positions, "subpixel_positions_A": subpixel_positions, "numbers": numbers,
        "potential": potential, "potential_subpixel": abtem_potential(subpixel_positions, numbers, optics),
        "probe_px": PROBE_PX, "defocus_A": np.array([0.0, DEFOCUSED_A]),
        "patterns": np.stack([abtem_patterns(potential, optics, df) for df in (0.0, DEFOCUSED_A)]),
    }
    Path(argv[0]).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(argv[0], **out)
    print(f"wrote {argv[0]}: {len(numbers)} atoms, abTEM {abtem.__version__}")


if __name__ == "__main__":
    main(sys.argv[1:])
