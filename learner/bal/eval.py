"""`edgetune eval bal`: BAL against its references on a problem's true environment (issue #23 §4).

Seeds (disjoint): BAL and Q-learning train on seeds 0 … S − 1 (S = ``train_seeds``; their environments draw
from those); Q-learning's cell count is chosen on SELECTION_SEEDS; every number published comes from
``report`` episodes drawn from REPORT_SEED, the same episodes (starts and noise) for every policy, so the
comparisons are paired. Per method and budget: the mean over all report episodes of every training seed with
its 95 % CI, the per-seed means (the spread over training seeds) and their CI.

- LQ: BAL's table policy against the discrete Riccati policy of the true θ (paired), the closed-form optimum of
  the Euler-discretised problem (learner/bal/riccati.py) and the continuous one; the table's feedback gain K_n
  (least squares over its grid) against Riccati's; θ̂ against the truth and against the exact posterior of the
  same observed transitions (learner/bal/posterior.py: the Kalman filter of the direct filter's random walk).
- forge, maze: BAL at several real-episode budgets, Q-learning at ``q_factor``× those budgets and at
  ``q_large`` budgets where it does learn (its cell count tuned per budget on the selection seeds), the
  true-parameter DP oracle (learner/bal/oracle.py, the one-step look-ahead policy), and the straight line to the
  goal; success, final distance, path cost, energy, total cost.
Runs are cached per (problem file, overrides, budget, rebuild interval, seed) under ``cache`` (a later eval reuses
them; keyed by inputs, not code: empty it after changing the code).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from controller.modes.bal.problem import Problem, load_problem, with_overrides
from learner.bal import riccati
from learner.bal.rollout import Rollouts, paired, rollout, scores
from learner.bal.table import PolicyTable
from learner.stats import mean_ci95

REPORT_SEED = 10_000
SELECTION_SEEDS = (5_000, 5_001)
Log = Callable[[str], None]


@dataclass(frozen=True)
class EvalConfig:
    problem: str = "lq"
    budgets: tuple[int, ...] = (20,)  # BAL's real episodes
    train_seeds: int = 3
    report: int = 1000  # report episodes per policy and training seed
    theta_true: tuple[float, ...] | None = None
    x0: tuple[float, float] | None = None
    rebuild_every: int = 10  # BAL's table rebuilds (train bal --rebuild-every)
    q_factor: int = 10  # Q-learning's budget = q_factor × BAL's
    q_cells: tuple[int, ...] = (10, 20)  # Q-learning's grids, chosen per budget on the selection seeds
    q_large: tuple[int, ...] = (20_000,)  # Q-learning also at budgets where it learns (its best, not only 10×)
    cache: Path = Path("runs/bal")

    def __post_init__(self) -> None:
        if not self.budgets or min(self.budgets) < 1 or self.train_seeds < 1 or self.report < 2:
            raise ValueError("eval bal: budgets ≥ 1, train_seeds ≥ 1 and report ≥ 2 episodes")
        if min(self.q_large, default=1) < 1 or not self.q_cells or min(self.q_cells) < 1 or min(
                self.q_factor, self.rebuild_every) < 1:
            raise ValueError(f"eval bal: q_large budgets, q_cells, q_factor and rebuild_every must be ≥ 1 (q_cells "
                             f"not empty): {self}")

    def load(self) -> Problem:
        problem = load_problem(self.problem)
        return with_overrides(problem, None if self.theta_true is None else np.asarray(self.theta_true),
                              None if self.x0 is None else np.asarray(self.x0))

    def key(self) -> str:
        """The cache key of the instance: the problem file's content and the overrides."""
        p = self.load()
        text = json.dumps([p.source, self.theta_true, self.x0], sort_keys=True, default=str)
        return f"{p.name}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _bal_runs(cfg: EvalConfig, budget: int, log: Log) -> list[tuple[PolicyTable, dict, Path]]:
    from learner.bal.train import TrainConfig, train

    runs = []
    for seed in range(cfg.train_seeds):
        out = cfg.cache / cfg.key() / f"bal-e{budget}-r{cfg.rebuild_every}-s{seed}"
        tcfg = TrainConfig(problem=cfg.problem, episodes=budget, seed=seed, theta_true=cfg.theta_true, x0=cfg.x0,
                           rebuild_every=cfg.rebuild_every)
        done = (out / "table.npz").exists()
        summary = train(tcfg, out, resume=done)
        log(f"bal {cfg.problem} e{budget} s{seed}: {'reused' if done else 'trained'} ({summary['wall_s']} s)")
        runs.append((PolicyTable.load(out / "table.npz"), summary, out))
    return runs


def _table_policy(table: PolicyTable, theta_hat: np.ndarray) -> Callable[[int, np.ndarray], np.ndarray]:
    theta = np.asarray(theta_hat) if table.theta_axes else None
    return lambda n, x: table.control(n, x, theta)


