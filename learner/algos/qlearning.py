"""Tabular ε-greedy Q-learning (Watkins & Dayan 1992; Sutton & Barto §6.5) on the BAL environments (issue #23 §3).

The opponent of BAL on the forge and the maze, as in the paper (§4.2–4.3):
- state: the cell of a uniform G×G grid over the domain (learner/bal/discrete.Cells) and the step n; the table
  is time-indexed, Q[n, cell, action], because the horizon is finite with a terminal cost;
- actions: {0} ∪ speeds × directions (learner/bal/discrete.polar_actions; the paper's force F and angle φ);
- reward r_n = −(observed step cost), and −h(X_N) is added at the last step; the target is
  r_n + max_a Q[n+1, s', a] (r_{N−1} − h(X_N) at the end), Q ← Q + α (target − Q);
- ε-greedy exploration, ε falling linearly from eps_start to eps_end over the first eps_decay of the episodes;
- Q starts at −h(cell centre) for every step and action (init = "terminal": the terminal cost is known to the
  agent, only θ is not; the start points the agent at the goal, as potential-based shaping would), or at 0
  (init = "zero": above every return, since all costs are ≥ 0 — optimistic, so untried actions look good).

Vectorised: `batch` agents run in lockstep on one SdeEnv and share the table. At each step the temporal-
difference errors of the agents that took the same (n, cell, action) are averaged and that entry moves α times
the mean error (one update per entry per step, so a crowded cell is not over-stepped). `episodes` counts agent
episodes (batch × rounds).

`tune` picks the cell count and the episode budget on selection seeds, so Q-learning is a fair opponent.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from learner.bal.discrete import Cells, polar_actions
from learner.bal.rollout import rollout

__all__ = ["QConfig", "QPolicy", "QResult", "train", "TuneResult", "tune"]


@dataclass(frozen=True)
class QConfig:
    cells: int = 16  # G: cells per axis over the domain
    speeds: int = 2  # control magnitudes k·u_max/speeds
    directions: int = 8  # steering angles
    episodes: int = 2000  # agent episodes in total
    batch: int = 50  # agents in lockstep sharing the table
    alpha: float = 0.1  # step size
    eps_start: float = 1.0
    eps_end: float = 0.05
    eps_decay: float = 0.8  # fraction of the episodes over which ε falls linearly
    init: str = "terminal"  # Q's start: −h(cell centre) ("terminal") or 0 ("zero")
    seed: int = 0

    def __post_init__(self) -> None:
        if self.cells < 1 or self.episodes < 1 or self.batch < 1:
            raise ValueError(f"cells, episodes and batch must be >= 1: {self}")
        if not (0 < self.alpha <= 1 and 0 <= self.eps_end <= self.eps_start <= 1 and 0 < self.eps_decay <= 1):
            raise ValueError(f"need 0 < alpha <= 1, 0 <= eps_end <= eps_start <= 1, 0 < eps_decay <= 1: {self}")
        if self.init not in ("terminal", "zero"):
            raise ValueError(f"init must be 'terminal' or 'zero', got {self.init!r}")

    def epsilon(self, done: int) -> float:
        """ε after `done` agent episodes."""
        frac = min(1.0, done / (self.eps_decay * self.episodes))
        return self.eps_start + (self.eps_end - self.eps_start) * frac


@dataclass(frozen=True)
class QPolicy:
    """The greedy policy of a Q table: policy(n, x (B,2)) -> u (B,m), the best action of x's cell at step n."""
    q: np.ndarray  # (N, G², A), values = −cost-to-go
    cells: Cells
    actions: np.ndarray  # (A, m)

    def __call__(self, n: int, x: np.ndarray) -> np.ndarray:
        n = int(np.clip(n, 0, len(self.q) - 1))
        return self.actions[np.argmax(self.q[n, self.cells.index(x)], axis=1)]


