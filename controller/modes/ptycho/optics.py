"""The ptychography instrument's optics and sampling, defined once (docs/ptycho.md "Sampling").

One consistent sampling (the paper's Table II is not self-consistent: 200 px × 0.154 Å ≠ 20 Å, and
1/(64 · 0.4759 nm⁻¹) ≠ 0.154 Å). Ours:
  object pixel Δx = 0.2 Å = the scan step; positions on a 100 × 100 grid → a 20 Å × 20 Å field of view;
  window N = 64 px = 12.8 Å around each position; detector pixel Δk = 1/(N·Δx) = 0.078 Å⁻¹, i.e. λ·Δk =
  3.8 mrad at 60 kV, the 64 × 64 pattern reaching ±122 mrad (the bright-field disc: 33 mrad = 8.7 px).
Position (i, j) (row, column; 0 … 99) puts the window's top-left corner at object pixel (i, j): the object is
(100 − 1 + 64)² = 163² px, and the probe's centre (window pixel N/2) scans object pixels 32 … 131.

Forward model (paper eq. 1, single slice, strong phase object): the exit wave ψ_p(r) = P(r) · exp(iφ(r + R_p))
with φ = σV the object's transmission phase, and the pattern I_p = dose · |F[ψ_p]|², F the unitary 2-D DFT and
Σ|P|² = 1 (so Σ I_p = dose). Patterns are centred (zero frequency at pixel [N/2, N/2]), as a detector sees them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ELECTRON_REST_EV = 510_998.95  # m₀c² [eV]
HC_EV_A = 12_398.419843  # h·c [eV·Å]


def wavelength_A(energy_eV: float) -> float:
    """Relativistic electron wavelength λ = hc / √(E (2m₀c² + E)) [Å] (0.0487 Å at 60 kV)."""
    return HC_EV_A / math.sqrt(energy_eV * (2.0 * ELECTRON_REST_EV + energy_eV))


def interaction_sigma(energy_eV: float) -> float:
    """Interaction constant σ = 2π/(λE) · (m₀c² + E)/(2m₀c² + E) [rad / (V·Å)] (Kirkland eq. 5.6)."""
    return (2.0 * math.pi / (wavelength_A(energy_eV) * energy_eV)
            * (ELECTRON_REST_EV + energy_eV) / (2.0 * ELECTRON_REST_EV + energy_eV))


@dataclass(frozen=True)
class Optics:
    """The microscope and scan settings (defaults: the paper's NION HERMES set-up, Table I's dose)."""

    energy_eV: float = 60e3
    aperture_mrad: float = 33.0  # probe convergence semi-angle α
    defocus_A: float = 0.0  # Δf > 0: underfocus (the probe's aberration χ(k) = −πλΔf|k|²); 0 = focused
    pixel_A: float = 0.2  # object pixel = scan step
    window: int = 64  # N: pattern and probe window [px]
    grid: int = 100  # positions per axis
    dose: float = 2.1e5  # electrons per pattern

    def __post_init__(self) -> None:
        if self.energy_eV <= 0 or self.aperture_mrad <= 0 or self.pixel_A <= 0 or self.dose <= 0:
            raise ValueError(f"optics need positive energy, aperture, pixel and dose: {self}")
        if self.window < 8 or self.window % 2 or self.grid < 2:
            raise ValueError(f"need an even window ≥ 8 and a grid ≥ 2: {self}")

    @property
    def wavelength_A(self) -> float:
        return wavelength_A(self.energy_eV)

    @property
    def sigma(self) -> float:
        return interaction_sigma(self.energy_eV)

    @property
    def object_px(self) -> int:
        """Side of the object array covering every window [px]."""
        return self.grid - 1 + self.window

    @property
    def detector_mrad(self) -> float:
        """Angle per detector pixel λ/(N·Δx) [mrad]."""
        return 1e3 * self.wavelength_A / (self.window * self.pixel_A)


DEFOCUSED_A = 20.0  # the defocused probe the evaluation also reports (the feasibility study's)


def spatial_frequencies(optics: Optics) -> tuple[np.ndarray, np.ndarray]:
    """(ky, kx) of the window's DFT [Å⁻¹], FFT order (zero frequency first)."""
    k = np.fft.fftfreq(optics.window, d=optics.pixel_A)
    return np.meshgrid(k, k, indexing="ij")


def probe(optics: Optics) -> np.ndarray:
    """The probe P(r) on the N × N window, centred at pixel [N/2, N/2], Σ|P|² = 1 (complex128).

    P = F⁻¹[A(k) · exp(−iχ(k))], A = 1 inside the aperture λ|k| ≤ α (a sharp edge), χ = −πλΔf|k|²: Kirkland's
    χ = πλ|k|²(C_s λ²|k|²/2 − Δf) with C_s = 0, where Δf > 0 is underfocus; abTEM's `defocus` (= −C10) is the same
    Δf (its patterns match ours to 4e-10 at Δf = 20 Å, tests/unit/test_ptycho_sample.py).
    """
    ky, kx = spatial_frequencies(optics)
    k2 = ky * ky + kx * kx
    lam = optics.wavelength_A
    aperture = (lam * np.sqrt(k2) <= optics.aperture_mrad * 1e-3).astype(np.float64)
    wave = np.fft.fftshift(np.fft.ifft2(aperture * np.exp(1j * np.pi * lam * optics.defocus_A * k2)))
    return wave / np.sqrt(np.sum(np.abs(wave) ** 2))


def window_at(phase: np.ndarray, position: tuple[int, int], window: int) -> np.ndarray:
    """The object phase under the window at grid position (i, j)."""
    i, j = position
    return phase[i:i + window, j:j + window]


def pattern(probe_wave: np.ndarray, phase_window: np.ndarray, dose: float = 1.0) -> np.ndarray:
    """The noise-free centred pattern dose · |F[P · exp(iφ)]|² (F unitary)."""
    exit_wave = probe_wave * np.exp(1j * phase_window)
    return dose * np.abs(np.fft.fftshift(np.fft.fft2(exit_wave, norm="ortho"))) ** 2
