"""The true-parameter oracle: dynamic programming on a grid (a semi-Lagrangian HJB solve), issue #23 §3.

With θ_true known, the Euler-discretised control problem is solved backward in time on G×G nodes over the
domain:

    V_N(x) = h(x),   V_n(x) = min_a [ f(x, a; θ) Δt + E V_{n+1}(x + b(x, a; θ) Δt + σ√Δt ξ) ],

the expectation by a tensor Gauss–Hermite rule in ξ (`quadrature` points per axis), V_{n+1} read by bilinear
interpolation (points clamped into the domain), a over the polar control set {0} ∪ speeds × directions
(learner/bal/discrete.polar_actions). The dynamics are time-homogeneous, so the map "node, action → weights on
the nodes of V_{n+1}" is one sparse matrix, built once and applied N times.

Policies: `OracleResult.table` (a learner/bal/table.PolicyTable, theta_axes = (), the domain as every step's box:
the argmin control at each node, interpolated bilinearly between nodes — the format BAL's policy has) and
`OracleResult.lookahead` (the exact one-step DP policy at any state: the argmin of the bracket above at x).

For the maze also `geodesic_cost`: with f = c(x)|u|² and no noise, a path of c-weighted length L = ∫ √c ds
costs at least L²/T (Cauchy–Schwarz; equality at constant weighted speed L/T), so Dijkstra on a 16-neighbour
grid graph (scipy.sparse.csgraph) gives a cross-check of the DP value in the small-noise limit.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from learner.bal.discrete import polar_actions

__all__ = ["OracleConfig", "OracleResult", "solve", "geodesic_cost"]


@dataclass(frozen=True)
class OracleConfig:
    grid: int = 41  # nodes per axis over the domain
    speeds: int = 8  # control magnitudes k·u_max/speeds
    directions: int = 32  # steering angles
    quadrature: int = 3  # Gauss–Hermite points per noise axis

    def __post_init__(self) -> None:
        if self.grid < 2 or self.quadrature < 1:
            raise ValueError(f"need grid >= 2 and quadrature >= 1: {self}")


@dataclass(frozen=True)
class _Grid:
    """G×G nodes over [low, high]; node index i·G + j, i along x, j along y (the PolicyTable's layout)."""
    low: np.ndarray
    high: np.ndarray
    count: int

    @property
    def nodes(self) -> np.ndarray:
        axes = [np.linspace(self.low[k], self.high[k], self.count) for k in range(2)]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)

    def transition(self, points: np.ndarray, shifts: np.ndarray, weights: np.ndarray):
        """Sparse (M, G²) matrix: row m averages, over the quadrature shifts (Q,2) with weights (Q,), the bilinear
        interpolation weights of points[m] + shift (clamped into the box)."""
        from scipy.sparse import csr_matrix

        G, M = self.count, len(points)
        p = points[:, None, :] + shifts[None]  # (M, Q, 2)
        u = (np.clip(p, self.low, self.high) - self.low) / (self.high - self.low) * (G - 1)
        i0 = np.minimum(np.floor(u).astype(np.int64), G - 2)
        fr = u - i0
        rows, cols, vals = [], [], []
        for di in (0, 1):
            for dj in (0, 1):
                w = np.where(di, fr[..., 0], 1 - fr[..., 0]) * np.where(dj, fr[..., 1], 1 - fr[..., 1])
                rows.append(np.broadcast_to(np.arange(M)[:, None], w.shape))
                cols.append((i0[..., 0] + di) * G + i0[..., 1] + dj)
                vals.append(w * weights[None])
        flat = [np.concatenate([a.ravel() for a in v]) for v in (rows, cols, vals)]
        return csr_matrix((flat[2], (flat[0], flat[1])), shape=(M, G * G))


@dataclass(frozen=True)
class OracleResult:
    value: np.ndarray  # (N+1, G, G) V_n at the nodes
    control: np.ndarray  # (N, G, G, m) argmin control at the nodes
    actions: np.ndarray  # (A, m)
    seconds: float
    _problem: object
    _theta: np.ndarray
    _grid: _Grid
    _shifts: np.ndarray
    _weights: np.ndarray

    def value_at(self, x: np.ndarray, n: int = 0) -> np.ndarray:
        """V_n at positions x (B,2) by bilinear interpolation."""
        T = self._grid.transition(np.atleast_2d(x), np.zeros((1, 2)), np.ones(1))
        return T @ self.value[n].ravel()

    @property
    def table(self):
        """The node controls as a PolicyTable (theta_axes = (), box = the domain at every step)."""
        from learner.bal.table import PolicyTable

        N = len(self.control)
        return PolicyTable(theta_axes=(), low=np.tile(self._grid.low, (N, 1)), high=np.tile(self._grid.high, (N, 1)),
                           u=self.control, u_max=float(self._problem.u_max))

    def lookahead(self, n: int, x: np.ndarray) -> np.ndarray:
        """The DP policy at states x (B,2): argmin_a [f Δt + E V_{n+1}(x + bΔt + σ√Δt ξ)] over the action set."""
        n = int(np.clip(n, 0, len(self.control) - 1))
        q = _q_values(self._problem, self._theta, self._grid, np.asarray(x, np.float64), self.actions,
                      self._shifts, self._weights, self.value[n + 1].ravel())
        return self.actions[np.argmin(q, axis=1)]


