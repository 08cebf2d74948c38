"""The feedback table optimised in closed loop with BAL's adjoint (`table = "closed_loop"`; learner/algos/bal.py).

The paper's Eq. 28 builds the table u*(t_n, x_i) one step at a time from independent open-loop BAL solves at its
grid points. Where the problem has several local optima (the maze's two ways around an obstacle; the forge's
routes between the atoms) neighbouring grid points pick different ones and the interpolated table steers between
them, into the obstacle (measured: 58 % success on the maze, farther from the goal than the straight line on the
forge). Here the table's entries are the controls BAL improves, all at once, on paths that *follow the table*:

- the adjoint of the closed-loop system x_{n+1} = x_n + Δt b(x_n, π_n(x_n)) + σ√Δt ξ_n (Eq. 24 with the policy's
  own slope ∂π_n/∂x, piecewise linear in the bilinear table):
      λ_N = h_x(x_N),   λ_n = λ_{n+1} + Δt (b_xᵀ λ_{n+1} + f_x + (∂π_n/∂x)ᵀ g_n),   g_n = f_u + b_uᵀ λ_{n+1}
  (g_n the gradient density of Eq. 25); g_n reaches the four table entries around x_n with their bilinear weights;
- averaged over a batch of model rollouts at θ̂ from the problem's starts (x0, or its start box) with fresh noise
  each iteration, the normalised step (Adam) with a decaying rate on the entries (the forge's Lennard-Jones cores
  make plain SGD diverge or crawl).
The table starts from a feedback law that already picks a way: `nominal` — open-loop BAL without noise from the
start (and `nominals − 1` random starts in the start box) over multi-start candidates (learner/algos/bal.py), the
candidate whose tracking law u = ū_n + (x̄_n − x)/τ costs least in noisy model rollouts, tracked from the nearest
nominal path — and `line`, u = (goal − x)/(T − t); both are optimised and the cheaper table (fresh model rollouts)
kept. The boxes per step cover the [2, 98] % quantiles of the starting law's paths, padded.
All of it is model-based at θ̂: no real episode is spent (the count is `model_rollouts`).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from controller.modes.bal.problem import Problem
from learner.algos import bal
from learner.algos.bal import BalConfig
from learner.bal.table import PolicyTable

Law = Callable[[int, np.ndarray], np.ndarray]
PAD = 0.15  # the boxes: padded by this fraction of their width …
PAD_ABS = 0.1  # … plus this much [length unit]
SELECT_ROLLOUTS = 64  # model rollouts scoring each candidate's tracking law, and each optimised table


def _model_rollout(problem: Problem, law: Law, theta: np.ndarray, x0: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paths of a feedback law on the model at θ: (states (B, N + 1, 2), total costs (B,))."""
    m, dt = problem.model, problem.dt
    x, xs, cost = x0, [x0], np.zeros(len(x0))
    for n in range(problem.steps):
        u = m.project(law(n, x))
        cost += m.running(x, u, theta) * dt
        x = x + dt * m.drift(x, u, theta) + problem.sigma * np.sqrt(dt) * rng.standard_normal(x.shape)
        xs.append(x)
    return np.stack(xs, 1), cost + m.terminal(x)


def _starts(problem: Problem, count: int, rng: np.random.Generator) -> np.ndarray:
    if problem.start_low is None:
        return np.repeat(np.asarray(problem.x0, float)[None], count, axis=0)
    return rng.uniform(problem.start_low, problem.start_high, (count, 2))


