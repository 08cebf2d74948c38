"""Policy artifacts for the rl-pid mode built with onnx.helper (no torch): one good, one per model
fault the edge must refuse (HIL issue: corrupt file, wrong shapes, another task, NaN/inf outputs, too slow),
and one that passes validation but outputs NaN at run time once the spot's x exceeds a threshold.

The good actor is the exporter's graph contract (learner/export.py) written by hand:
obs (raw) → (obs − mean)/std → tanh(· W + b) → low + (a + 1)/2 · (high − low), action in the manifest's bounds.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from controller.manifest import MODEL_NAME, ActionSpec, Manifest, Normalisation, ObservationSpec, file_sha256, write_manifest
from controller.modes.rl_pid import ACTIONS, OBS_FIELDS, TASK

Fault = Literal["good", "nan", "inf", "wrong_shape", "slow", "other_task", "corrupt", "sha256_mismatch", "nan_above_x"]
FAULTS: tuple[Fault, ...] = ("nan", "wrong_shape", "slow", "other_task", "corrupt", "sha256_mismatch")  # one a reason
# the reason the edge gives for each refused artifact (controller/policy.py)
EXPECTED_REASON = {"nan": "non_finite", "inf": "non_finite", "wrong_shape": "wrong_shape", "slow": "too_slow",
                   "other_task": "wrong_task", "corrupt": "corrupt_model", "sha256_mismatch": "sha256_mismatch"}

OBS_UNITS = ("px", "px", "V", "V", "px", "px")
OBS_STD = (50.0, 50.0, 2000.0, 2000.0, 50.0, 50.0)
ACT_UNITS = ("V/px", "V/(px*s)", "V/px", "V/(px*s)")
LOW = (5.0, 300.0, 8.0, 400.0)  # around the paper's baseline: P_x 10, I_x 600, P_y 16, I_y 816 (SI)
HIGH = (15.0, 900.0, 24.0, 1200.0)
SLOW_SIZE, SLOW_DEPTH = 256, 60  # ≈ 2 GFLOP per inference: tens of ms on one thread


def _model(nodes: list, inits: list, obs_dim: int, act_dim: int) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "policy", [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", obs_dim])],
                              [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", act_dim])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgetune-hil")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def actor_model(steps: int, seed: int = 0, act_dim: int = len(ACTIONS), bias: float = 0.0, slow: bool = False,
                span_scale: float = 1.0, nan_above_x: float | None = None) -> onnx.ModelProto:
    """`span_scale` scales the action's span (inf: +inf outputs); `nan_above_x` [px]: NaN actions whenever
    any x reading in the observation window is above it (NaN inside the graph, finite elsewhere)."""
    obs_dim = steps * len(OBS_FIELDS)
    rng = np.random.default_rng(seed)
    f32 = lambda name, a: numpy_helper.from_array(np.asarray(a, dtype=np.float32), name)  # noqa: E731
    low, high = np.resize(LOW, act_dim), np.resize(HIGH, act_dim)
    inits = [f32("mean", np.zeros(obs_dim)), f32("std", np.tile(OBS_STD, steps)),
             f32("W", 0.3 * rng.standard_normal((obs_dim, act_dim)) / np.sqrt(obs_dim)), f32("b", np.full(act_dim, bias)),
             f32("low", low), f32("half_span", span_scale * (high - low) / 2), f32("one", 1.0)]
    nodes = [helper.make_node("Sub", ["obs", "mean"], ["c"]), helper.make_node("Div", ["c", "std"], ["z"]),
             helper.make_node("MatMul", ["z", "W"], ["zw"]), helper.make_node("Add", ["zw", "b"], ["pre"])]
    if slow:  # a square matrix that depends on the input, multiplied SLOW_DEPTH times (no constant folding)
        inits += [f32("spread", np.ones((1, SLOW_SIZE))), f32("M", np.eye(SLOW_SIZE)), f32("zero", 0.0)]
        nodes += [helper.make_node("ReduceSum", ["z"], ["s"], keepdims=1),
                  helper.make_node("MatMul", ["s", "spread"], ["row"]),
                  helper.make_node("Transpose", ["row"], ["col"]), helper.make_node("MatMul", ["col", "row"], ["h0"])]
        for i in range(SLOW_DEPTH):
            nodes.append(helper.make_node("MatMul", [f"h{i}", "M"], [f"h{i + 1}"]))
        nodes += [helper.make_node("ReduceMean", [f"h{SLOW_DEPTH}"], ["hm"], keepdims=0),
                  helper.make_node("Mul", ["hm", "zero"], ["nil"]), helper.make_node("Add", ["pre", "nil"], ["pre2"])]
        pre = "pre2"
    else:
        pre = "pre"
    out = "action" if nan_above_x is None else "finite_action"
    nodes += [helper.make_node("Tanh", [pre], ["a"]), helper.make_node("Add", ["a", "one"], ["a1"]),
              helper.make_node("Mul", ["a1", "half_span"], ["span"]), helper.make_node("Add", ["span", "low"], [out])]
    if nan_above_x is not None:  # x columns (0, 6, 12, …) against the threshold, every other column against +inf
        thr = np.full(obs_dim, np.inf)
        thr[::len(OBS_FIELDS)] = nan_above_x
        inits += [f32("x_threshold", thr), f32("half", 0.5), f32("nan", np.full(act_dim, np.nan))]
        nodes += [helper.make_node("Greater", ["obs", "x_threshold"], ["above"]),
                  helper.make_node("Cast", ["above"], ["above_f"], to=TensorProto.FLOAT),
                  helper.make_node("ReduceMax", ["above_f"], ["any_f"], axes=[1], keepdims=1),
                  helper.make_node("Greater", ["any_f", "half"], ["any"]),
                  helper.make_node("Where", ["any", "nan", out], ["action"])]
    return _model(nodes, inits, obs_dim, act_dim)


def write_artifact(out_dir: str | Path, model: onnx.ModelProto, *, steps: int, task: str = TASK, version: str = "1",
                   decision_period_s: float = 0.1, act_dim: int = len(ACTIONS)) -> Manifest:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out / MODEL_NAME))
    manifest = Manifest(
        task=task, version=version, decision_period_s=decision_period_s, training_run=f"hil-{version}",
        observation=ObservationSpec(shape=(steps * len(OBS_FIELDS),), units=list(OBS_UNITS) * steps,
                                    normalisation=Normalisation(mean=[0.0] * steps * len(OBS_FIELDS), std=list(OBS_STD) * steps)),
        action=ActionSpec(shape=(act_dim,), units=list(np.resize(ACT_UNITS, act_dim)), low=list(np.resize(LOW, act_dim)),
                          high=list(np.resize(HIGH, act_dim))),
        sha256=file_sha256(out / MODEL_NAME), created=datetime.now(timezone.utc), producer={"edgetune": "hil"}, opset=17)
    write_manifest(manifest, out)
    return manifest


def make_artifact(kind: Fault, out_dir: str | Path, *, steps: int = 4, version: str = "1", seed: int = 0,
                  decision_period_s: float = 0.1, bias: float = 0.0, x_threshold_px: float = 200.0) -> Path:
    """Write one artifact of the given kind into `out_dir`; returns `out_dir`. `bias` shifts the good
    actor's pre-tanh output (0: gains near the middle of the bounds). `x_threshold_px` (nan_above_x) must
    lie beyond the probes' ±3σ (3 · 50 px) for the model to pass validation."""
    out = Path(out_dir)
    kw = dict(steps=steps, version=version, decision_period_s=decision_period_s)
    if kind == "nan":
        write_artifact(out, actor_model(steps, seed, bias=float("nan")), **kw)
    elif kind == "inf":
        write_artifact(out, actor_model(steps, seed, span_scale=float("inf")), **kw)
    elif kind == "nan_above_x":
        write_artifact(out, actor_model(steps, seed, bias=bias, nan_above_x=x_threshold_px), **kw)
    elif kind == "wrong_shape":  # the manifest claims 4 actions, the graph gives 3
        write_artifact(out, actor_model(steps, seed, act_dim=3), **kw)
    elif kind == "slow":
        write_artifact(out, actor_model(steps, seed, slow=True), **kw)
    elif kind == "other_task":
        write_artifact(out, actor_model(steps, seed), task="ptycho-scan", **kw)
    else:
        write_artifact(out, actor_model(steps, seed, bias=bias), **kw)
        model = out / MODEL_NAME
        if kind == "corrupt":  # truncated file, manifest re-hashed so only the file itself is bad
            model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
            m = Manifest.model_validate_json((out / "manifest.json").read_bytes())
            write_manifest(m.model_copy(update={"sha256": file_sha256(model)}), out)
        elif kind == "sha256_mismatch":  # one flipped byte after the manifest was written
            data = bytearray(model.read_bytes())
            data[-1] ^= 0xFF
            model.write_bytes(bytes(data))
    return out
