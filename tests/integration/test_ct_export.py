"""learner/ct/export.py + AnglePolicy.from_artifact: the bundled ct_63 policy exported, validated and run on the edge."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from controller.modes.ct import tomo
from controller.policy.manifest import file_sha256, load_artifact
from controller.modes.ct.spec import TASK
from controller.policy.runtime import AnglePolicy, PolicyError, open_validated_policy, validated_decision_us
from controller.modes.mems.rl_pid import TASK as MEMS_TASK
from controller.policy.slot import PolicyRejected, PolicySlot, PolicySpec
from firmware_sim.ct.phantoms import make_phantoms
from hil.cli import app
from learner.ct.env import CTObs
from learner.ct.export import EMPTY_IMAGE_ATOL, AngleGraph, check_parity, export_ct
from learner.ct.net import MASKED_LOGIT, CTActorCritic
from learner.ct.train import load_policy
from learner.algos.ddpg import Actor
from learner.export import ExportError, export_policy

torch.set_num_threads(1)
POLICIES = Path(__file__).parents[2] / "learner" / "ct" / "policies"
SIZE, A = 63, 180


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    """`edgetune export` on the bundled Algorithm 2 run."""
    out = tmp_path_factory.mktemp("ct") / "policy"
    res = CliRunner().invoke(app, ["export", str(POLICIES / "ct_63"), str(out)])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def agent():
    return load_policy(POLICIES / "ct_63" / "policy.pt", device="cpu")[0]


def test_graph_io_parity_and_in_graph_mask(artifact, agent) -> None:
    model = onnx.load(str(artifact / "model.onnx"))
    onnx.checker.check_model(model)
    dims = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
            for v in (*model.graph.input, *model.graph.output)}
    assert dims == {"obs": ["batch", 1, SIZE, SIZE], "acquired": ["batch", A],
                    "angle_logits": ["batch", A], "stop_logit": ["batch", 1]}
    assert check_parity(AngleGraph(agent.net).eval(), artifact / "model.onnx") <= EMPTY_IMAGE_ATOL
    torch.manual_seed(1)
    with pytest.raises(ExportError, match="differ"):  # other weights than the file's
        check_parity(AngleGraph(CTActorCritic(SIZE, A)).eval(), artifact / "model.onnx")
    acquired = np.zeros(A, bool)
    acquired[[3, 90]] = True
    policy = AnglePolicy(artifact / "model.onnx", SIZE)
    logits, _ = policy.session.run(None, {"obs": np.full((1, 1, SIZE, SIZE), 0.3, np.float32),
                                          "acquired": acquired[None].astype(np.float32)})
    assert np.all(logits[0, acquired] == MASKED_LOGIT) and np.all(logits[0, ~acquired] > MASKED_LOGIT)


def test_manifest(artifact) -> None:
    manifest, model = load_artifact(artifact)
    assert manifest.task == TASK == "ct-angles" and manifest.training_run == "ct_63"
    assert manifest.sha256 == file_sha256(model) and manifest.opset >= 17
    assert manifest.schema_version == 2 and not manifest.state
    assert [(t.name, t.shape, t.units, t.normalisation) for t in manifest.inputs] == [
        ("obs", (1, SIZE, SIZE), ["1"], None), ("acquired", (A,), ["mask"], None)]
    assert [(t.name, t.shape, t.units) for t in manifest.outputs] == [
        ("angle_logits", (A,), ["logit"]), ("stop_logit", (1,), ["logit"])]
    assert all(np.isfinite(t.low).all() and np.isfinite(t.high).all() for t in manifest.outputs)
    assert {"torch", "onnx", "onnxruntime"} <= manifest.producer.keys()


def test_edge_accepts_the_artifact_and_refuses_mismatches(artifact, tmp_path) -> None:
    assert AnglePolicy.from_artifact(artifact, SIZE).faults == 0
    with pytest.raises(PolicyError, match="this mode takes inputs"):
        AnglePolicy.from_artifact(artifact, 31)
    mems = tmp_path / "mems"
    export_policy(Actor(12, 4, (16,)), mems, task=MEMS_TASK, obs_mean=[0.0] * 12, obs_std=[1.0] * 12,
                  obs_units=["px"] * 12, low=[0.0] * 4, high=[1.0] * 4, act_units=["1"] * 4, decision_period_s=0.1)
    with pytest.raises(PolicyError, match="mems-pid-gains"):
        AnglePolicy.from_artifact(mems, SIZE)
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    (tampered / "manifest.json").write_bytes((artifact / "manifest.json").read_bytes())
    (tampered / "model.onnx").write_bytes((artifact / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(PolicyError, match="sha256"):
        AnglePolicy.from_artifact(tampered, SIZE)



async def test_the_angles_slot_validates_in_its_validator_process(artifact) -> None:
    """As the CT daemon wires it: contract and decision time checked in the validator process, refusals
    (pickled back with their reason) counted, the accepted policy opened in the daemon."""
    def slot(budget_s: float) -> PolicySlot:
        return PolicySlot(PolicySpec(TASK, SIZE * SIZE + A, A + 1, 1), budget_s,
                          validator=partial(validated_decision_us, size=SIZE, n_angles=A, budget_s=budget_s),
                          opener=partial(open_validated_policy, size=SIZE, n_angles=A))
    fast, slow = slot(1.0), slot(1e-7)
    try:
        policy = await fast.load(artifact)
        assert isinstance(policy, AnglePolicy) and policy.version == policy.manifest.version
        assert 0.0 < policy.latency_us < 1e6 and fast.counters == {"attempted": 1}
        with pytest.raises(PolicyRejected, match="too_slow: median decision"):
            await slow.load(artifact)
        assert slow.counters["rejected:too_slow"] == 1
    finally:
        fast.close()
        slow.close()

def test_algorithm_1_run_is_refused(tmp_path) -> None:
    with pytest.raises(ExportError, match="only 'terminal'"):
        export_ct(POLICIES / "ct_63_naive", tmp_path)
    assert not (tmp_path / "model.onnx").exists()


def test_edge_choice_equals_torch_greedy_on_edge_reconstructions(artifact, agent) -> None:
    """An edge-side scan (the edge's projector and cold 150-iteration SIRT): at each step the ONNX policy's
    (angle, stop) equals the torch agent's greedy action on the same reconstruction and mask."""
    policy = AnglePolicy.from_artifact(artifact, SIZE)
    truth = make_phantoms(1, SIZE, seed=7, split="val").images[0]
    grid = tomo.angle_grid(A)
    image, acquired = np.zeros((SIZE, SIZE), np.float32), np.zeros(A, bool)
    for k in range(6):
        obs = CTObs(torch.from_numpy(image)[None, None], torch.from_numpy(acquired)[None], np.zeros(1), np.array([k]))
        angle, stop = agent.act(obs, greedy=True)
        assert policy.decide(image, acquired) == (int(angle[0]), bool(stop[0]))
        acquired[angle[0]] = True
        w = tomo.system_matrix(SIZE, grid[acquired])
        image = tomo.sirt(w, w @ truth.ravel(), tomo.SIRT_ITERATIONS)
