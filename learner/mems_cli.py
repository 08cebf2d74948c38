"""`edgetune train mems`, `eval mems`, `export` (MEMS and CT runs). Module top: stdlib + typer only (torch loads inside)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def train_mems(
    out: Path = typer.Option(..., "--out", help="run directory (checkpoints, log.csv, PNGs)"),
    steps: int = typer.Option(96_000, min=1, help="decisions in total, over all simulated stands"),
    num_envs: int = typer.Option(16, min=1, help="stands simulated in one numpy batch"),
    seed: int = typer.Option(0),
    resume: bool = typer.Option(False, help="continue from RUN/checkpoint.pt"),
    device: str = typer.Option("auto", help="torch device: auto (cuda if present) | cpu | cuda"),
    robust: bool = typer.Option(True, help="only gains that amplify no vibration the baseline rejects "
                                           "(learner/robust_gains.py); --no-robust: the whole box"),
) -> None:
    """Train DDPG to re-tune the MEMS PID (paper settings) on the fast simulator."""
    from learner.mems_train import MemsTrainConfig, train_mems as run

    if not resume and (out / "checkpoint.pt").exists():
        raise typer.BadParameter(f"{out} already holds a run: --resume to continue it, or another --out",
                                 param_hint="--out")
    if steps % num_envs:
        steps += num_envs - steps % num_envs
        typer.echo(f"note: --steps rounded up to {steps}, a multiple of --num-envs {num_envs}", err=True)
    cfg = MemsTrainConfig(num_envs=num_envs, robust=robust)
    cfg.ddpg.total_steps, cfg.ddpg.seed, cfg.ddpg.device = steps, seed, device
    summary = run(out, cfg, resume=resume)
    typer.echo(json.dumps(summary))


def eval_mems(
    run: Path = typer.Option(None, "--run", help="run directory from `edgetune train mems`; none: baselines only"),
    disturbance: str = typer.Option("wiener", help="wiener | steps | sine | bursts | PATH.csv (t_s,x_px,y_px; resampled to 120 Hz, 1000 frames: a shorter one holds its last sample)"),
    seeds: int = typer.Option(8, min=2, help="test seeds (1000, 1001, ...: never used in training)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    out: Path = typer.Option(None, help="where to write the markdown table and PNG (default: the run directory)"),
    gains: list[str] = typer.Option([], "--gains", metavar="PX,IX,PY,IY",
                                    help="also test these fixed gains [V/px, V/(px·s)] (repeatable)"),
) -> None:
    """The paper's test (Table 2) for baseline, Ziegler–Nichols, a_test, π(s), π(s) retrained and your --gains."""
    from learner.mems_eval import EVAL_SEEDS, evaluate_mems, markdown

    if run is not None and not (run / "checkpoint.pt").exists():
        raise typer.BadParameter(f"{run} has no checkpoint.pt (train with `edgetune train mems --out {run}`)")
    if disturbance not in ("wiener", "steps", "sine", "bursts"):
        _check_recording(Path(disturbance))
    result = evaluate_mems(run, disturbance, tuple(range(EVAL_SEEDS[0], EVAL_SEEDS[0] + seeds)), out=out or run,
                           candidates=[_parse_gains(g) for g in gains])
    typer.echo(json.dumps(result) if as_json else markdown(result))


def _check_recording(path: Path) -> None:
    """A clean error for a bad CSV; a note when it does not span the test (held or cut to FRAMES)."""
    from firmware_sim.disturbance import FRAME_RATE_HZ, from_csv
    from learner.mems_eval import FRAMES

    if not path.is_file():
        raise typer.BadParameter(f"{str(path)!r} is not a disturbance name or a CSV file", param_hint="--disturbance")
    try:
        n = from_csv(path).shape[1]
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--disturbance") from None
    if n != FRAMES:
        rest = "its last sample is held to the end" if n < FRAMES else f"frames after {FRAMES} are not used"
        typer.echo(f"note: {path} spans {n} frames at {FRAME_RATE_HZ:g} Hz; the test runs {FRAMES}, so {rest}", err=True)


def _parse_gains(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or not all(0.0 < p < float("inf") and 0.0 <= i < float("inf") for p, i in (values[:2], values[2:])):
        raise typer.BadParameter(f"{text!r} is not four gains Px,Ix,Py,Iy (P > 0, I ≥ 0)", param_hint="--gains")
    return values


def export(run: Path = typer.Argument(..., help="run directory"), out: Path = typer.Argument(..., help="artifact directory"),
           version: Optional[str] = typer.Option(None, help="Policy version on the edge (default: RUN's name + UTC time).")) -> None:
    """Export the trained actor to OUT/model.onnx + OUT/manifest.json: a CT run (policy.pt, `train ct`) as an
    angle policy, else a MEMS run (`train mems`; normalisation and bounds in the graph)."""
    from datetime import datetime, timezone

    if (run / "policy.pt").exists():
        kind = "ct"
    elif (run / "config.json").exists() and (run / "checkpoint.pt").exists():
        kind = "mems"
    else:
        raise typer.BadParameter(f"{run} is not a run directory: no policy.pt (`train ct`) or config.json + "
                                 "checkpoint.pt (`train mems`)", param_hint="RUN")
    version = version or f"{run.resolve().name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    if kind == "ct":
        from learner.ct_export import export_ct

        manifest = export_ct(run, out, version=version)
    else:
        from learner.mems_export import export_mems

        manifest = export_mems(run, out, version=version)
    typer.echo(f"wrote {out / 'model.onnx'} (sha256 {manifest.sha256[:12]}…) and {out / 'manifest.json'}")
