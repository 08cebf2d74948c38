"""Manifest v2 (controller/policy/manifest.py): named tensors, per-element or shared units/bounds, recurrent
state; a v1 manifest is read as v2; a schema version the edge does not read is refused naming both."""
from __future__ import annotations

import json

import pytest

from controller.policy.manifest import Manifest, ManifestError, parse_manifest

COMMON = {"task": "t", "version": "1", "decision_period_s": 0.1, "sha256": "0" * 64, "training_run": "r",
          "created": "2026-01-01T00:00:00Z", "producer": {"edgetune": "test"}, "opset": 17}
V1 = {**COMMON, "schema_version": 1,
      "observation": {"name": "obs", "shape": [2], "dtype": "float32", "units": ["px", "V"],
                      "normalisation": {"mean": [0.0, 1.0], "std": [2.0, 3.0]}},
      "action": {"name": "action", "shape": [1], "dtype": "float32", "units": ["V/px"], "low": [5.0], "high": [15.0]}}
V2 = {**COMMON, "schema_version": 2,
      "inputs": [{"name": "obs", "shape": [3], "units": ["px"]}],
      "outputs": [{"name": "action", "shape": [2], "units": ["V"], "bounds": {"low": [-1.0], "high": [1.0]}}],
      "state": [{"name": "h", "shape": [4], "initial": 0.5, "next": "h_next"}]}


def test_v1_is_read_as_v2_with_one_input_obs_and_one_output_action() -> None:
    m = parse_manifest(json.dumps(V1))
    assert isinstance(m, Manifest) and m.schema_version == 2 and not m.state
    assert [(t.name, t.shape, t.units) for t in m.inputs] == [("obs", (2,), ["px", "V"])]
    assert m.observation.normalisation.std == [2.0, 3.0]
    assert (m.action.name, m.action.low, m.action.high) == ("action", [5.0], [15.0])
    assert parse_manifest(m.to_json()) == m  # written back as v2


def test_v2_named_tensors_shared_bounds_and_state() -> None:
    m = parse_manifest(json.dumps(V2))
    assert m.action.low == [-1.0, -1.0] and m.action.high == [1.0, 1.0] and m.observation.normalisation is None
    assert [(s.name, s.shape, s.initial, s.next) for s in m.state] == [("h", (4,), 0.5, "h_next")]


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["state"][0].update(name="obs"), "input names (state included) must be unique"),
    (lambda m: m["state"][0].update(next="action"), "output names (state included) must be unique"),
    (lambda m: m["outputs"][0]["bounds"].update(low=[0.0, 0.0, 0.0]), "bounds.low has 3 entries"),
    (lambda m: m["inputs"][0].update(shape=[0]), "shape must be positive"),
    (lambda m: m["state"][0].update(initial=float("nan")), "finite initial value"),
])
def test_bad_v2_manifests(edit, message) -> None:
    m = json.loads(json.dumps(V2))
    edit(m)
    with pytest.raises(ManifestError, match="invalid manifest") as e:
        parse_manifest(json.dumps(m))
    assert message in str(e.value)


@pytest.mark.parametrize("version", [3, 0, None, "2"])
def test_unknown_schema_version_is_refused_naming_both_versions(version) -> None:
    with pytest.raises(ManifestError) as e:
        parse_manifest(json.dumps({**V2, "schema_version": version}))
    assert str(e.value) == (f"manifest schema version {version!r} is not read by this edge (it reads 1 and 2; "
                            "this edge writes 2)")
