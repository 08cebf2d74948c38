"""The scan policy's export (learner/ptycho/export.py): ONNX + a v2 manifest with the GRU state, onnxruntime
against torch over several decisions with the state carried, and the edge's slot validator (its own process)
accepting it; the edge runtime (ScanPolicy) carries the state like torch does."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import torch

from controller.config import parse_config
from controller.modes.ptycho import spec
from controller.modes.ptycho.path import prior
from controller.modes.ptycho.session import _slot
from controller.modes.ptycho.policy import ScanPolicy
from controller.policy.runtime import PolicyRejected
from learner.export import ExportError
from learner.ptycho.export import check_parity, export_scan_policy
from ptycho_policy import TinyScanNet

FIELD, H = 100, 8


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny"
    return export_scan_policy(TinyScanNet(hidden=H), out, field=FIELD, hidden_size=H, training_run="tiny"), out


def test_manifest_declares_the_hidden_state_and_parity_holds_over_carried_steps(exported) -> None:
    manifest, out = exported
    assert [(s.name, s.shape, s.initial, s.next) for s in manifest.state] == [
        (spec.HIDDEN, (spec.LAYERS, H), 0.0, spec.HIDDEN_NEXT)]
    assert {t.name: t.shape for t in manifest.inputs} == spec.inputs(FIELD)
    assert json.loads((out / "manifest.json").read_text())["schema_version"] == 2
    net = TinyScanNet(hidden=H)
    assert check_parity(net, out / "model.onnx", FIELD, (spec.LAYERS, H), seed=3, steps=6) <= 1e-5
    with pytest.raises(ExportError, match="differ"):  # another policy's weights: the check can fail
        check_parity(TinyScanNet(hidden=H, seed=5), out / "model.onnx", FIELD, (spec.LAYERS, H))


def test_edge_runtime_carries_the_state_like_torch(exported) -> None:
    _, out = exported
    policy, net = ScanPolicy.from_artifact(out, FIELD), TinyScanNet(hidden=H).eval()
    rng = np.random.default_rng(1)
    hidden, last = torch.zeros(1, spec.LAYERS, H), np.zeros((0, 2))
    outputs = []
    for step in range(4):
        recon = rng.normal(0, 0.3, (FIELD, FIELD)).astype(np.float32)
        default = prior(30 * step)
        got = policy.decide(recon, last, default)
        padded = np.zeros((1, spec.M_MAX, 2), np.float32)
        padded[0, :len(last)] = last
        with torch.inference_mode():
            want, hidden = net(torch.from_numpy(recon)[None, None], torch.from_numpy(padded),
                               torch.tensor([[float(len(last))]]), torch.from_numpy(default[None]).float(), hidden)
        np.testing.assert_allclose(got, want[0].numpy(), rtol=0, atol=1e-5)
        outputs.append(got)
        last = rng.random((30, 2))
    assert not np.allclose(outputs[1], outputs[2])  # the state and inputs matter
    policy.reset()
    np.testing.assert_allclose(policy.binding.state[spec.HIDDEN], 0.0)


def test_the_slot_validator_accepts_the_export_and_refuses_a_wrong_field(exported, tmp_path) -> None:
    _, out = exported
    cfg = parse_config({"loop": {"mode": "ptycho"}})
    slot = _slot(cfg, lambda: None)

    async def main() -> None:
        async with asyncio.timeout(60):
            policy = await slot.load(out)  # the validator process, then the opener
            assert isinstance(policy, ScanPolicy) and policy.version == "1"
    try:
        asyncio.run(main())
    finally:
        slot.close()
    with pytest.raises(PolicyRejected, match="wrong_shape"):
        ScanPolicy.from_artifact(out, FIELD - 2)


def test_the_learners_scan_policy_exports_with_parity(tmp_path) -> None:
    from learner.ptycho.policy import PolicyConfig, ScanPolicy as LearnedPolicy

    torch.manual_seed(0)
    net = LearnedPolicy(PolicyConfig(hidden=16, features=16)).eval()
    export_scan_policy(net, tmp_path / "p", field=FIELD, hidden_size=16, training_run="learned")
    assert check_parity(net, tmp_path / "p" / "model.onnx", FIELD, (spec.LAYERS, 16), seed=1, steps=4) <= 1e-5
