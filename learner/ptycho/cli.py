"""Ptychography learning commands (`edgetune train ptycho`); implementations are imported inside the functions."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def train_ptycho(
    out: Path = typer.Option(..., help="Run folder (checkpoint, policy.pt, provenance.json, updates.csv, PNGs)."),
    seed: int = typer.Option(0),
    episodes: int = typer.Option(4000, min=1, help="REINFORCE scans in all, one update per --batch (a resumed run "
                                 "continues to it)."),
    pretrain: int = typer.Option(400, min=0, help="Halton pre-training scans before REINFORCE."),
    batch: int = typer.Option(8, min=1, help="Scans per update."),
    positions: int = typer.Option(250, min=2, help="Positions per scan."),
    subsequences: int = typer.Option(5, min=2, help="Sub-sequences per scan (the first is Halton)."),
    iterations: int = typer.Option(5, min=1, help="Reconstruction iterations after each sub-sequence."),
    defocus: float = typer.Option(0.0, help="Probe defocus [Å] (0 = focused; 20 = the defocused probe)."),
    sample: str = typer.Option("mos2", help="mos2 (MoS₂ samples) | lattice (a toy hexagonal lattice)."),
    net: str = typer.Option("auto", help="cpu (small GRU) | paper (2 × 2048 GRU) | auto (paper on a GPU)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch CPU threads (default: torch's)."),
    max_minutes: Optional[float] = typer.Option(None, help="Stop (with a checkpoint) after this wall time."),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN_DIR/checkpoint.pt."),
) -> None:
    """Train the adaptive scan policy: Halton pre-training, then REINFORCE on Voronoi rewards."""
    import torch

    from learner.progress import progress_bar
    from learner.ptycho.env import SAMPLERS
    from learner.ptycho.train import NETS, TrainConfig, train

    if device not in ("auto", "cpu", "cuda"):
        raise typer.BadParameter("--device must be auto, cpu or cuda")
    if sample not in SAMPLERS:
        raise typer.BadParameter(f"--sample must be one of {', '.join(SAMPLERS)}")
    if net not in (*NETS, "auto"):
        raise typer.BadParameter(f"--net must be one of {', '.join(NETS)} or auto")
    if positions % subsequences:
        raise typer.BadParameter("--subsequences must divide --positions")
    if threads:
        torch.set_num_threads(threads)
    dev = None if device == "auto" else device
    gpu = dev == "cuda" or (dev is None and torch.cuda.is_available())
    cfg = TrainConfig(positions=positions, subsequences=subsequences, iterations=iterations, defocus_A=defocus,
                      sample=sample, episodes=episodes, pretrain=pretrain, batch=batch, seed=seed, device=dev,
                      net=("paper" if gpu else "cpu") if net == "auto" else net,
                      max_wall_s=None if max_minutes is None else 60.0 * max_minutes)
    with progress_bar("train ptycho", sum(cfg.updates())) as bar:
        result = train(cfg, out, resume=resume, on_update=lambda done, reward: bar.update(done, [reward]))
    typer.echo(json.dumps(result))
