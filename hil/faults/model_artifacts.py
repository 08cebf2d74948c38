"""Policy artifacts for the rl-pid mode built with onnx.helper (no torch): one good, one per model
fault the edge must refuse (HIL issue: corrupt file, wrong shapes, another task, NaN/inf outputs, too slow),
and three that pass validation (the probes stay within ±3σ = ±150 px) but fail at run time once the spot's x
exceeds a threshold: NaN actions (nan_above_x), an index out of range in a Gather, so onnxruntime raises
(error_above_x), and a Loop whose trip count grows with the excess, so the call takes SLOW_ITERS_PER_PX
iterations per px above the threshold: about 40 ms at 1 px, 0.4 s at 10 px (slow_above_x).

The good actor is the exporter's graph contract (learner/export.py) written by hand:
obs (raw) → (obs − mean)/std → tanh(· W + b) → low + (a + 1)/2 · (high − low), action in the manifest's bounds.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from controller.policy.manifest import (MODEL_NAME, Bounds, InputSpec, Manifest, Normalisation, OutputSpec, file_sha256,
                                       write_manifest)
from controller.modes.mems.spec import ACT_UNITS, ACTIONS, OBS_FIELDS, TASK, obs_units

Fault = Literal["good", "nan", "inf", "wrong_shape", "slow", "other_task", "corrupt", "sha256_mismatch", "nan_above_x",
                "error_above_x", "slow_above_x"]
AboveX = Literal["nan", "error", "slow"]  # what an actor does once an x reading is above its threshold
FAULTS: tuple[Fault, ...] = ("nan", "wrong_shape", "slow", "other_task", "corrupt", "sha256_mismatch")  # one a reason
# the reason the edge gives for each refused artifact (controller/policy/slot.py)
EXPECTED_REASON = {"nan": "non_finite", "inf": "non_finite", "wrong_shape": "wrong_shape", "slow": "too_slow",
                   "other_task": "wrong_task", "corrupt": "corrupt_model", "sha256_mismatch": "sha256_mismatch"}

OBS_STD = (50.0, 50.0, 2000.0, 2000.0, 50.0, 50.0)
LOW = (5.0, 300.0, 8.0, 400.0)  # around the paper's baseline: P_x 10, I_x 600, P_y 16, I_y 816 (SI)
HIGH = (15.0, 900.0, 24.0, 1200.0)
SLOW_SIZE, SLOW_DEPTH = 256, 60  # ≈ 2 GFLOP per inference: tens of ms on one thread
SLOW_ITERS_PER_PX, LOOP_SIZE = 25_000, 32  # slow_above_x: Loop iterations per px of excess, each a 32×32 MatMul (≈ 1.7 µs)


def _model(nodes: list, inits: list, obs_dim: int, act_dim: int) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "policy", [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", obs_dim])],
                              [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", act_dim])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgetune-hil")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def actor_model(steps: int, seed: int = 0, act_dim: int = len(ACTIONS), bias: float = 0.0, slow: bool = False,
                span_scale: float = 1.0, above_x: AboveX | None = None, x_threshold_px: float = 200.0) -> onnx.ModelProto:
    """`span_scale` scales the action's span (inf: +inf outputs); `above_x`: what the actor does whenever any x
    reading in the observation window is above `x_threshold_px` (module doc; finite and fast elsewhere)."""
    obs_dim = steps * len(OBS_FIELDS)
    rng = np.random.default_rng(seed)
    low, high = np.resize(LOW, act_dim), np.resize(HIGH, act_dim)
    inits = [_f32("mean", np.zeros(obs_dim)), _f32("std", np.tile(OBS_STD, steps)),
             _f32("W", 0.3 * rng.standard_normal((obs_dim, act_dim)) / np.sqrt(obs_dim)), _f32("b", np.full(act_dim, bias)),
             _f32("low", low), _f32("half_span", span_scale * (high - low) / 2), _f32("one", 1.0)]
    nodes = [helper.make_node("Sub", ["obs", "mean"], ["c"]), helper.make_node("Div", ["c", "std"], ["z"]),
             helper.make_node("MatMul", ["z", "W"], ["zw"]), helper.make_node("Add", ["zw", "b"], ["pre"])]
    if slow:  # a square matrix that depends on the input, multiplied SLOW_DEPTH times (no constant folding)
        inits += [_f32("spread", np.ones((1, SLOW_SIZE))), _f32("M", np.eye(SLOW_SIZE)), _f32("zero", 0.0)]
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
    out = "action" if above_x is None else "finite_action"
    nodes += [helper.make_node("Tanh", [pre], ["a"]), helper.make_node("Add", ["a", "one"], ["a1"]),
              helper.make_node("Mul", ["a1", "half_span"], ["span"]), helper.make_node("Add", ["span", "low"], [out])]
    if above_x is not None:
        _above_x(above_x, x_threshold_px, obs_dim, act_dim, nodes, inits)
    return _model(nodes, inits, obs_dim, act_dim)


def _f32(name: str, a: Any) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(a, dtype=np.float32), name)


def _above_x(kind: AboveX, threshold_px: float, obs_dim: int, act_dim: int, nodes: list, inits: list) -> None:
    """Nodes from "finite_action" to "action" that misbehave (`kind`) when an x reading is above the threshold."""
    thr = np.full(obs_dim, np.inf)  # x columns (0, 6, 12, …) against the threshold, every other one against +inf
    thr[::len(OBS_FIELDS)] = threshold_px
    inits.append(_f32("x_threshold", thr))
    nodes += [helper.make_node("Greater", ["obs", "x_threshold"], ["above"]),  # NaN readings are never above
              helper.make_node("Cast", ["above"], ["above_f"], to=TensorProto.FLOAT),
              helper.make_node("ReduceMax", ["above_f"], ["any_f"], axes=[1], keepdims=1)]
    if kind == "nan":
        inits += [_f32("nan", np.full(act_dim, np.nan)), _f32("half", 0.5)]
        nodes += [helper.make_node("Greater", ["any_f", "half"], ["any"]),
                  helper.make_node("Where", ["any", "nan", "finite_action"], ["action"])]
    elif kind == "error":  # index 0 below the threshold, 1000 above: out of the 2-element table's range
        inits += [_f32("table", [0.0, 0.0]), _f32("far", 1000.0)]
        nodes += [helper.make_node("Mul", ["any_f", "far"], ["index_f"]),
                  helper.make_node("Cast", ["index_f"], ["index"], to=TensorProto.INT64),
                  helper.make_node("Gather", ["table", "index"], ["nil"]),
                  helper.make_node("Add", ["finite_action", "nil"], ["action"])]
    else:  # a Loop of SLOW_ITERS_PER_PX iterations per px of the largest excess
        inits += [_f32("per_px", float(SLOW_ITERS_PER_PX)), _f32("eye", np.eye(LOOP_SIZE)), _f32("zero_x", 0.0),
                  numpy_helper.from_array(np.array(True), "true")]
        mat = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [LOOP_SIZE, LOOP_SIZE])  # noqa: E731
        body = helper.make_graph(
            [helper.make_node("MatMul", ["h_in", "eye"], ["h_out"]), helper.make_node("Identity", ["cond_in"], ["cond_out"])],
            "slow_body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                          helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []), mat("h_in")],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), mat("h_out")])
        nodes += [helper.make_node("Sub", ["obs", "x_threshold"], ["over"]),
                  helper.make_node("Where", ["above", "over", "zero_x"], ["excess"]),
                  helper.make_node("ReduceMax", ["excess"], ["worst"], keepdims=0),
                  helper.make_node("Mul", ["worst", "per_px"], ["trips_f"]),
                  helper.make_node("Cast", ["trips_f"], ["trips"], to=TensorProto.INT64),
                  helper.make_node("Loop", ["trips", "true", "eye"], ["h_end"], body=body),
                  helper.make_node("ReduceMean", ["h_end"], ["hm"], keepdims=0),
                  helper.make_node("Mul", ["hm", "zero_x"], ["nil"]),
                  helper.make_node("Add", ["finite_action", "nil"], ["action"])]


def write_artifact(out_dir: str | Path, model: onnx.ModelProto, *, steps: int, task: str = TASK, version: str = "1",
                   decision_period_s: float = 0.1, act_dim: int = len(ACTIONS)) -> Manifest:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out / MODEL_NAME))
    manifest = Manifest(
        task=task, version=version, decision_period_s=decision_period_s, training_run=f"hil-{version}",
        inputs=[InputSpec(name="obs", shape=(steps * len(OBS_FIELDS),), units=obs_units(steps),
                          normalisation=Normalisation(mean=[0.0] * steps * len(OBS_FIELDS), std=list(OBS_STD) * steps))],
        outputs=[OutputSpec(name="action", shape=(act_dim,), units=list(np.resize(ACT_UNITS, act_dim)),
                            bounds=Bounds(low=list(np.resize(LOW, act_dim)), high=list(np.resize(HIGH, act_dim))))],
        sha256=file_sha256(out / MODEL_NAME), created=datetime.now(timezone.utc), producer={"edgetune": "hil"}, opset=17)
    write_manifest(manifest, out)
    return manifest


def make_artifact(kind: Fault, out_dir: str | Path, *, steps: int = 4, version: str = "1", seed: int = 0,
                  decision_period_s: float = 0.1, bias: float = 0.0, x_threshold_px: float = 200.0) -> Path:
    """Write one artifact of the given kind into `out_dir`; returns `out_dir`. `bias` shifts the good
    actor's pre-tanh output (0: gains near the middle of the bounds). `x_threshold_px` (*_above_x) must
    lie beyond the probes' ±3σ (3 · 50 px) for the model to pass validation."""
    out = Path(out_dir)
    kw = dict(steps=steps, version=version, decision_period_s=decision_period_s)
    if kind == "nan":
        write_artifact(out, actor_model(steps, seed, bias=float("nan")), **kw)
    elif kind == "inf":
        write_artifact(out, actor_model(steps, seed, span_scale=float("inf")), **kw)
    elif kind.endswith("_above_x"):
        above: AboveX = kind.removesuffix("_above_x")  # type: ignore[assignment]
        write_artifact(out, actor_model(steps, seed, bias=bias, above_x=above, x_threshold_px=x_threshold_px), **kw)
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
