"""The MEMS learning commands as a user runs them: train → export → eval (short budget)."""
from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from controller.policy.manifest import load_artifact
from firmware_sim.mems.physics import MemsParams
from hil.cli import app
from learner.mems.robust_gains import KNOTS, baseline_crossover_hz, is_robust

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("mems") / "run"
    res = runner.invoke(app, ["train", "mems", "--out", str(run), "--steps", "2400", "--num-envs", "8"])
    assert res.exit_code == 0, res.output
    return run


def test_train_writes_run_artifacts(run_dir):
    for name in ("config.json", "checkpoint.pt", "log.csv", "a_test.json", "reward.png", "summary.json"):
        assert (run_dir / name).exists(), name
    a_test = json.loads((run_dir / "a_test.json").read_text())["action"]
    assert len(a_test) == 4 and 2.0 <= a_test[0] <= 40.0 and 120.0 <= a_test[1] <= 4800.0


def test_train_refuses_to_overwrite_a_run(run_dir):
    res = runner.invoke(app, ["train", "mems", "--out", str(run_dir), "--steps", "2400", "--num-envs", "8"])
    assert res.exit_code == 2 and "already holds a run" in res.output, res.output


@pytest.mark.parametrize("args, hint", [(["--steps", "2400", "--resume"], "already at 2400 decisions"),
                                        (["--steps", "3200", "--resume", "--gain-set", "wide"], "--resume keeps them"),
                                        (["--steps", "3200", "--resume", "--seed", "5"], "--resume keeps them")])
def test_resume_refuses_what_would_rewrite_the_run(run_dir, args, hint):
    config = (run_dir / "config.json").read_text()
    res = runner.invoke(app, ["train", "mems", "--out", str(run_dir), "--num-envs", "8", *args])
    assert res.exit_code == 2 and hint in " ".join(res.output.replace("│", " ").split()), res.output
    assert (run_dir / "config.json").read_text() == config


def test_resume_continues_from_the_checkpoint(run_dir):
    before = json.loads((run_dir / "a_test.json").read_text())["action"]
    res = runner.invoke(app, ["train", "mems", "--out", str(run_dir), "--steps", "3200", "--resume"])  # the run's 8 envs
    assert res.exit_code == 0, res.output
    steps = np.loadtxt(run_dir / "log.csv", delimiter=",", skiprows=1, ndmin=2)[:, 0]
    assert steps.min() <= 2400 < steps.max()  # the log kept the first run's episodes and appended the resumed ones
    back = np.flatnonzero(np.diff(steps) < 0)  # the resumed run counts on from its checkpoint
    assert back.size == 0, f"the step goes back after log rows {back + 1}: {steps[back]} -> {steps[back + 1]}"
    # the new a_test window (steps 2560–3200) lies after the resume point: a_test is recomputed from it
    assert json.loads((run_dir / "a_test.json").read_text())["action"] != before


def test_export_takes_raw_readings_and_returns_bounded_gains(run_dir, tmp_path):
    res = runner.invoke(app, ["export", str(run_dir), str(tmp_path / "policy")])
    assert res.exit_code == 0, res.output
    manifest, model = load_artifact(tmp_path / "policy")
    assert manifest.task == "mems-pid-gains" and manifest.observation.shape == (48,)
    assert manifest.version.startswith("run-")  # the run's name + export time: versions on the edge differ
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    raw = np.random.default_rng(0).normal(0, 150, (5, 48)).astype(np.float32)  # px and V, not normalised
    (gains,) = sess.run(["action"], {"obs": raw})
    assert np.all(gains >= np.array(manifest.action.low, np.float32) - 1e-4)
    assert np.all(gains <= np.array(manifest.action.high, np.float32) + 1e-4)
    below = baseline_crossover_hz(MemsParams())
    for g in gains:  # the graph maps into the robust gains (trained with the default --robust)
        assert all(is_robust(g[2 * ax], g[2 * ax + 1], ax, MemsParams(), below[ax]) for ax in range(2))


