"""`edgetune train bal` and `edgetune eval bal` as a user runs them (short budgets): the run folder's files and
pictures, the LQ JSON's keys against Riccati and the exact posterior, and a forge instance from the user's own
TOML file (no code change) scored against Q-learning and the oracle."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.modes.bal.problem import PROBLEMS
from hil.cli import app

LQ_KEYS = {"cost_bal", "cost_riccati", "cost_ratio", "cost_ratio_ci95", "gain_rel_err_max", "theta_rel_err",
           "episodes", "posterior_mean", "posterior_std"}


def test_train_bal_writes_its_run_folder_and_pictures(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "bal", "--problem", "lq", "--episodes", "3", "--rebuild-every", "3",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    for name in ("table.npz", "theta.csv", "episodes.csv", "paths.npz", "provenance.json", "theta.png",
                 "episodes.png"):
        assert (out / name).exists(), name
    bad = CliRunner().invoke(app, ["train", "bal", "--problem", "lq", "--x0", "1", "--out", str(out)])
    assert bad.exit_code != 0 and "x0" in bad.output


def test_eval_bal_lq_reports_against_riccati_and_the_exact_posterior(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["eval", "bal", "--problem", "lq", "--budgets", "4", "--train-seeds", "2",
                                   "--report", "200", "--rebuild-every", "4", "--theta-true", "1.5", "--x0=0.5,1",
                                   "--cache", str(tmp_path / "cache"), "--png", str(tmp_path / "png"), "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["theta_true"] == [1.5] and result["x0"] == [0.5, 1.0]
    run = result["budgets"]["4"]
    assert LQ_KEYS <= set(run) and len(run["seeds"]) == 2
    assert 1.0 - 3 * run["cost_ratio_ci95"] < run["cost_ratio"] < 1.5  # the Riccati optimum is a floor
    assert abs(run["theta_hat"] - run["posterior_mean"]) < 0.5 * run["posterior_std"]  # the filter ≈ the exact one
    assert (tmp_path / "png" / "lq_gains.png").exists()


def test_eval_bal_runs_a_users_forge_file_against_q_learning_and_the_oracle(tmp_path: Path) -> None:
    text = (PROBLEMS / "forge.toml").read_text()
    quick = "\n".join(line for line in text.splitlines()
                      if not line.startswith(("grid", "starts", "table_iterations", "first_iterations")))
    mine = tmp_path / "my_forge.toml"
    mine.write_text(quick + "\ngrid = 5\nstarts = 2\ntable_iterations = 10\nfirst_iterations = 10\n")
    res = CliRunner().invoke(app, ["eval", "bal", "--problem", str(mine), "--budgets", "2", "--train-seeds", "1",
                                   "--report", "40", "--q-large", "100", "--cache", str(tmp_path / "cache"), "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["problem"] == "my_forge"
    assert set(result["qlearning"]) == {"20", "100"} and set(result["bal"]) == {"2"}
    for method in (result["oracle"], result["bal"]["2"], result["qlearning"]["100"]):
        assert {"success", "final_distance", "path_cost", "energy"} <= set(method)
    assert result["oracle"]["final_distance"]["mean"] < result["straight_line"]["final_distance"]["mean"]


@pytest.mark.parametrize("option", [["--budgets", "2.5"], ["--budgets", "0"], ["--q-large", "-5"],
                                    ["--q-large", "1e3,7.5"]])
def test_eval_bal_refuses_budgets_that_are_not_whole_positive_numbers(option: list[str], monkeypatch) -> None:
    """2.5 episodes were truncated to 2 and a negative Q-learning budget was run; both are usage errors now."""
    import learner.bal.eval

    def never(*args, **kwargs):
        raise AssertionError("evaluate ran on a refused option")

    monkeypatch.setattr(learner.bal.eval, "evaluate", never)
    res = CliRunner().invoke(app, ["eval", "bal", "--problem", "lq", *option])
    assert res.exit_code == 2 and option[0] in res.output, res.output


@pytest.mark.parametrize("bad", [{"q_large": (0,)}, {"q_cells": ()}, {"q_factor": 0}, {"rebuild_every": 0}])
def test_eval_config_refuses_settings_that_would_train_nothing(bad: dict) -> None:
    from learner.bal.eval import EvalConfig

    with pytest.raises(ValueError, match="≥ 1"):
        EvalConfig(**bad)
