"""Tabular ε-greedy Q-learning on the BAL environments (issue #23 §3) and the shared discretisations."""
from dataclasses import replace

import numpy as np
import pytest

from controller.modes.bal.problem import load_problem
from learner.algos import qlearning
from learner.algos.qlearning import QConfig
from learner.bal.discrete import Cells, polar_actions, rollout


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