def _pooled(results: list[Rollouts]) -> dict:
    """Scores over every seed's report episodes, plus the per-seed means and their spread."""
    pooled = Rollouts(*(None if getattr(results[0], f) is None else np.concatenate([getattr(r, f) for r in results])
                        for f in Rollouts.__dataclass_fields__))
    out = scores(pooled)
    for name, stat in out.items():
        per_seed = [scores(r)[name]["mean"] for r in results]
        stat["seeds"] = per_seed
        stat["seed_ci95"] = mean_ci95(np.array(per_seed))[1] if len(per_seed) > 1 else None
    return out


def table_gains(table: PolicyTable) -> np.ndarray:
    """The feedback gain K_n of a θ-free LQ table (u = −K_n x + c_n by least squares over its grid): (N, 2)."""
    gains = np.empty((table.steps, 2))
    for n in range(table.steps):
        pts = table.points(n).reshape(-1, 2)
        design = np.hstack([pts, np.ones((len(pts), 1))])
        coef, *_ = np.linalg.lstsq(design, table.u[n].reshape(len(pts), -1)[:, 0], rcond=None)
        gains[n] = -coef[:2]
    return gains


def evaluate_lq(cfg: EvalConfig, log: Log, png: Path | None = None) -> dict:
    from learner.bal import plots, posterior

    p = cfg.load()
    lq = riccati.lq_matrices(p)
    disc, cont = riccati.discrete(lq), riccati.continuous(lq)
    k_ric = disc.K[:, 0, :]
    ric_policy = lambda n, x: -(x @ disc.K[n].T)  # noqa: E731
    ric = rollout(p, ric_policy, cfg.report, REPORT_SEED)
    out = {"problem": p.name, "theta_true": p.theta_true.tolist(), "x0": p.x0.tolist(),
           "cost_riccati": disc.cost, "cost_riccati_continuous": cont.cost,
           "cost_zero": riccati.feedback_cost(lq, np.zeros_like(disc.K)),
           "cost_riccati_mc": scores(ric)["total_cost"], "budgets": {}}
    for budget in cfg.budgets:
        per_seed = []
        for table, summary, run in _bal_runs(cfg, budget, log):
            mine = rollout(p, _table_policy(table, summary["theta_hat"]), cfg.report, REPORT_SEED)
            diff = paired(mine, ric)["total_cost"]
            gains = table_gains(table)
            err = np.abs(gains - k_ric).max(axis=1) / np.abs(k_ric).max()
            th, sd = summary["theta_hat"][0], summary["theta_std"][0]
            seed_out = {"cost_bal": float(mine.total.mean()), "cost_ratio": 1.0 + diff["mean"] / disc.cost,
                        "cost_ratio_ci95": diff["ci95"] / disc.cost, "gain_rel_err_max": float(err.max()),
                        "theta_hat": th, "theta_std": sd,
                        "theta_abs_err": abs(th - p.theta_true[0]),
                        "theta_rel_err": abs(th - p.theta_true[0]) / max(abs(p.theta_true[0]), 1e-12),
                        "theta_within_2std": bool(abs(th - p.theta_true[0]) <= 2 * sd), "wall_s": summary["wall_s"]}
            paths = run / "paths.npz"
            if paths.exists():  # the exact posterior of the same observed transitions
                with np.load(paths) as z:
                    post = None
                    for xs, us in zip(z["states"], z["controls"]):
                        post = posterior.kalman_posterior(p.model, p.dt, p.sigma, p.prior_mean, p.prior_std,
                                                          p.filter.walk_std, xs, us, prior=post)[-1]
                seed_out["posterior_mean"], seed_out["posterior_std"] = float(post.mean[0]), float(post.std[0])
            per_seed.append(seed_out)
            if png is not None and budget == max(cfg.budgets) and len(per_seed) == 1:  # seed 0 at the largest budget
                plots.gains(np.arange(p.steps) * p.dt, gains, k_ric, png / f"{p.name}_gains.png")
        out["budgets"][str(budget)] = {**_summarise(per_seed, budget), "cost_riccati": disc.cost}
    # the flat keys: the largest budget's
    out.update({k: v for k, v in out["budgets"][str(max(cfg.budgets))].items() if k != "seeds"})
    return out


def _summarise(per_seed: list[dict], budget: int) -> dict:
    """The issue's LQ keys (mean over training seeds; `seeds` keeps every seed's values)."""
    keys = [k for k in per_seed[0] if all(isinstance(s.get(k), float) for s in per_seed)]
    summary = {k: float(np.mean([s[k] for s in per_seed])) for k in keys}
    summary["cost_ratio_ci95"] = float(max(s["cost_ratio_ci95"] for s in per_seed))  # the widest seed's CI
    summary["cost_ratio_seed_ci95"] = mean_ci95(np.array([s["cost_ratio"] for s in per_seed]))[1]
    summary["gain_rel_err_max"] = float(max(s["gain_rel_err_max"] for s in per_seed))  # the worst seed
    summary["theta_within_2std"] = all(s["theta_within_2std"] for s in per_seed)
    summary["episodes"] = budget
    summary["seeds"] = per_seed
    return summary


