"""On an embedded Ray (the `ray` extra; `make test-ray`): `train mems --train-seeds 2` and a two-point sweep, each two
Tune trials at once, their table in OUT; `--resume` restores the finished experiment without training again. The
sweep starts (and stops) its own Ray, as the command does for a user."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hil.cli import app

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
ray = pytest.importorskip("ray")
FAST = ["--steps", "32", "--num-envs", "4", "--device", "cpu"]


@pytest.fixture
def embedded_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_train_seeds_runs_two_trials_and_resumes(tmp_path, embedded_ray):
    out = tmp_path / "runs"
    r = CliRunner().invoke(app, ["train", "mems", "--out", str(out), *FAST, "--seed", "5", "--train-seeds", "2"])
    assert r.exit_code == 0, r.output
    result = json.loads((out / "trials.json").read_text())
    (row,) = result["points"]
    assert row["seeds"] == [5, 6] and len(row["stats"]["a_test[0]"]["values"]) == 2 and not result["failed"]
    assert all(json.loads((out / f"seed{s}" / "summary.json").read_text())["steps"] == 32 for s in (5, 6))
    assert "| seeds | a_test[0] |" in r.output
    stamp = (out / "seed5" / "checkpoint.pt").stat().st_mtime_ns
    r = CliRunner().invoke(app, ["train", "mems", "--out", str(out), *FAST, "--seed", "5", "--train-seeds", "2"])
    assert r.exit_code != 0 and "--resume to continue them" in r.output
    r = CliRunner().invoke(app, ["train", "mems", "--out", str(out), *FAST, "--seed", "5", "--train-seeds", "2",
                                 "--resume"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "trials.json").read_text())["points"] == result["points"]
    assert (out / "seed5" / "checkpoint.pt").stat().st_mtime_ns == stamp  # finished trials are not trained again


def test_a_sweep_over_a_grid_on_a_ray_of_its_own(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not ray.is_initialized()  # the command starts its own Ray (address="local") and stops it
    config = tmp_path / "sweep.toml"
    config.write_text(f'command = "mems"\nout = "{tmp_path / "sweep"}"\nmetric = "a_test[0]"\nmode = "min"\n'
                      '[options]\nsteps = 32\nnum_envs = 4\ndevice = "cpu"\n'
                      '[space]\ngain_set = {grid = ["robust", "wide"]}\n')
    r = CliRunner().invoke(app, ["sweep", str(config), "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.output.strip().splitlines()[-1])
    assert sorted(p["point"]["gain_set"] for p in result["points"]) == ["robust", "wide"]
    best, other = (p["stats"]["a_test[0]"]["mean"] for p in result["points"])
    assert best <= other and not ray.is_initialized()
    assert (tmp_path / "sweep" / "gain_set=wide" / "seed0" / "trial.json").exists()
    assert (tmp_path / "sweep" / "trials.md").read_text().startswith("| gain_set | seeds | a_test[0] |")
