"""Reconstruction metrics (learner.ptycho.metrics): SSIM over the scanned field, resolution from the spectrum."""
import numpy as np
import pytest

from controller.modes.ptycho.optics import Optics
from learner.ptycho import metrics
from ptycho_util import lattice

OPTICS = Optics()
NOISE = 0.05  # rad, white


def _noisy(width_A: float, angle: float = 0.3, seed: int = 0) -> np.ndarray:
    shape = (OPTICS.object_px, OPTICS.object_px)
    return lattice(OPTICS, width_A=width_A, angle=angle) + NOISE * np.random.default_rng(seed).standard_normal(shape)


def test_ssim_of_identical_is_one_and_the_mean_is_ignored():
    ref = lattice(OPTICS)
    assert metrics.ssim(ref, ref) == pytest.approx(1.0, abs=1e-12)
    assert metrics.ssim(ref + 2.5, ref) == pytest.approx(1.0, abs=1e-12)
    assert metrics.ssim(ref.ravel() - 1.0, ref) == pytest.approx(1.0, abs=1e-12)  # flat maps too


def test_ssim_falls_with_noise_and_sees_only_the_scanned_field():
    ref = lattice(OPTICS)
    assert metrics.ssim(_noisy(0.35), ref) < metrics.ssim(ref + 0.2 * (_noisy(0.35) - ref), ref) < 1.0
    outside = ref.copy()
    outside[:32] = 5.0  # rows the probe centre never visits
    outside[:, 132:] = -5.0
    assert metrics.ssim(outside, ref) == pytest.approx(1.0, abs=1e-3)


def test_ssim_rejects_wrong_shapes_and_a_flat_reference():
    with pytest.raises(ValueError, match="163"):
        metrics.ssim(np.zeros((100, 100)), np.zeros((100, 100)))
    with pytest.raises(ValueError, match="constant"):
        metrics.ssim(lattice(OPTICS), np.zeros((163, 163)))


@pytest.mark.parametrize("width_A, finest", [(0.25, 1.03), (0.5, 1.37), (0.7, 1.58), (0.9, 2.74)])
@pytest.mark.parametrize("angle", [0.3, 1.2])
def test_lattice_resolves_what_its_peak_width_allows(width_A, finest, angle):
    """A Gaussian peak of width σ damps reflection d by exp(−2π²σ²/d²): wider peaks, coarser resolution."""
    assert metrics.resolution_A(_noisy(width_A, angle), OPTICS) == finest


def test_noise_resolves_nothing():
    for seed in range(3):
        noise = np.random.default_rng(seed).standard_normal((OPTICS.object_px, OPTICS.object_px))
        assert metrics.resolution_A(noise, OPTICS) is None
        assert not any(metrics.resolved(noise, OPTICS).values())


def test_resolution_rejects_reflections_beyond_nyquist():
    with pytest.raises(ValueError, match="Nyquist"):
        metrics.resolution_A(lattice(OPTICS), OPTICS, reflections=(0.3,))
