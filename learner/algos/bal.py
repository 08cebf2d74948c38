"""Backward action learning (BAL; the SMP paper §3.2–3.3), vectorised over a batch of start points.

The controlled SDE dX = b(X, u; θ) dt + σ dW is discretised by Euler–Maruyama (Eq. 12/17)
    X_{n+1} = X_n + b(X_n, u_n; θ) Δt + σ √Δt ξ_n,
and the cost is J = Σ_n f(X_n, u_n; θ) Δt + h(X_N). Along one path (a model rollout or the agent's real path),
the sample-wise adjoint (Eq. 24) runs backward,
    Y_N = h_x(X_N),   Y_n = Y_{n+1} + Δt (b_xᵀ Y_{n+1} + f_x)(X_n, u_n),
and the gradient of the discretised cost along that path with the noise frozen is
    g_n = ∂J/∂u_n = Δt (f_u(X_n, u_n) + b_uᵀ(X_n, u_n) Y_{n+1})                        (Eq. 25).
The paper writes Y_n in Eq. 25; Y_{n+1} (the right-point adjoint) makes g the exact pathwise gradient of the
Euler-discretised cost, so BAL converges to the optimum of the discrete problem — the one the LQ goal compares
with (the discrete Riccati solution), not one O(Δt) away.

Eq. 26 is stochastic gradient descent on the gradient density g_n / Δt (the paper's gradient of the integral
cost), projected onto the control set |u| ≤ u_max, with a Robbins–Monro step η_k = η / (1 + k / decay); η is the
configured rate capped at 1 / (the largest curvature of the cost density, by power iteration on pathwise-gradient
differences), so that stiff directions do not diverge.
Eq. 27 (ε-greedy): with probability ε a whole episode's controls get λ Σ^{1/2} ξ_n added.

Two options for the forge and the maze (`BalConfig.step`, `starts`, `init`; the LQ problem keeps the paper's SGD):
- `step = "adam"`: the same BAL gradient, Adam's per-coordinate moment normalisation (`normalised_step`). Plain
  SGD on g / Δt is badly conditioned there — the terminal miss makes the directions that move X_N ~600× stiffer
  than the running-cost ones, and the forge's Lennard-Jones cores cap η at ≈ 6e-4 — so SGD barely moves in a few
  hundred iterations; the normalised step (η in control units per iteration) converges in a few hundred.
- `starts = C > 1`: the maze's obstacles make local minima (from a straight line, descent stays on the path
  through the obstacle). Eq. 27's exploration is used as multi-start: every start point is solved from C
  candidate control sequences in one batch — the warm start, the straight line to the goal and smooth paths
  through random waypoints (`candidates`) — and keeps the one with the lowest model cost at θ̂ (`multi_start`).
- `init = "line"`: open-loop controls start on the straight line to the goal instead of zeros.

Open-loop BAL (`open_loop`) runs Eq. 26 from a batch of start states with warm-start control sequences, each
iteration on a minibatch of model rollouts at θ̂. The rollouts of one iteration share their noise across the
batch (common random numbers), so neighbouring grid points see the same noise and their controls differ by
the policy's shape rather than by sampling error (for LQ the noise only shifts every grid point alike).

The feedback policy (Eq. 28, `feedback_policy`) is built forward in time: at step n a region covers M samples
of X_n (propagated from x0 or the start box under the table rows so far), a G × G grid on it, open-loop BAL
from every grid point over the remaining horizon (warm-started from the previous step's solutions), and the
table row u*(t_n, x_i) is each solution's first control. Over a grid of θ values (`theta_axes`) every θ is
solved in the same batch. The result is a learner/bal/table.PolicyTable.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, fields
from typing import Any, Mapping

import numpy as np

from controller.modes.bal.models import Model
from controller.modes.bal.problem import Problem
from learner.bal.table import PolicyTable


POWER_ITERATIONS = 10  # of the curvature estimate that caps η (each one model rollout per start, plus one)
ADAM_BETAS = (0.9, 0.999)  # the normalised step's moment decays (Adam's defaults)
ADAM_EPS = 1e-8
STEPS = ("sgd", "adam")
INITS = ("zeros", "line")
TABLES = ("eq28", "closed_loop")
SETTING_TYPES = {"int": (int, np.integer), "float": (int, float, np.integer, np.floating), "bool": (bool, np.bool_),
                 "str": (str,)}  # BalConfig's field annotations → the values they accept (bool is no number here)


@dataclass(frozen=True)
class BalConfig:
    """BAL's hyper-parameters (a problem file's optional [bal] table overrides the defaults)."""

    lr: float = 0.5  # η of Eq. 26: on the gradient density g / Δt (sgd), in control units per iteration (adam)
    step: str = "sgd"  # "sgd" (Eq. 26) or "adam" (the same gradient, per-coordinate normalised: `normalised_step`)
    starts: int = 1  # candidate control sequences per start point at a table's step 0 (1: the warm start alone)
    init: str = "zeros"  # the first open-loop controls: "zeros" or "line" (straight to the goal)
    lr_decay: float = 100.0  # Robbins–Monro: η_k = η / (1 + k / lr_decay), k the iteration (or episode)
    epsilon: float = 0.1  # Eq. 27: probability that an episode explores
    lam: float = 0.1  # Eq. 27: noise level λ (control units)
    explore_std: tuple[float, ...] = ()  # Eq. 27: Σ^{1/2} diagonal, one per control component (empty: Σ = I)
    minibatch: int = 8  # model rollouts per start point and SGD iteration
    iterations: int = 60  # SGD iterations per step of the feedback table (warm-started from the step before)
    first_iterations: int = 300  # SGD iterations at step 0 of the table (warm-started from the open-loop controls)
    grid: int = 5  # G: the table's G × G state grid per step (Eq. 28)
    samples: int = 256  # M of Eq. 28: samples of X_n that the region covers
    quantile: float = 0.0  # the region spans the [q, 1 − q] quantiles of the samples …
    pad: float = 0.15  # … widened by this fraction of its width on each side …
    min_width: float = 6.0  # … and at least this many one-step noise stds σ √Δt wide (step 0 from a fixed x0)
    cap: bool = True  # sgd: cap η at 1 / (the largest curvature), estimated per BAL call (`first_step`)
    extend: bool = True  # warm starts of step n > 0 extended linearly beyond the previous box (False: clamped)
    average: float = 0.5  # Polyak–Ruppert: the result is the mean iterate over this last fraction of the iterations
    table: str = "eq28"  # how the feedback table is built: "eq28" (`feedback_policy`) or "closed_loop"
    # closed_loop (learner/algos/bal_closed_loop.py): the table's entries improved on paths that follow it
    nominals: int = 1  # nominal paths (from x0 and random starts in the start box) the starting law tracks
    pull_time: float = 0.3  # τ of the tracking law u = ū_n + (x̄_n − x) / τ
    table_iterations: int = 300  # normalised steps on the table's entries
    table_batch: int = 256  # model rollouts per step
    table_lr: float = 0.1  # its first rate (control units), falling to a fifth

    def __post_init__(self) -> None:
        for f in fields(self):  # a problem file's 5.0 or "false" would fail deep inside, or switch the wrong way
            value, kinds = getattr(self, f.name), SETTING_TYPES.get(str(f.type))
            if kinds and (not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool))):
                raise ValueError(f"BAL setting {f.name} must be {str(f.type)}, got {value!r}")
        if not (self.lr > 0 and self.lr_decay > 0 and 0 <= self.epsilon <= 1 and self.lam >= 0):
            raise ValueError(f"need lr > 0, lr_decay > 0, 0 ≤ epsilon ≤ 1 and lam ≥ 0: {self}")
        if any(s < 0 for s in self.explore_std):
            raise ValueError(f"explore_std must be ≥ 0, got {self.explore_std}")
        if min(self.minibatch, self.iterations, self.first_iterations, self.samples) < 1 or self.grid < 2:
            raise ValueError(f"need minibatch, iterations, first_iterations, samples ≥ 1 and grid ≥ 2: {self}")
        if not (0 <= self.quantile < 0.5 and self.pad >= 0 and self.min_width > 0 and 0 <= self.average < 1):
            raise ValueError(f"need 0 ≤ quantile < 0.5, pad ≥ 0, min_width > 0 and 0 ≤ average < 1: {self}")
        if self.step not in STEPS or self.init not in INITS or self.starts < 1:
            raise ValueError(f"need step in {STEPS}, init in {INITS} and starts ≥ 1: {self}")
        if self.table not in TABLES or min(self.nominals, self.table_iterations, self.table_batch) < 1 or not (
                self.pull_time > 0 and self.table_lr > 0):
            raise ValueError(f"need table in {TABLES}, nominals, table_iterations, table_batch ≥ 1, pull_time > 0 and "
                             f"table_lr > 0: {self}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "BalConfig":
        """From a dict such as a problem file's [bal] table: ValueError naming unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown BAL setting(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if k == "explore_std" else v for k, v in values.items()})

    def step_size(self, eta: float, k: int) -> float:
        """η_k of Eq. 26 from the first step η (Robbins–Monro: Σ η_k = ∞, Σ η_k² < ∞)."""
        return eta / (1.0 + k / self.lr_decay)


