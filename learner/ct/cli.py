"""CT commands (`edgetune train ct`, `eval ct`, `select ct`); implementations are imported inside the functions."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def train_ct(
    cost: float = typer.Option(0.5, help="Experimental cost b per acquired angle [dB]."),
    families: str = typer.Option("mixture", help="Training set: mixture (the paper's shapes + broad random "
                                 "objects; the default policy) | paper (the shapes only; Table 1's policy)."),
    size: int = typer.Option(63, help="Image size N (odd; the paper uses 239)."),
    episodes: int = typer.Option(2000, min=1, help="Total finished episodes (a resumed run continues to it)."),
    out: Path = typer.Option(..., help="Run folder (checkpoint, policy.pt, provenance.json, episodes.csv, PNGs)."),
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

    from learner.ct.train import TRAINING_SETS, TrainConfig, train

    if families not in TRAINING_SETS:
        raise typer.BadParameter(f"--families must be one of {', '.join(TRAINING_SETS)}")
    if threads:
        torch.set_num_threads(threads)
    cfg = TrainConfig(algo=algo, size=size, cost=cost, families=families, episodes=episodes, batch=batch, seed=seed, device=device,
                      max_wall_s=None if max_minutes is None else 60.0 * max_minutes)
    with Progress(TextColumn(f"train ct {algo}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task("episodes", total=episodes)
        result = train(cfg, out, resume=resume, on_episodes=lambda n: bar.advance(task, n))
    typer.echo(json.dumps(result))


def eval_ct(
    run: Optional[list[Path]] = typer.Option(None, help="Run folder with policy.pt; repeat for several training "
                                             "seeds (default: the packaged learner/ct/policies/ct_63)."),
    split: str = typer.Option("report", help="selection (the runs' training families: for choices) | report "
                              "(Table 1 shapes + held-out families: for publishing) | private (once, at the end)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (default: tables)."),
    phantoms: Optional[Path] = typer.Option(None, help="Folder of .npy images evaluated as family 'custom'."),
    naive_run: Optional[list[Path]] = typer.Option(None, help="Algorithm 1 run folder; repeat for several seeds "
                                                   "(default: learner/ct/policies/ct_63_naive if present)."),
    per_cell: int = typer.Option(100, min=1, help="Samples per family and noise model (fixed by the split's seed; "
                                 "custom cells use every image)."),
    png: Optional[Path] = typer.Option(None, help="Also plot golden ratio's PSNR − b·k per noise level with the runs' mean counts."),
    device: Optional[str] = typer.Option(None, help="cpu | cuda (default: cuda if available)."),
) -> None:
    """Paired RL − golden ratio (95 % CI) per family and noise, and the stopping rule against fixed counts."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from learner.ct.eval import SPLITS, evaluate, markdown, plot_stopping
    from learner.ct.train import load_policy

    packaged = Path(__file__).parent / "policies"
    if split not in SPLITS:
        raise typer.BadParameter(f"--split must be one of {', '.join(SPLITS)}")
    policies = [r / "policy.pt" for r in (run or [packaged / "ct_63"])]
    for policy in policies:
        if not policy.exists():
            raise typer.BadParameter(f"no policy at {policy}")
    if phantoms is not None and not phantoms.is_dir():
        raise typer.BadParameter(f"--phantoms {phantoms} is not a folder")
    runs = {_name(p, policies): load_policy(p, device) for p in policies}
    naive_policies = [r / "policy.pt" for r in (naive_run or [packaged / "ct_63_naive"])]
    naive = {_name(p, naive_policies): load_policy(p, device) for p in naive_policies if p.exists()}
    console = Console(stderr=True)  # the result goes to stdout
    with Progress(TextColumn(f"eval ct {split}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task("cells", total=None)
        result = evaluate(runs, split=split, per_cell=per_cell, device=device, naive=naive, custom_dir=phantoms,
                          on_cell=lambda done, total: bar.update(task, completed=done, total=total))
    if not naive:
        result["naive"] = {"error": "no naive policy at " + ", ".join(map(str, naive_policies))}
    if png is not None:
        plot_stopping(result, png)
    typer.echo(json.dumps(result) if as_json else markdown(result))


def _name(policy: Path, all_policies: list[Path]) -> str:
    """A run's name in results: its folder's name, or its path when two folders share a name."""
    short = [p.parent.name for p in all_policies]
    return policy.parent.name if short.count(policy.parent.name) == 1 else str(policy.parent)


def select_ct(
    run: list[Path] = typer.Option(..., help="Run folders (training seeds) to choose from; repeat."),
    to: Path = typer.Option(..., help="Bundle folder (e.g. learner/ct/policies/ct_63)."),
    per_cell: int = typer.Option(30, min=2, help="Selection samples per family and noise model."),
    device: Optional[str] = typer.Option(None, help="cpu | cuda (default: cuda if available)."),
) -> None:
    """Ship the run with the best mean reward on the selection split (never the report set)."""
    from learner.ct.bundle import select_and_bundle

    for r in run:
        if not (r / "policy.pt").exists():
            raise typer.BadParameter(f"no policy at {r / 'policy.pt'}")
    typer.echo(json.dumps(select_and_bundle(run, to, per_cell, device)))