def evaluate_goal(cfg: EvalConfig, log: Log, png: Path | None = None) -> dict:
    """forge / maze: BAL vs Q-learning (q_factor× the episodes, and q_large) vs the oracle vs the straight line."""
    from learner.bal import oracle, plots
    from learner.bal.discrete import straight_line

    p = cfg.load()
    solved = oracle.solve(p)
    ref = {"oracle": rollout(p, solved.lookahead, cfg.report, REPORT_SEED),
           "straight_line": rollout(p, straight_line(p), cfg.report, REPORT_SEED)}
    out = {"problem": p.name, "theta_true": p.theta_true.tolist(), "report_episodes": cfg.report,
           "oracle": scores(ref["oracle"]), "straight_line": scores(ref["straight_line"]),
           "bal": {}, "qlearning": {}, "paired_bal_minus_qlearning": {}, "theta": {}}
    for budget in cfg.budgets:
        runs = _bal_runs(cfg, budget, log)
        bal_r = [rollout(p, _table_policy(t, s["theta_hat"]), cfg.report, REPORT_SEED) for t, s, _ in runs]
        out["bal"][str(budget)] = {**_pooled(bal_r), "episodes": budget,
                                   "wall_s": [s["wall_s"] for _, s, _ in runs]}
        out["theta"][str(budget)] = [{"theta_hat": s["theta_hat"], "theta_std": s["theta_std"]} for _, s, _ in runs]
        q_budget = cfg.q_factor * budget
        q_r = _qlearning(p, cfg, q_budget, out)
        out["paired_bal_minus_qlearning"][f"{budget}_vs_{q_budget}"] = [paired(a, b) for a, b in zip(bal_r, q_r)]
        log(f"{p.name}: BAL e{budget} final distance {out['bal'][str(budget)]['final_distance']['mean']:.3f}, "
            f"Q e{q_budget} {out['qlearning'][str(q_budget)]['final_distance']['mean']:.3f}")
        if png is not None and budget == max(cfg.budgets):
            plots.trajectories(p, {f"BAL ({budget} episodes)": bal_r[0].states,
                                   f"Q-learning ({q_budget} episodes)": q_r[0].states,
                                   "oracle (true θ)": ref["oracle"].states}, png / f"{p.name}_trajectories.png")
            plots.theta_map(p, np.asarray(runs[0][1]["theta_hat"]), png / f"{p.name}_theta_map.png")
    for q_budget in cfg.q_large:
        _qlearning(p, cfg, q_budget, out)
    return out


def _qlearning(p: Problem, cfg: EvalConfig, budget: int, out: dict) -> list[Rollouts]:
    """Q-learning at one budget: its cell count chosen on the selection seeds, then one run per training seed
    scored on the report episodes (into out["qlearning"][budget])."""
    from learner.algos import qlearning

    tuned = qlearning.tune(p, list(SELECTION_SEEDS), list(cfg.q_cells), [budget])
    runs = [rollout(p, qlearning.train(p, replace(tuned.best, seed=seed)).policy, cfg.report, REPORT_SEED)
            for seed in range(cfg.train_seeds)]
    out["qlearning"][str(budget)] = {**_pooled(runs), "episodes": budget, "cells": tuned.best.cells,
                                     "tuning": tuned.rows}
    return runs


def evaluate(cfg: EvalConfig, log: Log, png: Path | None = None) -> dict:
    if png is not None:
        png.mkdir(parents=True, exist_ok=True)
    p = cfg.load()
    return evaluate_lq(cfg, log, png) if p.kind == "lq" else evaluate_goal(cfg, log, png)


def _fmt(stat: dict) -> str:
    return f"{stat['mean']:.3g} ± {stat['ci95']:.2g}"


def summary(result: dict) -> str:
    """A few lines for people (the JSON has everything)."""
    lines = [f"problem {result['problem']}"]
    if "cost_riccati" in result:
        lines.append(f"Riccati optimum (discrete) {result['cost_riccati']:.4g}, zero control {result['cost_zero']:.4g}")
        for budget, r in result["budgets"].items():
            lines.append(f"BAL {budget} episodes: cost ratio {r['cost_ratio']:.4f} ± {r['cost_ratio_ci95']:.2g}, "
                         f"gain error {100 * r['gain_rel_err_max']:.2f} % of max|K|, θ̂ {r['theta_hat']:.3f} "
                         f"± {r['theta_std']:.3f}")
        return "\n".join(lines)
    rows = [("oracle", result["oracle"]), ("straight line", result["straight_line"])]
    rows += [(f"BAL {b}", r) for b, r in result["bal"].items()] + [(f"Q-learning {b}", r)
                                                                   for b, r in result["qlearning"].items()]
    for name, r in rows:
        lines.append(f"{name:>18}: success {_fmt(r['success'])}, final distance {_fmt(r['final_distance'])}, "
                     f"path cost {_fmt(r['path_cost'])}, energy {_fmt(r['energy'])}")
    return "\n".join(lines)
