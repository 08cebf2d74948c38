"""CT commands (`edgetune bench sirt`); implementations are imported inside the functions."""
from __future__ import annotations

import json
from typing import Optional

import typer


def bench_sirt(
    json_out: bool = typer.Option(True, "--json/--no-json", help="Print one JSON object (the only output format)."),
    device: Optional[str] = typer.Option(None, help="cpu | cuda (default: cuda if available)."),
    batch: int = typer.Option(32, min=1, help="Episodes reconstructed together."),
    size: int = typer.Option(239, help="Image size (odd)."),
    angles: int = typer.Option(20, min=1, max=180, help="Angles per episode (random on the 1° grid)."),
    iterations: int = typer.Option(150, min=1),
    astra_episodes: int = typer.Option(2, min=1, help="Episodes timed with ASTRA (slow)."),
    seed: int = typer.Option(0),
    threads: Optional[int] = typer.Option(None, min=1, help="torch CPU threads (default: torch's)."),
) -> None:
    """Reconstructions per second: batched SIRT (ours) vs ASTRA CPU SIRT, with their relative difference."""
    from learner.bench_sirt import run

    result = run(size=size, angles=angles, iterations=iterations, batch=batch, device=device,
                 astra_episodes=astra_episodes, seed=seed, threads=threads)
    typer.echo(json.dumps(result))
