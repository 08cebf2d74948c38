"""Voronoi rewards: cells partition the field, bright cells earn more, a hand-computed case."""
import numpy as np
import pytest

from learner.ptycho.voronoi import cells, rewards


def test_cells_partition_the_field_and_each_seed_owns_its_pixel():
    rng = np.random.default_rng(0)
    pos = np.unique(rng.integers(0, 100, (60, 2)), axis=0)
    label = cells(pos, 100)
    assert label.shape == (100, 100) and set(np.unique(label)) == set(range(len(pos)))  # every pixel one cell
    assert np.array_equal(label[pos[:, 0], pos[:, 1]], np.arange(len(pos)))
    # nearest seed: each pixel's distance to its seed is the minimum over all seeds
    rows, cols = np.mgrid[:100, :100]
    d2 = (rows[..., None] - pos[:, 0]) ** 2 + (cols[..., None] - pos[:, 1]) ** 2
    assert np.array_equal(np.take_along_axis(d2, label[..., None], 2)[..., 0], d2.min(2))


def test_hand_computed_two_seed_case():
    # a 4 × 4 field, seeds at (0, 0) and (0, 3): columns 0-1 go to the first, 2-3 to the second
    phase = np.zeros((4, 4))
    phase[:, 0] = 1.0
    r = rewards(phase, np.array([[0, 0], [0, 3]]))
    # field mean 0.25; cell 0: 4 px at 1 and 4 at 0 → 4 − 8·0.25 = 2; cell 1: −8·0.25 = −2; divided by P = 2
    assert r == pytest.approx([1.0, -1.0])


def test_bright_cell_gets_the_larger_reward_and_the_constant_does_not_matter():
    phase = np.zeros((50, 50))
    phase[5:15, 5:15] = 0.8  # a bright region around the first seed
    pos = np.array([[10, 10], [40, 40], [10, 40]])
    r = rewards(phase, pos)
    assert r[0] > r[1] and r[0] > r[2]
    assert r.sum() == pytest.approx(0.0, abs=1e-12)  # mean-aligned: a scan's rewards sum to zero
    assert rewards(phase + 3.0, pos) == pytest.approx(r)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="field"):
        cells(np.array([[0, 100]]), 100)
    with pytest.raises(ValueError, match="shape"):
        cells(np.zeros((0, 2), int), 100)
    with pytest.raises(ValueError, match="square"):
        rewards(np.zeros((3, 4)), np.array([[0, 0]]))
