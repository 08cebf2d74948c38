"""learner commands; register in hil/cli.py. Module top: stdlib + typer only."""
from __future__ import annotations

import json

import typer


def bench_ddpg(
    steps: int = typer.Option(20_000, help="environment steps per learner"),
    seed: int = typer.Option(0),
    eval_episodes: int = typer.Option(10),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Our DDPG vs Stable-Baselines3 DDPG on Pendulum-v1 (same hyper-parameters, same run)."""
    from learner.bench_ddpg import bench_ddpg as run

    result = run(steps=steps, seed=seed, eval_episodes=eval_episodes)
    typer.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))


def bench_policy(
    obs_dim: int = typer.Option(48, help="observation size (6 features x k=8 frames)"),
    act_dim: int = typer.Option(4, help="action size (the 4 PID gains)"),
    iters: int = typer.Option(20_000, help="timed calls per runtime"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on one line (default: indented)"),
) -> None:
    """Batch-1 latency of the paper's actor (100 -> 60, random weights), exported to ONNX here: onnxruntime
    vs the same actor in torch eager, one thread each."""
    from learner.bench_policy import bench_policy as run

    result = run(obs_dim=obs_dim, act_dim=act_dim, iters=iters)
    typer.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))
