"""`edgetune bench …` commands, every benchmark (hil/bench/). Module top: stdlib + typer only; implementations load inside."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

CPUS_HELP = "Pin the benchmark and the processes it starts to these CPUs, e.g. 0 (one core, a Pi-class proxy) or 0,2-3."


def _cpu_set(text: Optional[str]) -> Optional[set[int]]:
    """'0,2-3' -> {0, 2, 3}; None -> None; a clean error for a malformed list or CPUs this process cannot use."""
    import os

    if text is None:
        return None
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            first, _, last = part.partition("-")
            cpus.update(range(int(first), int(last or first) + 1))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a CPU list such as 0 or 0,2-3", param_hint="--cpus") from None
    allowed = os.sched_getaffinity(0)
    if not cpus or not cpus <= allowed:
        raise typer.BadParameter(f"{text!r}: this process may run on CPUs {sorted(allowed)}", param_hint="--cpus")
    return cpus


def bench_loop(
    rate: float = typer.Option(1000.0, "--rate", help="Tick rate [Hz]."),
    seconds: float = typer.Option(10.0, "--seconds", help="Duration of each of the two loops [s]."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object only."),
    realtime: bool = typer.Option(False, "--rt", help="Run both loops under SCHED_FIFO (needs CAP_SYS_NICE or RLIMIT_RTPRIO)."),
    cpus: Optional[str] = typer.Option(None, "--cpus", help=CPUS_HELP),
) -> None:
    """The daemon's own stabilize tick (against an in-process simulated stand) vs. a bare time.sleep loop
    at the same absolute deadlines."""
    from hil.bench.loop import bench

    report = bench(rate, seconds, rt=realtime, cpus=_cpu_set(cpus))
    if json_out:
        typer.echo(json.dumps(report))
        return
    typer.echo(f"{report['ticks']} ticks at {rate:g} Hz, p99 ratio ours/floor {report['p99_ratio']}")
    for name in ("ours", "floor"):
        r = report[name]
        typer.echo(f"  {name:5s} p50 {r['p50_us']:8.1f} µs  p99 {r['p99_us']:8.1f} µs  p99.9 {r['p999_us']:8.1f} µs"
                   f"  max {r['max_us']:8.1f} µs  overruns {r['overruns']}")


def bench_epics(
    rate: float = typer.Option(1000.0, "--rate", help="Tick rate [Hz]."),
    seconds: float = typer.Option(4.0, "--seconds", help="Duration of each run's tick (and of its floor) [s]."),
    runs: int = typer.Option(5, "--runs", help="Runs with the PV server and a monitoring client, and as many without."),
    nice: int = typer.Option(0, "--nice", min=0, max=19, help="The CA process's niceness ([epics] nice)."),
) -> None:
    """The daemon's tick with its EPICS PV server and a client monitoring every PV at full rate vs. without,
    alternating runs; one JSON object (p99_ratio: median p99 with / without)."""
    from hil.bench.epics import bench

    typer.echo(json.dumps(bench(rate, seconds, runs, nice=nice)))


TRIALS_SETTINGS = {"ignore_unknown_options": True}  # `bench trials`: the train command's options pass through


def bench_trials(
    app: str = typer.Argument(..., help="The trainer: `edgetune train APP`."),
    seeds: int = typer.Argument(..., min=1, help="Training seeds 0 … SEEDS − 1."),
    options: Optional[list[str]] = typer.Argument(None, help="The train command's options, e.g. --steps 3200."),
) -> None:
    """SEEDS training seeds of `edgetune train APP OPTIONS` one after another against the same seeds as Ray Tune
    trials (`--train-seeds SEEDS`: an embedded Ray, or RAY_ADDRESS's cluster), wall time of each; one JSON object."""
    from hil.bench.trials import bench_trials as bench
    from learner.trials import require_ray

    require_ray("`edgetune bench trials`")
    typer.echo(json.dumps(bench(app, seeds, options or [])))


def bench_swap(
    rate: float = typer.Option(1000.0, "--rate", help="Tick rate [Hz]."),
    swaps: int = typer.Option(100, "--swaps", help="Models pushed and swapped in."),
    chunks: int = typer.Option(20, "--chunks", help="Quiet/pushing phase pairs (0.5 s each)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object only."),
    realtime: bool = typer.Option(False, "--rt", help="Run the loop thread under SCHED_FIFO (needs CAP_SYS_NICE or RLIMIT_RTPRIO)."),
    cpus: Optional[str] = typer.Option(None, "--cpus", help=CPUS_HELP),
) -> None:
    """The rl-pid loop while models are pushed and swapped, against the same loop without pushes."""
    from hil.bench.swap import bench

    report = bench(rate, swaps, chunks, rt=realtime, cpus=_cpu_set(cpus))
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
    iters: int = typer.Option(20_000, help="timed calls per runtime"),
    run: Optional[Path] = typer.Option(None, "--run", help="a MEMS training run: time its trained actor (default: "
                                       "an untrained actor of the default configuration, the same graph)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on one line (default: indented)"),
) -> None:
    """Batch-1 latency of the deployed MEMS policy graph (the actor exported as `edgetune export` does it, with
    its gain map): onnxruntime vs the same module in torch eager, one thread each."""
    from hil.bench.policy import bench_policy as bench

    result = bench(iters=iters, run=run)
    typer.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))


