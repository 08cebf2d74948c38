"""`edgetune bench …` commands, every benchmark (hil/bench/). Module top: stdlib + typer only; implementations load inside."""
from __future__ import annotations

import json
from typing import Optional

import typer


def bench_loop(
    rate: float = typer.Option(1000.0, "--rate", help="Tick rate [Hz]."),
    seconds: float = typer.Option(10.0, "--seconds", help="Duration of each of the two loops [s]."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object only."),
    realtime: bool = typer.Option(False, "--rt", help="Run both loops under SCHED_FIFO (needs CAP_SYS_NICE)."),
) -> None:
    """The daemon's own stabilize tick (against an in-process simulated stand) vs. a bare time.sleep loop
    at the same absolute deadlines."""
    from hil.bench.loop import bench

    report = bench(rate, seconds, rt=realtime)
    if json_out:
        typer.echo(json.dumps(report))
        return
    typer.echo(f"{report['ticks']} ticks at {rate:g} Hz, p99 ratio ours/floor {report['p99_ratio']}")
    for name in ("ours", "floor"):
        r = report[name]
        typer.echo(f"  {name:5s} p50 {r['p50_us']:8.1f} µs  p99 {r['p99_us']:8.1f} µs  p99.9 {r['p999_us']:8.1f} µs"
                   f"  max {r['max_us']:8.1f} µs  overruns {r['overruns']}")


def bench_swap(
    rate: float = typer.Option(1000.0, "--rate", help="Tick rate [Hz]."),
    swaps: int = typer.Option(100, "--swaps", help="Models pushed and swapped in."),
    chunks: int = typer.Option(20, "--chunks", help="Quiet/pushing phase pairs (0.5 s each)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object only."),
    realtime: bool = typer.Option(False, "--rt", help="Run the loop thread under SCHED_FIFO (needs CAP_SYS_NICE)."),
) -> None:
    """The rl-pid loop while models are pushed and swapped, against the same loop without pushes."""
    from hil.bench.swap import bench

    report = bench(rate, swaps, chunks, rt=realtime)
    if json_out:
        typer.echo(json.dumps(report))
        return
    typer.echo(f"{report['accepted']}/{report['swaps']} swaps accepted at {rate:g} Hz; extra overruns "
               f"{report['extra_overruns']}; swap latency p50 {report['swap_latency_ms']['p50']} ms, "
               f"max {report['swap_latency_ms']['max']} ms")
    for name in ("baseline", "with_swaps"):
        r = report[name]
        typer.echo(f"  {name:10s} p99 {r['p99_us']:8.1f} µs  max {r['max_us']:8.1f} µs  overruns {r['overruns']}")


def bench_ddpg(
    steps: int = typer.Option(20_000, help="environment steps per learner and seed"),
    seeds: int = typer.Option(5, min=1, help="training seeds 0 … N−1, each for both learners"),
    eval_episodes: int = typer.Option(10),
    threads: int = typer.Option(1, min=1, help="torch threads, the same for both learners"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Our DDPG vs Stable-Baselines3 DDPG on Pendulum-v1 (same settings, cores and run), mean ± σ over seeds."""
    from hil.bench.ddpg import bench_ddpg as run

    result = run(steps=steps, seeds=seeds, eval_episodes=eval_episodes, threads=threads)
    typer.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))


def bench_policy(
    obs_dim: int = typer.Option(48, help="observation size (6 features x k=8 frames)"),
    act_dim: int = typer.Option(4, help="action size (the 4 PID gains)"),
    iters: int = typer.Option(20_000, help="timed calls per runtime"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on one line (default: indented)"),
) -> None:
    """Batch-1 latency of the paper's actor (100 -> 60, random weights), exported to ONNX here: onnxruntime
    vs the same actor in torch eager, one thread each."""
    from hil.bench.policy import bench_policy as run

    result = run(obs_dim=obs_dim, act_dim=act_dim, iters=iters)
    typer.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))


def bench_sirt(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on one line (default: indented)."),
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
    from hil.bench.sirt import run

    result = run(size=size, angles=angles, iterations=iterations, batch=batch, device=device,
                 astra_episodes=astra_episodes, seed=seed, threads=threads)
    typer.echo(json.dumps(result, indent=None if as_json else 2))
