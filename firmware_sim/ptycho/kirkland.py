"""Projected atomic potentials from Kirkland's parametrisation, computed in Fourier space (docs/ptycho.md "Sample").

The electron scattering factor of a neutral atom (Kirkland, Advanced Computing in Electron Microscopy, 2nd ed.,
App. C, eq. C.15), q in Å⁻¹ (q = 1/d, no 2π), f_e in Å:
    f_e(q) = Σ_{i=1..3} a_i / (q² + b_i) + Σ_{i=1..3} c_i · exp(−d_i q²).
The first Born approximation ties it to the atom's potential, V(q) = 2π a₀e · f_e(q) (Kirkland eq. 5.15 with
ħ²/(m₀e) = a₀e = 0.5292 Å × 14.40 V·Å), and the projection along z keeps the q_z = 0 plane (the projection-slice
theorem), so the projected potential of atoms at r_j in a periodic box of area A is the Fourier series
    v_z(r) = (1/A) Σ_k 2π a₀e · f_e(|k|) · S(k) · exp(2πi k·r),   S(k) = Σ_j exp(−2πi k·r_j)   [V·Å],
summed over the box's DFT frequencies. Its real-space form (Kirkland eq. C.20: Σ a_i K₀(2πr√b_i) terms and
Gaussians) has a logarithmic singularity at each nucleus; the Fourier series needs no such care. The series is
the potential band-limited to the DFT's square |k_x|, |k_y| ≤ 1/(2Δx) (callers may band-limit further).

The structure factor is exact for any atom position (no interpolation onto the grid): per species it is the
matrix product S = E_yᵀ E_x with E_y[j, k_y] = exp(−2πi k_y y_j), E_x[j, k_x] = exp(−2πi k_x x_j), evaluated
on the half plane k_x ≥ 0 (the potential is real: `irfft2`).

Coefficients: Kirkland's Table C.4 for the two elements of MoS₂ (the same numbers as abTEM's
parametrizations/data/kirkland.json), (a₁, b₁, a₂, b₂, a₃, b₃, c₁, d₁, c₂, d₂, c₃, d₃).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import constants

# 2π a₀e [V·Å²]: f_e [Å] → the Fourier transform of the potential [V·Å³]
TWO_PI_A0_E = 2.0 * math.pi * constants.physical_constants["Bohr radius"][0] * 1e10 \
    * constants.e / (4.0 * math.pi * constants.epsilon_0) * 1e10

# Kirkland (2010) Table C.4: a₁, b₁, a₂, b₂, a₃, b₃, c₁, d₁, c₂, d₂, c₃, d₃ (a [Å⁻¹], b [Å⁻²], c [Å], d [Å²])
COEFFICIENTS: dict[int, tuple[float, ...]] = {
    16: (1.01646916, 1.69181965, 0.441766748, 0.174180288, 0.121503863, 167.011091,  # S
         0.827966670, 2.30342810, 0.0233022533, 0.156954150, 1.18302846, 5.85782891),
    42: (0.610160120, 0.0911628054, 1.26544000, 0.506776025, 1.97428762, 5.89590381,  # Mo
         0.648028962, 1.46634108, 0.00260380817, 0.00784336311, 0.113887493, 0.155114340),
}


def scattering_factor(z: int, q2: np.ndarray) -> np.ndarray:
    """f_e(q) [Å] of element z at squared spatial frequencies q² [Å⁻²] (Kirkland eq. C.15)."""
    if z not in COEFFICIENTS:
        raise ValueError(f"no Kirkland coefficients here for Z = {z}; have {sorted(COEFFICIENTS)}")
    p = COEFFICIENTS[z]
    lorentz = sum(p[2 * i] / (q2 + p[2 * i + 1]) for i in range(3))
    gauss = sum(p[6 + 2 * i] * np.exp(-p[7 + 2 * i] * q2) for i in range(3))
    return lorentz + gauss


def frequencies(shape: tuple[int, int], pixel_A: float) -> tuple[np.ndarray, np.ndarray]:
    """(k_y, k_x) [Å⁻¹] of the half-plane DFT of a real (rows, cols) array: k_y FFT order, k_x ≥ 0."""
    return np.fft.fftfreq(shape[0], d=pixel_A), np.fft.rfftfreq(shape[1], d=pixel_A)


def structure_factor(positions_A: np.ndarray, ky: np.ndarray, kx: np.ndarray) -> np.ndarray:
    """S(k_y, k_x) = Σ_j exp(−2πi k·r_j) for positions (J, 2) = (y, x) [Å]: (len(ky), len(kx)) complex."""
    ey = np.exp(-2j * np.pi * np.outer(positions_A[:, 0], ky))
    ex = np.exp(-2j * np.pi * np.outer(positions_A[:, 1], kx))
    return ey.T @ ex


def projected_potential(positions_A: np.ndarray, numbers: np.ndarray, shape: tuple[int, int], pixel_A: float,
                        band_limit: np.ndarray | None = None) -> np.ndarray:
    """The projected potential v_z [V·Å] of atoms at (y, x) positions [Å] (J, 2) with atomic numbers (J,), on the
    periodic box of `shape` pixels of `pixel_A` (pixel (r, c) centred at (r·Δx, c·Δx)); float64.

    `band_limit`: an optional mask (or weights) on the half-plane frequencies (`frequencies(shape, pixel_A)`)
    multiplying the series; without it, the DFT's square band limit only.
    """
    positions_A = np.asarray(positions_A, np.float64).reshape(-1, 2)
    numbers = np.asarray(numbers).reshape(-1)
    if len(positions_A) != len(numbers):
        raise ValueError(f"{len(positions_A)} positions but {len(numbers)} atomic numbers")
    if pixel_A <= 0 or min(shape) < 2:
        raise ValueError(f"need a positive pixel and a box of ≥ 2 px a side, got {shape} px of {pixel_A} Å")
    ky, kx = frequencies(shape, pixel_A)
    q2 = ky[:, None] ** 2 + kx[None, :] ** 2
    spectrum = np.zeros(q2.shape, np.complex128)
    for z in np.unique(numbers):
        spectrum += scattering_factor(int(z), q2) * structure_factor(positions_A[numbers == z], ky, kx)
    if band_limit is not None:
        spectrum *= band_limit
    # v(r_n) = (1/A) Σ_k v̂(k) e^{2πik·r_n} = irfft2(v̂)·(N_y N_x / A) = irfft2(v̂) / Δx²
    return np.fft.irfft2(spectrum, s=shape) * (TWO_PI_A0_E / pixel_A ** 2)
