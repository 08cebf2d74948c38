"""Many training runs at once on Ray Tune: `edgetune train <app> … --train-seeds N` and `edgetune sweep CONFIG.toml`.

A trial is one `edgetune train <app>` run in a child process, with its own run folder, `--seed` and `--resume` (the
trainers' exact resume), wrapped as a Ray Tune function trainable: the trial reports a Tune checkpoint (a copy of the
run folder) whenever the trainer has written a new checkpoint, and its metrics at the end. On a restarted trial
(`Tuner.restore`, or on another node) an empty run folder is filled from the last Tune checkpoint first, and a trial
whose run folder says it finished (trial.json with the same command) is not run again. Ray runs embedded
(`ray.init()`) unless RAY_ADDRESS names a cluster. The trials' metrics are aggregated per point of the search space,
mean ± 95 % CI over the training seeds (learner/stats.py), into OUT/trials.md and OUT/trials.json.

Ray is the optional extra `edgetune[ray]`, imported only inside the functions that run trials: the CLI's other
commands and the edge never load it. `run_trial` needs no Ray (the unit tests call it directly).
"""
from __future__ import annotations

import contextlib
import csv
import functools
import importlib
import inspect
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import typer

RAY_MISSING = "needs Ray Tune, an optional extra: pip install -e '.[ray]' in a checkout"
CSV_ROWS = 20  # a FILE.csv:COLUMN metric is the mean of the log's last CSV_ROWS rows
DOMAINS = ("grid", "choice", "uniform", "loguniform", "randint")  # the ray.tune search-space functions a sweep takes
CONTROL = ("out", "seed", "resume")  # options every trial gets from the sweep itself
ONE_STAND = ("live",)  # options that train on the one real stand (`train mems --live`): never several trials at once


@dataclass
class Job:
    """What every trial of one `--train-seeds` run or sweep shares (sent to the Ray workers)."""
    app: str                      # `edgetune train <app>`
    argv: list[str]               # the fixed options
    out: Path                     # absolute: trial runs in OUT/[point/]seed{k}, Tune's state in OUT/tune
    cwd: str                      # the trainers' working directory (relative paths in options)
    metric: Optional[str] = None  # the metric a sweep ranks by: a summary.json key or FILE.csv:COLUMN
    mode: str = "max"
    resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1.0})
    checkpoint_s: float = 60.0    # how often a running trial looks for a new trainer checkpoint


def require_ray(what: str) -> None:
    """A clear error (exit 2) when the `ray` extra is not installed."""
    try:
        importlib.import_module("ray.tune")
    except ImportError:
        typer.echo(f"error: {what} {RAY_MISSING}", err=True)
        raise typer.Exit(2) from None


# -- options of a train command as command-line arguments ------------------------------------------------------------

def option_argv(params: list, values: dict[str, Any]) -> list[str]:
    """``values`` (by option name: `num_envs`, `num-envs` or `--num-envs`) as arguments of the command whose click
    parameters are ``params``; ValueError for a name the command does not have. Paths become absolute."""
    by_name = {p.name: p for p in params if p.opts and p.opts[0].startswith("--")}
    argv: list[str] = []
    for key, value in values.items():
        name = key.lstrip("-").replace("-", "_")
        p = by_name.get(name)
        if p is None or name in CONTROL:
            known = ", ".join(sorted(n.replace("_", "-") for n in by_name if n not in CONTROL))
            raise ValueError(f"{key!r} is not an option here (options: {known})")
        if getattr(p, "is_flag", False):
            flag = p.opts[0] if value else (p.secondary_opts[:1] or [None])[0]
            argv += [flag] if flag else []
            continue
        for v in value if p.multiple else [value]:
            if v is not None:
                argv += [p.opts[0], str(Path(v).absolute()) if isinstance(v, Path) else str(v)]
    return argv


# -- search spaces ---------------------------------------------------------------------------------------------------

