"""Scattering forward model: self-term, FFT Green's operator, disk partial-wave series, reciprocity, Born orders."""
import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import h1vp, hankel1, jv, jvp

from controller.modes.scatter import physics as ph

SOURCES = np.arange(0.0, 360.0, 45.0)
RECEIVERS = np.arange(0.0, 360.0, 10.0)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def disk_eta(n: int, radius: float, contrast: float, supersample: int = 8) -> np.ndarray:
    """Homogeneous disk at the origin, each grid value = contrast × the covered fraction of its h × h cell."""
    grid = ph.Grid(n)
    off = grid.h * ((np.arange(supersample) + 0.5) / supersample - 0.5)
    x = grid.axis[None, :, None, None] + off[None, None, None, :]
    y = grid.axis[:, None, None, None] + off[None, None, :, None]
    return contrast * (np.hypot(x, y) < radius).mean(axis=(2, 3))


def disk_series(k, radius, contrast, src_deg, rec_deg, r=ph.RECEIVER_RADIUS, m_max=40):
    """Partial-wave series of the field scattered by a homogeneous disk (interior wavenumber k√(1 + η₀)),
    plane wave exp(i k d·x) = Σ i^m J_m(kr) e^{im(φ − θ)}; continuity of u and ∂u/∂r at the rim."""
    k1 = k * np.sqrt(1 + contrast)
    phi = np.deg2rad(rec_deg)[None, :] - np.deg2rad(src_deg)[:, None]
    out = np.zeros(phi.shape, complex)
    for m in range(-m_max, m_max + 1):
        num = k1 * jvp(m, k1 * radius) * jv(m, k * radius) - k * jvp(m, k * radius) * jv(m, k1 * radius)
        den = k * h1vp(m, k * radius) * jv(m, k1 * radius) - k1 * jvp(m, k1 * radius) * hankel1(m, k * radius)
        out += 1j**m * num / den * hankel1(m, k * r) * np.exp(1j * m * phi)
    return out


def ellipse_eta(n: int, norm: float = 0.3) -> np.ndarray:
    x, y = ph.Grid(n).points.T
    e = ((((x - 0.1) / 0.25) ** 2 + ((y + 0.05) / 0.12) ** 2) < 1).astype(float).reshape(n, n)
    return e * norm / np.linalg.norm(e)


@pytest.mark.parametrize("k,h", [(8.0, 1 / 31), (32.0, 1 / 31), (24.0, 1 / 63)])
def test_self_term_matches_numerical_disk_integral(k, h):
    a = h / np.sqrt(np.pi)
    f = lambda r, part: part(0.25j * hankel1(0, k * r)) * 2 * np.pi * r  # noqa: E731
    num = complex(*(quad(f, 0, a, args=(part,), epsabs=0, epsrel=1e-13, limit=200)[0] for part in (np.real, np.imag)))
    assert abs(ph.self_term(k, h) - num) < 1e-10 * abs(num)


def test_fft_application_equals_dense_matrix():
    g = ph.GreenOperator(ph.Grid(12), 7.0)
    v = np.random.default_rng(0).normal(size=(144, 3)) + 1j * np.random.default_rng(1).normal(size=(144, 3))
    dense = g.matrix()
    assert np.allclose(dense, dense.T)  # reciprocity of the discrete kernel
    assert np.abs(g.apply(v) - dense @ v).max() < 1e-12 * np.abs(dense @ v).max()


@pytest.mark.parametrize("k,bound32,bound48", [(8.0, 4e-3, 2e-3), (16.0, 1e-2, 5e-3)])
def test_exact_solve_converges_to_disk_series(k, bound32, bound48):
    # measured: k = 8: 2.7e-3 (n = 32), 1.4e-3 (n = 48); k = 16: 8.0e-3, 3.4e-3
    src = np.array([0.0, 100.0])
    ref = disk_series(k, 0.25, 0.2, src, RECEIVERS)
    err = {n: rel(ph.data(disk_eta(n, 0.25, 0.2), k, src, RECEIVERS, "exact"), ref) for n in (32, 48)}
    assert err[32] < bound32 and err[48] < bound48 and err[48] < 0.6 * err[32]


def test_point_source_data_are_reciprocal():
    n, k = 24, 12.0
    eta = 0.3 * np.random.default_rng(3).random((n, n))
    pos = ph.ring(np.array([0.0, 37.0, 90.0, 211.0, 300.0]))
    grid = ph.Grid(n)
    for order in ("exact", 2):
        d = ph.scattered(eta, k, ph.point_source(grid, k, pos), pos, order)
        assert np.abs(d - d.T).max() < 1e-12 * np.abs(d).max(), order


def test_born_orders_against_exact_at_norm_0_3():
    # measured (n = 32, ellipse, ‖η‖₂ = 0.3): ‖2nd term‖/‖1st‖ = 0.025, 0.048, 0.069, 0.089 at k = 8 … 32;
    # errors vs exact at k = 32: order 1 8.9e-2, order 2 6.8e-3, order 3 4.9e-4
    eta, ratios = ellipse_eta(32), []
    for k in (8.0, 16.0, 24.0, 32.0):
        d = {o: ph.data(eta, k, SOURCES, RECEIVERS, o) for o in ph.ORDERS}
        ratios.append(rel(d[2], d[1]))  # ‖2nd-order term‖ / ‖1st‖
        err = [rel(d[o], d["exact"]) for o in (1, 2, 3)]
        assert err[0] > 3 * err[1] > 9 * err[2], (k, err)
    assert np.all(np.diff(ratios) > 0) and 0.01 < ratios[0] and 0.05 < ratios[-1] < 0.15, ratios
    assert err[1] < 0.02  # 2nd-order error at k = 32


def test_first_order_is_linear_and_zero_contrast_scatters_nothing():
    eta = ellipse_eta(16)
    d1 = ph.data(eta, 10.0, SOURCES, RECEIVERS, 1)
    assert np.allclose(ph.data(2 * eta, 10.0, SOURCES, RECEIVERS, 1), 2 * d1)
    assert d1.shape == (SOURCES.size, RECEIVERS.size)
    assert np.all(ph.data(np.zeros((16, 16)), 10.0, SOURCES, RECEIVERS, "exact") == 0)


@pytest.mark.parametrize(
    "call",
    [
        lambda: ph.Grid(1),
        lambda: ph.Grid(3.5),
        lambda: ph.data(np.zeros((4, 5)), 8.0, SOURCES, RECEIVERS, 2),
        lambda: ph.data(np.full((4, 4), np.nan), 8.0, SOURCES, RECEIVERS, 2),
        lambda: ph.data(np.zeros((4, 4)), 0.0, SOURCES, RECEIVERS, 2),
        lambda: ph.data(np.zeros((4, 4)), np.inf, SOURCES, RECEIVERS, 2),
        lambda: ph.data(np.zeros((4, 4)), 8.0, np.array([]), RECEIVERS, 2),
        lambda: ph.data(np.zeros((4, 4)), 8.0, SOURCES, np.array([[1.0]]), 2),
        lambda: ph.data(np.zeros((4, 4)), 8.0, SOURCES, RECEIVERS, 4),
        lambda: ph.data(np.zeros((4, 4)), 8.0, SOURCES, RECEIVERS, "born"),
        lambda: ph.data(np.zeros((65, 65)), 8.0, SOURCES, RECEIVERS, "exact"),
        lambda: ph.point_source(ph.Grid(4), 8.0, np.array([[0.1, 0.2]])),
        lambda: ph.total_field(np.zeros((4, 4)), 8.0, np.ones((15, 1)), 2),
    ],
)
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()
