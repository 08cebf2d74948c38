"""learner/trials.py without Ray: options as arguments, the aggregate table, the sweep file's checks, the clear error
without the `ray` extra, and that the CLI does not import Ray."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hil.cli import app
from learner import trials
from learner.stats import mean_ci95

TRAIN = typer.main.get_command(app).commands["train"]


def test_options_become_the_commands_arguments(tmp_path):
    params = TRAIN.commands["mems"].params
    argv = trials.option_argv(params, {"steps": 96, "num-envs": 4, "--gain-set": "wide", "device": None})
    assert argv == ["--steps", "96", "--num-envs", "4", "--gain-set", "wide"]
    ct = TRAIN.commands["ct"].params
    assert trials.option_argv(ct, {"threads": 1, "size": 31}) == ["--threads", "1", "--size", "31"]
    with pytest.raises(ValueError, match="'lr' is not an option"):
        trials.option_argv(params, {"lr": 1e-3})
    with pytest.raises(ValueError, match="'seed' is not an option"):  # the trials' own: seed, out, resume
        trials.option_argv(params, {"seed": 3})


def test_every_train_command_takes_train_seeds():
    for name in ("mems", "ct", "ptycho", "scatter", "bal"):
        assert "train_seeds" in [p.name for p in TRAIN.commands[name].params], name


def test_aggregate_is_mean_and_ci_over_seeds_best_point_first():
    a, b = {"lr": 0.1}, {"lr": 0.01}
    done = [(a, {"seed": s, "finished": 1, "ret": r}) for s, r in ((0, 1.0), (1, 2.0), (2, 4.0))]
    done += [(b, {"seed": s, "finished": 1, "ret": r}) for s, r in ((0, 5.0), (1, 6.0))]
    result = trials.aggregate([a, b], done, "ret", "max")
    best, other = result["points"]
    assert best["point"] == b and best["seeds"] == [0, 1]
    mean, ci = mean_ci95([1.0, 2.0, 4.0])
    assert other["stats"]["ret"] == {"mean": mean, "ci95": ci, "values": [1.0, 2.0, 4.0]}
    assert trials.aggregate([a, b], done, "ret", "min")["points"][0]["point"] == a
    table = trials.markdown(result)
    assert table.splitlines()[0] == "| lr | seeds | ret |" and f"{mean:.4g} ± {ci:.2g}" in table


def test_one_seed_has_no_ci():
    result = trials.aggregate([{}], [({}, {"seed": 0, "finished": 1, "ret": 3.0})], None, "max")
    assert math.isnan(result["points"][0]["stats"]["ret"]["ci95"])
    assert trials.markdown(result).splitlines()[-1] == "| 1 | 3 |"


def test_summary_numbers_and_a_csv_metric(tmp_path):
    (tmp_path / "log.csv").write_text("step,ret\n" + "".join(f"{i},{i}\n" for i in range(1, 31)))
    m = trials.trial_metrics(tmp_path, {"steps": 30, "a_test": [1, 2], "out": "x", "long": list(range(9))},
                             "log.csv:ret")
    assert m == {"steps": 30.0, "a_test[0]": 1.0, "a_test[1]": 2.0, "log.csv:ret": sum(range(11, 31)) / 20}


def _sweep_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, error", [
    ('command = "nope"\nout = "x"', "command = 'nope': one of bal, ct"),
    ('command = "mems"\nout = "x"\n[options]\nlr = 1', "'lr' is not an option"),
    ('command = "mems"\nout = "x"\n[options]\nsteps = 1\n[space]\nsteps = {grid = [1, 2]}', "both fixed"),
    ('command = "mems"\nout = "x"\nmode = "best"', "mode = 'best'"),
    ('command = "mems"\nout = "x"\ntrain_seeds = 0', "train_seeds ≥ 1"),
    ('command = "mems"\nout = "x"\nrepeat = 2', "unknown keys ['repeat']"),
    ('command = "mems"\nout = "x"\n[resources]\ntpu = 1', "cpu and gpu"),
    ('command = "mems"', "no out"),
    ('command = "mems"\nout = "x"\n[options]\nlive = true', "a real stand takes one trainer"),
])
def test_a_bad_sweep_file_is_refused_clearly(tmp_path, text, error):
    with pytest.raises(ValueError, match=error.replace("[", r"\[").replace("]", r"\]")):
        trials.load_sweep(_sweep_file(tmp_path, text), TRAIN, None)


def test_the_example_sweep_file_is_valid():
    example = Path(__file__).parents[2] / "docs" / "examples" / "sweep-mems.toml"
    job, search, seeds, _ = trials.load_sweep(example, TRAIN, None)
    assert job.app == "mems" and len(seeds) >= 2 and search["space"]


def test_without_the_extra_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as without the extra
    monkeypatch.setitem(sys.modules, "ray.tune", None)
    runner = CliRunner()
    r = runner.invoke(app, ["train", "mems", "--out", str(tmp_path / "run"), "--train-seeds", "2"])
    assert r.exit_code == 2 and "pip install -e '.[ray]' in a checkout" in r.output
    path = _sweep_file(tmp_path, 'command = "bal"\nout = "x"\ntrain_seeds = 2')
    r = runner.invoke(app, ["sweep", str(path)])
    assert r.exit_code == 2 and "pip install -e '.[ray]' in a checkout" in r.output
    r = runner.invoke(app, ["bench", "trials", "mems", "2", "--steps", "32", "--device", "cpu"])  # train's options pass
    assert r.exit_code == 2 and "`edgetune bench trials` needs Ray Tune" in r.output
    assert not (tmp_path / "run").exists()


def test_a_live_stand_is_never_trained_by_several_trials(tmp_path):
    r = CliRunner().invoke(app, ["train", "mems", "--out", str(tmp_path / "run"), "--live", "--train-seeds", "2"])
    assert r.exit_code == 2 and "a real stand (--live) takes one trainer" in r.output


def test_the_cli_does_not_import_ray():
    code = "import sys, hil.cli; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
