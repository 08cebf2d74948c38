"""The forge policy export (learner/bal/export.py): the ONNX interpolation graph equals PolicyTable.control, the
edge's validator accepts the artifact, and refuses one that does not fit the forge contract."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from controller.modes.bal import spec
from controller.modes.bal.forge import ForgePolicy
from controller.modes.bal.problem import load_problem
from controller.policy.runtime import PolicyRejected
from forge_policy import goal_table
from learner.bal.export import PARITY_ATOL, export_bal, export_table, parity, policy_graph, random_inputs
from learner.bal.table import PolicyTable

PROBLEM = load_problem("forge")


def _random_table(p_axes: tuple[int, ...], steps: int = 4, grid: int = 4, seed: int = 0) -> PolicyTable:
    """Uneven θ axes (one of them may hold a single value), boxes that change per step, controls beyond u_max."""
    rng = np.random.default_rng(seed)
    axes = tuple(np.sort(rng.uniform(0, 4, k)) + np.arange(k) * 0.1 for k in p_axes)
    low = rng.uniform(-2, 0, (steps, 2))
    return PolicyTable(axes, low, low + rng.uniform(0.5, 3, (steps, 2)),
                       rng.normal(0, 3, (*p_axes, steps, grid, grid, 2)), 4.0)


@pytest.mark.parametrize("p_axes", [(3, 4), (2, 1, 3), (1,)])
def test_the_graph_equals_the_table_on_random_inputs(p_axes: tuple[int, ...]) -> None:
    table = _random_table(p_axes)
    model = policy_graph(table).SerializeToString()
    assert parity(table, model, samples=2000, seed=1) <= PARITY_ATOL
    # the inputs reach past the table: clamping and the projection are exercised, not only the interior
    feed = random_inputs(table, 2000, np.random.default_rng(1))
    (u,) = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feed)
    assert np.linalg.norm(u, axis=1).max() == pytest.approx(4.0, rel=1e-6)
    assert (feed[spec.STEP] < 0).any() and (feed[spec.STEP] >= table.steps).any()


def test_a_wrong_graph_is_caught_by_the_parity_check() -> None:
    table = _random_table((3, 4))
    shifted = PolicyTable(table.theta_axes, table.low, table.high, table.u + 1e-3, table.u_max)
    assert parity(table, policy_graph(shifted).SerializeToString()) > PARITY_ATOL


def test_the_artifact_is_accepted_by_the_edge_and_decides_like_the_table(tmp_path: Path) -> None:
    table = goal_table(PROBLEM)
    manifest = export_table(table, tmp_path, version="7")
    assert [t.name for t in manifest.inputs] == [spec.STEP, spec.POSITION, spec.THETA] and manifest.task == spec.TASK
    assert ForgePolicy.validated_us(tmp_path, budget_s=1.0, theta_dim=2) > 0
    with pytest.raises(PolicyRejected, match="too_slow"):
        ForgePolicy.validated_us(tmp_path, budget_s=1e-9, theta_dim=2)
    policy = ForgePolicy.from_artifact(tmp_path, 2)
    x, theta = np.array([3.0, 4.0]), np.array([0.7, 2.5])
    np.testing.assert_allclose(policy.decide(5, x, theta), table.control(5, x[None], theta)[0], atol=PARITY_ATOL)


def test_a_mismatched_artifact_is_refused(tmp_path: Path) -> None:
    export_table(goal_table(PROBLEM), tmp_path, version="1")
    with pytest.raises(PolicyRejected) as e:  # the mode's problem has three atom types: θ (3,)
        ForgePolicy.from_artifact(tmp_path, 3)
    assert e.value.reason == "wrong_shape"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["task"] = "scatter-transceiver"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PolicyRejected) as e:
        ForgePolicy.from_artifact(tmp_path, 2)
    assert e.value.reason == "wrong_task"


def test_a_table_outside_the_contract_is_refused() -> None:
    t = _random_table((3,))
    one_d = PolicyTable(t.theta_axes, t.low, t.high, t.u[..., :1], t.u_max)  # m = 1: not a force vector
    with pytest.raises(ValueError, match="forge table"):
        policy_graph(one_d)


def _run(folder: Path, table: PolicyTable, problem: str = "forge") -> Path:
    """A `train bal` run folder as far as export reads it: table.npz and the checkpoint's config."""
    folder.mkdir()
    table.save(folder / "table.npz")
    np.savez(folder / "checkpoint.npz", meta=json.dumps({"config": {"problem": problem}}))
    return folder


def test_edgetune_export_takes_a_bal_run_folder(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hil.cli import app

    run = _run(tmp_path / "run", goal_table(PROBLEM))
    result = CliRunner().invoke(app, ["export", str(run), str(tmp_path / "out"), "--version", "5"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["task"] == spec.TASK
    assert ForgePolicy.from_artifact(tmp_path / "out", 2).version == "5"
    maze = _run(tmp_path / "maze", goal_table(PROBLEM), "maze")
    result = CliRunner().invoke(app, ["export", str(maze), str(tmp_path / "out2"), "--version", "5"])
    assert result.exit_code == 2 and "forge policies only" in result.output


def test_a_table_at_theta_hat_only_takes_theta_and_ignores_it(tmp_path: Path) -> None:
    """`train bal` with theta_grid 0 saves one table (no θ axes): the contract's θ̂ input is there, unused."""
    t = goal_table(PROBLEM, noise=0.5)
    flat = PolicyTable((), t.low, t.high, t.u[1, 2], t.u_max)
    export_bal(_run(tmp_path / "run", flat), tmp_path / "out", version="1")
    policy = ForgePolicy.from_artifact(tmp_path / "out", 2)
    x = np.array([[2.0, 7.0]])
    for theta in (np.zeros(2), np.array([3.0, 9.0])):
        np.testing.assert_allclose(policy.decide(3, x[0], theta), flat.control(3, x)[0], atol=PARITY_ATOL)
