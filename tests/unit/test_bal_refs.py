"""The LQ references: Riccati (continuous and Euler-discretised) and the exact posterior of θ (issue #23 §3)."""
from dataclasses import replace

import numpy as np
import pytest

from controller.modes.bal.filter import DirectFilter
from controller.modes.bal.problem import load_problem
from learner.bal import posterior, riccati
from learner.bal.rollout import rollout
from learner.stats import mean_ci95


@pytest.fixture(scope="module")
def lq_problem():
    return load_problem("lq")


@pytest.fixture(scope="module")
def lq(lq_problem) -> riccati.LqMatrices:
    return riccati.lq_matrices(lq_problem)


def test_discrete_riccati_tends_to_the_continuous_one(lq: riccati.LqMatrices) -> None:
    cont = riccati.continuous(lq)
    errors, gain_errors = [], []
    for k in (1, 4, 16):
        fine = replace(lq, dt=lq.dt / k, steps=lq.steps * k)
        disc = riccati.discrete(fine)
        errors.append(abs(disc.cost - cont.cost))
        gain_errors.append(np.abs(disc.K[::k] - cont.K[:-1]).max())
    # Euler is first order: each 4× refinement cuts the gap by about 4 (at least 3 here)
    assert errors[1] < errors[0] / 3 and errors[2] < errors[1] / 3
    assert gain_errors[1] < gain_errors[0] / 3 and gain_errors[2] < gain_errors[1] / 3
    assert errors[2] < 0.01 * cont.cost


def test_lyapunov_cost_of_the_riccati_gain_is_the_riccati_cost(lq: riccati.LqMatrices) -> None:
    disc = riccati.discrete(lq)
    assert riccati.feedback_cost(lq, disc.K) == pytest.approx(disc.cost, rel=1e-10)
    # any other gain costs more (the Riccati gain is optimal)
    assert riccati.feedback_cost(lq, disc.K * 1.2) > disc.cost
    assert riccati.feedback_cost(lq, disc.K * 0.8) > disc.cost
    with pytest.raises(ValueError, match="gains must have shape"):
        riccati.feedback_cost(lq, np.zeros((3, 3)))


@pytest.mark.parametrize("which", ["riccati", "zero"])
def test_monte_carlo_on_the_env_matches_the_closed_form(lq_problem, lq: riccati.LqMatrices, which: str) -> None:
    K = riccati.discrete(lq).K if which == "riccati" else np.zeros((lq.steps,) + lq.B.T.shape)
    closed = riccati.feedback_cost(lq, K)
    run = rollout(lq_problem, lambda n, x: -(x @ K[n].T), episodes=4000, seed=11)
    mean, ci = mean_ci95(run.total)
    assert abs(mean - closed) < 1.5 * ci, (mean, ci, closed)


def test_riccati_rejects_other_problems() -> None:
    with pytest.raises(ValueError, match="lq problem"):
        riccati.lq_matrices(load_problem("maze"))


def _lq_path(problem, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """One observed path (N+1, 2) under the Riccati gain plus a random dither (so θ is well excited)."""
    K = riccati.discrete(riccati.lq_matrices(problem)).K
    rng = np.random.default_rng(seed)
    run = rollout(problem, lambda n, x: -(x @ K[n].T) + 0.5 * rng.standard_normal((1, 1)), episodes=1, seed=seed)
    return run.states[0], run.controls[0]


def test_static_posterior_matches_a_brute_force_grid(lq_problem) -> None:
    states, controls = _lq_path(lq_problem)
    m0, s0 = lq_problem.prior_mean, lq_problem.prior_std
    post = posterior.static_posterior(lq_problem.model, lq_problem.dt, lq_problem.sigma, m0, s0, states, controls)
    # independent check: the unnormalised log posterior on a θ grid from the Euler transition density
    grid = np.linspace(post.mean[0] - 8 * post.std[0], post.mean[0] + 8 * post.std[0], 4001)
    logp = -0.5 * ((grid - m0[0]) / s0[0]) ** 2
    for n in range(len(controls)):
        x, u = np.repeat(states[n:n + 1], len(grid), 0), np.repeat(controls[n:n + 1], len(grid), 0)
        pred = x + lq_problem.model.drift(x, u, grid[:, None]) * lq_problem.dt
        logp += -np.sum((pred - states[n + 1]) ** 2, axis=1) / (2 * lq_problem.sigma ** 2 * lq_problem.dt)
    w = np.exp(logp - logp.max())
    w /= w.sum()
    mean = float(w @ grid)
    assert mean == pytest.approx(post.mean[0], abs=1e-3 * post.std[0])
    assert np.sqrt(w @ (grid - mean) ** 2) == pytest.approx(post.std[0], rel=1e-3)
    # and the truth lies within a few posterior standard deviations
    assert abs(post.mean[0] - lq_problem.theta_true[0]) < 3 * post.std[0]


def test_kalman_without_walk_is_the_static_posterior(lq_problem) -> None:
    states, controls = _lq_path(lq_problem)
    args = (lq_problem.model, lq_problem.dt, lq_problem.sigma, lq_problem.prior_mean, lq_problem.prior_std)
    static = posterior.static_posterior(*args, states, controls)
    last = posterior.kalman_posterior(*args, np.zeros(1), states, controls)[-1]
    np.testing.assert_allclose(last.mean, static.mean, rtol=1e-9)
    np.testing.assert_allclose(last.cov, static.cov, rtol=1e-9)


def test_direct_filter_matches_the_kalman_posterior(lq_problem) -> None:
    """The particle filter (Eq. 21–23) with many particles tracks the exact posterior of its own pseudo-dynamics."""
    states, controls = _lq_path(lq_problem)
    filt = DirectFilter.for_problem(lq_problem, seed=5, particles=20_000)
    kalman = posterior.kalman_posterior(lq_problem.model, lq_problem.dt, lq_problem.sigma, lq_problem.prior_mean,
                                        lq_problem.prior_std, lq_problem.filter.walk_std, states, controls)
    mean_err, std_ratio = [], []
    for n in range(len(controls)):
        filt.update(states[n], controls[n], states[n + 1])
        mean_err.append(abs(filt.estimate()[0] - kalman[n].mean[0]) / kalman[n].std[0])
        std_ratio.append(filt.std()[0] / kalman[n].std[0])
    # Monte-Carlo error of J = 20 000 resampled particles: a few percent of a posterior std
    assert max(mean_err) < 0.1, max(mean_err)
    assert np.all(np.abs(np.array(std_ratio) - 1) < 0.06), (min(std_ratio), max(std_ratio))