def points(space: dict[str, dict], samples: int = 1, search_seed: int = 0) -> list[dict[str, Any]]:
    """The search space's points, fixed before any trial runs so that every training seed of a point gets the same
    values: the grid (every combination of the `grid` lists) × ``samples`` draws of the random parts (ray.tune's
    choice, uniform, loguniform, randint) from a generator seeded with ``search_seed``. ``space`` maps an option to
    one {domain: arguments} table, e.g. {"lr": {"loguniform": [1e-4, 1e-2]}}."""
    from numpy.random import RandomState
    from ray import tune

    grid, random = {}, {}
    for name, spec in space.items():
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DOMAINS:
            raise ValueError(f"space.{name}: one of {' | '.join(f'{{{d} = …}}' for d in DOMAINS)}, got {spec!r}")
        kind, args = next(iter(spec.items()))
        if not isinstance(args, list) or not args:
            raise ValueError(f"space.{name}.{kind}: a non-empty list, got {args!r}")
        if kind == "grid":
            grid[name] = args
        else:
            try:
                random[name] = tune.choice(args) if kind == "choice" else getattr(tune, kind)(*args)
            except (TypeError, ValueError, AssertionError) as e:
                raise ValueError(f"space.{name}.{kind}{tuple(args)}: {e}") from None
    rng = RandomState(search_seed)
    draws = samples if random else 1
    return [{**dict(zip(grid, combo)), **{n: _plain(d.sample(random_state=rng)) for n, d in random.items()}}
            for combo in itertools.product(*grid.values()) for _ in range(draws)]


def _plain(v: Any) -> Any:
    """A numpy scalar as the Python number (TOML/JSON/CLI-friendly)."""
    return v.item() if hasattr(v, "item") else v


def point_tag(point: dict[str, Any]) -> str:
    """A point's folder name: `gain_set=wide,lr=0.001` ('' for no search space)."""
    return ",".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items()).replace("/", "_")


# -- one trial -------------------------------------------------------------------------------------------------------

def run_dir(job: Job, tag: str, seed: int) -> Path:
    return job.out / tag / f"seed{seed}" if tag else job.out / f"seed{seed}"


def run_trial(job: Job, trial: dict[str, Any], report: Callable[[dict, Optional[Path]], None],
              restored: Optional[Path] = None) -> dict:
    """Train one trial ({"point", "argv", "tag", "seed"}) to the end in a child process; ``report(metrics, snapshot)``
    gets a copy of the run folder after each new trainer checkpoint and the final metrics. ``restored``: a Tune
    checkpoint's folder, copied into an empty run folder first. RuntimeError when the trainer fails."""
    seed, run = trial["seed"], run_dir(job, trial["tag"], trial["seed"])
    command = ["train", job.app, *job.argv, *trial["argv"], "--seed", str(seed), "--out", str(run), "--resume"]
    cmd = [sys.executable, "-m", "controller.lifeline", str(os.getpid()), "hil.cli", *command]  # ends with this worker
    run.mkdir(parents=True, exist_ok=True)
    if restored is not None and not any(run.iterdir()):
        shutil.copytree(restored, run, dirs_exist_ok=True)
    marker, summary_file = run / "trial.json", run / "summary.json"
    mark = json.loads(marker.read_text()) if marker.exists() else {}
    if mark.get("command") == command and "metrics" in mark:  # finished before
        report(mark["metrics"], None)
        return mark["metrics"]
    if mark.get("command") == command and summary_file.exists() and summary_file.stat().st_mtime > marker.stat().st_mtime:
        return _finish(job, trial, command, run, json.loads(summary_file.read_text()), report)  # the trainer had finished
    marker.write_text(json.dumps({"command": command, "point": trial["point"]}, indent=1) + "\n")
    threads = str(max(1, int(job.resources.get("cpu", 1))))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    with (run / "train.out").open("w") as out, (run / "train.log").open("a") as log:
        proc = subprocess.Popen(cmd, stdout=out, stderr=log, env=env, cwd=job.cwd if Path(job.cwd).is_dir() else run)
        try:
            seen = _checkpoint_time(run)
            while True:
                try:
                    rc = proc.wait(timeout=job.checkpoint_s)
                    break
                except subprocess.TimeoutExpired:
                    if (now := _checkpoint_time(run)) != seen:
                        seen = now
                        with _snapshot(run) as snap:
                            report({"seed": seed, "finished": 0}, snap)
        finally:
            if proc.poll() is None:  # the trial was stopped (Tune, Ctrl-C): the trainer's checkpoint stays
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=30)
    if rc != 0:
        tail = (run / "train.log").read_text(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"`{' '.join(command)}` exited with {rc}; {run / 'train.log'} ends:\n" + "\n".join(tail))
    lines = (run / "train.out").read_text().splitlines()
    summary = next((json.loads(line) for line in reversed(lines) if line.startswith("{")), {})  # the printed summary
    summary_file.write_text(json.dumps(summary, indent=1) + "\n")
    return _finish(job, trial, command, run, summary, report)


