"""Time-harmonic acoustic scattering on the unit square: Green's function, Born series, exact LS solve.

Model (paper §2, Jiang–Khoo–Yang): the medium obeys Δu + k²(1 + η)u = 0 with η the contrast, compactly
supported in D = [−0.5, 0.5]². With the outgoing free-space Green's function Φ(x, y) = (i/4)·H₀⁽¹⁾(k|x − y|)
(ΔΦ + k²Φ = −δ) the total field u = u_in + u_s solves the Lippmann–Schwinger equation

    u = u_in + k²·G·(η u),        G_ij = Φ(x_i, x_j)·h²,   h = 1/(n − 1),

discretised on the n × n grid by a one-point quadrature with weight h². The diagonal (self-term) is the
integral of Φ over the disk of equal area h², radius a = h/√π:

    G_ii = (i/4)·(2π/k²)·[a·k·H₁⁽¹⁾(k·a) + 2i/π].

The authors' code sets G_ii = 0 and omits the h² weight; both are needed for the discrete model to converge
to the continuum one (checked against the partial-wave series of a homogeneous disk in the tests).

Data (paper eq. 3, evaluated at a finite radius instead of the far-field limit): a plane wave
u_in = exp(i k d·x), d = (cos θ, sin θ) the direction it travels in, and the scattered field at receivers
x_r on the circle of radius RECEIVER_RADIUS = 100 with the exact kernel,

    d(θ, x_r) = u_s(x_r) = k²·Σ_j Φ(x_r, y_j)·h²·η_j·u_j.

Born series of order p replace u inside by Σ_{m<p} (k²Gη)^m u_in (order 1: u ≈ u_in); "exact" solves the
dense LS system (n ≤ EXACT_MAX_N). G is applied by FFT convolution (it is Toeplitz-by-block on the grid).
Grid point (row i, column j) of an η map sits at (x, y) = (axis[j], axis[i]).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Union

import numpy as np
from scipy.special import hankel1

from controller.modes.scatter.spec import RECEIVER_RADIUS

EXACT_MAX_N = 64  # the dense LS matrix is n² × n² complex: 268 MB at n = 64
ORDERS = (1, 2, 3, "exact")
Order = Union[int, str]


@dataclass(frozen=True)
class Grid:
    """The n × n grid on [−0.5, 0.5]², spacing h = 1/(n − 1)."""

    n: int

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, (int, np.integer)) or self.n < 2:
            raise ValueError(f"grid size n must be an integer >= 2, got {self.n!r}")

    @property
    def h(self) -> float:
        return 1.0 / (self.n - 1)

    @property
    def axis(self) -> np.ndarray:
        return np.linspace(-0.5, 0.5, self.n)

    @property
    def points(self) -> np.ndarray:
        """(n², 2) coordinates (x, y), row-major over the η map."""
        x, y = np.meshgrid(self.axis, self.axis, indexing="xy")
        return np.stack([x.ravel(), y.ravel()], axis=1)


def _check_k(k: float) -> float:
    if not np.isfinite(k) or k <= 0:
        raise ValueError(f"wavenumber k must be finite and > 0, got {k!r}")
    return float(k)


def self_term(k: float, h: float) -> complex:
    """∫ (i/4)H₀⁽¹⁾(k|y|) dy over the disk of area h² (radius a = h/√π), in closed form."""
    a = h / np.sqrt(np.pi)
    return 0.25j * (2 * np.pi / k**2) * (a * k * hankel1(1, k * a) + 2j / np.pi)


class GreenOperator:
    """G = Φ·h² on a grid at wavenumber k: FFT application, dense matrix for the exact solve."""

    def __init__(self, grid: Grid, k: float) -> None:
        self.grid, self.k = grid, _check_k(k)

    @cached_property
    def table(self) -> np.ndarray:
        """(n, n): G between two points |Δrow| = a, |Δcol| = b apart."""
        n, h = self.grid.n, self.grid.h
        a, b = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        r = h * np.hypot(a, b)
        r[0, 0] = 1.0  # placeholder, replaced by the self-term
        t = 0.25j * hankel1(0, self.k * r) * h**2
        t[0, 0] = self_term(self.k, h)
        return t

    @cached_property
    def spectrum(self) -> np.ndarray:
        """FFT of the (2n, 2n) periodic kernel K[i, j] = table[|Δi|, |Δj|], Δ taken modulo 2n: the circular
        convolution on the (2n)² grid equals the linear one on the n × n window (the kernel spans 2n − 1; the
        Δ = n entry never reaches the window)."""
        n = self.grid.n
        idx = np.minimum(np.abs(np.fft.fftfreq(2 * n, 1.0 / (2 * n))).astype(int), n - 1)
        return np.fft.fft2(self.table[idx[:, None], idx[None, :]])

    def apply(self, v: np.ndarray) -> np.ndarray:
        """G @ v for v of shape (n², S)."""
        n = self.grid.n
        padded = np.fft.fft2(v.reshape(n, n, -1), s=(2 * n, 2 * n), axes=(0, 1))
        return np.fft.ifft2(padded * self.spectrum[:, :, None], axes=(0, 1))[:n, :n].reshape(n * n, -1)

    def matrix(self) -> np.ndarray:
        """Dense (n², n²) G."""
        n = self.grid.n
        i, j = np.divmod(np.arange(n * n), n)
        return self.table[np.abs(i[:, None] - i[None, :]), np.abs(j[:, None] - j[None, :])]


def ring(angles_deg: np.ndarray, radius: float = RECEIVER_RADIUS) -> np.ndarray:
    """(R, 2) positions on the circle of the given radius at angles in degrees."""
    t = np.deg2rad(_check_angles(angles_deg))
    return radius * np.stack([np.cos(t), np.sin(t)], axis=1)


def _check_angles(angles: np.ndarray) -> np.ndarray:
    a = np.asarray(angles, dtype=float)
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError(f"angles must be a non-empty 1-D array of finite values, got shape {a.shape}")
    return a


def _check_outside(positions: np.ndarray) -> np.ndarray:
    p = np.asarray(positions, dtype=float)
    if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] == 0 or not np.all(np.isfinite(p)):
        raise ValueError(f"positions must be a finite (N, 2) array, got shape {p.shape}")
    if np.any(np.max(np.abs(p), axis=1) <= 0.5):
        raise ValueError("sources and receivers must lie outside the domain [-0.5, 0.5]^2")
    return p


def plane_wave(grid: Grid, k: float, angles_deg: np.ndarray) -> np.ndarray:
    """(n², S) incident fields exp(i k d·x), d = (cos θ, sin θ)."""
    t = np.deg2rad(_check_angles(angles_deg))
    d = np.stack([np.cos(t), np.sin(t)], axis=0)
    return np.exp(1j * _check_k(k) * (grid.points @ d))


def _hankel_to(grid: Grid, k: float, positions: np.ndarray) -> np.ndarray:
    """(N, n²) Φ(x_p, y_j) = (i/4)H₀⁽¹⁾(k|x_p − y_j|) for positions outside the domain."""
    p = _check_outside(positions)
    r = np.linalg.norm(p[:, None, :] - grid.points[None, :, :], axis=2)
    return 0.25j * hankel1(0, _check_k(k) * r)


def point_source(grid: Grid, k: float, positions: np.ndarray) -> np.ndarray:
    """(n², S) incident fields Φ(x, x_s) of unit point sources at the given positions."""
    return _hankel_to(grid, k, positions).T


def receiver_matrix(grid: Grid, k: float, positions: np.ndarray) -> np.ndarray:
    """(R, n²) quadrature of Φ(x_r, ·) over the grid: Φ(x_r, y_j)·h²."""
    return _hankel_to(grid, k, positions) * grid.h**2


def _check_eta(eta: np.ndarray) -> np.ndarray:
    e = np.asarray(eta)
    if e.ndim != 2 or e.shape[0] != e.shape[1] or e.shape[0] < 2:
        raise ValueError(f"eta must be a square n x n map with n >= 2, got shape {e.shape}")
    if not np.issubdtype(e.dtype, np.number) or not np.all(np.isfinite(e)):
        raise ValueError("eta must hold finite numbers")
    return e


def total_field(eta: np.ndarray, k: float, u_in: np.ndarray, order: Order) -> np.ndarray:
    """(n², S) field inside: Born series Σ_{m<order} (k²Gη)^m u_in, or the exact LS solution."""
    e = _check_eta(eta)
    grid = Grid(e.shape[0])
    if u_in.ndim != 2 or u_in.shape[0] != grid.n**2:
        raise ValueError(f"u_in must be (n^2, S) = ({grid.n**2}, S), got shape {u_in.shape}")
    g, eta_col = GreenOperator(grid, k), e.reshape(-1, 1)
    if order == "exact":
        if grid.n > EXACT_MAX_N:
            raise ValueError(f"the dense exact solve is limited to n <= {EXACT_MAX_N}, got n = {grid.n}")
        a = np.eye(grid.n**2) - g.k**2 * g.matrix() * eta_col.T
        return np.linalg.solve(a, u_in)
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    u, term = u_in.astype(complex), u_in.astype(complex)
    for _ in range(int(order) - 1):
        term = g.k**2 * g.apply(eta_col * term)
        u = u + term
    return u


def scattered(eta: np.ndarray, k: float, u_in: np.ndarray, receivers: np.ndarray, order: Order) -> np.ndarray:
    """(S, R) scattered field k²·Σ_j Φ(x_r, y_j)h²·η_j·u_j at the receiver positions."""
    u = total_field(eta, k, u_in, order)
    rec = receiver_matrix(Grid(np.shape(eta)[0]), k, receivers)
    return (k**2 * rec @ (np.asarray(eta).reshape(-1, 1) * u)).T


def data(
    eta: np.ndarray, k: float, source_angles: np.ndarray, receiver_angles: np.ndarray, order: Order
) -> np.ndarray:
    """(S, R) plane-wave data: sources are plane waves travelling along the source angles (degrees),
    receivers sit on the circle of radius 100 at the receiver angles (degrees)."""
    grid = Grid(_check_eta(eta).shape[0])
    return scattered(eta, k, plane_wave(grid, k, source_angles), ring(receiver_angles), order)