def _per_step(theta: np.ndarray, batch: int, steps: int) -> np.ndarray:
    """θ (P,) or (B, P) → one row per (path, step), (B·steps, P)."""
    theta = np.asarray(theta, dtype=float)
    rows = np.broadcast_to(theta, (batch, theta.shape[-1]))
    return np.repeat(rows, steps, axis=0)


def rollout(model: Model, dt: float, sigma: float, x0: np.ndarray, u: np.ndarray, theta: np.ndarray,
            noise: np.ndarray) -> np.ndarray:
    """Euler–Maruyama paths (Eq. 12/17) under the controls u (B, K, m) from x0 (B, 2) with standard normal
    noise (B, K, 2): the states (B, K + 1, 2)."""
    batch, steps = u.shape[:2]
    x = np.empty((batch, steps + 1, 2))
    x[:, 0] = x0
    for n in range(steps):
        x[:, n + 1] = x[:, n] + dt * model.drift(x[:, n], u[:, n], theta) + sigma * np.sqrt(dt) * noise[:, n]
    return x


def path_cost(model: Model, dt: float, x: np.ndarray, u: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """The discretised cost of each path, Σ_n f(X_n, u_n) Δt + h(X_N): (B,)."""
    batch, steps, m = u.shape
    f = model.running(x[:, :-1].reshape(-1, 2), u.reshape(-1, m), _per_step(theta, batch, steps))
    return dt * f.reshape(batch, steps).sum(axis=1) + model.terminal(x[:, -1])


def adjoint_gradient(model: Model, dt: float, x: np.ndarray, u: np.ndarray,
                     theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sample-wise adjoint (Eq. 24) along paths x (B, K + 1, 2) under controls u (B, K, m), and the
    gradient of the discretised cost (Eq. 25 with Y_{n+1}; see the module docstring): (g (B, K, m), Y (B, K + 1, 2))."""
    batch, steps, m = u.shape
    xs, us, th = x[:, :-1].reshape(-1, 2), u.reshape(-1, m), _per_step(theta, batch, steps)
    b_x = model.drift_x(xs, us, th).reshape(batch, steps, 2, 2)
    b_u = model.drift_u(xs, us, th).reshape(batch, steps, 2, m)
    f_x = model.running_x(xs, us, th).reshape(batch, steps, 2)
    f_u = model.running_u(xs, us, th).reshape(batch, steps, m)
    y = np.empty((batch, steps + 1, 2))
    y[:, steps] = model.terminal_x(x[:, steps])
    for n in range(steps - 1, -1, -1):
        y[:, n] = y[:, n + 1] + dt * (np.einsum("bij,bi->bj", b_x[:, n], y[:, n + 1]) + f_x[:, n])
    return dt * (f_u + np.einsum("bnim,bni->bnm", b_u, y[:, 1:])), y


def sgd_step(model: Model, u: np.ndarray, g: np.ndarray, dt: float, eta: float) -> np.ndarray:
    """Eq. 26: u ← P(u − η g / Δt), g the pathwise gradient of Eq. 25 (so g / Δt its density)."""
    return model.project(u - eta * g / dt)


def normalised_step(model: Model, u: np.ndarray, g: np.ndarray, dt: float, eta: float, moments: np.ndarray,
                    k: int) -> np.ndarray:
    """Adam's step on the same gradient: u ← P(u − η m̂ / (√v̂ + ε)), m̂ and v̂ the bias-corrected running means
    of g / Δt and its square; `moments` (2, *u.shape) is updated in place, k counts the steps taken with it."""
    (b1, b2), d = ADAM_BETAS, g / dt
    moments[0] = b1 * moments[0] + (1 - b1) * d
    moments[1] = b2 * moments[1] + (1 - b2) * d * d
    m_hat, v_hat = moments[0] / (1 - b1 ** (k + 1)), moments[1] / (1 - b2 ** (k + 1))
    return model.project(u - eta * m_hat / (np.sqrt(v_hat) + ADAM_EPS))


def descend(cfg: BalConfig, model: Model, u: np.ndarray, g: np.ndarray, dt: float, eta: float,
            moments: np.ndarray, k: int) -> np.ndarray:
    """The k-th update (Eq. 26's η_k) by the configured step: `sgd_step` or `normalised_step`."""
    if cfg.step == "adam":
        return normalised_step(model, u, g, dt, cfg.step_size(eta, k), moments, k)
    return sgd_step(model, u, g, dt, cfg.step_size(eta, k))


def straight_line(problem: Problem, x0: np.ndarray, steps: int) -> np.ndarray:
    """Constant controls from x0 (B, 2) straight to the goal in `steps` steps, projected: (B, steps, m)
    (zeros without a goal or for a scalar control)."""
    x0 = np.asarray(x0, dtype=float)
    m = problem.model.control_dim
    if problem.goal is None or m != 2:
        return np.zeros((len(x0), steps, m))
    u = problem.model.project((np.asarray(problem.goal) - x0) / (steps * problem.dt))
    return np.repeat(u[:, None], steps, axis=1)


def initial_controls(problem: Problem, cfg: BalConfig) -> np.ndarray:
    """The first open-loop controls from x0 (`cfg.init`): (N, m)."""
    if cfg.init == "line":
        return straight_line(problem, np.asarray(problem.x0, float)[None], problem.steps)[0]
    return np.zeros((problem.steps, problem.model.control_dim))


def candidates(problem: Problem, x0: np.ndarray, warm: np.ndarray, count: int,
               rng: np.random.Generator) -> np.ndarray:
    """Multi-start candidates for start states x0 (B, 2) over the remaining horizon K of warm (B, K, m): the warm
    start, then (with a goal) the straight line to the goal, then paths through one or two (alternately) uniform
    random waypoints in the domain, straight from one to the next in equal times (without a goal the warm start
    plus Eq. 27's noise λ ξ). Returns (B, count, K, m)."""
    batch, steps, m = warm.shape
    out = np.repeat(np.asarray(warm, float)[:, None], count, axis=1)
    if count == 1:
        return out
    if problem.goal is None or m != 2:
        out[:, 1:] += rng.standard_normal(out[:, 1:].shape) * max(problem.u_max, 1.0) * 0.1
        return problem.model.project(out)
    out[:, 1] = straight_line(problem, x0, steps)
    for c in range(2, count):  # through 1 or 2 random waypoints (alternately): equal times per leg
        legs = 2 + (c % 2)
        points = [np.asarray(x0, float), *rng.uniform(problem.domain_low, problem.domain_high, (legs - 1, batch, 2)),
                  np.broadcast_to(np.asarray(problem.goal, float), (batch, 2))]
        edges = np.linspace(0, steps, legs + 1).astype(int)
        for leg in range(legs):
            span = max(edges[leg + 1] - edges[leg], 1)
            out[:, c, edges[leg]:edges[leg + 1]] = ((points[leg + 1] - points[leg]) / (span * problem.dt))[:, None]
    return problem.model.project(out)


def exploration(cfg: BalConfig, steps: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """Eq. 27 for one episode: with probability ε the noise λ Σ^{1/2} ξ_n per step, else zeros: (steps, m)."""
    scale = np.asarray(cfg.explore_std or (1.0,) * m, dtype=float)
    if scale.shape != (m,):
        raise ValueError(f"explore_std needs one value per control component ({m}), got {cfg.explore_std}")
    if rng.random() >= cfg.epsilon:
        return np.zeros((steps, m))
    return cfg.lam * scale * rng.standard_normal((steps, m))


def curvature(model: Model, dt: float, sigma: float, x0: np.ndarray, u: np.ndarray, theta: np.ndarray,
              rng: np.random.Generator, iterations: int = POWER_ITERATIONS) -> float:
    """The largest curvature of the cost density over the batch: power iteration on pathwise-gradient
    differences (H v ≈ (g(u + h v) − g(u)) / (h Δt), one frozen noise path per start), +10 % margin."""
    noise = np.broadcast_to(rng.standard_normal((1, u.shape[1], 2)), (len(u), u.shape[1], 2))

    def grad(w: np.ndarray) -> np.ndarray:
        return adjoint_gradient(model, dt, rollout(model, dt, sigma, x0, w, theta, noise), w, theta)[0]

    g0, v, lam = grad(u), rng.standard_normal(u.shape), np.zeros(len(u))
    h = 1e-4 * (1.0 + np.abs(u).max())
    for _ in range(iterations):
        v /= np.linalg.norm(v.reshape(len(u), -1), axis=1)[:, None, None]
        hv = (grad(u + h * v) - g0) / (h * dt)
        lam = np.linalg.norm(hv.reshape(len(u), -1), axis=1)
        v = hv
    return 1.1 * float(lam.max())


def first_step(model: Model, dt: float, sigma: float, x0: np.ndarray, u: np.ndarray, theta: np.ndarray,
               cfg: BalConfig, rng: np.random.Generator) -> float:
    """η of Eq. 26: `cfg.lr`, capped at 1 / (the largest curvature) so that no direction oscillates or diverges
    (long horizons with unstable drift are stiff: the LQ problem's top curvature is 30× its lowest); `cfg.lr`
    alone without `cfg.cap` or with the normalised step (its η is in control units)."""
    if not cfg.cap or cfg.step == "adam":
        return cfg.lr
    return min(cfg.lr, 1.0 / max(curvature(model, dt, sigma, np.asarray(x0, float), u, theta, rng), 1e-12))


def open_loop(model: Model, dt: float, sigma: float, x0: np.ndarray, u: np.ndarray, theta: np.ndarray,
              cfg: BalConfig, rng: np.random.Generator, iterations: int) -> tuple[np.ndarray, int]:
    """Open-loop BAL from start states x0 (B, 2) with warm-start controls u (B, K, m) at θ (P,) or (B, P):
    `iterations` SGD steps (Eq. 26), each on `cfg.minibatch` model rollouts per start (shared noise across the
    batch), the result averaged over the last `cfg.average` fraction of them. Returns (controls (B, K, m), model
    rollouts simulated)."""
    batch, steps, m = u.shape
    mb = cfg.minibatch
    theta_b = np.repeat(np.broadcast_to(np.asarray(theta, float), (batch, np.shape(theta)[-1])), mb, axis=0)
    x0_b = np.repeat(np.asarray(x0, float), mb, axis=0)
    u = model.project(np.array(u, dtype=float))
    eta = first_step(model, dt, sigma, x0, u, theta, cfg, rng)
    first_mean = min(int(iterations * (1 - cfg.average)), iterations - 1)  # average = 0: the last iterate
    mean, moments = np.zeros_like(u), np.zeros((2, *u.shape))
    for k in range(iterations):
        noise = np.broadcast_to(rng.standard_normal((1, mb, steps, 2)), (batch, mb, steps, 2))
        u_b = np.repeat(u, mb, axis=0)
        x = rollout(model, dt, sigma, x0_b, u_b, theta_b, noise.reshape(batch * mb, steps, 2))
        g, _ = adjoint_gradient(model, dt, x, u_b, theta_b)
        u = descend(cfg, model, u, g.reshape(batch, mb, steps, m).mean(axis=1), dt, eta, moments, k)
        if k >= first_mean:
            mean += u / (iterations - first_mean)
    curvature_rollouts = POWER_ITERATIONS + 1 if cfg.cap and cfg.step == "sgd" else 0
    return mean, batch * (mb * iterations + curvature_rollouts)


def multi_start(problem: Problem, x0: np.ndarray, cands: np.ndarray, theta: np.ndarray, cfg: BalConfig,
                rng: np.random.Generator, iterations: int) -> tuple[np.ndarray, int]:
    """Open-loop BAL from every candidate cands (B, C, K, m) of every start x0 (B, 2), all in one batch, keeping per
    start the one with the lowest model cost at θ (P,) or (B, P) (the mean over 4 · minibatch rollouts with
    noise shared by all candidates). Returns (controls (B, K, m), model rollouts simulated)."""
    model, dt, sigma = problem.model, problem.dt, problem.sigma
    batch, count, steps, m = cands.shape
    theta_c = np.repeat(np.broadcast_to(np.asarray(theta, float), (batch, np.shape(theta)[-1])), count, axis=0)
    x0_c = np.repeat(np.asarray(x0, float), count, axis=0)
    u, rollouts = open_loop(model, dt, sigma, x0_c, cands.reshape(-1, steps, m), theta_c, cfg, rng, iterations)
    if count == 1:
        return u, rollouts
    mb = 4 * cfg.minibatch
    noise = np.broadcast_to(rng.standard_normal((1, mb, steps, 2)), (batch * count, mb, steps, 2))
    u_e, th_e = np.repeat(u, mb, axis=0), np.repeat(theta_c, mb, axis=0)
    x = rollout(model, dt, sigma, np.repeat(x0_c, mb, axis=0), u_e, th_e, noise.reshape(-1, steps, 2))
    cost = path_cost(model, dt, x, u_e, th_e).reshape(batch, count, mb).mean(axis=2)
    best = np.argmin(cost, axis=1)
    return u.reshape(batch, count, steps, m)[np.arange(batch), best], rollouts + batch * count * mb


def bilinear(values: np.ndarray, low: np.ndarray, high: np.ndarray, x: np.ndarray, clamp: bool = True) -> np.ndarray:
    """Bilinear interpolation of grid values (T, G, G, D) on the box [low, high] at points x (T, M, 2),
    clamped to the box (or extended linearly from its edge cells): (T, M, D). Grid point (i, j) is at
    low + (i, j) · (high − low) / (G − 1)."""
    t_count, g = values.shape[0], values.shape[1]
    s = ((np.clip(x, low, high) if clamp else x) - low) / (high - low) * (g - 1)
    i0 = np.clip(np.floor(s).astype(int), 0, g - 2)
    w = (s - i0)[..., None]
    t = np.arange(t_count)[:, None]
    i, j = i0[..., 0], i0[..., 1]
    return ((1 - w[..., 0, :]) * ((1 - w[..., 1, :]) * values[t, i, j] + w[..., 1, :] * values[t, i, j + 1])
            + w[..., 0, :] * ((1 - w[..., 1, :]) * values[t, i + 1, j] + w[..., 1, :] * values[t, i + 1, j + 1]))


def region(samples: np.ndarray, cfg: BalConfig, floor: float, low: np.ndarray,
           high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 28's region: a box over the [q, 1 − q] quantiles of samples (M, 2), padded, at least `floor` wide,
    inside the domain [low, high]."""
    lo, hi = np.quantile(samples, [cfg.quantile, 1 - cfg.quantile], axis=0)
    lo, hi = lo - cfg.pad * (hi - lo), hi + cfg.pad * (hi - lo)
    half = np.maximum((hi - lo) / 2, floor / 2)
    centre = np.clip((lo + hi) / 2, low + half, high - half)
    return np.maximum(centre - half, low), np.minimum(centre + half, high)


def theta_grid(theta_axes: tuple[np.ndarray, ...], theta_hat: np.ndarray) -> np.ndarray:
    """Every θ of the axes' product in the table's order (the first axis slowest): (T, P); θ̂ alone without axes."""
    if not theta_axes:
        return np.asarray(theta_hat, dtype=float)[None]
    if len(theta_axes) != len(theta_hat):
        raise ValueError(f"need one θ axis per component ({len(theta_hat)}), got {len(theta_axes)}")
    for axis in theta_axes:
        if np.ndim(axis) != 1 or len(axis) < 1 or np.any(np.diff(axis) <= 0):
            raise ValueError(f"every θ axis must be 1-D and strictly increasing, got {axis}")
    return np.array(list(itertools.product(*theta_axes)), dtype=float)


def feedback_policy(problem: Problem, theta_hat: np.ndarray, warm: np.ndarray, cfg: BalConfig,
                    rng: np.random.Generator, theta_axes: tuple[np.ndarray, ...] = ()) -> tuple[PolicyTable, int]:
    """The Eq. 28 feedback table on the model at θ̂ (or at every θ of `theta_axes`), warm-started from the
    open-loop controls `warm` (N, m). Returns (table, model rollouts simulated)."""
    model, dt, sigma, steps, g = problem.model, problem.dt, problem.sigma, problem.steps, cfg.grid
    m = model.control_dim
    warm = np.asarray(warm, dtype=float)
    if warm.shape != (steps, m):
        raise ValueError(f"warm-start controls must be (steps, m) = {(steps, m)}, got {warm.shape}")
    thetas = theta_grid(tuple(np.asarray(a, float) for a in theta_axes), theta_hat)
    t_count, m_count = len(thetas), cfg.samples
    if problem.start_low is None:
        x = np.broadcast_to(np.asarray(problem.x0, float), (t_count, m_count, 2)).copy()
    else:
        x = rng.uniform(problem.start_low, problem.start_high, (t_count, m_count, 2))
    floor = cfg.min_width * sigma * np.sqrt(dt) or 1e-6 * float(np.max(problem.domain_high - problem.domain_low))
    u_table = np.empty((t_count, steps, g, g, m))
    low, high = np.empty((steps, 2)), np.empty((steps, 2))
    theta_pts = np.repeat(thetas, g * g, axis=0)
    theta_samples = np.repeat(thetas, m_count, axis=0)
    lin = np.linspace(0.0, 1.0, g)
    rollouts, prev = 0, None
    for n in range(steps):
        low[n], high[n] = region(x.reshape(-1, 2), cfg, floor, problem.domain_low, problem.domain_high)
        span = high[n] - low[n]
        pts = np.stack(np.meshgrid(low[n, 0] + lin * span[0], low[n, 1] + lin * span[1], indexing="ij"), -1)
        starts = np.broadcast_to(pts.reshape(1, g * g, 2), (t_count, g * g, 2))
        horizon = steps - n
        if prev is None:  # step 0: the open-loop controls (and the multi-start candidates)
            u0 = np.broadcast_to(warm[n:], (t_count * g * g, horizon, m))
            cands = candidates(problem, starts.reshape(-1, 2), u0, cfg.starts, rng)
            u, count = multi_start(problem, starts.reshape(-1, 2), cands, theta_pts, cfg, rng, cfg.first_iterations)
        else:  # the previous step's solutions, one step on, interpolated at the new grid points (extended
            # linearly beyond the previous box, which the new one outgrows while the samples spread — right for
            # LQ's linear policy; `extend = False` clamps instead: near the forge's cores and the maze's obstacle
            # edges the policy is far from linear, and extrapolated warm starts there sit at the control bound
            # where the normalised step cannot undo them in `iterations` steps)
            tails, p_low, p_high = prev
            u0 = bilinear(tails.reshape(t_count, g, g, -1), p_low, p_high, starts, clamp=not cfg.extend)
            u, count = open_loop(model, dt, sigma, starts.reshape(-1, 2), u0.reshape(-1, horizon, m), theta_pts, cfg,
                                 rng, cfg.iterations)
        rollouts += count
        u = u.reshape(t_count, g, g, horizon, m)
        u_table[:, n] = u[:, :, :, 0]
        prev = (u[:, :, :, 1:], low[n], high[n])
        # Eq. 28: the samples one step on under the new table row
        u_x = model.project(bilinear(u_table[:, n], low[n], high[n], x))
        drift = model.drift(x.reshape(-1, 2), u_x.reshape(-1, m), theta_samples).reshape(x.shape)
        x = x + dt * drift + sigma * np.sqrt(dt) * rng.standard_normal(x.shape)
    shape = tuple(len(a) for a in theta_axes)
    table = PolicyTable(theta_axes=tuple(np.asarray(a, float) for a in theta_axes), low=low, high=high,
                        u=u_table.reshape(*shape, steps, g, g, m), u_max=float(problem.u_max))
    return table, rollouts