def nominal_law(problem: Problem, theta: np.ndarray, cfg: BalConfig,
                rng: np.random.Generator) -> tuple[Law, int]:
    """Tracking of the best nominal path(s): open-loop BAL without noise over multi-start candidates; (law, model
    rollouts simulated)."""
    m, n_steps, mdim = problem.model, problem.steps, problem.model.control_dim
    x0 = np.asarray(problem.x0, float)[None]
    if problem.start_low is not None and cfg.nominals > 1:
        x0 = np.vstack([x0, rng.uniform(problem.start_low, problem.start_high, (cfg.nominals - 1, 2))])
    cands = bal.candidates(problem, x0, bal.straight_line(problem, x0, n_steps), cfg.starts, rng)
    count = cands.shape[1]
    solved, rollouts = bal.open_loop(m, problem.dt, 0.0, np.repeat(x0, count, 0), cands.reshape(-1, n_steps, mdim),
                              theta, cfg, rng, cfg.first_iterations)
    solved = solved.reshape(len(x0), count, n_steps, mdim)

    def path(u: np.ndarray, start: np.ndarray) -> np.ndarray:
        xs = [start]
        for n in range(n_steps):
            xs.append(xs[-1] + problem.dt * m.drift(xs[-1][None], u[n][None], theta)[0])
        return np.array(xs)

    def tracking(u: np.ndarray, xs: np.ndarray) -> Law:
        return lambda n, x: u[n] + (xs[n] - x) / cfg.pull_time

    def cost(u: np.ndarray, xs: np.ndarray, start: np.ndarray) -> float:
        starts = np.repeat(start[None], SELECT_ROLLOUTS, 0)
        return _model_rollout(problem, tracking(u, xs), theta, starts, rng)[1].mean()

    chosen_u, chosen_x = [], []
    for s, start in enumerate(x0):
        paths = [path(solved[s, c], start) for c in range(count)]
        best = int(np.argmin([cost(solved[s, c], paths[c], start) for c in range(count)]))
        chosen_u.append(solved[s, best])
        chosen_x.append(paths[best])
    # every start also tries the others' nominal paths (a start whose candidates all stayed in a local optimum
    # takes a neighbour's way); only the paths some start keeps are tracked
    kept = {int(np.argmin([cost(chosen_u[k], chosen_x[k], start) for k in range(len(x0))])) for start in x0}
    us, xs = np.array(chosen_u)[sorted(kept)], np.array(chosen_x)[sorted(kept)]  # (K, N, m), (K, N + 1, 2)

    def law(n: int, x: np.ndarray) -> np.ndarray:
        k = np.argmin(((x[:, None] - xs[None, :, n]) ** 2).sum(-1), axis=1)  # the nearest nominal path
        return us[k, n] + (xs[k, n] - x) / cfg.pull_time

    return law, rollouts + SELECT_ROLLOUTS * len(x0) * (count + len(x0))  # + the tracking laws' scoring


def line_law(problem: Problem) -> Law:
    goal, n_steps, dt = np.asarray(problem.goal), problem.steps, problem.dt
    return lambda n, x: (goal - x) / ((n_steps - n) * dt)


class _Table:
    """The table's arrays with the bilinear reading, its slope in x and its weights (for the gradient)."""

    def __init__(self, low: np.ndarray, high: np.ndarray, u: np.ndarray) -> None:
        self.low, self.high, self.u = low, high, u
        self.g = u.shape[1]

    def read(self, n: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple]:
        """(u (B, m), ∂u/∂x (B, m, 2), (cell index, weights)) at step n; outside the box the reading is clamped
        (slope 0 across the clamped axis)."""
        g, span = self.g, self.high[n] - self.low[n]
        s = (x - self.low[n]) / span * (g - 1)
        inside = (s > 0) & (s < g - 1)
        s = np.clip(s, 0.0, g - 1)
        i = np.minimum(s.astype(np.int64), g - 2)
        w = s - i
        t = self.u[n]
        c00, c10 = t[i[:, 0], i[:, 1]], t[i[:, 0] + 1, i[:, 1]]
        c01, c11 = t[i[:, 0], i[:, 1] + 1], t[i[:, 0] + 1, i[:, 1] + 1]
        wx, wy = w[:, :1], w[:, 1:]
        u = (1 - wx) * (1 - wy) * c00 + wx * (1 - wy) * c10 + (1 - wx) * wy * c01 + wx * wy * c11
        du_dx = ((1 - wy) * (c10 - c00) + wy * (c11 - c01)) * (inside[:, :1] * (g - 1) / span[0])
        du_dy = ((1 - wx) * (c01 - c00) + wx * (c11 - c10)) * (inside[:, 1:] * (g - 1) / span[1])
        return u, np.stack([du_dx, du_dy], -1), (i, w)

    def scatter(self, grad: np.ndarray, n: int, where: tuple, g_n: np.ndarray) -> None:
        """Add g_n (B, m) to step n's four entries around each x with the bilinear weights."""
        i, w = where
        wx, wy = w[:, 0], w[:, 1]
        for di, dj, weight in ((0, 0, (1 - wx) * (1 - wy)), (1, 0, wx * (1 - wy)), (0, 1, (1 - wx) * wy),
                               (1, 1, wx * wy)):
            np.add.at(grad[n], (i[:, 0] + di, i[:, 1] + dj), weight[:, None] * g_n)


