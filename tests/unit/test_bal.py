"""Backward action learning (learner/algos/bal.py): the adjoint gradient against finite differences on all three
models, the feedback table against the discrete Riccati gain on the LQ problem, and the settings' checks."""
import dataclasses

import numpy as np
import pytest

from controller.modes.bal.problem import load_problem
from learner.algos import bal
from learner.algos.bal import BalConfig


def discrete_riccati(problem, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Gains K_n (N, 1, 2) (u_n = −K_n x_n) and P_n (N + 1, 2, 2) of the Euler-discretised LQ problem:
    x' = (I + Δt A) x + Δt B u, cost Σ Δt (xᵀQx + R u²) + x_NᵀG x_N."""
    m, dt = problem.model, problem.dt
    a = np.eye(2) + dt * (m.a0 + theta * m.a1)
    b = dt * m.b
    p = [m.g]
    k = np.zeros((problem.steps, 1, 2))
    for n in range(problem.steps - 1, -1, -1):
        k[n] = np.linalg.solve(dt * m.r + b.T @ p[0] @ b, b.T @ p[0] @ a)
        p.insert(0, dt * m.q + a.T @ p[0] @ a - a.T @ p[0] @ b @ k[n])
    return k, np.array(p)


@pytest.mark.parametrize("name", ["lq", "forge", "maze"])
def test_adjoint_gradient_is_the_pathwise_gradient(name: str) -> None:
    problem = load_problem(name)
    model, dt, steps = problem.model, problem.dt, 12
    rng = np.random.default_rng(3)
    x0 = problem.x0 + 0.3 * rng.standard_normal((3, 2))
    u = 0.3 * problem.u_max * rng.uniform(-1, 1, (3, steps, model.control_dim)) / np.sqrt(model.control_dim)
    noise = rng.standard_normal((3, steps, 2))  # frozen
    theta = problem.theta_true

    def cost(controls: np.ndarray) -> np.ndarray:
        return bal.path_cost(model, dt, bal.rollout(model, dt, problem.sigma, x0, controls, theta, noise), controls,
                             theta)

    g, y = bal.adjoint_gradient(model, dt, bal.rollout(model, dt, problem.sigma, x0, u, theta, noise), u, theta)
    fd, h = np.zeros_like(u), 1e-6
    for n in range(steps):
        for c in range(model.control_dim):
            e = np.zeros_like(u)
            e[:, n, c] = h
            fd[:, n, c] = (cost(u + e) - cost(u - e)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max())
    assert y.shape == (3, steps + 1, 2)


def test_lq_table_gain_converges_to_the_discrete_riccati_gain() -> None:
    problem = dataclasses.replace(load_problem("lq"), steps=20)
    theta = problem.theta_true
    cfg = BalConfig(grid=3, samples=64, minibatch=8, iterations=60, first_iterations=200)
    table, rollouts = bal.feedback_policy(problem, theta, np.zeros((problem.steps, 1)), cfg,
                                          np.random.default_rng(0))
    k, _ = discrete_riccati(problem, float(theta[0]))
    scale = np.abs(k).max()
    for n in range(problem.steps):
        pts = table.points(n).reshape(-1, 2)
        coef, *_ = np.linalg.lstsq(np.c_[pts, np.ones(len(pts))], table.u[n].reshape(-1), rcond=None)
        assert np.abs(-coef[:2] - k[n, 0]).max() < 0.02 * scale, (n, coef, k[n])
        assert np.all(table.low[n] <= table.high[n])
    assert rollouts == 9 * (8 * (200 + 19 * 60) + 20 * (bal.POWER_ITERATIONS + 1))


def deterministic_optimum(problem) -> np.ndarray:
    """The discrete Riccati controls along the optimal path from x0 with σ = 0: (N, 1)."""
    k, _ = discrete_riccati(problem, float(problem.theta_true[0]))
    x, want = problem.x0.copy(), []
    for n in range(problem.steps):
        want.append(-k[n] @ x)
        x = x + problem.dt * problem.model.drift(x[None], want[-1][None], problem.theta_true)[0]
    return np.array(want)


def test_open_loop_bal_reaches_the_deterministic_optimum_from_x0() -> None:
    """With σ = 0, open-loop BAL's controls from x0 are the discrete Riccati ones along the optimal path."""
    problem = dataclasses.replace(load_problem("lq"), steps=20, sigma=0.0)
    want = deterministic_optimum(problem)
    u, _ = bal.open_loop(problem.model, problem.dt, 0.0, problem.x0[None], np.zeros((1, problem.steps, 1)),
                         problem.theta_true, BalConfig(lr=1.0), np.random.default_rng(0), iterations=400)
    np.testing.assert_allclose(u[0], want, atol=1e-3 * np.abs(want).max())


def test_normalised_step_reaches_the_same_deterministic_optimum() -> None:
    """The Adam-style step (the forge's and the maze's) converges to the same discrete Riccati controls."""
    problem = dataclasses.replace(load_problem("lq"), steps=20, sigma=0.0)
    want = deterministic_optimum(problem)
    cfg = BalConfig(step="adam", lr=0.3, lr_decay=100.0, average=0.2)
    u, rollouts = bal.open_loop(problem.model, problem.dt, 0.0, problem.x0[None], np.zeros((1, problem.steps, 1)),
                                problem.theta_true, cfg, np.random.default_rng(0), iterations=600)
    np.testing.assert_allclose(u[0], want, atol=5e-3 * np.abs(want).max())
    assert rollouts == 8 * 600  # no curvature estimate: the normalised step's η is in control units


def test_no_averaging_returns_the_last_iterate() -> None:
    """average = 0 (allowed) means the last iterate, not an empty mean (it returned all-zero controls)."""
    problem = dataclasses.replace(load_problem("lq"), steps=10, sigma=0.0)
    runs = [bal.open_loop(problem.model, problem.dt, 0.0, problem.x0[None], np.zeros((1, problem.steps, 1)),
                          problem.theta_true, BalConfig(average=a), np.random.default_rng(0), iterations=50)[0]
            for a in (0.0, 0.01)]  # 0.01 of 50 iterations: the mean over the last one alone
    assert np.abs(runs[0]).max() > 1.0
    np.testing.assert_array_equal(runs[0], runs[1])


def test_multi_start_keeps_the_detour_around_the_maze_obstacle() -> None:
    """From the straight line, descent stays on the path through the obstacle band; from a waypoint left of it,
    it goes around: multi-start keeps the cheaper (the detour) whichever order the candidates come in."""
    problem = load_problem("maze")
    x0, theta, cfg = problem.x0[None], problem.theta_true, BalConfig(step="adam", lr=0.1, minibatch=4)
    line = bal.straight_line(problem, x0, problem.steps)  # (1, N, 2)
    detour = line.copy()
    half = problem.steps // 2
    detour[0, :half] = (np.array([1.0, 5.0]) - problem.x0) / (half * problem.dt)
    detour[0, half:] = (problem.goal - np.array([1.0, 5.0])) / (half * problem.dt)

    def cost(u: np.ndarray) -> float:
        noise = np.random.default_rng(9).standard_normal((64, problem.steps, 2))
        x = bal.rollout(problem.model, problem.dt, problem.sigma, np.repeat(x0, 64, 0), np.repeat(u, 64, 0), theta,
                        noise)
        return float(bal.path_cost(problem.model, problem.dt, x, np.repeat(u, 64, 0), theta).mean())

    alone = [bal.open_loop(problem.model, problem.dt, problem.sigma, x0, c, theta, cfg, np.random.default_rng(1),
                           100)[0] for c in (line, detour)]
    assert cost(alone[1]) < 0.7 * cost(alone[0])  # two basins, the detour's the cheaper
    for order in ((line, detour), (detour, line)):
        best, _ = bal.multi_start(problem, x0, np.stack(order, 1), theta, cfg, np.random.default_rng(1), 100)
        assert abs(cost(best) - cost(alone[1])) < 0.05 * cost(alone[1])


def test_candidates_warm_start_line_and_waypoints() -> None:
    problem = load_problem("maze")
    x0 = np.array([[5.0, 1.0], [4.0, 2.0]])
    warm = np.ones((2, 10, 2))
    c = bal.candidates(problem, x0, warm, 5, np.random.default_rng(0))
    assert c.shape == (2, 5, 10, 2)
    np.testing.assert_array_equal(c[:, 0], warm)
    for k in range(1, 5):  # the line and the waypoint paths all end at the goal (no control hits the bound here)
        if np.all(np.linalg.norm(c[:, k], axis=-1) < problem.u_max - 1e-9):
            np.testing.assert_allclose(x0 + problem.dt * c[:, k].sum(axis=1), np.tile(problem.goal, (2, 1)))
    assert np.all(np.linalg.norm(c, axis=-1) <= problem.u_max + 1e-9)
    np.testing.assert_array_equal(bal.candidates(problem, x0, warm, 1, np.random.default_rng(0))[:, 0], warm)
    line = bal.initial_controls(problem, BalConfig(init="line"))
    np.testing.assert_allclose(problem.x0 + problem.dt * line.sum(axis=0), problem.goal)
    assert not np.any(bal.initial_controls(problem, BalConfig()))


def test_sgd_step_projects_onto_the_control_bound() -> None:
    model = load_problem("forge").model
    u = bal.sgd_step(model, np.zeros((4, 2)), np.array([[100.0, 0.0]] * 4), dt=0.1, eta=1.0)
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), model.u_max)
    np.testing.assert_allclose(u[:, 0], -model.u_max)


