"""learner/export.py + controller/policy/manifest.py: a real ONNX file, parity, the graph's I/O contract, the manifest."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from controller.policy.manifest import ManifestError, file_sha256, load_artifact, load_manifest, parse_manifest
from learner.algos.ddpg import Actor
from learner.export import ExportError, check_parity, export_policy

OBS_DIM, ACT_DIM = 12, 4
MEAN = np.linspace(-50, 50, OBS_DIM)
STD = np.linspace(1, 20, OBS_DIM)
LOW, HIGH = [0.0, 0.0, 0.0, -2.0], [20.0, 10.0, 5.0, 2.0]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    torch.manual_seed(0)
    actor = Actor(OBS_DIM, ACT_DIM, (100, 60))
    out = tmp_path_factory.mktemp("policy")
    manifest = export_policy(
        actor, out, task="mems-pid-gains", obs_mean=MEAN, obs_std=STD, obs_units=["px"] * OBS_DIM,
        low=LOW, high=HIGH, act_units=["V/px", "V/(px*s)", "V*s/px", "1"], decision_period_s=1 / 120, training_run="run-42",
    )
    return actor, out, manifest


def test_graph_io_contract(artifact):
    _, out, _ = artifact
    model = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(model)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,), (outp,) = model.graph.input, model.graph.output
    assert inp.name == "obs" and outp.name == "action"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_value == OBS_DIM


def test_onnx_matches_torch_and_normalises_inside_the_graph(artifact):
    actor, out, _ = artifact
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    raw = (MEAN + 5 * STD * rng.standard_normal((500, OBS_DIM))).astype(np.float32)  # far outside [-1, 1]
    (got,) = sess.run(["action"], {"obs": raw})
    with torch.inference_mode():
        a = actor(torch.from_numpy((raw - MEAN) / STD).float()).numpy()
    want = np.asarray(LOW) + (a + 1) / 2 * (np.asarray(HIGH) - np.asarray(LOW))
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert (got >= np.asarray(LOW, dtype=np.float32)).all() and (got <= np.asarray(HIGH, dtype=np.float32)).all()
    # The clamp holds even for absurd inputs that saturate the tanh.
    (extreme,) = sess.run(["action"], {"obs": np.full((2, OBS_DIM), 1e30, dtype=np.float32) * np.array([[1], [-1]], dtype=np.float32)})
    assert np.isfinite(extreme).all() and (extreme >= np.float32(LOW)).all() and (extreme <= np.float32(HIGH)).all()


def test_parity_check_raises_on_mismatch(artifact):
    actor, out, _ = artifact
    from learner.export import PolicyGraph

    wrong = PolicyGraph(actor, MEAN + 1.0, STD, LOW, HIGH)  # not what the file holds
    with pytest.raises(ExportError, match="differ"):
        check_parity(wrong, out / "model.onnx", OBS_DIM, MEAN, STD)


def test_manifest_round_trip_and_sha256(artifact):
    _, out, manifest = artifact
    loaded, model_path = load_artifact(out)
    assert loaded == manifest
    assert loaded.sha256 == file_sha256(model_path)
    assert loaded.observation.shape == (OBS_DIM,) and loaded.action.high == HIGH
    assert loaded.observation.normalisation.std == pytest.approx(STD.tolist())
    assert loaded.training_run == "run-42" and loaded.decision_period_s == pytest.approx(1 / 120)
    assert {"torch", "onnx", "onnxruntime"} <= loaded.producer.keys()


def test_tampered_model_is_rejected(artifact, tmp_path):
    _, out, _ = artifact
    (tmp_path / "manifest.json").write_bytes((out / "manifest.json").read_bytes())
    (tmp_path / "model.onnx").write_bytes((out / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(ManifestError, match="sha256"):
        load_artifact(tmp_path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["outputs"][0]["bounds"].update(low=[1.0, 0.0, 0.0, 3.0]), "low < high"),
        (lambda m: m["inputs"][0]["normalisation"].update(std=[0.0] * OBS_DIM), "std must be finite and > 0"),
        (lambda m: m["inputs"][0].update(units=["px", "px"]), "units has 2 entries, the shape has 12 elements"),
        (lambda m: m.update(sha256="abc"), "sha256"),
        (lambda m: m.update(decision_period_s=-1), "decision_period_s"),
        (lambda m: m.update(surprise=1), "surprise"),
        (lambda m: m.pop("task"), "task"),
        (lambda m: m["inputs"][0].update(dtype="float64"), "dtype"),
    ],
)
def test_bad_manifest_is_rejected_with_a_clear_error(artifact, edit, message):
    _, out, _ = artifact
    m = json.loads((out / "manifest.json").read_text())
    edit(m)
    with pytest.raises(ManifestError, match="invalid manifest") as e:
        parse_manifest(json.dumps(m))
    assert message in str(e.value)


def test_unreadable_or_garbage_manifest(tmp_path):
    with pytest.raises(ManifestError, match="cannot read manifest"):
        load_manifest(tmp_path / "missing.json")
    with pytest.raises(ManifestError, match="invalid manifest"):
        parse_manifest(b"\x00not json")
