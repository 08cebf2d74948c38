"""Ptychography learning commands (`edgetune train ptycho`); implementations are imported inside the functions."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from learner import run_options


def train_ptycho(
    out: Path = typer.Option(..., help="Run folder (checkpoint, policy.pt, provenance.json, updates.csv, PNGs)."),
    seed: int = typer.Option(0),
    episodes: int = typer.Option(4000, min=1, help="REINFORCE scans in all, one update per --batch (a resumed run "
                                 "continues to it)."),
    batch: int = typer.Option(8, min=1, help="Scans per update."),
    positions: int = typer.Option(250, min=2, help="Positions per scan."),
    subsequences: int = typer.Option(5, min=2, help="Sub-sequences per scan (the first is Halton)."),
    iterations: int = typer.Option(5, min=1, help="Reconstruction iterations after each sub-sequence."),
    defocus: float = typer.Option(0.0, help="Probe defocus [Å] (0 = focused; 20 = the defocused probe)."),
    sample: str = typer.Option("mos2", help="mos2 (MoS₂ samples) | lattice (a toy hexagonal lattice)."),
    net: str = typer.Option("auto", help="cpu (small GRU) | paper (2 × 2048 GRU) | auto (paper on a GPU)."),
    device: str = run_options.DEVICE,
    threads: Optional[int] = run_options.THREADS,
    max_minutes: Optional[float] = run_options.MAX_MINUTES,
    resume: bool = run_options.RESUME,
) -> None:
    """Train the adaptive scan policy: REINFORCE on Voronoi rewards, from the Halton continuation."""
    import torch

    from learner.progress import progress_bar
    from learner.ptycho.env import SAMPLERS
    from learner.ptycho.train import NETS, TrainConfig, train

    if sample not in SAMPLERS:
        raise typer.BadParameter(f"--sample must be one of {', '.join(SAMPLERS)}")
    if net not in (*NETS, "auto"):
        raise typer.BadParameter(f"--net must be one of {', '.join(NETS)} or auto")
    dev = run_options.device_and_threads(device, threads)
    gpu = dev == "cuda" or (dev is None and torch.cuda.is_available())
    cfg = TrainConfig(positions=positions, subsequences=subsequences, iterations=iterations, defocus_A=defocus,
                      sample=sample, episodes=episodes, batch=batch, seed=seed, device=dev,
                      net=("paper" if gpu else "cpu") if net == "auto" else net,
                      max_wall_s=None if max_minutes is None else 60.0 * max_minutes)
    with progress_bar("train ptycho", cfg.updates()) as bar:
        result = train(cfg, out, resume=resume, on_update=lambda done, reward: bar.update(done, [reward]))
    typer.echo(json.dumps(result))


def eval_ptycho(
    run: Optional[list[Path]] = typer.Option(None, help="Run folder with policy.pt; repeat for several training "
                                             "seeds (none: the baselines only)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object (default: a table)."),
    split: str = typer.Option("selection", help="selection (for choices) | report (for publishing): held-out "
                              "MoS₂ samples."),
    samples: Optional[Path] = typer.Option(None, help="Folder of .npy phase maps [rad] + sampling.json "
                                           "{\"pixel_A\": …}, evaluated instead of MoS₂ (rows carry samples: custom)."),
    per_cell: int = typer.Option(8, min=1, help="MoS₂ samples (custom: every map)."),
    png: Optional[Path] = typer.Option(None, help="Folder for the reconstructions with positions per method."),
    cells: Optional[str] = typer.Option(None, help="Comma-separated POSITIONSxSUBSEQUENCES cells (sizes as even as "
                                        "possible; default: learner.ptycho.eval.CELLS, the issue's table)."),
    probe: str = typer.Option("focused,defocused", help="Probes: focused and/or defocused (20 Å)."),
    iterations: int = typer.Option(5, min=1, help="Reconstruction iterations per sub-sequence."),
    converge: bool = typer.Option(True, help="Also score each scan run on to the reference's iterations."),
    explore: float = typer.Option(0.0, min=0.0, help="The greedy layout's exploration bonus (0: none)."),
    cache: Path = typer.Option(Path.home() / ".cache" / "edgetune" / "ptycho-reference",
                               help="Cache of the full-grid references (per sample key and optics)."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch CPU threads (default: torch's)."),
) -> None:
    """Q_SSIM of the adaptive scan against random, Halton, sub-grid and greedy layouts (paired 95 % CIs)."""
    import sys
    import time

    import torch

    from controller.modes.ptycho.spec import M_MAX
    from learner.ct.cli import _name
    from learner.ptycho import eval as ev
    from learner.ptycho import layouts, reference
    from learner.ptycho.train import load_policy

    try:
        grid = tuple(tuple(int(v) for v in c.split("x")) for c in cells.split(",")) if cells else ev.CELLS
        if any(len(c) != 2 or not 2 <= c[1] <= c[0] // 2 or -(-c[0] // c[1]) > M_MAX for c in grid):
            raise ValueError
    except ValueError:
        raise typer.BadParameter(f"--cells needs POSITIONSxSUBSEQUENCES, 2 ≤ sub-sequences, sub-sequences of 2 … "
                                 f"{M_MAX} positions, got {cells!r}") from None
    probes = tuple(probe.split(","))
    if not probes or any(p not in ev.PROBES for p in probes):
        raise typer.BadParameter(f"--probe must name some of {', '.join(ev.PROBES)}")
    if threads:
        torch.set_num_threads(threads)
    policies = [r / "policy.pt" for r in run or []]
    for policy in policies:
        if not policy.exists():
            raise typer.BadParameter(f"no policy at {policy}")
    runs = {}
    for p in policies:
        net, meta = load_policy(p)
        prov = p.parent / "provenance.json"
        runs[_name(p, policies)] = (net, {**meta, "provenance": json.loads(prov.read_text()) if prov.exists() else None})
    try:
        sample_set = ev.load_samples(samples) if samples is not None else ev.mos2_samples(split, per_cell)
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc)) from None
    log = lambda msg: typer.echo(msg, err=True)  # noqa: E731  the result goes to stdout
    n = len(sample_set.keys)
    log(f"CPU cost: up to {n * len(probes)} full-grid references ({reference.ITERATIONS} iterations over all "
        f"positions each, cached in {cache}), {len(grid) * len(probes) * (len(layouts.METHODS) + len(runs))} scans of {n} samples "
        f"(+ run-on to {reference.ITERATIONS} iterations: {converge}), {torch.get_num_threads()} torch thread(s)")
    t0 = time.perf_counter()
    result, pictures = ev.evaluate(runs, sample_set, cache, grid, probes, iterations, converge, explore=explore, log=log)
    log(f"eval ptycho: {time.perf_counter() - t0:.0f} s wall, {time.process_time():.0f} s CPU ({sys.platform})")
    if png is not None:
        for path in ev.plot(pictures, png):
            log(f"wrote {path}")
    typer.echo(json.dumps(result) if as_json else ev.table(result))