def bench_sirt(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on one line (default: indented)."),
    device: Optional[str] = typer.Option(None, help="cpu | cuda (default: cuda if available)."),
    batch: int = typer.Option(8, min=8, help="Episodes, the same on both sides (each its own random angles)."),
    size: int = typer.Option(239, help="Image size (odd)."),
    angles: int = typer.Option(20, min=1, max=180, help="Angles per episode (random on the 1° grid)."),
    iterations: int = typer.Option(150, min=1),
    seed: int = typer.Option(0),
    threads: Optional[int] = typer.Option(None, min=1, help="Cores N: torch threads and ASTRA processes (default: torch's)."),
    write_reference: Optional[Path] = typer.Option(
        None, "--write-reference", help="Only write the small ASTRA reference for the tests (.npz) to this path."),
) -> None:
    """Reconstructions per second of work: batched SIRT (ours, N threads) vs ASTRA CPU SIRT (N processes), and
    both on one core; set-up timed apart; the reconstructions' relative difference."""
    if write_reference is not None:
        from hil.bench.astra_sirt import write_reference as write

        write(write_reference)
        typer.echo(f"wrote {write_reference}")
        return
    from hil.bench.sirt import run

    try:
        result = run(size=size, angles=angles, iterations=iterations, batch=batch, device=device, seed=seed,
                     threads=threads)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--batch") from None
    typer.echo(json.dumps(result, indent=None if as_json else 2))


def bench_ptycho(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on one line (default: indented)."),
    samples: int = typer.Option(4, min=1, help="Samples, each with its own random positions and counts."),
    positions: int = typer.Option(250, min=1, max=10_000, help="Positions per sample (random on the 100 × 100 grid)."),
    iterations: int = typer.Option(5, min=1),
    defocus: float = typer.Option(20.0, help="Probe defocus [Å] (0 = focused)."),
    seed: int = typer.Option(0),
    threads: Optional[int] = typer.Option(None, min=1, help="Cores N: torch threads on both sides (default: torch's)."),
    peer: bool = typer.Option(True, "--peer/--no-peer", help="Run pty-chi (needs `make ptychi-env`)."),
) -> None:
    """Reconstructions per second of work: our probe-known reconstruction (torch batch; numpy one by one) vs
    pty-chi's autodiff engine, the same data, positions, iterations and cores; set-up timed apart; the phases'
    relative difference and each side's SSIM to the truth."""
    from hil.bench.ptycho import run

    result = run(samples=samples, positions=positions, iterations=iterations, defocus_A=defocus, seed=seed,
                 threads=threads, with_peer=peer)
    typer.echo(json.dumps(result, indent=None if as_json else 2))