def test_bench_policy_times_the_graph_export_deploys(run_dir, tmp_path):
    assert runner.invoke(app, ["export", str(run_dir), str(tmp_path / "policy")]).exit_code == 0
    deployed = Counter(n.op_type for n in onnx.load(tmp_path / "policy" / "model.onnx").graph.node)
    for args in ([], ["--run", str(run_dir)]):  # an untrained actor of the default configuration; the run's own
        res = runner.invoke(app, ["bench", "policy", "--iters", "50", "--json", *args])
        assert res.exit_code == 0, res.output
        out = json.loads(res.stdout)
        assert (out["obs_dim"], out["act_dim"], out["hidden"], out["iters"]) == (48, 4, [100, 60], 50)
        graph = out["graph"]  # the same operators as the exported run's graph: the robust gain map included
        assert graph["onnx_ops"] == dict(deployed) and graph["gain_map_knots"] == KNOTS, graph
        assert graph["max_abs_diff"] < 0.05 and ("trained run" in graph["weights"]) == bool(args)
        assert out["onnxruntime"]["p50_us"] > 0 and out["torch"]["p99_us"] >= out["torch"]["p50_us"] > 0
        assert out["speedup_p50"] == pytest.approx(out["torch"]["p50_us"] / out["onnxruntime"]["p50_us"])


def test_export_refuses_a_folder_that_is_not_a_run(tmp_path):
    res = runner.invoke(app, ["export", str(tmp_path / "nowhere"), str(tmp_path / "policy")])
    text = " ".join(res.output.replace("│", " ").split())  # rich wraps the message in a box
    assert res.exit_code == 2 and "is not a run directory" in text, res.output


