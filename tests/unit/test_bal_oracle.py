"""The true-parameter DP oracle (semi-Lagrangian HJB on a grid) and its cross-checks (issue #23 §3)."""
from dataclasses import replace

import numpy as np
import pytest

from controller.modes.bal.problem import load_problem
from learner.bal import oracle, riccati
from learner.bal.discrete import rollout, straight_line
from learner.stats import mean_ci95

TINY = oracle.OracleConfig(grid=21, speeds=4, directions=16)


@pytest.fixture(scope="module")
def maze():
    return load_problem("maze")


@pytest.fixture(scope="module")
def maze_oracle(maze) -> oracle.OracleResult:
    return oracle.solve(maze, TINY)


def _random_policy(problem, seed: int):
    rng = np.random.default_rng(seed)

    def policy(n: int, x: np.ndarray) -> np.ndarray:
        return problem.model.project(rng.uniform(-problem.u_max, problem.u_max, (len(x), problem.model.control_dim)))

    return policy


def test_oracle_beats_straight_line_and_random_on_the_maze(maze, maze_oracle: oracle.OracleResult) -> None:
    costs = {name: rollout(maze, pol, episodes=300, seed=21).cost for name, pol in
             [("lookahead", maze_oracle.lookahead), ("table", maze_oracle.table.control_fn()),
              ("straight", straight_line(maze)), ("random", _random_policy(maze, 1))]}
    for better in ("lookahead", "table"):
        for worse in ("straight", "random"):
            mean, ci = mean_ci95(costs[worse] - costs[better])  # paired: the same starts and noise
            assert mean - ci > 0, (better, worse, mean, ci)


def test_oracle_value_matches_a_monte_carlo_run_of_its_policy(maze, maze_oracle: oracle.OracleResult) -> None:
    run = rollout(maze, maze_oracle.lookahead, episodes=400, seed=5)
    predicted = maze_oracle.value_at(run.states[0])
    mean, ci = mean_ci95(run.cost - predicted)
    assert abs(mean) < ci + 0.05 * predicted.mean(), (mean, ci, predicted.mean())


def test_oracle_on_lq_is_close_to_riccati() -> None:
    problem = load_problem("lq")
    lq = riccati.lq_matrices(problem)
    disc = riccati.discrete(lq)
    res = oracle.solve(problem, oracle.OracleConfig(grid=61, speeds=30, directions=1))
    # same starts and noise (paired): the DP policy costs within 2 % of the Riccati gain
    dp = rollout(problem, res.lookahead, episodes=500, seed=9).cost
    ric = rollout(problem, lambda n, x: -(x @ disc.K[n].T), episodes=500, seed=9).cost
    mean, ci = mean_ci95(dp - ric)
    assert mean - ci < 0.02 * disc.cost and mean + ci > -0.01 * disc.cost, (mean, ci, disc.cost)
    # the grid value is an interpolation-biased estimate of the same optimum
    assert res.value_at(problem.x0[None])[0] == pytest.approx(disc.cost, rel=0.15)


def test_geodesic_cross_check_in_the_small_noise_limit(maze) -> None:
    quiet = replace(maze, sigma=1e-3)
    res = oracle.solve(quiet, TINY)
    geo = oracle.geodesic_cost(quiet, grid=41)
    assert res.value_at(quiet.x0[None])[0] == pytest.approx(geo, rel=0.15)