def test_exploration_follows_epsilon_and_sigma() -> None:
    rng = np.random.default_rng(0)
    cfg = BalConfig(epsilon=0.3, lam=0.5, explore_std=(1.0, 2.0))
    draws = [bal.exploration(cfg, 200, 2, rng) for _ in range(400)]
    explored = [d for d in draws if np.any(d)]
    assert abs(len(explored) / len(draws) - 0.3) < 0.07
    np.testing.assert_allclose(np.concatenate(explored).std(axis=0), [0.5, 1.0], rtol=0.05)
    with pytest.raises(ValueError, match="explore_std"):
        bal.exploration(cfg, 10, 1, rng)


def test_bilinear_is_exact_on_linear_functions_and_clamps() -> None:
    low, high = np.array([-1.0, 2.0]), np.array([3.0, 5.0])
    s = np.linspace(0, 1, 4)
    pts = np.stack(np.meshgrid(low[0] + 4 * s, low[1] + 3 * s, indexing="ij"), -1)
    values = np.stack([pts @ [2.0, -1.0] + 0.5, pts @ [0.0, 3.0]], -1)[None]  # (1, G, G, 2)
    x = np.random.default_rng(1).uniform(low, high, (1, 50, 2))
    np.testing.assert_allclose(bal.bilinear(values, low, high, x)[0], np.stack([x[0] @ [2.0, -1.0] + 0.5,
                                                                               x[0] @ [0.0, 3.0]], -1))
    outside = bal.bilinear(values, low, high, np.array([[[10.0, -10.0]]]))
    np.testing.assert_allclose(outside[0, 0], [high[0] * 2 - low[1] + 0.5, 3 * low[1]])


