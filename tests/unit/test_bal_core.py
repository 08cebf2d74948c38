"""The BAL core: problem files, model derivatives, the direct filter, the environment, the policy table."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from controller.modes.bal.filter import DirectFilter
from controller.modes.bal.problem import load_problem, with_overrides
from firmware_sim.bal.env import SdeEnv
from learner.bal.table import PolicyTable

NAMES = ("lq", "forge", "maze", "maze6")


def _points(problem, rng, b=64):
    x = problem.domain_low + (problem.domain_high - problem.domain_low) * rng.random((b, 2))
    if problem.kind == "lq":
        x = rng.normal(size=(b, 2))
    u = rng.normal(size=(b, problem.model.control_dim)) * 2.0
    th = problem.theta_true + 0.3 * rng.random((b, problem.model.theta_dim))
    return x, u, th


@pytest.mark.parametrize("name", NAMES)
def test_derivatives_match_finite_differences(name: str) -> None:
    p = load_problem(name)
    m, rng, h = p.model, np.random.default_rng(1), 1e-6
    x, u, th = _points(p, rng)
    if p.kind == "forge":  # away from the soft-core cap's kink and nearest-atom switches
        keep = np.array([np.sort(np.linalg.norm(m.atoms - xi, axis=1))[:2] for xi in x])
        ok = (keep[:, 0] > 0.95 * m.r_m) & (keep[:, 1] - keep[:, 0] > 0.01)
        x, u, th = x[ok], u[ok], th[ok]
    for k in range(2):
        e = np.zeros(2)
        e[k] = h
        np.testing.assert_allclose((m.drift(x + e, u, th) - m.drift(x - e, u, th)) / (2 * h),
                                   m.drift_x(x, u, th)[:, :, k], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose((m.running(x + e, u, th) - m.running(x - e, u, th)) / (2 * h),
                                   m.running_x(x, u, th)[:, k], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose((m.terminal(x + e) - m.terminal(x - e)) / (2 * h), m.terminal_x(x)[:, k],
                                   rtol=1e-5, atol=1e-5)
    for k in range(m.control_dim):
        e = np.zeros(m.control_dim)
        e[k] = h
        np.testing.assert_allclose((m.drift(x, u + e, th) - m.drift(x, u - e, th)) / (2 * h),
                                   m.drift_u(x, u, th)[:, :, k], atol=1e-6)
        np.testing.assert_allclose((m.running(x, u + e, th) - m.running(x, u - e, th)) / (2 * h),
                                   m.running_u(x, u, th)[:, k], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_particle_evaluations_equal_the_batched_ones(name: str) -> None:
    p = load_problem(name)
    rng = np.random.default_rng(2)
    x, u, th = _points(p, rng, b=5)
    thetas = p.prior_mean + p.prior_std * rng.normal(size=(7, p.model.theta_dim))
    rep = lambda a: np.repeat(a[None], 7, 0)
    np.testing.assert_allclose(p.model.drift_particles(x[0], u[0], thetas),
                               p.model.drift(rep(x[0]), rep(u[0]), thetas), atol=1e-12)
    np.testing.assert_allclose(p.model.running_particles(x[0], u[0], thetas),
                               p.model.running(rep(x[0]), rep(u[0]), thetas), atol=1e-12)


def test_maze_cost_is_blockwise_with_soft_edges() -> None:
    p = load_problem("maze")
    c, _ = p.model.cost_rate(np.array([[5.0, 5.0], [5.0, 2.0], [1.0, 5.0]]), p.theta_true)
    np.testing.assert_allclose(c, [5.1, 0.1, 0.1], atol=0.02)  # soft edges leak < 0.02 one block away
    assert p.model.component(np.array([[5.5, 4.5]]))[0] == 4 * 10 + 5


def test_problem_files_refuse_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown problem"):
        load_problem("nope")
    text = (Path(__file__).parents[2] / "controller/modes/bal/problems/lq.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("r = 0.1", "r = 0.1\nrr = 2"))
    with pytest.raises(ValueError, match="unknown keys rr"):
        load_problem(bad)
    bad.write_text(text.replace("prior_std = 2.0", "prior_std = -1.0"))
    with pytest.raises(ValueError, match="prior_std"):
        load_problem(bad)
    bad.write_text(text.replace("steps = 50", "steps = 0"))
    with pytest.raises(ValueError, match="steps"):
        load_problem(bad)
    p = with_overrides(load_problem("lq"), theta_true=1.5, x0=np.array([0.2, -0.1]))
    assert p.theta_true[0] == 1.5 and p.x0[1] == -0.1
    with pytest.raises(ValueError, match="outside the domain"):  # as in the file (the table's boxes stop there)
        with_overrides(load_problem("lq"), x0=np.array([50.0, 0.0]))


def test_filter_finds_the_lq_parameter_within_its_spread() -> None:
    p = load_problem("lq")
    env, filt = SdeEnv(p, seed=3), DirectFilter.for_problem(p, seed=4)
    for _ in range(4):
        x = env.reset()
        for _ in range(p.steps):
            u = np.array([[-3.0 * x[0, 0] - 2.0 * x[0, 1]]])
            nxt, _ = env.step(u)
            filt.update(x[0], u[0], nxt[0])
            x = nxt
    assert filt.std()[0] < 0.6 * p.prior_std[0]
    assert abs(filt.estimate()[0] - p.theta_true[0]) < 2.5 * filt.std()[0]


def test_filter_moves_only_the_component_in_force() -> None:
    p = load_problem("forge")
    filt = DirectFilter.for_problem(p, seed=0)
    before = filt.particles.copy()
    x = np.array([3.75, 2.2])  # nearest atom (3.75, 1.25) is of type 1
    nxt = x + p.dt * p.model.drift(x[None], np.zeros((1, 2)), p.theta_true)[0]
    filt.update(x, np.zeros(2), nxt)
    np.testing.assert_array_equal(filt.particles[:, 0], before[:, 0])
    assert not np.array_equal(filt.particles[:, 1], before[:, 1])


def test_maze_filter_learns_a_block_cost_from_observed_costs() -> None:
    p = load_problem("maze")
    env, filt = SdeEnv(p, seed=1), DirectFilter.for_problem(p, seed=1)
    x = env.reset(np.array([5.5, 4.3]))
    u = np.array([[0.0, 2.0]])
    for _ in range(5):
        nxt, cost = env.step(u)
        filt.update(x[0], u[0], cost=float(cost[0]))
        x = nxt
    block = p.model.component(np.array([[5.5, 4.5]]))[0]
    assert abs(filt.estimate()[block] - 5.0) < 0.5


def test_env_steps_with_the_true_parameter_and_projects_controls() -> None:
    p = load_problem("forge")
    env = SdeEnv(with_overrides(p), batch=3, seed=0)
    x = env.reset()
    np.testing.assert_array_equal(x, np.repeat(p.x0[None], 3, 0))
    env.problem = with_overrides(p)
    nxt, cost = env.step(np.array([[100.0, 0.0]] * 3))
    np.testing.assert_allclose(cost, p.model.effort * p.u_max ** 2 * p.dt)
    with pytest.raises(ValueError, match="reset first"):
        for _ in range(p.steps):
            env.step(np.zeros((3, 2)))
    maze = SdeEnv(load_problem("maze"), batch=200, seed=0).reset()
    assert maze[:, 0].min() >= 3.0 and maze[:, 0].max() <= 7.0


def test_policy_table_reads_linear_maps_exactly_and_roundtrips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    axes = (np.array([0.0, 1.0, 3.0]), np.array([-1.0, 2.0]))
    low, high = np.array([[-1.0, -2.0], [0.0, 0.0]]), np.array([[1.0, 2.0], [4.0, 1.0]])
    proto = PolicyTable(axes, low, high, np.zeros((3, 2, 2, 5, 5, 2)), u_max=1e9)
    coef = rng.normal(size=(2, 2))
    u = np.zeros_like(proto.u)
    for a, ta in enumerate(axes[0]):
        for b, tb in enumerate(axes[1]):
            for n in range(2):
                pts = proto.points(n)
                u[a, b, n] = pts @ coef + ta - 2 * tb + n
    table = PolicyTable(axes, low, high, u, u_max=1e9)
    x = np.array([[0.3, -0.7], [0.9, 0.6]])
    th = np.array([[0.5, 0.0], [2.0, 1.5]])
    want = x @ coef + th[:, :1] - 2 * th[:, 1:] + np.array([[0.0], [1.0]])
    np.testing.assert_allclose(table.control(np.array([0, 1]), x, th), want, atol=1e-12)
    # clamped outside the θ axes and the box; projected onto |u| ≤ u_max
    np.testing.assert_allclose(table.control(0, np.array([[5.0, 0.0]]), np.array([9.0, 0.0])),
                               table.control(0, np.array([[1.0, 0.0]]), np.array([3.0, 0.0])))
    small = PolicyTable(axes, low, high, u, u_max=0.5)
    assert np.linalg.norm(small.control(1, x, th), axis=1).max() <= 0.5 + 1e-12
    table.save(tmp_path / "t.npz")
    again = PolicyTable.load(tmp_path / "t.npz")
    np.testing.assert_array_equal(again.control(1, x, th), table.control(1, x, th))
    with pytest.raises(ValueError, match="shape"):
        PolicyTable(axes, low, high, u[0], u_max=1.0)


@pytest.mark.parametrize("name, section, key, value, match", [
    ("forge", "problem", "sigma", float("nan"), "sigma"),
    ("forge", "problem", "u_max", float("inf"), "u_max"),
    ("lq", "problem", "steps", 10.5, "steps"),
    ("forge", "problem", "x0", [20.0, 20.0], "x0"),
    ("lq", "lq", "r", -1.0, "r"),
    ("forge", "forge", "r_m", -1.0, "r_m"),
    ("forge", "forge", "shape_cap", 0.0, "shape_cap"),
    ("forge", "forge", "effort", -1.0, "effort"),
    ("maze", "maze", "blocks", [3], "blocks"),
])
def test_problem_files_refuse_values_that_make_no_problem(name, section, key, value, match) -> None:
    import copy
    import tomllib

    from controller.modes.bal.problem import PROBLEMS, parse

    data = copy.deepcopy(tomllib.loads((PROBLEMS / f"{name}.toml").read_text()))
    data[section][key] = value
    with pytest.raises(ValueError, match=match):
        parse(data, name)


def test_filter_and_table_refuse_broken_input(tmp_path: Path) -> None:
    p = load_problem("lq")
    filt = DirectFilter.for_problem(p, seed=0)
    before = filt.particles.copy()
    with pytest.raises(ValueError, match="non-finite"):
        filt.update(np.array([np.nan, 0.0]), np.zeros(1), np.zeros(2))
    np.testing.assert_array_equal(filt.particles, before)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable table"):
        PolicyTable.load(bad)
    with pytest.raises(ValueError, match="finite"):
        PolicyTable((), np.zeros((1, 2)), np.ones((1, 2)), np.full((1, 2, 2, 1), np.nan), u_max=1.0)
