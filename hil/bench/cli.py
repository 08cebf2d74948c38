"""`edgetune bench …` commands. Module top: stdlib + typer only; implementations load inside."""
from __future__ import annotations

import json

import typer


def bench_loop(
    rate: float = typer.Option(1000.0, "--rate", help="Tick rate [Hz]."),
    seconds: float = typer.Option(10.0, "--seconds", help="Duration of each of the two loops [s]."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object only."),
    realtime: bool = typer.Option(False, "--rt", help="Run both loops under SCHED_FIFO (needs CAP_SYS_NICE)."),
) -> None:
    """Our stabilize tick path vs. a bare time.sleep loop at the same absolute deadlines."""
    from hil.bench_loop import bench

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
    from hil.bench_swap import bench

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
