"""The scatterer families: norm, sign, determinism, disjoint splits, the private family's guard, user maps."""
from __future__ import annotations

import importlib.util
import numpy as np
import pytest
from scipy import ndimage

from controller.modes.scatter.physics import Grid
from controller.modes.scatter.spec import NORM
from firmware_sim.scatter import scatterers as S

GEOMETRIC = ("ellipses", "circles", "rectangles", "annuli")


def _families(split: str) -> tuple[str, ...]:
    names = S.FAMILIES + S.HELD_OUT + ((S.PRIVATE,) if split == "report" else ())
    if "digits" in names and not _have_sklearn():
        names = tuple(f for f in names if f != "digits")
    return names


def _have_sklearn() -> bool:
    return importlib.util.find_spec("sklearn") is not None


@pytest.mark.parametrize("split", S.SPLITS)
def test_every_family_is_non_negative_at_the_training_norm_and_deterministic(split: str) -> None:
    for family in _families(split):
        for n in (16, 33):
            eta = S.scatterer(family, split, 3, n)
            assert eta.shape == (n, n) and eta.dtype == np.float64, family
            assert eta.min() >= 0.0, family
            assert np.linalg.norm(eta) == pytest.approx(NORM, rel=1e-12), family
            assert np.array_equal(eta, S.scatterer(family, split, 3, n)), family
            assert not np.allclose(eta, S.scatterer(family, split, 4, n)), family


def test_splits_draw_different_scatterers() -> None:
    for family in _families("train"):
        maps = [S.scatterer(family, split, 0, 24) for split in ("train", "selection")]
        assert not np.allclose(*maps), family
        assert not np.allclose(maps[0], S.scatterer(family, "report", 0, 24)), family


def test_geometric_shapes_stay_inside_the_domain() -> None:
    for family in GEOMETRIC:
        eta = S.batch(family, "train", range(40), 32)
        border = np.concatenate([eta[:, 0], eta[:, -1], eta[:, :, 0], eta[:, :, -1]], axis=1)
        assert np.all(border == 0.0), family


def test_circles_are_two_or_three_disks_of_the_stated_radius() -> None:
    n = 64
    h = Grid(n).h
    for i in range(20):
        eta = S.scatterer("circles", "train", i, n)
        labels, count = ndimage.label(eta > 0.2 * eta.max())  # the weakest disk is ≥ 0.5 × the strongest
        sizes = np.bincount(labels.ravel())[1:]
        assert count in (2, 3)
        radii = np.sqrt(sizes * h * h / np.pi)
        assert np.all((radii > 0.08 - 1.5 * h) & (radii < 0.15 + 1.5 * h)), radii


def test_the_private_family_exists_only_on_the_report_split() -> None:
    for split in ("train", "selection"):
        with pytest.raises(ValueError, match="private"):
            S.scatterer(S.PRIVATE, split, 0, 16)
    assert S.scatterer(S.PRIVATE, "report", 0, 16).shape == (16, 16)


def test_held_out_and_private_families_are_not_training_families() -> None:
    assert not set(S.HELD_OUT + (S.PRIVATE,)) & set(S.FAMILIES)
    assert len(set(S.ALL_FAMILIES)) == len(S.ALL_FAMILIES)


@pytest.mark.parametrize("bad", [dict(family="squares"), dict(split="test"), dict(index=-1), dict(index=1.5),
                                 dict(n=1)])
def test_bad_arguments_are_refused(bad: dict) -> None:
    args = dict(family="circles", split="train", index=0, n=16) | bad
    with pytest.raises(ValueError):
        S.scatterer(**args)


def test_batch_stacks_scatterers() -> None:
    b = S.batch("ellipses", "selection", [2, 0], 16)
    assert b.shape == (2, 16, 16)
    assert np.array_equal(b[1], S.scatterer("ellipses", "selection", 0, 16))
    with pytest.raises(ValueError):
        S.batch("ellipses", "selection", [], 16)


def test_digit_splits_use_disjoint_images() -> None:
    pytest.importorskip("sklearn")
    ids = {split: set(S.digit_indices(split)) for split in S.SPLITS}
    assert not ids["train"] & ids["selection"] and not ids["train"] & ids["report"]
    assert not ids["selection"] & ids["report"]
    assert sum(map(len, ids.values())) == 1797


def test_load_custom_resamples_and_scales(tmp_path) -> None:
    m, n = 101, 32
    axis = np.linspace(-0.5, 0.5, m)
    x, y = np.meshgrid(axis, axis, indexing="xy")
    disk = ((x - 0.2) ** 2 + (y + 0.1) ** 2 <= 0.1**2).astype(np.float32) * 7.0
    np.save(tmp_path / "disk.npy", disk)
    eta = S.load_custom(tmp_path / "disk.npy", n)
    assert eta.shape == (n, n) and eta.min() >= 0.0
    assert np.linalg.norm(eta) == pytest.approx(NORM)
    grid = Grid(n)
    weights = eta / eta.sum()
    assert (weights.sum(axis=0) @ grid.axis, weights.sum(axis=1) @ grid.axis) == pytest.approx((0.2, -0.1), abs=0.01)
    same = S.load_custom(tmp_path / "disk.npy", m)  # no resampling at the file's own size
    assert np.allclose(same, disk * (NORM / np.linalg.norm(disk)))


@pytest.mark.parametrize("content, message", [
    (np.ones((4, 5)), "square"),
    (np.ones((3, 3, 3)), "square"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN"),
    (-np.ones((4, 4)), "non-negative"),
    (np.zeros((4, 4)), "zero"),
    (np.ones((4, 4), dtype=complex), "real"),
    (np.array([[{"a": 1}, 1], [1, 1]], dtype=object), "readable"),
])
def test_load_custom_refuses_bad_files(tmp_path, content: np.ndarray, message: str) -> None:
    np.save(tmp_path / "bad.npy", content, allow_pickle=True)
    with pytest.raises(ValueError, match=message):
        S.load_custom(tmp_path / "bad.npy", 16)


def test_load_custom_refuses_other_files(tmp_path) -> None:
    (tmp_path / "eta.txt").write_text("1 2\n3 4\n")
    with pytest.raises(ValueError, match=".npy"):
        S.load_custom(tmp_path / "eta.txt", 16)
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(ValueError, match="readable"):
        S.load_custom(tmp_path / "junk.npy", 16)


def test_load_folder_reads_every_array_by_name(tmp_path) -> None:
    with pytest.raises(ValueError, match="no .npy"):
        S.load_folder(tmp_path, 16)
    for name in ("b", "a"):
        np.save(tmp_path / f"{name}.npy", np.eye(8))
    names, etas = S.load_folder(tmp_path, 16)
    assert names == ["a", "b"] and etas.shape == (2, 16, 16)
    with pytest.raises(ValueError, match="not a folder"):
        S.load_folder(tmp_path / "a.npy", 16)
