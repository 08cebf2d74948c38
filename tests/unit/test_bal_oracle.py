"""The true-parameter DP oracle (semi-Lagrangian HJB on a grid) and its cross-checks (issue #23 §3)."""
from dataclasses import replace

import numpy as np
import pytest

from controller.modes.bal.problem import load_problem
from learner.bal import oracle, riccati
from learner.bal.discrete import straight_line
from learner.bal.rollout import rollout
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
    costs = {name: rollout(maze, pol, episodes=200, seed=21).total for name, pol in
             [("lookahead", maze_oracle.lookahead), ("table", lambda n, x: maze_oracle.table.control(n, x)),
              ("straight", straight_line(maze)), ("random", _random_policy(maze, 1))]}
    for better in ("lookahead", "table"):
        for worse in ("straight", "random"):
            mean, ci = mean_ci95(costs[worse] - costs[better])  # paired: the same starts and noise
            assert mean - ci > 0, (better, worse, mean, ci)


def test_oracle_value_matches_a_monte_carlo_run_of_its_policy(maze) -> None:
    """V_0 is biased upward by the bilinear interpolation of a convex V (O(Δx²) per step): the gap to the Monte-Carlo
    cost of the policy (same starts and noise for both grids) shrinks as the grid is refined."""
    gaps = []
    for grid in (21, 41):
        res = oracle.solve(maze, replace(TINY, grid=grid, speeds=8, directions=32))
        run = rollout(maze, lambda n, x: res.table.control(n, x), episodes=400, seed=5)
        predicted = res.value_at(run.states[:, 0])
        mean, ci = mean_ci95(predicted - run.total)
        gaps.append(mean / predicted.mean())
        assert mean - ci > -0.02 * predicted.mean(), (grid, mean, ci)  # the policy is no better than its value
    assert gaps[1] < gaps[0] / 2 and gaps[1] < 0.15, gaps


def test_oracle_on_lq_is_close_to_riccati() -> None:
    problem = load_problem("lq")
    disc = riccati.discrete(riccati.lq_matrices(problem))
    # the paths stay well inside ±3 and the optimal controls under 15: a finer grid and action set there
    box = replace(problem, domain_low=np.full(2, -3.0), domain_high=np.full(2, 3.0), u_max=15.0)
    res = oracle.solve(box, oracle.OracleConfig(grid=41, speeds=30, directions=1))
    # same starts and noise (paired): the DP policy costs within 1 % of the Riccati gain, and not less
    dp = rollout(problem, res.lookahead, episodes=500, seed=9).total
    ric = rollout(problem, lambda n, x: -(x @ disc.K[n].T), episodes=500, seed=9).total
    mean, ci = mean_ci95(dp - ric)
    assert mean + ci > 0 and mean - ci < 0.01 * disc.cost, (mean, ci, disc.cost)
    # the grid value: the same optimum, biased upward by the interpolation
    assert disc.cost < res.value_at(problem.x0[None])[0] < 1.1 * disc.cost


def test_geodesic_cross_check_in_the_small_noise_limit(maze) -> None:
    quiet = replace(maze, sigma=1e-3)
    res = oracle.solve(quiet, replace(TINY, grid=41, speeds=8, directions=32))
    geo = oracle.geodesic_cost(quiet, grid=81)
    assert res.value_at(quiet.x0[None])[0] == pytest.approx(geo, rel=0.1)
    # the obstacle matters: the straight segment's cost is far above the geodesic one
    pts = quiet.x0 + np.linspace(0, 1, 2001)[:, None] * (quiet.goal - quiet.x0)
    root_c = np.sqrt(quiet.model.running(pts, np.tile([[1.0, 0.0]], (len(pts), 1)), quiet.theta_true))
    straight = (root_c.mean() * np.linalg.norm(quiet.goal - quiet.x0)) ** 2 / quiet.horizon
    assert geo < straight / 2, (geo, straight)