def bench_scatter(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on one line (default: indented)."),
    n: int = typer.Option(32, min=4, max=64, help="Grid size n × n."),
    samples: int = typer.Option(4, min=1, help="Scatterers (random ellipses), the same on both sides."),
    transceivers: int = typer.Option(10, min=1, max=360, help="Transceivers of the scan (random angles, frequencies)."),
    iterations: int = typer.Option(50, min=1, help="L-BFGS iterations per reconstruction."),
    lam: float = typer.Option(1e-6, min=0.0, help="λ of the L1 term."),
    seed: int = typer.Option(0),
    threads: Optional[int] = typer.Option(None, min=1, help="Cores N: torch threads on both sides (default: torch's)."),
    tol: float = typer.Option(1e-8, help="Tolerance of deepinv's full-wave LSQR solve."),
    peer: bool = typer.Option(True, "--peer/--no-peer", help="Run deepinv (needs `make deepinv-env`)."),
    episode: bool = typer.Option(False, "--episode", help="Also time 10-step episodes (B = 1, 16; 20, 60 iterations)."),
) -> None:
    """Forward evaluations and reconstructions per second: ours (batched torch; the edge's scipy) vs deepinv's
    scattering physics, the same grid, scatterers, transceivers and cores; set-up timed apart; the data's relative
    differences (Born, full wave against our exact solve and Born orders)."""
    from hil.bench.scatter import run

    result = run(n=n, samples=samples, transceivers=transceivers, iterations=iterations, lam=lam, seed=seed,
                 threads=threads, tol=tol, with_peer=peer, with_episode=episode)
    typer.echo(json.dumps(result, indent=None if as_json else 2))


def bench_filter(
    problem: str = typer.Option("forge", help="The BAL problem (a name or a TOML file) whose filter is timed."),
    particles: str = typer.Option("1000,10000", help="Particle counts, comma separated."),
    updates: int = typer.Option(2000, min=1, help="Timed filter updates per particle count."),
    warmup: int = typer.Option(50, min=0, help="Untimed updates first."),
    rate: float = typer.Option(100.0, "--rate", help="The forge loop's tick rate [Hz] (the budget: 1 / rate)."),
    seed: int = typer.Option(0),
    cpus: Optional[str] = typer.Option(None, "--cpus", help=CPUS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on one line (default: indented)."),
) -> None:
    """The direct filter's update time per step (p50/p99) on forge episodes at 1 000 and 10 000 particles, against
    the loop's tick budget and half a 1 kHz tick."""
    import os

    from hil.bench.filter import run

    pinned = _cpu_set(cpus)
    if pinned is not None:
        os.sched_setaffinity(0, pinned)
    try:
        counts = tuple(int(p) for p in particles.split(","))
        result = run(problem, counts, updates, warmup, rate, seed)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    result["cpus"] = sorted(os.sched_getaffinity(0))
    typer.echo(json.dumps(result, indent=None if as_json else 2))


def bench_live(
    sim_run: Path = typer.Option(..., "--sim-run", help="a simulator-trained `train mems` run to fine-tune"),
    out: Path = typer.Option(Path("runs/live"), "--out", help="where the stand's files and the live runs go"),
    finetune: int = typer.Option(3000, min=1, help="decisions of live fine-tuning from --sim-run"),
    scratch: int = typer.Option(1500, min=0, help="decisions of live training from scratch (0: none)"),
    scratch_warmup: int = typer.Option(300, min=0, help="of those, random decisions before the first update"),
    decisions: int = typer.Option(100, min=1, help="decisions per evaluation"),
    repeats: int = typer.Option(5, min=2, help="evaluations of each method (paired by target seed)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on one line (default: indented)"),
) -> None:
    """Live fine-tuning from a simulator policy and a shorter from-scratch run vs the simulator-only policy, on
    the emulated stand in real time (one decision per 100 ms): mean |error| with paired 95 % CIs, s per 1000 decisions."""
    from hil.bench.live import bench_live as run

    for name in ("finetuned", "scratch"):
        if (out / name).exists():
            raise typer.BadParameter(f"{out / name} exists: another --out, or remove it", param_hint="--out")
    result = run(sim_run, out, finetune, scratch, scratch_warmup, decisions, repeats)
    (out / "bench_live.json").write_text(json.dumps(result, indent=2))
    typer.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))
