"""BAL training runs (learner/bal/train.py): the run folder's files, an exact resume, a refused mismatched one."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from controller.modes.bal.problem import PROBLEMS
from learner.bal.table import PolicyTable
from learner.bal.train import TrainConfig, train

SMALL = {"grid": 3, "samples": 32, "minibatch": 4, "iterations": 8, "first_iterations": 16}


@pytest.fixture(scope="module")
def short_lq(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The LQ problem cut to 10 steps (a problem file of its own: runs take files too)."""
    text = (PROBLEMS / "lq.toml").read_text().replace("steps = 50", "steps = 10")
    path = tmp_path_factory.mktemp("problem") / "lq10.toml"
    path.write_text(text)
    return str(path)


def _cfg(problem: str, episodes: int = 4, **kw) -> TrainConfig:
    return TrainConfig(problem=problem, episodes=episodes, rebuild_every=kw.pop("rebuild_every", 2),
                       checkpoint_every=1, bal=SMALL, **kw)


def test_a_run_writes_its_files(short_lq: str, tmp_path: Path) -> None:
    seen = []
    result = train(_cfg(short_lq), tmp_path, on_episode=lambda done, cost: seen.append(done))
    assert seen == [1, 2, 3, 4] and result["episodes"] == 4 and result["model_rollouts"] > 0
    table = PolicyTable.load(tmp_path / "table.npz")
    assert table.steps == 10 and table.grid == 3 and table.theta_axes == ()
    episodes = list(csv.DictReader((tmp_path / "episodes.csv").open()))
    assert [int(r["episode"]) for r in episodes] == [1, 2, 3, 4]
    assert all(float(r["cost"]) > 0 and float(r["energy"]) >= 0 for r in episodes)
    theta = list(csv.DictReader((tmp_path / "theta.csv").open()))
    assert len(theta) == 40 and {r["true0"] for r in theta} == {"2"}
    assert abs(float(theta[-1]["theta0"]) - result["theta_hat"][0]) < 1e-5
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["episodes"] == 4 and len(prov["table_sha256"]) == 64


def test_resume_continues_exactly(short_lq: str, tmp_path: Path) -> None:
    """2 + 2 episodes as 4, rebuilding every 3: the first sitting's closing table (at 2) must not change the rest."""
    train(_cfg(short_lq, rebuild_every=3), tmp_path / "whole")
    train(_cfg(short_lq, episodes=2, rebuild_every=3), tmp_path / "split")
    train(_cfg(short_lq, rebuild_every=3), tmp_path / "split", resume=True)
    a, b = PolicyTable.load(tmp_path / "whole" / "table.npz"), PolicyTable.load(tmp_path / "split" / "table.npz")
    np.testing.assert_array_equal(a.u, b.u)
    np.testing.assert_array_equal(a.low, b.low)
    # the same episodes; the split run also counts the model rollouts of its first sitting's closing table
    skip = ("wall_s", "model_rollouts")
    for log in ("episodes.csv", "theta.csv"):
        whole, split = ([{k: v for k, v in r.items() if k not in skip}
                         for r in csv.DictReader((tmp_path / run / log).open())] for run in ("whole", "split"))
        assert whole == split
    assert len(json.loads((tmp_path / "split" / "provenance.json").read_text())["sittings"]) == 2


def test_resuming_a_finished_run_reuses_its_closing_table(short_lq: str, tmp_path: Path, monkeypatch) -> None:
    """eval bal resumes its cached runs: a run that ended between rebuilds must not build its table again (that
    cost a table build per eval and added its model rollouts and wall time to the cached run each time)."""
    from learner.bal import train as train_module

    first = train(_cfg(short_lq, episodes=3), tmp_path)  # rebuilt at 2, closed with a table at 3
    table = PolicyTable.load(tmp_path / "table.npz")

    def never(self):
        raise AssertionError("the closing table was built again")

    monkeypatch.setattr(train_module.Agent, "rebuild", never)
    again = train(_cfg(short_lq, episodes=3), tmp_path, resume=True)
    assert again["new_episodes"] == 0 and again["model_rollouts"] == first["model_rollouts"]
    np.testing.assert_array_equal(PolicyTable.load(tmp_path / "table.npz").u, table.u)


def test_resume_refuses_changed_settings(short_lq: str, tmp_path: Path) -> None:
    train(TrainConfig(problem=short_lq, episodes=1, bal=SMALL), tmp_path)
    with pytest.raises(ValueError, match="seed"):
        train(TrainConfig(problem=short_lq, episodes=2, seed=1, bal=SMALL), tmp_path, resume=True)


def test_theta_grid_tables_cover_the_estimate(short_lq: str, tmp_path: Path) -> None:
    result = train(TrainConfig(problem=short_lq, episodes=1, theta_grid=3, bal=SMALL), tmp_path)
    table = PolicyTable.load(tmp_path / "table.npz")
    (axis,) = table.theta_axes
    assert table.u.shape == (3, 10, 3, 3, 1) and axis[1] == pytest.approx(result["theta_hat"][0])
    np.testing.assert_allclose(axis[2] - axis[1], 3 * result["theta_std"][0], rtol=1e-6)


@pytest.mark.parametrize("bad", [{"episodes": 0}, {"theta_grid": 1}, {"x0": (1.0,)}, {"bal": {"gird": 3}}])
def test_train_config_refuses_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_a_theta_grid_too_big_for_the_maze_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1000 tables"):
        train(TrainConfig(problem="maze", episodes=1, theta_grid=2), tmp_path)
