"""The `edgetune` command line: one entry point, subcommand groups per package.

Every command imports its implementation lazily, so that the edge commands
(`daemon`, `sim`, `bench loop`) never import torch.
"""
from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="edgetune: learned tuning for instrument control loops.")
sim_app = typer.Typer(no_args_is_help=True, help="Simulated instruments served on a real (pty) serial port.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks; each prints one JSON object.")
train_app = typer.Typer(no_args_is_help=True, help="Train policies on the simulated instruments (host; needs the `learn` extra).")
eval_app = typer.Typer(no_args_is_help=True, help="Evaluate trained policies against baselines.")
hil_app = typer.Typer(no_args_is_help=True, help="Hardware-in-the-loop scenarios against the simulated instruments.")
app.add_typer(sim_app, name="sim")
app.add_typer(bench_app, name="bench")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(hil_app, name="hil")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