def _finish(job: Job, trial: dict, command: list[str], run: Path, summary: dict,
            report: Callable[[dict, Optional[Path]], None]) -> dict:
    """A finished trainer's metrics into trial.json and the last report (with the run folder as Tune checkpoint)."""
    metrics = {**trial_metrics(run, summary, job.metric), "seed": trial["seed"], "finished": 1}
    (run / "trial.json").write_text(json.dumps({"command": command, "point": trial["point"], "metrics": metrics},
                                               indent=1) + "\n")
    with _snapshot(run) as snap:
        report(metrics, snap)
    return metrics


def _checkpoint_time(run: Path) -> float:
    return max((p.stat().st_mtime for p in run.glob("checkpoint*")), default=0.0)


@contextlib.contextmanager
def _snapshot(run: Path) -> Iterator[Path]:
    """A copy of the run folder (no pictures) in a temporary folder, for a Tune checkpoint of a running trainer."""
    with tempfile.TemporaryDirectory(prefix="edgetune-trial-") as tmp:
        for p in run.iterdir():
            if p.is_file() and p.suffix not in (".png", ".tmp"):
                shutil.copy2(p, tmp)
        yield Path(tmp)


def trial_metrics(run: Path, summary: dict, metric: Optional[str]) -> dict[str, float]:
    """The summary's numbers (short lists as `key[i]`), and ``metric`` when it is FILE.csv:COLUMN (the mean of the
    log's last CSV_ROWS rows; absent while the log has none)."""
    flat: dict[str, float] = {}
    for k, v in summary.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            flat[k] = float(v)
        elif isinstance(v, list) and len(v) <= 8 and all(isinstance(x, (int, float)) for x in v):
            flat.update({f"{k}[{i}]": float(x) for i, x in enumerate(v)})
    if metric and ":" in metric:
        name, column = metric.split(":", 1)
        rows = list(csv.DictReader((run / name).open())) if (run / name).exists() else []
        values = [float(r[column]) for r in rows[-CSV_ROWS:] if r.get(column) not in (None, "")]
        if values:
            flat[metric] = sum(values) / len(values)
    return flat


# -- on Ray Tune -----------------------------------------------------------------------------------------------------

def _trainable(config: dict, job: Job) -> None:
    """The Tune function trainable: one trial, its checkpoints and metrics reported to Tune."""
    from ray import tune

    trial = config["trial"]

    def report(metrics: dict, snap: Optional[Path]) -> None:
        checkpoint = None if snap is None else tune.Checkpoint.from_directory(str(snap))
        tune.report({**metrics, "edgetune": metrics}, checkpoint=checkpoint)  # Tune adds its own keys beside ours

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        run_trial(job, trial, report)
    else:
        with checkpoint.as_directory() as restored:
            run_trial(job, trial, report, Path(restored))


def _trial_name(trial: Any) -> str:
    """Tune's name and folder for a trial: `[point-]seed{k}`."""
    t = trial.config["trial"]
    return f"{t['tag']}-seed{t['seed']}" if t["tag"] else f"seed{t['seed']}"


