"""CT commands (`edgetune train ct`, `eval ct`); implementations are imported inside the functions."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def train_ct(
    cost: float = typer.Option(0.5, help="Experimental cost b per acquired angle [dB]."),
    size: int = typer.Option(63, help="Image size N (odd; the paper uses 239)."),
    episodes: int = typer.Option(2000, min=1, help="Total finished episodes (a resumed run continues to it)."),
    out: Path = typer.Option(..., help="Run folder (checkpoint, policy.pt, episodes.csv, PNGs)."),
    algo: str = typer.Option("terminal", help="terminal (Algorithm 2) | naive (Algorithm 1)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN_DIR/checkpoint.pt."),
    batch: int = typer.Option(16, min=1, help="Episodes stepped together."),
    max_minutes: Optional[float] = typer.Option(None, help="Stop (with a checkpoint) after this wall time."),
    seed: int = typer.Option(0),
    device: Optional[str] = typer.Option(None, help="cpu | cuda (default: cuda if available)."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch CPU threads (default: torch's)."),
) -> None:
    """Train a CT angle-selection policy with optimal stopping (paper Algorithm 2 or 1)."""
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from learner.ct.train import TrainConfig, train

    if threads:
        torch.set_num_threads(threads)
    cfg = TrainConfig(algo=algo, size=size, cost=cost, episodes=episodes, batch=batch, seed=seed, device=device,
                      max_wall_s=None if max_minutes is None else 60.0 * max_minutes)
    with Progress(TextColumn(f"train ct {algo}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task("episodes", total=episodes)
        result = train(cfg, out, resume=resume, on_episodes=lambda n: bar.advance(task, n))
    typer.echo(json.dumps(result))


def eval_ct(
    run: Optional[Path] = typer.Option(None, help="Run folder with policy.pt (default: the packaged learner/ct/policies/ct_63)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (default: a table)."),
    phantoms: Optional[Path] = typer.Option(None, help="Folder of .npy images evaluated as shape 'custom'."),
    naive_run: Optional[Path] = typer.Option(None, help="Algorithm 1 run folder (default: learner/ct/policies/ct_63_naive if present)."),
    per_shape: int = typer.Option(30, min=1, help="Validation phantoms per shape and noise model."),
    seed: int = typer.Option(1),
    device: Optional[str] = typer.Option(None, help="cpu | cuda (default: cuda if available)."),
) -> None:
    """RL angles and PSNR vs golden-ratio angles at the same count, per shape and noise (paper Table 1)."""
    from learner.ct.eval import evaluate, markdown
    from learner.ct.train import load_policy

    packaged = Path(__file__).parent / "policies"
    policy = (run or packaged / "ct_63") / "policy.pt"
    if not policy.exists():
        raise typer.BadParameter(f"no policy at {policy}")
    if phantoms is not None and not phantoms.is_dir():
        raise typer.BadParameter(f"--phantoms {phantoms} is not a folder")
    agent, meta = load_policy(policy, device)
    naive_policy = (naive_run or packaged / "ct_63_naive") / "policy.pt"
    naive = load_policy(naive_policy, device)[0] if naive_policy.exists() else None
    result = evaluate(agent, meta, per_shape=per_shape, seed=seed, device=device, naive=naive, custom_dir=phantoms)
    if naive is None:
        result["naive"] = {"error": f"no naive policy at {naive_policy}"}
    typer.echo(json.dumps(result) if as_json else markdown(result))
