"""The full-grid reference (learner.ptycho.reference): close to the truth, cached per (sample key, optics)."""
import numpy as np
import pytest

from controller.modes.ptycho.optics import Optics
from learner.ptycho import metrics, reference
from learner.ptycho.lattice import lattice

SMALL = Optics(grid=20)  # every position of a 20 × 20 grid: the full grid's overlap on a smaller field


def test_full_grid_reconstruction_matches_the_truth():
    truth = lattice(SMALL)
    out = reference.reconstruct(truth, 0, SMALL, iterations=30)
    assert out.shape == truth.shape and out.dtype == np.float32
    assert metrics.ssim(out, truth, SMALL) > 0.95


def test_cached_per_key_and_optics(tmp_path, monkeypatch):
    truth = lattice(SMALL)
    calls = []
    monkeypatch.setattr(reference, "reconstruct", lambda phase, key, optics: calls.append(key) or phase * 0 + key)
    a = reference.reference(truth, 1, SMALL, tmp_path)
    np.testing.assert_array_equal(reference.reference(truth, 1, SMALL, tmp_path), a)  # from the cache
    reference.reference(truth, 2, SMALL, tmp_path)  # another sample
    reference.reference(truth, 1, Optics(grid=20, defocus_A=20.0), tmp_path)  # other optics
    assert calls == [1, 2, 1]
    assert len(list(tmp_path.glob("*.npy"))) == 3


def test_rejects_a_wrong_object_size():
    with pytest.raises(ValueError, match="83"):
        reference.reconstruct(np.zeros((50, 50)), 0, SMALL)
