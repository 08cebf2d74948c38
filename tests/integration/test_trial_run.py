"""A trial without Ray (learner/trials.run_trial, which the Tune trainable wraps): a real `edgetune train mems` child
process in its run folder, its summary and metrics reported; a finished trial is not run again; a restored Tune
checkpoint fills an empty run folder; a failing trainer is an error that quotes its log."""
from __future__ import annotations

import json
import os

import pytest

from learner import trials

FAST = ["--steps", "32", "--num-envs", "4", "--device", "cpu"]


def _job(tmp_path, **kw) -> trials.Job:
    return trials.Job(app="mems", argv=FAST, out=tmp_path / "out", cwd=os.getcwd(), checkpoint_s=0.2, **kw)


def test_a_trial_trains_reports_and_is_not_run_twice(tmp_path):
    job = _job(tmp_path, metric="log.csv:episode_return")
    reports = []
    trial = {"point": {"gain_set": "wide"}, "argv": ["--gain-set", "wide"], "tag": "gain_set=wide", "seed": 3}
    metrics = trials.run_trial(job, trial, lambda m, snap: reports.append((m, snap and sorted(os.listdir(snap)))))
    run = tmp_path / "out" / "gain_set=wide" / "seed3"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 32 and len(summary["a_test"]) == 4
    assert metrics["seed"] == 3 and metrics["finished"] == 1 and metrics["steps"] == 32.0
    assert [metrics[f"a_test[{i}]"] for i in range(4)] == summary["a_test"]
    assert "log.csv:episode_return" not in metrics  # 32 decisions: no episode has ended yet
    assert json.loads((run / "trial.json").read_text())["command"][-7:] == [
        "--gain-set", "wide", "--seed", "3", "--out", str(run), "--resume"]
    last, files = reports[-1]
    assert last == metrics and "checkpoint.pt" in files and "summary.json" in files  # the final Tune checkpoint
    before = (run / "checkpoint.pt").stat().st_mtime_ns
    again = []
    assert trials.run_trial(job, trial, lambda m, snap: again.append((m, snap))) == metrics
    assert again == [(metrics, None)] and (run / "checkpoint.pt").stat().st_mtime_ns == before
    # stopped after the trainer had finished (summary.json newer than the trial's start mark): not trained again
    (run / "trial.json").write_text(json.dumps({"command": json.loads((run / "trial.json").read_text())["command"],
                                                "point": trial["point"]}))
    os.utime(run / "summary.json", ((t := (run / "trial.json").stat().st_mtime + 1), t))
    assert trials.run_trial(job, trial, lambda m, snap: None) == metrics
    assert (run / "checkpoint.pt").stat().st_mtime_ns == before and "metrics" in json.loads((run / "trial.json").read_text())


@pytest.mark.slow
def test_a_restored_checkpoint_fills_an_empty_run_folder(tmp_path):
    """Tune restores a trial's last checkpoint (a copy of its run folder), e.g. on another node: a mid-run one
    resumes the trainer exactly, the final one (with trial.json) is not trained again."""
    job = _job(tmp_path)
    trial = {"point": {}, "argv": [], "tag": "", "seed": 0}
    first = trials.run_trial(job, trial, lambda m, snap: None)
    run = tmp_path / "out" / "seed0"
    (run / "trial.json").rename(tmp_path / "trial.json")
    run.rename(tmp_path / "mid")  # a checkpoint of the trainer at 32 decisions, before the trial had finished
    longer = trials.Job(app="mems", argv=["--steps", "64", *FAST[2:]], out=job.out, cwd=job.cwd, checkpoint_s=0.2)
    metrics = trials.run_trial(longer, trial, lambda m, snap: None, restored=tmp_path / "mid")
    log = json.loads((run / "checkpoint.pt").exists() and (run / "trial.json").read_text())
    assert metrics["steps"] == 64.0 and log["metrics"] == metrics
    assert "--resume" in log["command"] and (run / "log.csv").exists()
    run.rename(tmp_path / "final")
    assert trials.run_trial(longer, trial, lambda m, snap: None, restored=tmp_path / "final") == metrics
    assert first["steps"] == 32.0


def test_a_failing_trainer_is_an_error_quoting_its_log(tmp_path):
    job = trials.Job(app="mems", argv=[*FAST, "--gain-set", "nope"], out=tmp_path / "out", cwd=os.getcwd())
    with pytest.raises(RuntimeError, match="(?s)exited with 2.*Invalid value for --gain-set"):
        trials.run_trial(job, {"point": {}, "argv": [], "tag": "", "seed": 0}, lambda m, snap: None)
    assert "metrics" not in json.loads((tmp_path / "out" / "seed0" / "trial.json").read_text())  # not finished
