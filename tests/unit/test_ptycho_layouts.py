"""Scan layouts (learner.ptycho.layouts): counts, distinct, in range, unvisited, keyed randomness, the Halton
continuation, the sub-grid's even coverage, and the greedy layout's choice of the bright region."""
import numpy as np
import pytest
import torch

from controller.modes.ptycho.optics import Optics
from learner.ptycho import layouts
from controller.modes.ptycho.path import halton, snap_unvisited
from learner.ptycho.env import PtychoEnvConfig, PtychoObs

G = Optics().grid


def obs(field: np.ndarray, first: np.ndarray, t: int = 1, want: int | None = None) -> PtychoObs:
    """An observation of B slots that all acquired ``first`` (K, 2) grid points, with reconstruction ``field``,
    asking for ``want`` (default K) positions next."""
    b = field.shape[0]
    unit = torch.as_tensor(np.broadcast_to(first / (G - 1), (b, *first.shape)).copy(), dtype=torch.float32)
    return PtychoObs(torch.as_tensor(field[:, None], dtype=torch.float32), unit, unit, t, want or len(first))


def to_grid(unit: np.ndarray, grid: int) -> np.ndarray:
    return np.rint(np.asarray(unit) * (grid - 1)).astype(np.int64)


def halton_first(m: int) -> np.ndarray:
    return snap_unvisited(halton(m), np.zeros((G, G), bool))


def check_valid(unit: np.ndarray, first: np.ndarray, b: int, m: int) -> np.ndarray:
    """(B, M, 2) grid points: in range, exactly on the grid, distinct and unvisited in each slot."""
    assert unit.shape == (b, m, 2) and unit.min() >= 0 and unit.max() <= 1
    pos = to_grid(unit, G)
    np.testing.assert_allclose(pos / (G - 1), unit, atol=1e-12)
    seen = {tuple(p) for p in first}
    for slot in pos:
        points = {tuple(p) for p in slot}
        assert len(points) == m and not points & seen
    return pos


def test_random_is_keyed_per_sample_distinct_and_unvisited():
    first = halton_first(50)
    a = layouts.RandomLayout(np.array([7, 8]), G)(obs(np.zeros((2, G, G)), first))
    check_valid(a, first, 2, 50)
    alone = layouts.RandomLayout(np.array([8]), G)(obs(np.zeros((1, G, G)), first))
    np.testing.assert_array_equal(alone[0], a[1])  # the same key: the same positions, whatever the batch
    assert not np.array_equal(a[0], a[1])
    with pytest.raises(ValueError, match="keys"):
        layouts.RandomLayout(np.array([7]), G)(obs(np.zeros((2, G, G)), first))


def test_halton_continues_the_first_sub_sequence():
    first = halton_first(100)  # two sub-sequences of 50 so far
    out = layouts.HaltonLayout(G)(obs(np.zeros((1, G, G)), first, t=2, want=50))
    np.testing.assert_array_equal(out[0], halton(150)[100:])


@pytest.mark.parametrize("positions,subsequences", [(250, 5), (250, 2), (250, 4), (250, 3)])
def test_subgrid_covers_the_field_evenly_in_every_sub_sequence(positions, subsequences):
    cfg = PtychoEnvConfig(positions, subsequences)
    first = halton_first(cfg.sizes[0])
    layout = layouts.SubgridLayout(cfg, G)
    parts = [to_grid(layout(obs(np.zeros((1, G, G)), first, t, cfg.sizes[t]))[0], G) for t in range(1, subsequences)]
    every = np.concatenate([first, *parts])
    assert len({tuple(p) for p in every}) == positions  # P distinct points with the Halton ones
    for part, m in zip(parts, cfg.sizes[1:]):
        assert len(part) == m
        quadrants = np.bincount((part[:, 0] >= G / 2) * 2 + (part[:, 1] >= G / 2), minlength=4)
        assert quadrants.min() >= 0.6 * m / 4 and quadrants.max() <= 1.4 * m / 4, quadrants
    # the whole scan is nearly uniform: no sub-grid point is farther from its nearest neighbour than 1.5 steps
    # (Halton's first point, the corner (0, 0), may be)
    d = np.sqrt(((every[:, None] - every[None]) ** 2).sum(-1)) + np.eye(len(every)) * G
    assert d.min(1)[len(first):].max() <= 1.5 * G / np.ceil(np.sqrt(positions))


def test_greedy_probes_the_bright_region_spread_out():
    field = np.zeros((1, G, G))
    field[0, 60:90, 10:40] = 1.0  # the bright region: 30 × 30 px
    first = halton_first(50)
    layout = layouts.GreedyLayout(Optics(), 250)
    pos = check_valid(layout(obs(field, first)), first, 1, 50)[0]
    inside = (pos[:, 0] >= 58) & (pos[:, 0] < 92) & (pos[:, 1] >= 8) & (pos[:, 1] < 42)
    assert inside[:10].all()  # the best-scored positions lie in the bright region
    d = np.sqrt(((pos[:10, None] - pos[None, :10]) ** 2).sum(-1)) + np.eye(10) * G
    assert d.min() >= layout.min_distance  # … spread by the minimum distance
    explore = layouts.GreedyLayout(Optics(), 250, explore=5.0)
    far = check_valid(explore(obs(field, first)), first, 1, 50)[0]
    near_first = lambda p: np.sqrt(((p[:, None] - first[None]) ** 2).sum(-1)).min(1).mean()  # noqa: E731
    assert near_first(far) > near_first(pos)  # the bonus pulls positions away from the visited ones


def test_make_rejects_an_unknown_layout():
    with pytest.raises(ValueError, match="layout must be one of"):
        layouts.make("spiral", Optics(), PtychoEnvConfig(), np.array([0]))