def _boxes(problem: Problem, law: Law, theta: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    states, _ = _model_rollout(problem, law, theta, _starts(problem, 512, rng), rng)
    lo, hi = np.quantile(states[:, :-1], 0.02, axis=0), np.quantile(states[:, :-1], 0.98, axis=0)
    pad = PAD * (hi - lo) + PAD_ABS
    return np.maximum(lo - pad, problem.domain_low), np.minimum(hi + pad, problem.domain_high)


def table_gradient(problem: Problem, table: _Table, theta: np.ndarray, x0: np.ndarray,
                   noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The gradient of the mean cost over paths from x0 (B, 2) with the noise (B, N, 2) frozen, with respect to the
    table's entries (shape of table.u), by the closed-loop adjoint; and each path's cost (B,)."""
    m, dt, batch = problem.model, problem.dt, len(x0)
    x, xs, controls, slopes, cells, cost = x0, [x0], [], [], [], np.zeros(batch)
    for n in range(problem.steps):
        un, slope, where = table.read(n, x)
        un = m.project(un)
        cost += m.running(x, un, theta) * dt
        x = x + dt * m.drift(x, un, theta) + problem.sigma * np.sqrt(dt) * noise[:, n]
        xs.append(x)
        controls.append(un)
        slopes.append(slope)
        cells.append(where)
    lam, grad = m.terminal_x(x), np.zeros_like(table.u)
    for n in range(problem.steps - 1, -1, -1):
        xn, un = xs[n], controls[n]
        g_n = m.running_u(xn, un, theta) + np.einsum("bim,bi->bm", m.drift_u(xn, un, theta), lam)  # Eq. 25
        table.scatter(grad, n, cells[n], g_n * dt / batch)
        lam = lam + dt * (np.einsum("bij,bi->bj", m.drift_x(xn, un, theta), lam) + m.running_x(xn, un, theta)
                          + np.einsum("bm,bmj->bj", g_n, slopes[n]))  # Eq. 24 in closed loop
    return grad, cost + m.terminal(x)


def optimise(problem: Problem, law: Law, theta: np.ndarray, cfg: BalConfig,
             rng: np.random.Generator) -> tuple[PolicyTable, int]:
    """The table started from ``law`` on its own boxes, then improved in closed loop; (table, model rollouts)."""
    m, dt, n_steps, g, batch = problem.model, problem.dt, problem.steps, cfg.grid, cfg.table_batch
    low, high = _boxes(problem, law, theta, rng)
    lin = np.linspace(0.0, 1.0, g)
    u = np.empty((n_steps, g, g, m.control_dim))
    for n in range(n_steps):
        span = high[n] - low[n]
        pts = np.stack(np.meshgrid(low[n, 0] + lin * span[0], low[n, 1] + lin * span[1], indexing="ij"), -1)
        u[n] = m.project(law(n, pts.reshape(-1, 2))).reshape(g, g, -1)
    table, moments = _Table(low, high, u), np.zeros((2, *u.shape))
    for k in range(cfg.table_iterations):
        x0 = _starts(problem, batch, rng)
        grad, _ = table_gradient(problem, table, theta, x0, rng.standard_normal((batch, n_steps, 2)))
        eta = cfg.table_lr / (1.0 + 4.0 * k / cfg.table_iterations)
        table.u = bal.normalised_step(m, table.u, grad, dt, eta, moments, k)
    return PolicyTable((), low, high, table.u, problem.u_max), cfg.table_iterations * batch + 512


def closed_loop_table(problem: Problem, theta_hat: np.ndarray, cfg: BalConfig, rng: np.random.Generator,
                      theta_axes: tuple[np.ndarray, ...] = ()) -> tuple[PolicyTable, int]:
    """The feedback table at θ̂ (or one per θ of ``theta_axes``, stacked), optimised in closed loop from the
    starting laws (`nominal`, and `line` where the problem has a goal); (table, model rollouts)."""
    thetas = bal.theta_grid(tuple(np.asarray(a, float) for a in theta_axes), theta_hat)
    tables, rollouts = [], 0
    for theta in thetas:
        nominal, rollouts_nominal = nominal_law(problem, theta, cfg, rng)
        laws = [nominal] + ([line_law(problem)] if problem.goal is not None else [])
        rollouts += rollouts_nominal
        best = None
        for law in laws:
            table, count = optimise(problem, law, theta, cfg, rng)
            cost = _model_rollout(problem, lambda n, x, t=table: t.control(n, x), theta,
                                  _starts(problem, SELECT_ROLLOUTS, rng), rng)[1].mean()
            rollouts += count + SELECT_ROLLOUTS
            if best is None or cost < best[0]:
                best = (cost, table)
        tables.append(best[1])
    if not theta_axes:
        return tables[0], rollouts
    # one box per step for every θ: each table re-read on the union of the boxes
    low = np.min([t.low for t in tables], axis=0)
    high = np.max([t.high for t in tables], axis=0)
    proto = PolicyTable((), low, high, np.zeros_like(tables[0].u), problem.u_max)
    u = np.stack([[t.control(n, proto.points(n).reshape(-1, 2)).reshape(tables[0].u.shape[1:])
                   for n in range(problem.steps)] for t in tables])
    shape = tuple(len(a) for a in theta_axes)
    return PolicyTable(tuple(np.asarray(a, float) for a in theta_axes), low, high,
                       u.reshape(*shape, *u.shape[1:]), problem.u_max), rollouts
