"""`edgetune train mems`, `eval mems`, `export` (MEMS and CT runs). Module top: stdlib + typer only (torch loads inside)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, cast

import typer


def train_mems(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", help="run directory (checkpoints, log.csv, PNGs)"),
    steps: int = typer.Option(192_000, min=1, help="decisions in total, over all simulated stands (--live: give it; "
                                                 "a live decision takes 100 ms, 1000 of them about 2 minutes)"),
    num_envs: int = typer.Option(16, min=1, help="stands simulated in one numpy batch"),
    seed: int = typer.Option(0),
    resume: bool = typer.Option(False, help="continue RUN/checkpoint.pt to --steps in all, with the run's own "
                                            "--num-envs, --seed, --gain-set and --disturbance"),
    device: str = typer.Option("auto", help="torch device: auto (cuda if present) | cpu | cuda"),
    gain_set: str = typer.Option("robust", "--gain-set", help="robust: only gains that amplify no vibration the "
                                 "baseline rejects | wide: any gains whose sensitivity peaks at most 3.2 (holds the "
                                 "paper's a_test gains) | box: the whole box (learner/mems/robust_gains.py)"),
    disturbance: str = typer.Option("none", help="M1 disturbance while training on the simulator: none | wiener | "
                                    "steps | sine | bursts | PATH.csv (a recorded trace, header t_s,x_px,y_px: every "
                                    "episode replays a window of it from a random frame)"),
    live: bool = typer.Option(False, "--live", help="train on the running daemon (stabilize or rl-pid mode, no active "
                                                    "policy) over the host link instead of the simulator (docs/live-training.md)"),
    to: Optional[str] = typer.Option(None, "--to", metavar="HOST:PORT", help="--live: the daemon's host link"),
    key_file: Optional[Path] = typer.Option(None, "--key-file", help="--live: the host link's key file"),
    key_id: Optional[int] = typer.Option(None, "--key-id", help="--live: the key to sign with (default: the newest)"),
    init: Optional[Path] = typer.Option(None, "--init", metavar="RUN", help="--live: start from this simulator-trained "
                                        "run (sim-to-real fine-tuning): its gain set, observation and networks, a "
                                        "fresh replay buffer"),
    learning_starts: Optional[int] = typer.Option(None, "--learning-starts", min=0, help="decisions of random gains "
                                                  "before the first update (default 2000; with --init 0)"),
) -> None:
    """Train DDPG to re-tune the MEMS PID (paper settings) on the fast simulator, or with --live on the stand."""
    from firmware_sim.mems.disturbance import NAMES
    from learner.mems.robust_gains import GAIN_SETS, GainSet
    from learner.mems.env import MemsTuningConfig
    from learner.mems.train import MemsTrainConfig, checkpoint_step, load_run_config, train_mems as run

    given = lambda name: ctx.get_parameter_source(name).name == "COMMANDLINE"  # noqa: E731
    if gain_set not in GAIN_SETS:
        raise typer.BadParameter(f"{gain_set!r}: one of {' | '.join(GAIN_SETS)}", param_hint="--gain-set")
    if disturbance not in ("none", *NAMES):
        _load_recording(Path(disturbance))
        disturbance = str(Path(disturbance).resolve())  # the run's config names it wherever it is resumed from
    for name in ("to", "key_file", "key_id", "init"):
        if not live and given(name):
            raise typer.BadParameter("goes with --live", param_hint="--" + name.replace("_", "-"))
    if live:
        _check_live_options(to, key_file, disturbance, steps_given=given("steps"), num_envs_given=given("num_envs"))
    resuming = resume and (out / "checkpoint.pt").exists()
    if (out / "checkpoint.pt").exists() and not resume:
        raise typer.BadParameter(f"{out} already holds a run: --resume to continue it, or another --out",
                                 param_hint="--out")
    if resuming:
        if init is not None:
            raise typer.BadParameter(f"--resume continues {out}/checkpoint.pt; --init only starts a run", param_hint="--init")
        was_live = "live" in json.loads((out / "config.json").read_text())
        if was_live != live:
            raise typer.BadParameter(f"{out} was trained {'on the live stand: resume it with --live' if was_live else 'on the simulator: resume it without --live'}",
                                     param_hint="--resume")
        cfg = load_run_config(out)
        kept = {"num_envs": cfg.num_envs, "seed": cfg.ddpg.seed, "gain_set": cfg.gain_set, "disturbance": cfg.env.disturbance}
        now = {"num_envs": num_envs, "seed": seed, "gain_set": gain_set, "disturbance": disturbance}
        if any(given(k) and now[k] != v for k, v in kept.items()):
            raise typer.BadParameter(f"{out} was trained with --num-envs {cfg.num_envs} --seed {cfg.ddpg.seed} "
                                     f"--gain-set {cfg.gain_set} --disturbance {cfg.env.disturbance}, and --resume keeps "
                                     "them", param_hint="--resume")
    elif init is not None:
        from learner.mems.live_train import init_config

        try:
            cfg = init_config(init)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--init") from None
        if given("gain_set") and gain_set != cfg.gain_set:
            raise typer.BadParameter(f"{init} was trained with --gain-set {cfg.gain_set}: fine-tuning keeps its map "
                                     "from the actor's output to gains", param_hint="--gain-set")
        cfg.ddpg.seed = seed
    else:
        cfg = MemsTrainConfig(MemsTuningConfig(disturbance=disturbance), num_envs=1 if live else num_envs,
                              gain_set=cast(GainSet, gain_set))
        cfg.ddpg.seed = seed
    if steps % cfg.num_envs:
        steps += cfg.num_envs - steps % cfg.num_envs
        typer.echo(f"note: --steps rounded up to {steps}, a multiple of --num-envs {cfg.num_envs}", err=True)
    if resuming and (done := checkpoint_step(out)) >= steps:
        raise typer.BadParameter(f"{out} is already at {done} decisions: nothing to do (--steps is the total)",
                                 param_hint="--steps")
    cfg.ddpg.total_steps, cfg.ddpg.device = steps, device
    if learning_starts is not None:
        cfg.ddpg.learning_starts = learning_starts
    if not live:
        typer.echo(json.dumps(run(out, cfg, resume=resume)))
        return
    _train_live(out, cfg, cast(str, to), cast(Path, key_file), key_id, resume, init)


def _check_live_options(to: Optional[str], key_file: Optional[Path], disturbance: str, *, steps_given: bool,
                        num_envs_given: bool) -> None:
    if to is None or key_file is None:
        raise typer.BadParameter("--live needs --to HOST:PORT and --key-file", param_hint="--live")
    if disturbance != "none":
        raise typer.BadParameter("is for the simulator: a live stand has its own", param_hint="--disturbance")
    if not steps_given:
        raise typer.BadParameter("--live needs --steps (a live decision takes 100 ms)", param_hint="--steps")
    if num_envs_given:
        raise typer.BadParameter("--live trains on one stand", param_hint="--num-envs")


def _train_live(out: Path, cfg, to: str, key_file: Path, key_id: Optional[int], resume: bool, init: Optional[Path]) -> None:
    """Run live training; a lost link or Ctrl-C ends it with a checkpoint and a message saying how to go on."""
    from controller.link.cli import signing
    from learner.mems.live_env import LinkLost, StandMismatch
    from learner.mems.live_train import connect, train_live
    from learner.mems.train import checkpoint_step

    addr, ring, kid = signing(to, key_file, key_id)
    if resume and (out / "config.json").exists():  # a resumed fine-tuning run still names the run it started from
        init_name = json.loads((out / "config.json").read_text()).get("live", {}).get("init")
    else:
        init_name = None if init is None else str(init)
    extra = {"live": {"to": to, "key_id": kid, "init": init_name}}
    try:
        summary = train_live(out, cfg, connect(addr, ring, kid), resume=resume, init=init, extra=extra)
    except (LinkLost, StandMismatch, KeyboardInterrupt) as e:
        why = {LinkLost: "link lost: ", StandMismatch: "error: "}.get(type(e), "stopped (Ctrl-C)") + str(e)
        if (out / "checkpoint.pt").exists():
            again = (f"edgetune train mems --live --to {to} --key-file {key_file}"
                     + ("" if key_id is None else f" --key-id {key_id}")
                     + f" --out {out} --steps {cfg.ddpg.total_steps} --resume")
            typer.echo(f"{why}. {out / 'checkpoint.pt'} holds {checkpoint_step(out)} decisions; to go on: {again}", err=True)
        else:
            typer.echo(f"{why}. Nothing trained yet.", err=True)
        raise typer.Exit({LinkLost: 3, StandMismatch: 2}.get(type(e), 130)) from None
    typer.echo(json.dumps(summary))


def eval_mems(
    runs: list[Path] = typer.Option([], "--run", help="run directory from `edgetune train mems` (repeatable: one per "
                                                      "training seed, reported with their spread); none: references only"),
    disturbance: str = typer.Option("wiener", help="wiener | steps | sine | bursts | PATH.csv (header line "
                                                   "t_s,x_px,y_px; resampled to 120 Hz; the test runs 1000 frames: "
                                                   "a shorter recording holds its last sample)"),
    split: str = typer.Option("selection", help="test seeds: selection (1000, …: for every choice you make) | "
                                                "report (5000, …: only for numbers you publish)"),
    seeds: int = typer.Option(8, min=2, max=1000, help="how many test seeds of the set (never used in training; "
                                                     "at most 1000, so that the sets never overlap)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    out: Path = typer.Option(None, help="where to write the markdown table and PNGs (default: the run directory)"),
    gains: list[str] = typer.Option([], "--gains", metavar="PX,IX,PY,IY",
                                    help="also test these fixed gains [V/px, V/(px·s)] (repeatable)"),
    burst_hz: Optional[float] = typer.Option(None, "--burst-hz",
                                             help="with --disturbance bursts: their ring frequency [Hz] (default 12)"),
) -> None:
    """The paper's test (Table 2) for the baseline, the paper's a_test gains, Ziegler–Nichols, each run's a_test,
    π(s) and π(s) retrained, and your --gains."""
    from firmware_sim.mems.disturbance import BURST_HZ, check_burst_hz
    from learner.mems.eval import SEED_SETS, Split, evaluate_mems, file_stem, markdown, test_seeds

    for run in runs:
        if not (run / "checkpoint.pt").exists():
            raise typer.BadParameter(f"{run} has no checkpoint.pt (train with `edgetune train mems --out {run}`)",
                                     param_hint="--run")
    if split not in SEED_SETS:
        raise typer.BadParameter(f"{split!r}: one of {' | '.join(SEED_SETS)}", param_hint="--split")
    if disturbance not in ("wiener", "steps", "sine", "bursts"):
        _check_recording(Path(disturbance))
    if burst_hz is not None and disturbance != "bursts":
        raise typer.BadParameter("goes with --disturbance bursts", param_hint="--burst-hz")
    burst_hz = BURST_HZ if burst_hz is None else burst_hz
    try:
        check_burst_hz(burst_hz)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--burst-hz") from None
    out = out or (runs[0] if len(runs) == 1 else None)
    try:
        result = evaluate_mems(runs, disturbance, test_seeds(cast(Split, split), seeds), out=out,
                               candidates=[_parse_gains(g) for g in gains], burst_hz=burst_hz)
    except ValueError as e:  # runs that cannot be compared (same directory names, other environments)
        raise typer.BadParameter(str(e), param_hint="--run") from None
    typer.echo(json.dumps(result) if as_json else markdown(result))
    stem = file_stem(disturbance, burst_hz)
    typer.echo(f"wrote eval_{stem}.md, eval_{stem}.png and sensitivity_{stem}.png in {out}" if out
               else "note: no --out (nor a single --run), so no markdown table or PNG was written", err=True)


def _load_recording(path: Path) -> int:
    """Frames (at 120 Hz) of a recorded disturbance; a clean error for a missing or bad CSV."""
    from firmware_sim.mems.disturbance import from_csv

    if not path.is_file():
        raise typer.BadParameter(f"{str(path)!r} is not a disturbance name or a CSV file", param_hint="--disturbance")
    try:
        return from_csv(path).shape[1]
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--disturbance") from None


def _check_recording(path: Path) -> None:
    """A clean error for a bad CSV; a note when it does not span the test (held or cut to FRAMES)."""
    from firmware_sim.mems.disturbance import FRAME_RATE_HZ
    from learner.mems.eval import FRAMES

    n = _load_recording(path)
    if n != FRAMES:
        rest = "its last sample is held to the end" if n < FRAMES else f"frames after {FRAMES} are not used"
        typer.echo(f"note: {path} spans {n} frames at {FRAME_RATE_HZ:g} Hz; the test runs {FRAMES}, so {rest}", err=True)


def _parse_gains(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    inf = float("inf")
    if len(values) != 4 or not all(0.0 < p < inf and 0.0 <= i < inf for p, i in (values[:2], values[2:])):
        raise typer.BadParameter(f"{text!r} is not four gains Px,Ix,Py,Iy (P > 0, I ≥ 0)", param_hint="--gains")
    return values


def _is_scatter_run(run: Path) -> bool:
    """A `train scatter` run's policy.pt holds an "actor" (a `train ptycho` run's holds a "net")."""
    import torch

    return "actor" in torch.load(run / "policy.pt", map_location="cpu", weights_only=False)


def export(run: Path = typer.Argument(..., help="run directory"), out: Path = typer.Argument(..., help="artifact directory"),
           version: Optional[str] = typer.Option(None, help="Policy version on the edge (default: RUN's name + UTC time).")) -> None:
    """Export the trained actor to OUT/model.onnx + OUT/manifest.json: a BAL run (table.npz, `train bal`) as a
    forge policy (the table's interpolation graph), a ptycho run (policy.pt + updates.csv,
    `train ptycho`) as a scan policy with its GRU state, a scatter run (the same files, `train scatter`) as a
    transceiver policy with its GRU state, a CT run (policy.pt, `train ct`) as an angle policy, else
    a MEMS run (`train mems`; normalisation and bounds in the graph)."""
    from datetime import datetime, timezone

    from controller.policy.manifest import VERSION_RE, as_version

    if (run / "table.npz").exists():
        kind = "bal"
    elif (run / "policy.pt").exists():
        kind = ("scatter" if _is_scatter_run(run) else "ptycho") if (run / "updates.csv").exists() else "ct"
    elif (run / "config.json").exists() and (run / "checkpoint.pt").exists():
        kind = "mems"
    else:
        raise typer.BadParameter(f"{run} is not a run directory: no table.npz (`train bal`), policy.pt (`train ct`) "
                                 "or config.json + checkpoint.pt (`train mems`)", param_hint="RUN")
    if version is not None and not VERSION_RE.fullmatch(version):
        raise typer.BadParameter(f"{version!r}: 1 to 64 characters of A-Z a-z 0-9 . _ + -, starting with a letter "
                                 "or digit", param_hint="--version")
    stamp = f"-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    version = version or as_version(run.resolve().name)[:64 - len(stamp)] + stamp
    if kind == "bal":
        from learner.bal.export import export_bal

        try:
            manifest = export_bal(run, out, version=version)
        except ValueError as e:  # a table whose graph does not fit the forge contract
            raise typer.BadParameter(str(e), param_hint="RUN") from None
    elif kind == "scatter":
        from learner.scatter.export import export_scatter

        try:
            manifest = export_scatter(run, out, version=version)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="RUN") from None
    elif kind == "ptycho":
        from learner.ptycho.export import export_ptycho

        manifest = export_ptycho(run, out, version=version)
    elif kind == "ct":
        from learner.ct.export import export_ct

        manifest = export_ct(run, out, version=version)
    else:
        from learner.mems.export import export_mems

        manifest = export_mems(run, out, version=version)
    typer.echo(f"wrote {out / 'model.onnx'} (sha256 {manifest.sha256[:12]}…) and {out / 'manifest.json'}")
