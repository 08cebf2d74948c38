"""The MoS₂ sample (firmware_sim/ptycho/{kirkland,mos2}.py) and its cross-check against abTEM 1.0's committed
outputs (tests/data/ptycho_abtem.npz, written by `make abtem-reference`; settings in abtem_reference.py)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from controller.modes.ptycho.optics import Optics, pattern, probe
from firmware_sim.ptycho import kirkland, mos2

REFERENCE = Path(__file__).parents[1] / "data" / "ptycho_abtem.npz"
OPTICS = Optics()


def rel_l2(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as data:
        return dict(data)


def window_potential(positions_A: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    n = OPTICS.window
    return kirkland.projected_potential(positions_A[:, :2], numbers, (n, n), OPTICS.pixel_A)


def test_potential_matches_abtem(ref: dict[str, np.ndarray]) -> None:
    assert rel_l2(window_potential(ref["positions_A"], ref["numbers"]), ref["potential"]) < 1e-3  # 3.5e-5


def test_subpixel_potential_within_abtems_interpolation_error(ref: dict[str, np.ndarray]) -> None:
    # abTEM puts off-grid atoms on its grid by bilinear interpolation (16× finer here): measured 2.3e-2
    assert rel_l2(window_potential(ref["subpixel_positions_A"], ref["numbers"]), ref["potential_subpixel"]) < 0.05


@pytest.mark.parametrize("which", [0, 1])
def test_patterns_match_abtem(ref: dict[str, np.ndarray], which: int) -> None:
    """Our potential and forward model (optics.probe, optics.pattern) against abTEM's multislice on its own
    potential; then with abTEM's band limit (the disc |k| < 2.5 Å⁻¹ on exp(iσV) and on the exit wave) on ours."""
    optics = Optics(defocus_A=float(ref["defocus_A"][which]))
    wave, n = probe(optics), optics.window
    ours_phase = optics.sigma * window_potential(ref["positions_A"], ref["numbers"])
    k = np.fft.fftfreq(n, optics.pixel_A)
    disc = k[:, None] ** 2 + k[None, :] ** 2 < (0.5 / optics.pixel_A) ** 2
    transmission = np.fft.ifft2(np.fft.fft2(np.exp(1j * optics.sigma * ref["potential"])) * disc)
    for (i, j), theirs in zip(ref["probe_px"], ref["patterns"][which]):
        shift = (n // 2 - i, n // 2 - j)  # our probe sits at window pixel N/2: roll the periodic box under it
        assert rel_l2(pattern(wave, np.roll(ours_phase, shift, axis=(0, 1))), theirs) < 1e-3  # ≈ 2e-4
        exit_wave = np.fft.fft2(wave * np.roll(transmission, shift, axis=(0, 1)), norm="ortho") * disc
        assert rel_l2(np.fft.fftshift(np.abs(exit_wave) ** 2), theirs) < 1e-8  # ≈ 4e-10


def test_defocus_sign_matters(ref: dict[str, np.ndarray]) -> None:
    """The opposite defocus sign (overfocus) is far from abTEM's 20 Å underfocus: the test above can fail."""
    wave = probe(Optics(defocus_A=-float(ref["defocus_A"][1])))
    phase = OPTICS.sigma * ref["potential"]
    assert rel_l2(pattern(wave, phase), ref["patterns"][1][0]) > 0.05


def test_keys_reproducible_and_distinct() -> None:
    a, b = mos2.draw_phase(3), mos2.draw_phase(4)
    assert a.shape == (OPTICS.object_px,) * 2 and a.dtype == np.float64
    np.testing.assert_array_equal(a, mos2.draw_phase(3))
    assert rel_l2(a, b) > 0.1


def test_phase_range_plausible() -> None:
    phase = mos2.draw_phase(0, params=mos2.MoS2Params(vacancy_rate=0.0))
    assert 1.2 < phase.max() < 1.6  # the Mo column's peak σ·v_z at 60 kV, 0.2 Å pixels: 1.39 rad
    assert -0.01 < phase.min() < 0.02  # between atoms: 0.004 rad (the tapered band limit hardly rings)
    mo_only = mos2.draw_phase(0, params=mos2.MoS2Params(vacancy_rate=1.0))
    assert 1.1 < (phase - mo_only).max() < 1.4  # an S₂ column: 1.27 rad


def test_vacancies_lower_the_sulphur_signal() -> None:
    full = mos2.draw_phase(9, params=mos2.MoS2Params(vacancy_rate=0.0))
    half = mos2.draw_phase(9, params=mos2.MoS2Params(vacancy_rate=0.5))
    mo_only = mos2.draw_phase(9, params=mos2.MoS2Params(vacancy_rate=1.0))
    s_full, s_half = (full - mo_only).sum(), (half - mo_only).sum()
    assert 0.4 < s_half / s_full < 0.6


def test_padding_does_not_change_the_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """No wrap-around artefacts: a padded box twice as wide (16 Å) gives the same object."""
    params = mos2.MoS2Params(thermal_rms_A=0.05)
    a = mos2.draw_phase(5, params=params)
    monkeypatch.setattr(mos2, "PAD_A", 16.0)
    mos2._padded_box.cache_clear()
    try:
        assert rel_l2(a, mos2.draw_phase(5, params=params)) < 1e-3  # 1e-4
    finally:
        monkeypatch.undo()
        mos2._padded_box.cache_clear()


def test_draw_is_fast() -> None:
    mos2.draw_phase(0)
    best = min(_timed(key) for key in range(3))
    assert best < 0.2, f"draw_phase took {best:.3f} s"


def _timed(key: int) -> float:
    t = time.perf_counter()
    mos2.draw_phase(key)
    return time.perf_counter() - t


def test_splits_disjoint_and_keys() -> None:
    ranges = list(mos2.SPLITS.values())
    for i, r in enumerate(ranges):
        for s in ranges[i + 1:]:
            assert r.stop <= s.start or s.stop <= r.start
    assert mos2.keys("report", 3) == mos2.keys("report", 3) and len(set(mos2.keys("selection", 50))) == 50
    with pytest.raises(ValueError):
        mos2.keys("test", 1)
    with pytest.raises(ValueError):
        mos2.keys("report", len(mos2.SPLITS["report"]) + 1)


def test_lattice_reflections() -> None:
    np.testing.assert_allclose(mos2.lattice_reflections(), (2.74, 1.58, 1.37, 1.03), atol=0.01)


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        mos2.MoS2Params(vacancy_rate=1.5)
    with pytest.raises(ValueError):
        kirkland.projected_potential(np.zeros((2, 2)), [42], (8, 8), 0.2)
    with pytest.raises(ValueError):
        kirkland.scattering_factor(6, np.zeros(1))