def _quadrature(problem, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Tensor Gauss–Hermite rule for σ√Δt ξ, ξ ~ N(0, I₂): shifts (Q,2) and weights (Q,) summing to 1."""
    z, w = np.polynomial.hermite_e.hermegauss(order)
    w = w / w.sum()
    zz = np.stack(np.meshgrid(z, z, indexing="ij"), axis=-1).reshape(-1, 2)
    return zz * problem.sigma * np.sqrt(problem.dt), np.outer(w, w).ravel()


def _q_values(problem, theta, grid: _Grid, x, actions, shifts, weights, v_next) -> np.ndarray:
    """(B, A): f(x, a)Δt + E V_next(x + b(x, a)Δt + noise) for states x (B,2) and every action."""
    B, A = len(x), len(actions)
    xs = np.repeat(x, A, axis=0)
    us = np.tile(actions, (B, 1))
    model, dt = problem.model, problem.dt
    running = model.running(xs, us, theta) * dt
    T = grid.transition(xs + model.drift(xs, us, theta) * dt, shifts, weights)
    return (running + T @ v_next).reshape(B, A)


def solve(problem, cfg: OracleConfig = OracleConfig(), theta: np.ndarray | None = None) -> OracleResult:
    """Backward DP with the true θ (or `theta`) on cfg.grid² nodes over the domain."""
    t0 = time.perf_counter()
    th = np.asarray(problem.theta_true if theta is None else theta, np.float64)
    grid = _Grid(np.asarray(problem.domain_low, np.float64), np.asarray(problem.domain_high, np.float64), cfg.grid)
    actions = polar_actions(problem.model.control_dim, problem.u_max, cfg.speeds, cfg.directions)
    shifts, weights = _quadrature(problem, cfg.quadrature)
    nodes = grid.nodes
    G, A, N = cfg.grid, len(actions), problem.steps
    xs, us = np.repeat(nodes, A, axis=0), np.tile(actions, (len(nodes), 1))
    running = problem.model.running(xs, us, th) * problem.dt
    T = grid.transition(xs + problem.model.drift(xs, us, th) * problem.dt, shifts, weights)
    value = np.empty((N + 1, G * G))
    best = np.empty((N, G * G), np.int64)
    value[N] = problem.model.terminal(nodes)
    for n in range(N - 1, -1, -1):
        q = (running + T @ value[n + 1]).reshape(G * G, A)
        best[n] = np.argmin(q, axis=1)
        value[n] = q[np.arange(G * G), best[n]]
    return OracleResult(value=value.reshape(N + 1, G, G), control=actions[best].reshape(N, G, G, -1),
                        actions=actions, seconds=time.perf_counter() - t0, _problem=problem, _theta=th, _grid=grid,
                        _shifts=shifts, _weights=weights)


def geodesic_cost(problem, grid: int = 101, theta: np.ndarray | None = None,
                  start: np.ndarray | None = None) -> float:
    """Deterministic cross-check for the maze: L²/T with L the least ∫√c ds from `start` (default x0) to the goal
    (Dijkstra on grid² nodes, 16 neighbours, edge weight = length × √c at the edge midpoint, c(x) = f(x, unit u)).
    Ignores the speed bound and the terminal cost (reaching the goal exactly costs nothing there)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    if problem.goal is None:
        raise ValueError("geodesic_cost needs a problem with a goal")
    th = np.asarray(problem.theta_true if theta is None else theta, np.float64)
    g = _Grid(np.asarray(problem.domain_low, np.float64), np.asarray(problem.domain_high, np.float64), grid)
    nodes = g.nodes
    ij = np.stack(np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij"), -1).reshape(-1, 2)
    steps = [(1, 0), (0, 1), (1, 1), (1, -1), (2, 1), (1, 2), (2, -1), (1, -2)]  # + reverses: 16 neighbours
    rows, cols, wts = [], [], []
    for di, dj in steps:
        tgt = ij + (di, dj)
        ok = np.all((tgt >= 0) & (tgt < grid), axis=1)
        a, b = np.flatnonzero(ok), tgt[ok, 0] * grid + tgt[ok, 1]
        mid = (nodes[a] + nodes[b]) / 2
        unit = np.tile([[1.0] + [0.0] * (problem.model.control_dim - 1)], (len(a), 1))
        c = problem.model.running(mid, unit, th)
        rows.append(a), cols.append(b), wts.append(np.linalg.norm(nodes[b] - nodes[a], axis=1) * np.sqrt(c))
    graph = csr_matrix((np.concatenate(wts), (np.concatenate(rows), np.concatenate(cols))), shape=(grid ** 2,) * 2)
    x0 = np.asarray(problem.x0 if start is None else start, np.float64)
    src, dst = (int(np.argmin(np.linalg.norm(nodes - p, axis=1))) for p in (x0, np.asarray(problem.goal, np.float64)))
    L = dijkstra(graph, directed=False, indices=src)[dst]
    return float(L ** 2 / (problem.steps * problem.dt))
