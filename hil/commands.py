"""`edgetune hil …`, `edgetune bench fuzz` and `edgetune export-docs` commands. Module top: stdlib + typer only."""
from __future__ import annotations

import json
from pathlib import Path

import typer


def hil_list() -> None:
    """The bundled scenarios (hil/scenarios/*.toml), one a line: name and what it checks."""
    from hil.scenario.run import bundled, load_scenario

    for path in bundled():
        sc = load_scenario(path)
        typer.echo(f"{path.stem:18s} {' '.join(sc.description.split())}")


def hil_run(
    scenario: str = typer.Argument(..., help="A scenario file, or the name of a bundled one (see `hil list`)."),
    out: Path = typer.Option(Path("runs/hil"), help="Reports go to OUT/<scenario>/ (JSON, markdown, PNG)."),
) -> None:
    """Run a scenario against real processes, write its report; exit status 1 if a check failed."""
    import asyncio

    from hil.scenario.run import SCENARIO_DIR, ScenarioError, load_scenario, run_scenario

    path = Path(scenario)
    if not path.exists():
        path = SCENARIO_DIR / f"{scenario}.toml"
    try:
        sc = load_scenario(path)
    except ScenarioError as e:
        typer.echo(f"invalid scenario:\n{e}", err=True)
        raise typer.Exit(2) from None
    rep = asyncio.run(run_scenario(sc, out / sc.name))
    for r in rep["checks"]:
        typer.echo(f"{'ok  ' if r['ok'] else 'FAIL'} {r['check']}: {r['detail']}")
    typer.echo(f"{sc.name}: {'PASS' if rep['passed'] else 'FAIL'} (report in {rep['dir']})")
    if not rep["passed"]:
        raise typer.Exit(1)


def hil_soak(
    rate: float = typer.Option(1000.0, "--rate", help="Loop rate [Hz] (timer pacing)."),
    minutes: float = typer.Option(1.0, "--minutes", help="How long to run."),
    fault_every_s: float = typer.Option(3.0, help="Seconds between injected faults."),
    seed: int = typer.Option(0, help="Seed of the fault schedule and the network faults."),
    out: Path = typer.Option(Path("runs/soak"), help="Work directory (config, recorder, logs)."),
    realtime: bool = typer.Option(False, "--rt", help="The loop under SCHED_FIFO, as [loop] realtime_priority "
                                  "(needs CAP_SYS_NICE or RLIMIT_RTPRIO; normal priority where refused)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object only."),
) -> None:
    """The daemon at RATE with faults injected every few seconds; records_lost must be 0."""
    from hil.bench.loop import RT_PRIORITY
    from hil.soak import soak

    rep = soak(rate, minutes * 60.0, out, fault_every_s=fault_every_s, seed=seed,
               realtime_priority=RT_PRIORITY if realtime else 0)
    if json_out:
        typer.echo(json.dumps(rep))
    else:
        typer.echo(json.dumps(rep, indent=2))
    ok = rep["records_lost"] == 0 and rep["max_command_ratio"] <= 1.0 and rep["faults_handled"] == rep["faults_injected"]
    if not ok:
        raise typer.Exit(1)


def bench_fuzz(
    cases: int = typer.Option(10_000, "--cases", help="Hypothesis examples per decoder."),
    seed: int = typer.Option(0, help="Hypothesis seed."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object only."),
) -> None:
    """Property-based fuzzing of every decoder: no exception escapes a decoder's own error type."""
    from hil.bench.fuzz import run_all

    rep = run_all(cases, seed)
    if json_out:
        typer.echo(json.dumps(rep))
    else:
        for name, r in rep["decoders"].items():
            typer.echo(f"{name:10s} {r['cases']:7d} cases  {r['seconds']:6.1f} s  {r['status']}")
    if not rep["passed"]:
        raise typer.Exit(1)


def export_docs(
    store: Path = typer.Argument(..., help="The recorder's SQLite store ([recorder] path)."),
    out: Path = typer.Argument(..., help="Directory for <uid>.jsonl (one run each) and <uid>_<key>.h5 (images)."),
    session: int = typer.Option(None, help="Only this recorder session (default: every session)."),
) -> None:
    """Write the store's runs (tick sessions, scans, forge episodes) as Bluesky event-model documents
    (docs/documents.md; needs the `docs` extra)."""
    try:
        from controller.documents import export
        from controller.recorder import RecorderError
    except ImportError as e:
        typer.echo(f"edgetune export-docs: {e}", err=True)
        raise typer.Exit(2) from None
    try:
        paths = export(store, out, session)
    except (RecorderError, OSError) as e:
        typer.echo(f"edgetune export-docs: {e}", err=True)
        raise typer.Exit(2) from None
    for path in paths:
        typer.echo(str(path))
    typer.echo(f"{len(paths)} runs written to {out}", err=True)
