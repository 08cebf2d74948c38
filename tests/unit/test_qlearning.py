"""Tabular ε-greedy Q-learning on the BAL environments (issue #23 §3) and the shared discretisations."""
from dataclasses import replace

import numpy as np
import pytest

from controller.modes.bal.problem import load_problem
from learner.algos import qlearning
from learner.algos.qlearning import QConfig
from learner.bal.discrete import Cells, polar_actions
from learner.bal.rollout import rollout


def test_polar_actions() -> None:
    a = polar_actions(2, 2.0, speeds=2, directions=4)
    assert a.shape == (1 + 2 * 4, 2)
    np.testing.assert_allclose(np.sort(np.linalg.norm(a, axis=1)), [0] + [1.0] * 4 + [2.0] * 4, atol=1e-12)
    np.testing.assert_allclose(polar_actions(1, 3.0, speeds=3, directions=1).ravel(), [0, 1, 2, 3, -1, -2, -3])
    with pytest.raises(ValueError, match="control"):
        polar_actions(3, 1.0, 1, 1)


def test_cells_index_and_clamp() -> None:
    cells = Cells(np.array([0.0, 0.0]), np.array([4.0, 2.0]), 4)
    x = np.array([[0.1, 0.1], [3.9, 1.9], [1.5, 1.2], [-5.0, 9.0]])
    np.testing.assert_array_equal(cells.index(x), [0, 15, 1 * 4 + 2, 0 * 4 + 3])
    np.testing.assert_array_equal(cells.index(cells.centres()), np.arange(16))


def test_shared_entry_moves_by_the_mean_td_error() -> None:
    qn = np.zeros((2, 3))
    qlearning._average_update(qn, np.array([1, 1, 4]), np.array([-1.0, -3.0, -10.0]), alpha=0.5)
    np.testing.assert_allclose(qn, [[0, -1.0, 0], [0, -5.0, 0]])


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        QConfig(alpha=0.0)
    with pytest.raises(ValueError, match="cells"):
        QConfig(cells=0)
    with pytest.raises(ValueError, match="init"):
        QConfig(init="random")


@pytest.fixture(scope="module")
def maze():
    return load_problem("maze")


def test_q_learning_learns_the_maze_and_improves_with_budget(maze) -> None:
    scores = {}
    for episodes in (1000, 10_000):
        result = qlearning.train(maze, QConfig(cells=10, episodes=episodes, batch=100, seed=0))
        assert result.episode_cost.shape == (episodes,)
        scores[episodes] = rollout(maze, result.policy, episodes=200, seed=1001).total
    zero = rollout(maze, lambda n, x: np.zeros((len(x), 2)), episodes=200, seed=1001).total
    assert scores[10_000].mean() < scores[1000].mean() < zero.mean() / 2, {k: v.mean() for k, v in scores.items()}


def test_tune_keeps_the_least_selection_cost(maze) -> None:
    base = QConfig(batch=100, seed=0)
    tuned = qlearning.tune(maze, seeds=[0], cells_grid=[5, 10], budgets=[500, 5000], base=base, eval_episodes=100)
    assert len(tuned.rows) == 4
    best = min(tuned.rows, key=lambda r: r["cost"])
    assert (tuned.best.cells, tuned.best.episodes) == (best["cells"], best["episodes"])
    assert replace(tuned.best, cells=base.cells, episodes=base.episodes) == base
