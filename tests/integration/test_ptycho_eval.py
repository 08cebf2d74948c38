"""`edgetune eval ptycho` on a tiny configuration: the JSON schema with baselines and a tiny untrained policy,
custom samples (resampled from 0.1 Å; a bad folder is a clear error). The full-grid reference (minutes per sample)
is replaced by a cheap stand-in: the true phase."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from controller.modes.ptycho.optics import Optics
from hil.cli import app
from learner.ptycho import eval as ev
from learner.ptycho import reference
from learner.ptycho.train import TrainConfig, train

TINY = ["--cells", "20x2", "--per-cell", "2", "--probe", "focused", "--json", "--threads", "1"]
ROW_KEYS = {"positions", "subsequences", "probe", "iterations", "q_ssim_mean", "q_ssim_ci95", "q_best_mean",
            "q_best_ci95", "ssim", "ssim_truth", "resolution_A", "paired"}


@pytest.fixture(autouse=True)
def truth_as_reference(monkeypatch):
    monkeypatch.setattr(reference, "reconstruct", lambda phase, key, optics: phase.astype(np.float32))


def test_json_rows_with_baselines_and_a_tiny_policy(tmp_path):
    torch.set_num_threads(1)
    train(TrainConfig(positions=20, subsequences=2, iterations=5, episodes=1, batch=1), tmp_path / "run")
    out = CliRunner().invoke(app, ["eval", "ptycho", *TINY, "--run", str(tmp_path / "run"), "--cache",
                                   str(tmp_path / "cache"), "--png", str(tmp_path / "png")])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert set(result) == {"rows", "train", "dose_saving"}
    assert [(r["iterations"], r["positions"], r["subsequences"]) for r in result["rows"]] == \
        [(5, 20, 2), (reference.ITERATIONS, 20, 2)]
    methods = {"adaptive", "random", "halton", "subgrid", "greedy"}
    for r in result["rows"]:
        assert ROW_KEYS <= set(r) and set(r["ssim"]) == set(r["ssim_truth"]) == set(r["resolution_A"]) == methods
        assert set(r["paired"]) == methods - {"adaptive"} and all(0 < s <= 1 for s in r["ssim"].values())
        q = (r["ssim"]["adaptive"] - r["ssim"]["random"]) / r["ssim"]["random"]
        assert r["q_ssim_mean"] == pytest.approx(q, abs=0.05)  # mean of per-sample ratios ≈ ratio of means
        assert r["paired"]["random"]["mean"] == pytest.approx(r["ssim"]["adaptive"] - r["ssim"]["random"])
        assert r["q_ssim_ci95"] is not None and r["q_best_ci95"] is not None
    assert result["train"]["run"]["config"]["positions"] == 20 and result["train"]["run"]["provenance"]["seed"] == 0
    dose = result["dose_saving"]["focused"]["run"]
    assert list(dose["adaptive_ssim"]) == ["12", "14", "16", "18", "20"] and dose["target_ssim"] == max(result["rows"][0]["ssim"][m]
                                                                               for m in ("halton", "subgrid"))
    assert "| 20 | 2 | focused | 5 |" in ev.table(result) and "dose saving (focused, run)" in ev.table(result)
    assert (tmp_path / "png" / "ptycho_eval_focused.png").stat().st_size > 0
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2  # one reference per sample, cached


def wave(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 0.3 * np.sin(2 * np.pi * x / 7.0) * np.cos(2 * np.pi * y / 5.0)


def smooth_map(pixel_A: float, side_A: float) -> np.ndarray:
    """``wave`` sampled at pixel centres 0, pixel_A, … over side_A."""
    return wave(*np.mgrid[:round(side_A / pixel_A), :round(side_A / pixel_A)] * pixel_A)


def test_custom_samples_are_resampled_and_rows_say_custom(tmp_path):
    (tmp_path / "sampling.json").write_text(json.dumps({"pixel_A": 0.1}))
    np.save(tmp_path / "a.npy", smooth_map(0.1, 34.0))  # 340 px at 0.1 Å → 170 px at 0.2 Å
    samples = ev.load_samples(tmp_path)
    n = Optics().object_px
    (phase,) = [samples.sampler(k, Optics()) for k in samples.keys]
    assert phase.shape == (n, n)
    start = (339 * 0.1 - (n - 1) * 0.2) / 2  # the object's centred square in the 33.9 Å map [Å]
    want = wave(*np.mgrid[:n, :n] * 0.2 + start)
    assert np.abs(phase - want).max() < 1e-3 * 0.3
    out = CliRunner().invoke(app, ["eval", "ptycho", *TINY, "--samples", str(tmp_path), "--cache",
                                   str(tmp_path / "cache"), "--no-converge"])
    assert out.exit_code == 0, out.output
    (row,) = json.loads(out.stdout)["rows"]
    assert row["samples"] == "custom" and row["q_ssim_mean"] is None and set(row["ssim"]) == set(ev.layouts.METHODS)


def test_bad_sample_folders_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="sampling.json"):
        ev.load_samples(tmp_path)
    (tmp_path / "sampling.json").write_text(json.dumps({"pixel_A": 0.1}))
    with pytest.raises(ValueError, match="no .npy"):
        ev.load_samples(tmp_path)
    np.save(tmp_path / "small.npy", smooth_map(0.1, 20.0))  # 20 Å < the object's 32.6 Å
    with pytest.raises(ValueError, match="not tiled"):
        ev.load_samples(tmp_path)
    out = CliRunner().invoke(app, ["eval", "ptycho", *TINY, "--samples", str(tmp_path)])
    assert out.exit_code != 0 and "not tiled" in out.output


def test_the_stored_report_eval_keeps_the_schema_and_renders():
    """tests/data/ptycho_eval_report.json: docs/results.md's table (its "command"): 3 runs on 8 report samples,
    the focused probe's rows with the policy, the defocused probe's baselines only."""
    stored = json.loads((Path(__file__).parents[1] / "data" / "ptycho_eval_report.json").read_text())
    assert {r["probe"] for r in stored["rows"]} == {"focused", "defocused"} and set(stored["train"]) == {
        "seed0", "seed1", "seed2"}
    for r in stored["rows"]:
        assert ROW_KEYS <= set(r) and set(ev.layouts.METHODS) <= set(r["ssim"])
        assert r["best_non_adaptive"] == max(ev.NON_ADAPTIVE, key=r["ssim"].get)
        assert (r["q_ssim_mean"] is None) == (r["probe"] == "defocused") == ("adaptive" not in r["ssim"])
    assert "| 250 | 5 | defocused | 5 |" in ev.table(stored) and "| 250 | 5 | focused | 5 |" in ev.table(stored)