def test_eval_prints_the_table_json(run_dir):
    res = runner.invoke(app, ["eval", "mems", "--run", str(run_dir), "--seeds", "2", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out["methods"]) == {"baseline", "paper_a_test", "ziegler_nichols", "a_test", "policy", "policy_retrained"}
    for m in out["methods"].values():
        assert {"mean_px", "std_px", "mean_x_px", "std_x_px", "mean_y_px", "std_y_px"} <= set(m)
    assert out["seeds"] == [1000, 1001]  # the selection set unless --split report
    for ref in ("baseline", "paper_a_test", "ziegler_nichols"):  # paired over the same seeds
        assert set(out["reduction_pct"][ref]) == set(out["methods"]) - {ref}
        a, b = out["methods"][ref]["mean_px"], out["methods"]["policy"]["mean_px"]
        assert np.sign(out["reduction_pct"][ref]["policy"]["mean"]) == np.sign(a - b)
    assert set(out["sensitivity"]) == set(out["methods"])
    base = out["sensitivity"]["baseline"]["x"]  # the paper's gains: amplify from about 11.5 Hz, peak 1.54 near 27 Hz
    assert 10.0 < base["amplifies_from_hz"] < 13.0 and 1.4 < base["peak"] < 1.7 and 20.0 < base["peak_hz"] < 35.0
    for name in ("eval_wiener.md", "eval_wiener.png", "sensitivity_wiener.png"):
        assert (run_dir / name).exists(), name
    again = runner.invoke(app, ["eval", "mems", "--run", str(run_dir), "--seeds", "2", "--json"])
    assert json.loads(again.stdout)["methods"] == out["methods"]  # π(s) retrained online too: deterministic


def test_eval_over_training_runs_reports_their_spread_on_the_report_seeds(run_dir, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(run_dir, twin)  # the same run twice: the spread over runs must be zero
    res = runner.invoke(app, ["eval", "mems", "--run", str(run_dir), "--run", str(twin), "--split", "report",
                              "--seeds", "2", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["seeds"] == [5000, 5001] and {f"policy@{n}" for n in (run_dir.name, "twin")} <= set(out["methods"])
    spread = out["training_spread"]["policy"]["paper_a_test"]
    assert spread["runs"] == 2 and spread["std"] == pytest.approx(0.0, abs=1e-9)
    assert spread["mean"] == pytest.approx(out["reduction_pct"]["paper_a_test"][f"policy@{run_dir.name}"]["mean"])
    bad = runner.invoke(app, ["eval", "mems", "--split", "test"])
    assert bad.exit_code == 2 and "selection | report" in bad.output


def test_eval_rings_the_bursts_at_the_frequency_asked(tmp_path):
    res = runner.invoke(app, ["eval", "mems", "--disturbance", "bursts", "--burst-hz", "5", "--seeds", "2",
                              "--json", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    at5 = json.loads(res.stdout)
    assert at5["burst_hz"] == 5.0 and (tmp_path / "eval_bursts_5hz.md").exists()
    assert "bursts ringing at 5 Hz" in (tmp_path / "eval_bursts_5hz.md").read_text()
    at12 = json.loads(runner.invoke(app, ["eval", "mems", "--disturbance", "bursts", "--seeds", "2", "--json"]).stdout)
    assert at12["burst_hz"] == 12.0 and at12["methods"]["baseline"] != at5["methods"]["baseline"]


@pytest.mark.parametrize("args", [["--burst-hz", "5"], ["--disturbance", "bursts", "--burst-hz", "60"],
                                  ["--disturbance", "bursts", "--burst-hz", "0"]])
def test_eval_rejects_a_burst_frequency_it_cannot_use(args):
    res = runner.invoke(app, ["eval", "mems", "--seeds", "2", *args])
    assert res.exit_code == 2 and "--burst-hz" in res.output, res.output


def test_eval_rejects_a_bad_disturbance(run_dir):
    res = runner.invoke(app, ["eval", "mems", "--run", str(run_dir), "--disturbance", "nope"])
    assert res.exit_code != 0 and "nope" in res.output


def test_eval_replays_a_users_csv(run_dir, tmp_path):
    t = np.arange(0, 3, 0.02)
    csv = tmp_path / "stand.csv"
    csv.write_text("t_s,x_px,y_px\n" + "\n".join(f"{a:.3f},{10 * np.sin(3 * a):.3f},{5 * np.cos(2 * a):.3f}" for a in t))
    res = runner.invoke(app, ["eval", "mems", "--run", str(run_dir), "--disturbance", str(csv), "--seeds", "2", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["methods"]["baseline"]["mean_px"] > 0
    assert "spans 358 frames" in res.stderr and "held" in res.stderr  # 0–2.98 s at 120 Hz, shorter than the test


def test_eval_rejects_a_csv_with_a_wrong_header_cleanly(tmp_path):
    csv = tmp_path / "stand.csv"
    csv.write_text("time,x,y\n0,1,2\n1,2,3\n")
    res = runner.invoke(app, ["eval", "mems", "--disturbance", str(csv), "--seeds", "2"])
    text = " ".join(res.output.replace("│", " ").split())
    assert res.exit_code == 2 and "header must be 't_s,x_px,y_px'" in text, res.output  # a usage error, no traceback


def test_eval_tests_a_users_own_gains_beside_the_baselines():
    res = runner.invoke(app, ["eval", "mems", "--seeds", "2", "--json", "--gains", "10,600,16,816",
                              "--gains", "19,978,27.5,1376"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out["methods"]) == {"baseline", "paper_a_test", "ziegler_nichols", "gains 10,600,16,816",
                                   "gains 19,978,27.5,1376"}
    assert out["methods"]["gains 10,600,16,816"] == out["methods"]["baseline"]  # the paper's gains, same stands
    assert out["methods"]["gains 19,978,27.5,1376"]["mean_px"] != out["methods"]["baseline"]["mean_px"]
    assert out["sensitivity"]["gains 19,978,27.5,1376"]["x"]["peak"] > 1.0


@pytest.mark.parametrize("bad", ["10,600,16", "10,600,16,-1", "0,600,16,816", "10,600,16,nan", "a,b,c,d"])
def test_eval_rejects_malformed_gains(bad):
    res = runner.invoke(app, ["eval", "mems", "--seeds", "2", "--gains", bad])
    assert res.exit_code == 2 and "is not four gains" in " ".join(res.output.replace("│", " ").split()), res.output


def test_eval_takes_p_only_gains():
    res = runner.invoke(app, ["eval", "mems", "--seeds", "2", "--json", "--gains", "10,0,16,0"])
    assert res.exit_code == 0 and "gains 10,0,16,0" in json.loads(res.stdout)["methods"], res.output


def test_train_on_a_recorded_disturbance(tmp_path):
    """`train mems --disturbance PATH.csv`: the run names the recording (absolute), and --resume keeps it."""
    csv = tmp_path / "stand.csv"
    csv.write_text("t_s,x_px,y_px\n" + "".join(f"{i / 60},{5 * np.sin(i / 9)},{3 * np.cos(i / 7)}\n" for i in range(300)))
    run = tmp_path / "run"
    args = ["train", "mems", "--out", str(run), "--num-envs", "4", "--gain-set", "box", "--learning-starts", "64"]
    res = runner.invoke(app, [*args, "--steps", "160", "--disturbance", str(csv)])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "config.json").read_text())["env"]["disturbance"] == str(csv.resolve())
    res = runner.invoke(app, [*args, "--steps", "200", "--resume", "--disturbance", "wiener"])
    assert res.exit_code == 2 and "--resume keeps them" in " ".join(res.output.replace("│", " ").split()), res.output


@pytest.mark.parametrize("args, hint", [
    (["--disturbance", "nope.csv"], "is not a disturbance name or a CSV file"),
    (["--to", "127.0.0.1:9"], "goes with --live"),
    (["--init", "runs/x"], "goes with --live"),
    (["--live"], "--live needs --to HOST:PORT and --key-file"),
    (["--live", "--to", "127.0.0.1:9", "--key-file", "k", "--steps", "10", "--disturbance", "wiener"], "is for the simulator"),
    (["--live", "--to", "127.0.0.1:9", "--key-file", "k"], "--live needs --steps"),
    (["--live", "--to", "127.0.0.1:9", "--key-file", "k", "--steps", "10", "--num-envs", "2"], "one stand"),
])
def test_train_rejects_options_that_do_not_go_together(tmp_path, args, hint):
    res = runner.invoke(app, ["train", "mems", "--out", str(tmp_path / "run"), *args])
    assert res.exit_code == 2 and hint in " ".join(res.output.replace("│", " ").split()), res.output


def test_init_must_be_a_mems_run_that_fits(run_dir, tmp_path):
    keys = tmp_path / "keys"
    from controller.link.auth import write_keyfile

    write_keyfile(keys)
    live = ["train", "mems", "--live", "--to", "127.0.0.1:9", "--key-file", str(keys), "--steps", "10"]
    res = runner.invoke(app, [*live, "--out", str(tmp_path / "a"), "--init", str(tmp_path)])
    assert res.exit_code == 2 and "is not a `train mems` run" in res.output, res.output
    res = runner.invoke(app, [*live, "--out", str(tmp_path / "b"), "--init", str(run_dir), "--gain-set", "box"])
    assert res.exit_code == 2 and "fine-tuning keeps its map" in " ".join(res.output.replace("│", " ").split()), res.output


def test_init_loads_tensors_and_plain_data_only(run_dir, tmp_path):
    """--init reads the run's checkpoint with torch.load(weights_only=True) (the run above loaded that way): one
    that holds a pickled object is refused, the object never built."""
    import fractions

    import torch

    from controller.link.auth import write_keyfile

    write_keyfile(tmp_path / "keys")
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    torch.save({**ckpt, "extra": fractions.Fraction(1, 3)}, run / "checkpoint.pt")
    res = runner.invoke(app, ["train", "mems", "--live", "--to", "127.0.0.1:9", "--key-file", str(tmp_path / "keys"),
                              "--steps", "10", "--out", str(tmp_path / "out"), "--init", str(run)])
    assert res.exit_code == 2, res.output
    assert "holds more than tensors and plain data" in " ".join(res.output.replace("│", " ").split()), res.output
