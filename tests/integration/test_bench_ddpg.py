"""`edgetune bench ddpg`: a short run (warm-up only) gives each side's per-seed runs and their mean ± σ."""
from __future__ import annotations

import importlib.util
import json
import statistics

from typer.testing import CliRunner

from hil.cli import app


def test_bench_ddpg_reports_mean_and_spread_over_seeds_for_both_sides():
    """Both sides where `make bench` installed Stable-Baselines3; in CI (no SB3) ours and the peer's error."""
    res = CliRunner().invoke(app, ["bench", "ddpg", "--steps", "600", "--seeds", "2", "--eval-episodes", "1",
                                   "--threads", "1", "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert r["seeds"] == [0, 1] and r["torch_threads"] == 1
    peer = importlib.util.find_spec("stable_baselines3") is not None
    if not peer:
        assert "stable-baselines3 unavailable" in r["sb3"]["error"] and r["speed_ratio"] is None
    for side in ("ours", "sb3") if peer else ("ours",):
        runs = r[side]["per_seed"]
        assert [run["seed"] for run in runs] == [0, 1]
        for key in ("final_return", "steps_per_s", "setup_s"):
            values = [run[key] for run in runs]
            assert r[side][key] == {"mean": statistics.fmean(values), "std": statistics.stdev(values)}
        assert all(run["setup_s"] > 0 and run["train_s"] > 0 and run["steps_per_s"] > 0 for run in runs)
    if peer:
        assert r["speed_ratio"] == r["ours"]["steps_per_s"]["mean"] / r["sb3"]["steps_per_s"]["mean"]