def test_region_covers_the_samples_with_a_floor_inside_the_domain() -> None:
    cfg = BalConfig(pad=0.1)
    lo, hi = bal.region(np.array([[0.0, 0.0], [1.0, 2.0]]), cfg, 0.5, np.array([-5.0, -5.0]), np.array([5.0, 5.0]))
    np.testing.assert_allclose(lo, [-0.1, -0.2])
    np.testing.assert_allclose(hi, [1.1, 2.2])
    lo, hi = bal.region(np.full((4, 2), 4.9), cfg, 1.0, np.array([-5.0, -5.0]), np.array([5.0, 5.0]))
    np.testing.assert_allclose(hi - lo, [1.0, 1.0])
    assert np.all(hi <= 5.0)


def test_theta_grid_order_matches_the_table() -> None:
    grid = bal.theta_grid((np.array([0.0, 1.0]), np.array([5.0, 6.0, 7.0])), np.zeros(2))
    assert grid.shape == (6, 2) and tuple(grid[1]) == (0.0, 6.0) and tuple(grid[3]) == (1.0, 5.0)
    with pytest.raises(ValueError, match="increasing"):
        bal.theta_grid((np.array([1.0, 1.0]), np.array([5.0])), np.zeros(2))
    with pytest.raises(ValueError, match="one θ axis per component"):
        bal.theta_grid((np.array([1.0]),), np.zeros(2))


@pytest.mark.parametrize("bad", [{"lr": 0}, {"epsilon": 1.5}, {"grid": 1}, {"minibatch": 0}, {"quantile": 0.5},
                                 {"average": 1.0}, {"explore_std": (-1.0,)},
                                 {"step": "newton"}, {"init": "random"}, {"starts": 0}, {"grid": 5.0},
                                 {"iterations": 60.5}, {"extend": "false"}, {"cap": 0}, {"lr": True},
                                 {"step": 1}])
def test_bal_config_refuses_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        BalConfig(**bad)


def test_bal_config_from_mapping_names_unknown_keys() -> None:
    assert BalConfig.from_mapping({"grid": 7, "explore_std": [1.0, 2.0]}) == BalConfig(grid=7, explore_std=(1.0, 2.0))
    with pytest.raises(ValueError, match="unknown BAL setting.*gird"):
        BalConfig.from_mapping({"gird": 7})
