"""Inverse-scattering learning commands (`edgetune train scatter`); implementations are imported inside the functions."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from learner import run_options


def train_scatter(
    out: Path = typer.Option(..., help="Run folder (checkpoint, policy.pt, provenance.json, updates.csv, PNGs)."),
    family: str = typer.Option("ellipses", help="Training scatterers: ellipses (and triangles) | circles | digits."),
    mode: str = typer.Option("both", help="What the policy learns: both | angle (fixed frequency) | frequency "
                             "(random angles)."),
    fixed_freq: int = typer.Option(3, min=0, max=3, help="Frequency index k = n·(1 + index)/4 of --mode angle."),
    lam: float = typer.Option(1e-6, min=0.0, help="L1 weight λ of the reward's reconstructions (choose it on the "
                              "selection split: `edgetune eval scatter`)."),
    order: int = typer.Option(2, min=1, max=3, help="Born order of the data and of the reconstruction's model."),
    n: int = typer.Option(32, min=8, help="Grid size (wavenumbers n/4 … n)."),
    iterations: int = typer.Option(10, min=1, help="Warm-started L-BFGS iterations per step (the paper: 60)."),
    final_iterations: int = typer.Option(10, min=0, help="L-BFGS iterations after the last step (the paper: 20)."),
    updates: int = typer.Option(300, min=1, help="PPO updates in all (a resumed run continues to it)."),
    episodes: int = typer.Option(6, min=2, help="Scans per update."),
    seed: int = typer.Option(0),
    device: str = run_options.DEVICE,
    threads: Optional[int] = run_options.THREADS,
    max_minutes: Optional[float] = run_options.MAX_MINUTES,
    resume: bool = run_options.RESUME,
) -> None:
    """Train the transceiver policy (angle and frequency per step): recurrent PPO on PSNR-gain rewards."""
    from learner.progress import progress_bar
    from learner.scatter.train import TrainConfig, train

    dev = run_options.device_and_threads(device, threads)
    try:
        cfg = TrainConfig(family=family, mode=mode, fixed_freq=fixed_freq, n=n, order=order, lam=lam,
                          iterations=iterations, final_iterations=final_iterations, updates=updates,
                          episodes=episodes, seed=seed, device=dev,
                          max_wall_s=None if max_minutes is None else 60.0 * max_minutes)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    with progress_bar("train scatter", cfg.updates) as bar:
        result = train(cfg, out, resume=resume, on_update=lambda done, ret: bar.update(done, [ret]))
    typer.echo(json.dumps(result))


def eval_scatter(
    run: Optional[list[Path]] = typer.Option(None, help="Training run folder (policy.pt); repeat for several seeds "
                                             "and modes (the selection split picks the run to ship per mode)."),
    dataset: list[str] = typer.Option(["ellipses"], help="Scatterer family (training, held-out, the private one) "
                                      "or custom (needs --scatterers); repeat for several."),
    order: list[int] = typer.Option([2], help="Born order of the data and the reconstruction; repeat for several."),
    scatterers: Optional[Path] = typer.Option(None, help="Folder of .npy square η maps (dataset custom): array[i, j] "
                                              "at x = −0.5 + j/(m − 1), y = −0.5 + i/(m − 1) (row 0 at the bottom)."),
    report: int = typer.Option(24, min=2, help="Report scatterers per cell (the numbers published)."),
    selection: int = typer.Option(12, min=1, help="Selection scatterers per cell (λ, variants, the run to ship)."),
    train: int = typer.Option(12, min=1, help="Training scatterers on which best_fixed picks its plan."),
    lam: str = typer.Option("1e-5,3e-6,1e-6,3e-7", help="Comma-separated λ grid tuned per method."),
    n: int = typer.Option(32, min=8, help="Grid size."),
    iterations: int = typer.Option(10, min=1, help="Warm-started L-BFGS iterations per step."),
    final_iterations: int = typer.Option(10, min=0, help="L-BFGS iterations after the last step."),
    png: Optional[Path] = typer.Option(None, help="Folder for scans of three report scatterers per cell."),
    cache: Optional[Path] = typer.Option(None, help="Folder keeping every run's per-scatterer MSE: a later eval with "
                                         "the same scatterers, recipe and method reuses it (e.g. after adding runs); "
                                         "keyed by inputs, not code: empty it after changing the code."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object (default: a table)."),
    device: str = typer.Option("cpu", help="cpu | cuda."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch CPU threads (default: torch's)."),
) -> None:
    """Table 1 on our simulator: learned designs against tuned baselines, MSE with paired 95 % CIs."""
    import time

    import torch

    from learner.scatter import eval as ev
    from learner.scatter.batched import Tables
    from learner.scatter.episode import Recipe

    if threads:
        torch.set_num_threads(threads)
    try:
        grid = tuple(float(v) for v in lam.split(","))
    except ValueError:
        raise typer.BadParameter(f"--lam needs comma-separated numbers, got {lam!r}") from None
    policies = [r / "policy.pt" for r in run or []]
    for p in policies:
        if not p.exists():
            raise typer.BadParameter(f"no policy at {p}")
    log = lambda msg: typer.echo(msg, err=True)  # noqa: E731  the result goes to stdout
    cfg = ev.CellConfig(Tables(n, device), Recipe(2, grid[0], iterations, final_iterations), lam_grid=grid,
                         cache=cache)
    t0 = time.perf_counter()
    try:
        result = ev.evaluate(dataset, order, policies, cfg, report=report, selection=selection, train=train,
                             custom_dir=scatterers, png=png, log=log)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    log(f"eval scatter: {time.perf_counter() - t0:.0f} s wall, {time.process_time():.0f} s CPU")
    typer.echo(json.dumps(result) if as_json else ev.table(result))
