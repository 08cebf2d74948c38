"""The closed-loop table (learner/algos/bal_closed_loop.py): its adjoint gradient, and that it finds the way round."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from controller.modes.bal.problem import load_problem
from learner.algos.bal import BalConfig
from learner.algos.bal_closed_loop import (SELECT_ROLLOUTS, _Table, closed_loop_table, line_law, nominal_law,
                                          table_gradient)
from learner.bal.rollout import rollout


@pytest.mark.parametrize("name", ["maze", "forge", "lq"])
def test_the_closed_loop_adjoint_is_the_gradient_of_the_mean_cost(name: str) -> None:
    p = dataclasses.replace(load_problem(name), steps=6)
    rng = np.random.default_rng(3)
    g, m = 4, p.model.control_dim
    centre = np.asarray(p.x0, float)
    low, high = np.repeat((centre - 1.0)[None], p.steps, 0), np.repeat((centre + 1.5)[None], p.steps, 0)
    table = _Table(low, high, 0.2 * p.u_max * rng.uniform(-1, 1, (p.steps, g, g, m)) / np.sqrt(m))
    x0 = centre + 0.3 * rng.standard_normal((5, 2))
    noise = rng.standard_normal((5, p.steps, 2))
    grad, _ = table_gradient(p, table, p.theta_true, x0, noise)
    h = 1e-6
    for index in [tuple(rng.integers(0, s) for s in table.u.shape) for _ in range(12)]:
        up, down = table.u.copy(), table.u.copy()
        up[index] += h
        down[index] -= h
        costs = []
        for u in (up, down):
            costs.append(table_gradient(p, _Table(low, high, u), p.theta_true, x0, noise)[1].mean())
        assert grad[index] == pytest.approx((costs[0] - costs[1]) / (2 * h), rel=1e-4, abs=1e-7)


def test_the_closed_loop_table_goes_round_the_maze_obstacle() -> None:
    p = load_problem("maze")
    cfg = BalConfig.from_mapping({**p.source["bal"], "table_iterations": 30, "table_batch": 64, "grid": 5,
                                  "starts": 16, "first_iterations": 100, "nominals": 4})
    table, rollouts = closed_loop_table(p, p.theta_true, cfg, np.random.default_rng(0))
    assert rollouts > 0 and table.u.shape == (p.steps, 5, 5, 2)
    mine = rollout(p, lambda n, x: table.control(n, x), 200, seed=10_000)
    straight = rollout(p, line_law(p), 200, seed=10_000)
    assert mine.success.mean() >= 0.95
    assert mine.path_cost.mean() < 0.5 * straight.path_cost.mean()  # round the band, not through it


def test_a_table_over_a_theta_grid_exports_for_the_edge(tmp_path) -> None:
    from learner.bal.export import export_table

    p = load_problem("forge")
    cfg = BalConfig.from_mapping({**p.source["bal"], "table_iterations": 3, "table_batch": 16, "grid": 4,
                                  "starts": 2, "first_iterations": 3})
    axes = (np.array([0.4, 0.6]), np.array([2.0, 3.0]))
    table, _ = closed_loop_table(p, p.theta_true, cfg, np.random.default_rng(1), axes)
    assert table.u.shape == (2, 2, p.steps, 4, 4, 2) and np.isfinite(table.u).all()
    export_table(table, tmp_path / "artifact", version="1")  # checks the graph against the table to 1e-5
    assert (tmp_path / "artifact" / "model.onnx").exists()


def test_the_nominal_paths_model_rollouts_are_counted() -> None:
    """The open-loop solves (2 starts × 2 candidates × 4 rollouts × 3 iterations, Adam: no curvature estimate) and
    the scoring of the tracking laws (each start × (its candidates + every kept path)) count as model rollouts."""
    p = load_problem("maze")
    cfg = BalConfig(step="adam", starts=2, nominals=2, minibatch=4, first_iterations=3)
    law, rollouts = nominal_law(p, p.theta_true, cfg, np.random.default_rng(0))
    assert rollouts == 2 * 2 * 4 * 3 + SELECT_ROLLOUTS * 2 * (2 + 2)
    assert law(0, np.asarray(p.x0, float)[None]).shape == (1, 2)
