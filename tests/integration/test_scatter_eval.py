"""`edgetune eval scatter` end to end on a tiny grid: a trained run and every baseline in one JSON cell."""
import json

import numpy as np
from typer.testing import CliRunner

from hil.cli import app
from learner.scatter.train import TrainConfig, train


def test_eval_scatter_json_has_every_method_and_the_run_spread_and_a_run_exports(tmp_path) -> None:
    for seed in (0, 1):
        train(TrainConfig(family="circles", n=12, iterations=1, final_iterations=1, updates=1, episodes=2,
                          seed=seed, device="cpu"), tmp_path / f"run{seed}")
    maps = tmp_path / "maps"
    maps.mkdir()
    np.save(maps / "square.npy", np.pad(np.ones((4, 4)), 4))
    args = ["eval", "scatter", "--run", str(tmp_path / "run0"), "--run", str(tmp_path / "run1"),
            "--dataset", "custom", "--scatterers", str(maps), "--n", "12", "--report", "2",
            "--selection", "1", "--train", "1", "--lam", "1e-6", "--iterations", "1", "--final-iterations", "1",
            "--json", "--threads", "1", "--cache", str(tmp_path / "cache")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cells = json.loads(result.stdout.strip().splitlines()[-1])["cells"]
    assert [c["dataset"] for c in cells] == ["custom"] and cells[0]["names"] == ["square"]
    want = {"learn_both", "random_angle", "uniform_angle", "uniform_cycling", "d_optimal", "best_fixed", "oracle", "zero"}
    for cell in cells:
        assert want <= set(cell["mse"]) and set(cell["mse"]) == set(cell["psnr"])
        assert cell["paired_reference"] == "learn_both" and len(cell["run_spread"]["learn_both"]["per_run"]) == 2
    cached = CliRunner().invoke(app, args)  # every run now comes from the cache: the same numbers
    assert cached.exit_code == 0, cached.output
    again = json.loads(cached.stdout.strip().splitlines()[-1])["cells"]
    assert [c["mse"] for c in again] == [c["mse"] for c in cells]
    assert len(list((tmp_path / "cache").glob("learn_both-*.npy"))) >= 2
    exported = CliRunner().invoke(app, ["export", str(tmp_path / "run0"), str(tmp_path / "artifact")])
    assert exported.exit_code == 0, exported.output
    assert json.loads((tmp_path / "artifact" / "manifest.json").read_text())["task"] == "scatter-transceiver"
