"""The transceiver policy's export (learner/scatter/export.py) and its edge runtime
(controller/modes/scatter/policy.py): parity over several recurrent steps, masking, the contract checks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from controller.modes.scatter import spec
from controller.modes.scatter.policy import TransceiverPolicy, used_angles
from controller.policy.runtime import PolicyRejected
from learner.export import ExportError
from learner.scatter.export import check_parity, export_transceiver_policy, parity_observations
from learner.scatter.policy import Actor, PolicyConfig
from scatter_policy import TinyTransceiverNet


def actor(seed: int = 0) -> Actor:
    """The learner's real actor (learner/scatter/policy.py), small."""
    torch.manual_seed(seed)
    return Actor(PolicyConfig(features=16, hidden=8)).eval()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("actor")
    export_transceiver_policy(actor(), out, hidden_size=8, training_run="test")
    return out


def test_manifest_declares_the_recurrent_state_and_the_contract(artifact) -> None:
    m = json.loads((artifact / "manifest.json").read_text())
    assert m["task"] == spec.TASK and m["schema_version"] == 2
    assert [(s["name"], s["shape"], s["next"]) for s in m["state"]] == [("hidden", [3, 8], "hidden_next")]
    assert {o["name"]: o["shape"] for o in m["outputs"]} == {"angle_logits": [360], "frequency_logits": [360, 4]}


def test_edge_runtime_matches_torch_step_by_step_and_never_repeats_an_angle(artifact) -> None:
    net = actor()
    policy = TransceiverPolicy.from_artifact(artifact)
    obs_seq = parity_observations(np.random.default_rng(3), 8)
    h = torch.zeros(1, spec.LAYERS, 8)
    for obs in obs_seq:  # the torch net's greedy choice, with its own state, equals the edge's
        with torch.inference_mode():
            a, f, h = net(torch.from_numpy(obs[None]), h)
        want_angle = int(a[0].argmax())
        assert policy.decide(obs) == (want_angle, int(f[0, want_angle].argmax()))
        assert not used_angles(obs)[want_angle]
    full = np.zeros(spec.obs_size(), np.float32)
    full[2 * spec.BUDGET : 2 * spec.BUDGET + spec.N_ANGLES] = 0.25  # every angle used …
    full[2 * spec.BUDGET + 123] = 0.0  # … but one
    assert [policy.decide(full)[0] for _ in range(3)] == [123] * 3
    full[2 * spec.BUDGET + 123] = 1.0
    state = policy.state()
    assert policy.decide(full) is None and policy.faults == 1 and np.array_equal(policy.state(), state)


def test_parity_checks_several_steps_and_catches_a_different_graph(artifact) -> None:
    assert check_parity(actor(), artifact / "model.onnx", (3, 8)) <= 1e-5
    with pytest.raises(ExportError, match="differ"):
        check_parity(actor(seed=1), artifact / "model.onnx", (3, 8))


def test_bad_policies_are_refused(tmp_path) -> None:
    class WrongShape(TinyTransceiverNet):
        def forward(self, obs, hidden):
            a, f, h = super().forward(obs, hidden)
            return a[:, :180], f, h

    with pytest.raises(ExportError, match="contract"):
        export_transceiver_policy(WrongShape(), tmp_path / "w", hidden_size=8, training_run="t")
    export_transceiver_policy(TinyTransceiverNet(bias=float("nan")), tmp_path / "nan", hidden_size=8,
                              training_run="t")
    with pytest.raises(PolicyRejected, match="not finite"):
        TransceiverPolicy.from_artifact(tmp_path / "nan")


def _run(tmp_path, mode: str, fixed_freq: int = 1):
    """A `train scatter` run folder (policy.pt as train.save writes it, updates.csv) holding `actor()`."""
    from dataclasses import asdict

    from learner.scatter.train import TrainConfig

    run = tmp_path / f"run-{mode}"
    run.mkdir()
    cfg = TrainConfig(mode=mode, fixed_freq=fixed_freq)
    net = actor()
    torch.save({"config": asdict(cfg), "policy_config": asdict(net.cfg), "updates": 0, "actor": net.state_dict()},
               run / "policy.pt")
    (run / "updates.csv").write_text("update\n")
    return run


def test_edgetune_export_writes_a_scatter_run_as_a_transceiver_policy(tmp_path) -> None:
    from typer.testing import CliRunner

    from hil.cli import app

    res = CliRunner().invoke(app, ["export", str(_run(tmp_path, "both")), str(tmp_path / "art"), "--version", "7"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert m["task"] == spec.TASK and m["version"] == "7"
    policy, net = TransceiverPolicy.from_artifact(tmp_path / "art"), actor()
    obs = parity_observations(np.random.default_rng(0), 1)[0]
    with torch.inference_mode():
        a, f, _ = net(torch.from_numpy(obs[None]), torch.zeros(1, spec.LAYERS, 8))
    assert policy.decide(obs) == (int(a[0].argmax()), int(f[0, int(a[0].argmax())].argmax()))
    refused = CliRunner().invoke(app, ["export", str(_run(tmp_path, "frequency")), str(tmp_path / "f")])
    assert refused.exit_code != 0 and "learn-frequency" in refused.output and not (tmp_path / "f").exists()


@pytest.mark.parametrize("fixed", [0, 3])
def test_a_learn_angle_run_exports_with_its_fixed_frequency(tmp_path, fixed) -> None:
    from learner.scatter.export import export_scatter

    export_scatter(_run(tmp_path, "angle", fixed_freq=fixed), tmp_path / "art")
    policy, net = TransceiverPolicy.from_artifact(tmp_path / "art"), actor()
    h = torch.zeros(1, spec.LAYERS, 8)
    for obs in parity_observations(np.random.default_rng(1), 5):
        with torch.inference_mode():
            a, _, h = net(torch.from_numpy(obs[None]), h)
        assert policy.decide(obs) == (int(a[0].argmax()), fixed)  # the learned angle, the run's frequency
