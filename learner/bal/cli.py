"""Backward-action-learning commands (`edgetune train bal`, `edgetune eval bal`); implementations are imported
inside the functions. BAL is numpy (vectorised over particles, grid points and θ values): it runs on the CPU."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from learner import run_options

PROBLEM = typer.Option("lq", help="lq | forge | maze | maze6 | a problem TOML file (docs/bal.md).")
THETA_TRUE = typer.Option(None, help="Comma-separated true θ of the environment, overriding the file's "
                          "(e.g. the LQ drift's 1.5).")
X0 = typer.Option(None, help="Initial state A,B overriding the file's.")


def _floats(text: Optional[str], what: str, count: int | None = None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{what} needs comma-separated numbers, got {text!r}") from None
    if count is not None and len(values) != count:
        raise typer.BadParameter(f"{what} needs {count} numbers, got {text!r}")
    return values


def _ints(text: str, what: str) -> tuple[int, ...]:
    """Comma-separated whole numbers ≥ 1 ('' for none): 2.5 or 0 is refused, not truncated or run."""
    values = _floats(text, what) if text else ()
    if any(v != int(v) or v < 1 for v in values):
        raise typer.BadParameter(f"{what} needs whole numbers ≥ 1, got {text!r}")
    return tuple(int(v) for v in values)


def theta_pictures(run: Path, problem) -> None:
    """θ̂ over the filter's steps (θ.png; the maze: its 8 most visited blocks) and the learned θ map (theta_map.png)."""
    from learner.bal import plots

    rows = list(csv.DictReader((run / "theta.csv").open()))
    dims = len(problem.theta_true)
    est = np.array([[float(r[f"theta{i}"]) for i in range(dims)] for r in rows])
    std = np.array([[float(r[f"std{i}"]) for i in range(dims)] for r in rows])
    shown = np.arange(dims) if dims <= 8 else np.argsort(-np.abs(np.diff(est, axis=0)).sum(0))[:8]
    plots.theta_trace(np.arange(1, len(rows) + 1), est[:, shown], std[:, shown], problem.theta_true[shown],
                      [f"θ{i}" for i in shown], run / "theta.png")
    if problem.kind != "lq":
        plots.theta_map(problem, est[-1], run / "theta_map.png")


def train_bal(
    out: Path = typer.Option(..., help="Run folder (table.npz, theta.csv, episodes.csv, checkpoint, PNGs)."),
    problem: str = PROBLEM,
    episodes: int = typer.Option(20, min=1, help="Real episodes in all (a resumed run continues to it)."),
    seed: int = typer.Option(0),
    rebuild_every: int = typer.Option(10, min=1, help="Episodes between rebuilds of the feedback table (Eq. 28)."),
    theta_grid: int = typer.Option(0, min=0, help="Tables over a θ grid with this many points per axis around "
                                   "θ̂ (the forge export: the edge feeds its own θ̂); 0: one table at θ̂."),
    theta_true: Optional[str] = THETA_TRUE,
    x0: Optional[str] = X0,
    max_minutes: Optional[float] = run_options.MAX_MINUTES,
    resume: bool = run_options.RESUME,
) -> None:
    """Train a BAL policy: real episodes with the direct filter, BAL steps, the feedback table on the model at θ̂."""
    from learner.bal import plots
    from learner.bal.train import TrainConfig, train
    from learner.progress import progress_bar
    from learner import run_folder

    try:
        cfg = TrainConfig(problem=problem, episodes=episodes, seed=seed, rebuild_every=rebuild_every,
                          theta_grid=theta_grid, theta_true=_floats(theta_true, "--theta-true"),
                          x0=_floats(x0, "--x0", 2), max_wall_s=None if max_minutes is None else 60.0 * max_minutes)
        loaded, _ = cfg.load()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    with progress_bar(f"train bal {loaded.name}", cfg.episodes) as bar:
        result = train(cfg, out, resume=resume, on_episode=lambda done, cost: bar.update(done, [-cost]))
    run_folder.plot_log(out / "episodes.csv", out / "episodes.png",
                        (("cost", "real episode cost"), ("final_distance", "final distance"), ("energy", "energy")),
                        x="episode")
    theta_pictures(out, loaded)
    if loaded.kind != "lq":
        from learner.bal.rollout import rollout
        from learner.bal.table import PolicyTable

        table = PolicyTable.load(out / "table.npz")
        theta = np.asarray(result["theta_hat"]) if table.theta_axes else None
        run = rollout(loaded, lambda n, x: table.control(n, x, theta), 8, seed=10_000)
        plots.trajectories(loaded, {"BAL policy": run.states}, out / "trajectories.png")
    typer.echo(json.dumps(result))


def eval_bal(
    problem: str = PROBLEM,
    budgets: str = typer.Option("20", help="BAL's real-episode budgets, comma-separated (Q-learning gets "
                                "--q-factor × each)."),
    train_seeds: int = typer.Option(3, min=1, help="Training seeds per budget (the spread is reported)."),
    report: int = typer.Option(1000, min=2, help="Report episodes per policy and seed (paired across policies)."),
    rebuild_every: int = typer.Option(10, min=1, help="BAL's episodes between table rebuilds (train bal's option)."),
    q_factor: int = typer.Option(10, min=1, help="Q-learning's episodes per BAL episode."),
    q_large: str = typer.Option("20000", help="Q-learning also at these budgets (comma-separated; '' for none)."),
    theta_true: Optional[str] = THETA_TRUE,
    x0: Optional[str] = X0,
    cache: Path = typer.Option(Path("runs/bal"), help="Folder of the training runs (reused by a later eval)."),
    png: Optional[Path] = typer.Option(None, help="Folder for the pictures (gains or trajectories, θ map)."),
    out: Optional[Path] = typer.Option(None, help="Also write the result JSON to this file."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object (default: a summary)."),
) -> None:
    """BAL against Riccati (LQ) or Q-learning and the true-parameter oracle (forge, maze), on report episodes."""
    from learner.bal.eval import EvalConfig, evaluate

    try:
        cfg = EvalConfig(problem=problem, budgets=_ints(budgets, "--budgets"), train_seeds=train_seeds,
                         report=report, rebuild_every=rebuild_every, theta_true=_floats(theta_true, "--theta-true"),
                         x0=_floats(x0, "--x0", 2), q_factor=q_factor, q_large=_ints(q_large, "--q-large"),
                         cache=cache)
        cfg.load()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    from learner.bal.eval import summary

    result = evaluate(cfg, lambda msg: typer.echo(msg, err=True), png)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
    typer.echo(json.dumps(result) if as_json else summary(result))