@dataclass(frozen=True)
class QResult:
    policy: QPolicy
    config: QConfig
    episode_cost: np.ndarray  # (episodes,) total training cost of each agent episode
    seconds: float


def train(problem, cfg: QConfig) -> QResult:
    """Q-learning with `cfg` on SdeEnv(problem); the env seed and the exploration draws follow cfg.seed."""
    from firmware_sim.bal.env import SdeEnv

    t0 = time.perf_counter()
    cells = Cells.of(problem, cfg.cells)
    actions = polar_actions(problem.model.control_dim, problem.u_max, cfg.speeds, cfg.directions)
    N, A = problem.steps, len(actions)
    q = np.zeros((N, cells.size, A))
    if cfg.init == "terminal":
        q -= problem.model.terminal(cells.centres())[None, :, None]
    rng = np.random.default_rng(cfg.seed)
    costs = []
    done = 0
    rnd = 0
    while done < cfg.episodes:
        B = min(cfg.batch, cfg.episodes - done)
        env = SdeEnv(problem, batch=B, seed=cfg.seed * 1_000_003 + rnd)
        eps = cfg.epsilon(done)
        x = env.reset()
        s = cells.index(x)
        total = np.zeros(B)
        for n in range(N):
            greedy = np.argmax(q[n, s], axis=1)
            a = np.where(rng.random(B) < eps, rng.integers(0, A, B), greedy)
            x, cost = env.step(actions[a])
            s_next = cells.index(x)
            total += cost
            if n + 1 < N:
                target = -cost + q[n + 1, s_next].max(axis=1)
            else:
                h = env.terminal_cost(x)
                total += h
                target = -cost - h
            _average_update(q[n], s * A + a, target, cfg.alpha)
            s = s_next
        costs.append(total)
        done += B
        rnd += 1
    return QResult(policy=QPolicy(q=q, cells=cells, actions=actions), config=cfg,
                   episode_cost=np.concatenate(costs), seconds=time.perf_counter() - t0)


def _average_update(qn: np.ndarray, flat: np.ndarray, target: np.ndarray, alpha: float) -> None:
    """Q[n] entries `flat` (B,) move α × the mean TD error of the agents that share them."""
    view = qn.reshape(-1)
    keys, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    delta = np.bincount(inverse, weights=target - view[flat], minlength=len(keys)) / counts
    view[keys] += alpha * delta


@dataclass(frozen=True)
class TuneResult:
    best: QConfig  # the (cells, episodes) of least mean selection cost, the others as `base`
    rows: list[dict] = field(default_factory=list)  # {"cells", "episodes", "cost", "cost_ci95", "seconds"}


def tune(problem, seeds: list[int], cells_grid: list[int], budgets: list[int], base: QConfig = QConfig(),
         eval_episodes: int = 200) -> TuneResult:
    """Train every (cells, budget) once per selection seed and score its greedy policy by the mean total cost of
    `eval_episodes` rollouts (rollout seed = the selection seed); keep the least mean. Use report seeds that are
    disjoint from `seeds`."""
    from learner.stats import mean_ci95

    if not seeds or not cells_grid or not budgets:
        raise ValueError("tune needs at least one seed, one cell count and one budget")
    rows = []
    for episodes in budgets:
        for cells in cells_grid:
            cfgs = [replace(base, cells=cells, episodes=episodes, seed=s) for s in seeds]
            results = [train(problem, c) for c in cfgs]
            scores = np.concatenate([rollout(problem, r.policy, eval_episodes, seed=s).total
                                     for r, s in zip(results, seeds)])
            mean, ci = mean_ci95(scores)
            rows.append({"cells": cells, "episodes": episodes, "cost": mean, "cost_ci95": ci,
                         "seconds": float(np.mean([r.seconds for r in results]))})
    top = min(rows, key=lambda r: r["cost"])
    return TuneResult(best=replace(base, cells=top["cells"], episodes=top["episodes"]), rows=rows)
