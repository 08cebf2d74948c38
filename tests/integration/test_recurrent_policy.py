"""A recurrent policy on the edge (controller/policy/runtime.py): a toy GRU (onnx.helper GRU op) with a v2
manifest declaring its hidden state passes the slot's validator (its own process), runs step by step through
the slot with the state carried between decisions — the same outputs as the whole sequence run at once — and
starts afresh when it becomes active and on `reset()`."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from controller.policy.manifest import (MODEL_NAME, Bounds, InputSpec, Manifest, OutputSpec, StateSpec, file_sha256,
                                        write_manifest)
from controller.policy.slot import PolicyRejected, PolicySlot, PolicySpec

OBS, HIDDEN, ACT, STEPS = 3, 5, 2, 12
SPEC = PolicySpec(task="toy-gru", obs_step=OBS, act_dim=ACT, max_steps=1)


def _weights(seed: int = 0) -> list[onnx.TensorProto]:
    rng = np.random.default_rng(seed)
    arrays = {"W": rng.normal(0, 0.5, (1, 3 * HIDDEN, OBS)), "R": rng.normal(0, 0.5, (1, 3 * HIDDEN, HIDDEN)),
              "B": rng.normal(0, 0.1, (1, 6 * HIDDEN)), "Wo": rng.normal(0, 1.0, (HIDDEN, ACT)),
              "axis0": np.array([0], np.int64)}
    return [numpy_helper.from_array(a if a.dtype == np.int64 else a.astype(np.float32), name) for name, a in arrays.items()]


def _head(h: str) -> list[onnx.NodeProto]:
    return [helper.make_node("MatMul", [h, "Wo"], ["pre"]), helper.make_node("Tanh", ["pre"], ["action"])]


def step_model() -> onnx.ModelProto:
    """obs (batch, OBS), h (batch, HIDDEN) -> action (batch, ACT), h_next (batch, HIDDEN): one GRU step."""
    f = lambda name, *shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *shape])  # noqa: E731
    nodes = [helper.make_node("Unsqueeze", ["obs", "axis0"], ["x"]), helper.make_node("Unsqueeze", ["h", "axis0"], ["h0"]),
             helper.make_node("GRU", ["x", "W", "R", "B", "", "h0"], ["y", "y_h"], hidden_size=HIDDEN),
             helper.make_node("Squeeze", ["y_h", "axis0"], ["h_next"]), *_head("h_next")]
    graph = helper.make_graph(nodes, "gru_step", [f("obs", OBS), f("h", HIDDEN)], [f("action", ACT), f("h_next", HIDDEN)],
                              _weights())
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def sequence_actions(obs: np.ndarray, initial: float) -> np.ndarray:
    """The same GRU over the whole sequence (T, OBS) at once: actions (T, ACT)."""
    seq = helper.make_tensor_value_info("seq", TensorProto.FLOAT, [STEPS, 1, OBS])
    h0 = numpy_helper.from_array(np.full((1, 1, HIDDEN), initial, np.float32), "h0")
    nodes = [helper.make_node("GRU", ["seq", "W", "R", "B", "", "h0"], ["y"], hidden_size=HIDDEN),
             helper.make_node("Reshape", ["y", "shape"], ["hs"]),  # (T, 1, 1, H) -> (T, H)
             *_head("hs")]
    shape = numpy_helper.from_array(np.array([STEPS, HIDDEN], np.int64), "shape")
    graph = helper.make_graph(nodes, "gru_seq", [seq], [helper.make_tensor_value_info("action", TensorProto.FLOAT, None)],
                              [*_weights(), h0, shape])
    sess = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {"seq": obs[:, None, :]})[0]


def write_gru_artifact(out: Path, initial: float = 0.25, state_shape: tuple[int, ...] = (HIDDEN,)) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(step_model(), str(out / MODEL_NAME))
    write_manifest(Manifest(
        task=SPEC.task, version="gru-1", decision_period_s=0.1, training_run="toy", opset=17,
        inputs=[InputSpec(name="obs", shape=(OBS,), units=["1"])],
        outputs=[OutputSpec(name="action", shape=(ACT,), units=["1"], bounds=Bounds(low=[-1.0], high=[1.0]))],
        state=[StateSpec(name="h", shape=state_shape, initial=initial, next="h_next")],
        sha256=file_sha256(out / MODEL_NAME), created=datetime.now(timezone.utc), producer={"edgetune": "test"}), out)
    return out


async def _activate(slot: PolicySlot, directory: Path):
    async with asyncio.timeout(30):
        policy = await slot.load(directory)  # the validator process, then the opener in the worker thread
        done = slot.request_swap(policy)
        assert slot.boundary()
        return policy, (await done)[0]


def test_gru_validates_and_runs_step_by_step_like_the_whole_sequence(tmp_path: Path) -> None:
    obs = np.random.default_rng(1).normal(0, 1, (STEPS, OBS)).astype(np.float32)
    want = sequence_actions(obs, 0.25)
    slot = PolicySlot(SPEC, budget_s=0.05)

    async def main() -> None:
        policy, active = await _activate(slot, write_gru_artifact(tmp_path / "gru"))
        assert active is policy and policy.state["h"].tolist() == [[0.25] * HIDDEN]  # reset when it became active
        got = np.array([slot.infer(o).copy() for o in obs])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        assert not np.allclose(got[1:], got[:-1])  # the state matters
        policy.reset()
        np.testing.assert_allclose(slot.infer(obs[0]), want[0], rtol=0, atol=1e-6)
        assert slot.counters["accepted"] == 1 and not any(k.startswith("runtime") for k in slot.counters)

    try:
        asyncio.run(main())
    finally:
        slot.close()


def test_state_that_does_not_match_the_graph_is_refused(tmp_path: Path) -> None:
    slot = PolicySlot(SPEC, budget_s=0.05)

    async def main() -> None:
        with pytest.raises(PolicyRejected) as e:
            await _activate(slot, write_gru_artifact(tmp_path / "bad", state_shape=(HIDDEN + 1,)))
        assert e.value.reason == "wrong_shape" and "h[batch, 6]" in e.value.detail

    try:
        asyncio.run(main())
    finally:
        slot.close()