def run_on_ray(job: Job, pts: list[dict[str, Any]], seeds: list[int], params: list, resume: bool,
               log: Callable[[str], None]) -> dict:
    """Every point × seed as a Tune trial; returns the aggregate (also in OUT/trials.json and OUT/trials.md).
    ``resume``: restore OUT/tune's experiment (finished trials are kept, the others continue from their checkpoints)."""
    import ray
    from ray import tune

    trials = [{"point": p, "argv": option_argv(params, p), "tag": point_tag(p), "seed": s} for p in pts for s in seeds]
    started = not ray.is_initialized()
    if started:  # RAY_ADDRESS: that cluster's head (`ray start --head`); else a Ray of our own, even beside a head
        # log_to_driver=False: the workers' output (Tune's checkpoint notes) would land in stdout, which is the result's
        ray.init(log_to_driver=False,
                 **({} if os.environ.get("RAY_ADDRESS") else {"address": "local", "include_dashboard": False}))

    class Log(tune.Callback):
        def on_trial_complete(self, trial, **info):
            log(f"done: {run_dir(job, trial.config['trial']['tag'], trial.config['trial']['seed'])}")

        def on_trial_error(self, trial, **info):
            log(f"FAILED: {run_dir(job, trial.config['trial']['tag'], trial.config['trial']['seed'])} (see its train.log)")

    trainable = tune.with_resources(tune.with_parameters(_trainable, job=job), job.resources)
    state = job.out / "tune"
    try:
        if resume and tune.Tuner.can_restore(state / "trials"):
            tuner = tune.Tuner.restore(str(state / "trials"), trainable, resume_errored=True)
        else:
            tuner = tune.Tuner(trainable, param_space={"trial": tune.grid_search(trials)},
                               tune_config=tune.TuneConfig(trial_name_creator=_trial_name,
                                                           trial_dirname_creator=_trial_name),
                               run_config=tune.RunConfig(name="trials", storage_path=str(state), verbose=0,
                                                         callbacks=[Log()],
                                                         checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
        with contextlib.redirect_stdout(sys.stderr):  # Tune's own reporting: stdout is for the result
            grid = tuner.fit()
    finally:
        if started:
            ray.shutdown()
    done = [(r.config["trial"]["point"], r.metrics["edgetune"]) for r in grid
            if r.error is None and r.metrics.get("finished")]
    folder = {id(r): str(run_dir(job, r.config["trial"]["tag"], r.config["trial"]["seed"])) for r in grid}
    failed = [folder[id(r)] for r in grid if r.error is not None]
    stopped = [folder[id(r)] for r in grid if r.error is None and not r.metrics.get("finished")]
    return write_summary(job, aggregate(pts, done, job.metric, job.mode), failed, stopped)


# -- results ---------------------------------------------------------------------------------------------------------

def aggregate(pts: list[dict], done: list[tuple[dict, dict]], metric: Optional[str], mode: str) -> dict:
    """Per point: its finished seeds and every metric's mean ± 95 % CI over them (learner/stats.py), best point
    first by ``metric`` when one is named."""
    from learner.stats import mean_ci95

    rows = []
    for p in pts:
        ms = [m for q, m in done if q == p]
        keys = sorted({k for m in ms for k in m if k not in ("seed", "finished")}, key=lambda k: (k != metric, k))
        stats = {}
        for k in keys:
            values = [m[k] for m in ms if k in m]
            mean, ci = mean_ci95(values)
            stats[k] = {"mean": mean, "ci95": ci, "values": values}
        rows.append({"point": p, "seeds": sorted(int(m["seed"]) for m in ms), "stats": stats})
    if metric:
        sign = -1.0 if mode == "max" else 1.0
        rows.sort(key=lambda r: sign * r["stats"][metric]["mean"]
                  if metric in r["stats"] and not math.isnan(r["stats"][metric]["mean"]) else math.inf)
    return {"metric": metric, "mode": mode, "points": rows}


def markdown(result: dict) -> str:
    """The aggregate as a markdown table: one row per point, mean ± 95 % CI over its seeds (n seeds)."""
    keys = list(dict.fromkeys(k for r in result["points"] for k in r["stats"]))
    names = list(dict.fromkeys(k for r in result["points"] for k in r["point"]))
    head = [*names, "seeds", *keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["points"]:
        cells = [str(r["point"].get(n, "")) for n in names] + [str(len(r["seeds"]))]
        for k in keys:
            s = r["stats"].get(k)
            cells.append("" if s is None else f"{s['mean']:.4g}" + ("" if math.isnan(s["ci95"]) else f" ± {s['ci95']:.2g}"))
        lines.append("| " + " | ".join(cells) + " |")
    if result.get("failed"):
        lines.append(f"\nfailed trials (their train.log says why): {', '.join(result['failed'])}")
    if result.get("stopped"):
        lines.append(f"\nstopped trials (--resume continues them): {', '.join(result['stopped'])}")
    return "\n".join(lines)


def _no_nan(x: Any) -> Any:
    """NaN (a CI from one seed) as null: strict JSON."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _no_nan(v) for k, v in x.items()}
    return [_no_nan(v) for v in x] if isinstance(x, list) else x


def write_summary(job: Job, result: dict, failed: list[str], stopped: list[str]) -> dict:
    """OUT/trials.json and OUT/trials.md."""
    result = {"command": ["edgetune", "train", job.app, *job.argv], **result, "failed": failed, "stopped": stopped}
    job.out.mkdir(parents=True, exist_ok=True)
    (job.out / "trials.json").write_text(json.dumps(_no_nan(result), indent=1) + "\n")
    (job.out / "trials.md").write_text(markdown(result) + "\n")
    return result


# -- the command line ------------------------------------------------------------------------------------------------

def _threads(params: list, options: dict[str, Any], resources: dict[str, float]) -> dict[str, Any]:
    """A trainer with --threads gets as many as its trial's CPUs unless told otherwise (one each by default)."""
    if any(p.name == "threads" for p in params) and options.get("threads") is None:
        return {**options, "threads": max(1, int(resources.get("cpu", 1)))}
    return options


def _refuse_rerun(out: Path, resume: bool) -> None:
    if not resume and (out / "tune").exists():
        raise typer.BadParameter(f"{out} already holds trials: --resume to continue them, or another --out",
                                 param_hint="--out")


def with_train_seeds(command: Callable) -> Callable:
    """``command`` (an `edgetune train <app>` function with --out, --seed and --resume) with `--train-seeds N`:
    N > 1 runs N trials on Ray Tune, seeds --seed … --seed + N − 1, each in OUT/seed{k} (--resume: continue them);
    N = 1 is the command itself."""
    sig = inspect.signature(command)
    ctx_name = next((n for n, p in sig.parameters.items() if p.annotation in (typer.Context, "typer.Context")), None)
    added = [inspect.Parameter("train_seeds", inspect.Parameter.KEYWORD_ONLY, annotation=int,
                               default=typer.Option(1, "--train-seeds", min=1, help=(
                                   "Training seeds --seed … --seed + N − 1 as N trials on Ray Tune (the extra "
                                   "edgetune[ray]; RAY_ADDRESS: a cluster), each in OUT/seed{k}, their summary "
                                   "mean ± 95 % CI in OUT/trials.md (docs/ray.md).")))]
    if ctx_name is None:
        added.append(inspect.Parameter("trials_ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        n = kwargs.pop("train_seeds")
        ctx = kwargs[ctx_name] if ctx_name else kwargs.pop("trials_ctx")
        if n == 1:
            return command(**kwargs)
        if any(kwargs.get(k) for k in ONE_STAND):
            raise typer.BadParameter("trains several seeds at once, on simulators: a real stand (--live) takes one "
                                     "trainer", param_hint="--train-seeds")
        require_ray("--train-seeds N > 1")
        out = Path(kwargs["out"]).absolute()
        _refuse_rerun(out, kwargs["resume"])
        params = [p for p in ctx.command.params if p.name != "train_seeds"]
        given = {k: v for k, v in ctx.params.items() if k not in (*CONTROL, "train_seeds")
                 and getattr(ctx.get_parameter_source(k), "name", "DEFAULT") != "DEFAULT"}
        job = Job(app=ctx.info_name, argv=option_argv(params, _threads(params, given, {"cpu": 1})), out=out,
                  cwd=os.getcwd())
        seeds = list(range(kwargs["seed"], kwargs["seed"] + n))
        _done(run_on_ray(job, [{}], seeds, params, kwargs["resume"], _log), as_json=False)

    wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *added])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**command.__annotations__, "train_seeds": int,
                               **({} if ctx_name else {"trials_ctx": typer.Context})}
    return wrapper


def _log(msg: str) -> None:
    typer.echo(msg, err=True)


def _done(result: dict, as_json: bool) -> None:
    """Print the table (or JSON); exit 1 when a trial failed or was stopped."""
    typer.echo(json.dumps(_no_nan(result)) if as_json else markdown(result))
    if result["failed"] or result["stopped"]:
        raise typer.Exit(1)


SWEEP_KEYS = {"command", "out", "options", "space", "train_seeds", "seed", "metric", "mode", "samples", "search_seed",
              "resources", "checkpoint_s"}


def load_sweep(path: Path, train_group: Any, out: Optional[Path]) -> tuple[Job, dict, list[int], list]:
    """A sweep file (docs/ray.md) checked against its train command: the Job, the search space, the training seeds
    and the command's parameters; ValueError naming what is wrong."""
    try:
        spec = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{path}: {e}") from None
    if unknown := set(spec) - SWEEP_KEYS:
        raise ValueError(f"unknown keys {sorted(unknown)} (known: {', '.join(sorted(SWEEP_KEYS))})")
    app = spec.get("command")
    if app not in train_group.commands:
        raise ValueError(f"command = {app!r}: one of {', '.join(sorted(train_group.commands))} (`edgetune train …`)")
    params = [p for p in train_group.commands[app].params if p.name != "train_seeds"]
    options, space = spec.get("options", {}), spec.get("space", {})
    resources = {"cpu": 1.0, **spec.get("resources", {})}
    if live := [k for k in (*options, *space) if k.lstrip("-").replace("-", "_") in ONE_STAND]:
        raise ValueError(f"{live}: a sweep trains on simulators, a real stand takes one trainer")
    if both := set(options) & set(space):
        raise ValueError(f"{sorted(both)} both fixed (options) and searched (space)")
    option_argv(params, {k: None for k in space})  # the searched options exist
    out = out or spec.get("out")
    n, seed = spec.get("train_seeds", 1), spec.get("seed", 0)
    if not out:
        raise ValueError("no out = \"FOLDER\" in the file (or --out)")
    if not (isinstance(n, int) and n >= 1 and isinstance(seed, int)):
        raise ValueError(f"train_seeds = {n!r}, seed = {seed!r}: whole numbers, train_seeds ≥ 1")
    if spec.get("mode", "max") not in ("max", "min"):
        raise ValueError(f"mode = {spec['mode']!r}: max | min")
    if set(resources) - {"cpu", "gpu"} or not all(isinstance(v, (int, float)) and v >= 0 for v in resources.values()):
        raise ValueError(f"resources = {resources}: cpu and gpu, numbers ≥ 0")
    job = Job(app=app, argv=option_argv(params, _threads(params, options, resources)), out=Path(out).absolute(),
              cwd=os.getcwd(), metric=spec.get("metric"), mode=spec.get("mode", "max"), resources=resources,
              checkpoint_s=float(spec.get("checkpoint_s", 60.0)))
    search = {"space": space, "samples": int(spec.get("samples", 1)), "search_seed": int(spec.get("search_seed", 0))}
    return job, search, list(range(seed, seed + n)), params


def sweep(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="Sweep file (TOML): the train command, fixed options, search space, "
                                  "training seeds, metric, resources per trial (docs/ray.md)."),
    out: Optional[Path] = typer.Option(None, help="Results folder (default: the file's `out`)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the sweep in OUT (Tune's restore; each trial "
                                "resumes from its trainer's checkpoint)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (default: a markdown table)."),
) -> None:
    """Run a search space × training seeds as Ray Tune trials of an `edgetune train` command, on an embedded Ray
    (or the cluster at RAY_ADDRESS); the table (mean ± 95 % CI over seeds per point) goes to OUT/trials.md/json."""
    try:
        job, search, seeds, params = load_sweep(config, ctx.find_root().command.commands["train"], out)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="CONFIG") from None
    require_ray("`edgetune sweep`")
    _refuse_rerun(job.out, resume)
    try:
        pts = points(**search)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="CONFIG") from None
    _done(run_on_ray(job, pts, seeds, params, resume, _log), as_json)
