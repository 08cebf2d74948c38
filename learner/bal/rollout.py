"""Run a feedback policy on a problem's true environment and score it (the numbers `eval bal` reports).

Every policy is a callable ``(n, x (B, 2)) -> u (B, m)``; the environment (firmware_sim/bal/env.SdeEnv) draws the
same starts and noise for the same seed and batch, so two policies run with one seed are paired episode by
episode. Scores per episode: the final distance to the goal and success (within the goal radius), the path cost
Σ f(X_n, u_n; θ*) Δt (the true running cost, without the cost meter's noise), the energy Σ |u_n|² Δt, and the total
cost (path cost + terminal cost).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from controller.modes.bal.problem import Problem
from firmware_sim.bal.env import SdeEnv
from learner.stats import mean_ci95

Policy = Callable[[int, np.ndarray], np.ndarray]


@dataclass
class Rollouts:
    states: np.ndarray  # (B, N + 1, 2)
    controls: np.ndarray  # (B, N, m)
    path_cost: np.ndarray  # (B,)
    energy: np.ndarray  # (B,)
    terminal: np.ndarray  # (B,)
    final_distance: np.ndarray | None  # (B,), problems with a goal
    success: np.ndarray | None  # (B,) bool

    @property
    def total(self) -> np.ndarray:
        return self.path_cost + self.terminal


def rollout(problem: Problem, policy: Policy, episodes: int, seed: int, x0: np.ndarray | None = None) -> Rollouts:
    """``episodes`` episodes of ``policy`` on the true environment, in one batch."""
    model, env = problem.model, SdeEnv(problem, batch=episodes, seed=seed)
    x = env.reset(x0)
    states, controls = [x], []
    path = np.zeros(episodes)
    energy = np.zeros(episodes)
    for n in range(problem.steps):
        u = model.project(np.asarray(policy(n, x), np.float64).reshape(episodes, model.control_dim))
        path += model.running(x, u, problem.theta_true) * problem.dt
        energy += np.einsum("bi,bi->b", u, u) * problem.dt
        x, _ = env.step(u)
        states.append(x)
        controls.append(u)
    dist = None if problem.goal is None else np.linalg.norm(x - problem.goal, axis=1)
    return Rollouts(np.stack(states, 1), np.stack(controls, 1), path, energy, model.terminal(x), dist,
                    None if dist is None else dist <= problem.goal_radius)


def _stat(x: np.ndarray) -> dict[str, float]:
    m, ci = mean_ci95(x)
    return {"mean": m, "ci95": ci}


def scores(r: Rollouts) -> dict[str, dict[str, float]]:
    """Mean and 95 % CI of every score."""
    out = {"path_cost": _stat(r.path_cost), "energy": _stat(r.energy), "total_cost": _stat(r.total)}
    if r.final_distance is not None:
        out["final_distance"] = _stat(r.final_distance)
        out["success"] = _stat(r.success.astype(np.float64))
    return out


def paired(a: Rollouts, b: Rollouts) -> dict[str, dict[str, float]]:
    """a − b per episode (same seed: same starts and noise), mean and 95 % CI."""
    out = {"path_cost": _stat(a.path_cost - b.path_cost), "energy": _stat(a.energy - b.energy),
           "total_cost": _stat(a.total - b.total)}
    if a.final_distance is not None:
        out["final_distance"] = _stat(a.final_distance - b.final_distance)
    return out
