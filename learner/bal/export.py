"""Export a BAL feedback table (learner/bal/table.py `PolicyTable`: paper Eq. 28 over a grid of θ) to the forge
mode's artifact: model.onnx + a v2 manifest with the named inputs step, position, θ̂ and the output force
(controller/modes/bal/spec.py).

The graph IS the table's interpolation, written with onnx.helper (no torch, no training): the step n rounded
and clamped to [0, N − 1]; per θ component with more than one grid value, its interval (a count of the inner
grid values ≤ θ) and weight, θ clamped to its axis (multilinear); the position bilinear in the step's box,
clamped to it; the 2^(P+2) corner controls gathered from the flattened table and weighted; the result projected
onto |u| ≤ u_max (a table without θ axes — `train bal` with theta_grid 0 — takes θ̂ and ignores it). `export_bal`
exports a `train bal` run folder (forge runs only), `edgetune export RUN OUT`. A distilled network was not chosen:
the table is small (a few hundred kB for the forge), the
graph reproduces `PolicyTable.control` to float32 rounding (checked at export on random inputs, ≤ PARITY_ATOL)
and runs in a few µs, where a network would add a fit error and a training run to every export.
"""
from __future__ import annotations

import itertools
import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from controller.modes.bal import spec
from controller.modes.bal.problem import load_problem
from controller.policy.manifest import (MODEL_NAME, Bounds, InputSpec, Manifest, OutputSpec, file_sha256,
                                        write_manifest)

PARITY_ATOL = 1e-5  # |onnxruntime − PolicyTable.control| on random inputs [force units]
PARITY_SAMPLES = 512
OPSET = 17


class _Graph:
    """A tiny onnx.helper builder: constants and nodes with fresh names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def _name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, value: np.ndarray | float | int, stem: str = "c") -> str:
        arr = np.asarray(value)
        arr = arr.astype(np.int64 if np.issubdtype(arr.dtype, np.integer) else np.float32)
        name = self._name(stem)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs) -> str:
        name = out or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], **attrs))
        return name


def _interval(g: _Graph, t: str, knots: np.ndarray) -> tuple[str, str]:
    """(interval index i (B, 1) int64, weight w (B, 1)) of t (B, 1) among the sorted ``knots`` (≥ 2), t clamped to
    them: t = (1 − w)·knots[i] + w·knots[i + 1]."""
    t = g.op("Clip", t, g.const(knots[0]), g.const(knots[-1]))
    if len(knots) == 2:
        i = g.op("Mul", g.op("Cast", t, to=TensorProto.INT64), g.const(0))
    else:
        ge = g.op("Cast", g.op("GreaterOrEqual", t, g.const(knots[None, 1:-1])), to=TensorProto.INT64)
        i = g.op("ReduceSum", ge, g.const(np.array([1])), keepdims=1)
    lo, hi = g.op("Gather", g.const(knots[:-1]), i), g.op("Gather", g.const(knots[1:]), i)
    return i, g.op("Div", g.op("Sub", t, lo), g.op("Sub", hi, lo))


def policy_graph(table, theta_dim: int | None = None) -> onnx.ModelProto:
    """The ONNX graph of ``table.control`` for the forge contract (module doc); ValueError for a table that does
    not fit it (m ≠ 2, a grid of fewer than 2 points per side). A table without θ axes (one table at θ̂) takes θ̂
    as the contract asks and ignores it: ``theta_dim`` says how many components (else the table's axes)."""
    axes = [np.asarray(a, np.float64) for a in table.theta_axes]
    p = len(axes) if theta_dim is None else theta_dim
    if axes and p != len(axes):
        raise ValueError(f"the table has {len(axes)} θ axes, not {p}")
    u = np.asarray(table.u, np.float32)
    low, high = np.asarray(table.low, np.float64), np.asarray(table.high, np.float64)
    n_steps, grid = u.shape[len(axes)], u.shape[len(axes) + 1]
    if u.shape[-1] != 2 or u.ndim != len(axes) + 4 or u.shape[-2] != grid or grid < 2:
        raise ValueError(f"a forge table is u (*θ axes, N, G, G, 2) with G ≥ 2; got u {u.shape} with {len(axes)} θ "
                         f"axes")
    if low.shape != (n_steps, 2) or high.shape != (n_steps, 2) or np.any(high < low):
        raise ValueError(f"the table's boxes must be (N, 2) = ({n_steps}, 2) with high ≥ low")
    g = _Graph()
    dims = [*(len(a) for a in axes), n_steps, grid, grid]  # the table's rows: θ_1 … θ_P, n, i, j
    strides = [int(np.prod(dims[k + 1:])) for k in range(len(dims))]
    flat = g.const(u.reshape(-1, 2), "table")
    # the step: rounded, clamped to [0, N − 1]
    n = g.op("Clip", g.op("Floor", g.op("Add", spec.STEP, g.const(0.5))), g.const(0.0), g.const(n_steps - 1.0))
    n = g.op("Cast", n, to=TensorProto.INT64)  # (B, 1)
    index = g.op("Mul", n, g.const(strides[len(axes)]))
    corners: list[tuple[int, str]] = []  # (stride, weight) of each interpolated dimension
    for k, knots in enumerate(axes):
        if len(knots) == 1:
            continue
        t = g.op("Gather", spec.THETA, g.const(np.array([k])), axis=1)
        i, w = _interval(g, t, knots)
        index = g.op("Add", index, g.op("Mul", i, g.const(strides[k])))
        corners.append((strides[k], w))
    # the position in the step's box, in grid cells, clamped to [0, G − 1]
    n_flat = g.op("Reshape", n, g.const(np.array([-1])))
    span = np.where(high > low, high - low, 1.0) / (grid - 1)
    cell = g.op("Div", g.op("Sub", spec.POSITION, g.op("Gather", g.const(low), n_flat)),
                g.op("Gather", g.const(span), n_flat))
    s = g.op("Clip", cell, g.const(0.0), g.const(grid - 1.0))
    i0 = g.op("Min", g.op("Floor", s), g.const(grid - 2.0))
    frac, i0 = g.op("Sub", s, i0), g.op("Cast", i0, to=TensorProto.INT64)
    for d, stride in enumerate((grid, 1)):  # x0 → i, x1 → j
        sel = g.const(np.array([d]))
        index = g.op("Add", index, g.op("Mul", g.op("Gather", i0, sel, axis=1), g.const(stride)))
        corners.append((stride, g.op("Gather", frac, sel, axis=1)))
    total = None
    for bits in itertools.product((0, 1), repeat=len(corners)):
        offset = sum(b * stride for b, (stride, _) in zip(bits, corners))
        idx = g.op("Reshape", g.op("Add", index, g.const(offset)), g.const(np.array([-1])))
        value = g.op("Gather", flat, idx)  # (B, 2)
        for b, (_, w) in zip(bits, corners):
            value = g.op("Mul", value, w if b else g.op("Sub", g.const(1.0), w))
        total = value if total is None else g.op("Add", total, value)
    # projection onto |u| ≤ u_max
    norm = g.op("Sqrt", g.op("ReduceSum", g.op("Mul", total, total), g.const(np.array([1])), keepdims=1))
    u_max = g.const(float(table.u_max))
    g.op("Mul", total, g.op("Div", u_max, g.op("Max", norm, u_max)), out=spec.FORCE)
    ins = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *shape])
           for name, shape in spec.inputs(p).items()]
    outs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *shape])
            for name, shape in spec.outputs().items()]
    model = helper.make_model(helper.make_graph(g.nodes, "bal_forge_table", ins, outs, g.inits),
                              opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgetune")
    onnx.checker.check_model(model)
    return model


def random_inputs(table, count: int, rng: np.random.Generator, theta_dim: int | None = None) -> dict[str, np.ndarray]:
    """Inputs covering the table and beyond it (steps past N, positions outside the boxes, θ outside its axes;
    θ in [0, 5] for a table without θ axes, ``theta_dim`` components)."""
    n_steps = np.asarray(table.low).shape[0]
    n = rng.integers(-1, n_steps + 1, count)
    lo, hi = np.asarray(table.low)[np.clip(n, 0, n_steps - 1)], np.asarray(table.high)[np.clip(n, 0, n_steps - 1)]
    x = lo + (hi - lo) * rng.uniform(-0.1, 1.1, (count, 2))
    axes = [np.asarray(a) for a in table.theta_axes] or [np.array([0.0, 5.0])] * (theta_dim or 1)
    theta = np.stack([rng.uniform(a[0] - 0.1 * (a[-1] - a[0]) - 0.1, a[-1] + 0.1 * (a[-1] - a[0]) + 0.1, count)
                      for a in axes], axis=1)
    return {spec.STEP: n[:, None].astype(np.float32), spec.POSITION: x.astype(np.float32),
            spec.THETA: theta.astype(np.float32)}


def parity(table, model: bytes | str | Path, samples: int = PARITY_SAMPLES, seed: int = 0,
           theta_dim: int | None = None) -> float:
    """Max |onnxruntime − table.control| on random inputs (``random_inputs``, as float32 the edge feeds)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model if isinstance(model, bytes) else str(model), providers=["CPUExecutionProvider"])
    feed = random_inputs(table, samples, np.random.default_rng(seed), theta_dim)
    (got,) = sess.run([spec.FORCE], feed)
    want = table.control(feed[spec.STEP][:, 0].astype(np.int64), feed[spec.POSITION].astype(np.float64),
                         feed[spec.THETA].astype(np.float64) if table.theta_axes else None)
    return float(np.abs(got - want).max())


def export_table(table, out_dir: str | Path, *, version: str, training_run: str | None = None,
                 decision_period_s: float = 0.01, theta_dim: int | None = None) -> Manifest:
    """Write out_dir/model.onnx + manifest.json for ``table`` (``theta_dim``: see `policy_graph`); ValueError
    (nothing written) when the graph differs from ``table.control`` by more than PARITY_ATOL."""
    model = policy_graph(table, theta_dim).SerializeToString()
    worst = parity(table, model, theta_dim=theta_dim)
    if not worst <= PARITY_ATOL:
        raise ValueError(f"the ONNX graph differs from the table by {worst:.3g} > {PARITY_ATOL:g}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MODEL_NAME).write_bytes(model)
    p = len(table.theta_axes) or theta_dim
    u_max = float(table.u_max)
    manifest = Manifest(
        task=spec.TASK, version=version,
        inputs=[InputSpec(name=name, shape=shape, units=[spec.UNITS[name]]) for name, shape in spec.inputs(p).items()],
        outputs=[OutputSpec(name=spec.FORCE, shape=(2,), units=[spec.UNITS[spec.FORCE]],
                            bounds=Bounds(low=[-u_max], high=[u_max]))],
        decision_period_s=decision_period_s, training_run=training_run or uuid.uuid4().hex,
        producer={"onnx": onnx.__version__, "numpy": np.__version__}, opset=OPSET,
        sha256=file_sha256(out / MODEL_NAME), created=datetime.now(timezone.utc))
    write_manifest(manifest, out)
    return manifest


def export_bal(run: str | Path, out_dir: str | Path, *, version: str) -> Manifest:
    """Export a BAL run folder's feedback table (``table.npz``, learner/bal/table.py) as a forge policy."""
    from learner.bal.table import PolicyTable

    path, checkpoint = Path(run) / "table.npz", Path(run) / "checkpoint.npz"
    if not path.exists() or not checkpoint.exists():
        raise ValueError(f"{run} holds no table.npz and checkpoint.npz (a `train bal` run)")
    with np.load(checkpoint) as ck:
        problem = load_problem(json.loads(str(ck["meta"]))["config"]["problem"])
    if problem.kind != "forge":
        raise ValueError(f"{run} trained on {problem.name!r} ({problem.kind}); the edge runs forge policies only")
    return export_table(PolicyTable.load(path), out_dir, version=version, training_run=str(run),
                        theta_dim=problem.model.theta_dim)


def _wire(msg):
    """``msg`` as the other side decodes it (float32 fields rounded as the wire carries them); None for a Nak."""
    from controller.protocol import bal, framing

    if not isinstance(msg, framing.Message):
        return None
    ((_, out),) = framing.FrameDecoder(bal.FORGE).feed(framing.encode(msg, 0))
    return out


def edge_episode(problem, cfg, policy, seed: int):
    """The forge mode's first episode run in process (the HIL scenario's reference): the same tick logic
    (controller/modes/bal/forge.py `ForgeMode`: filter, policy, gate) against the forge firmware without its pty
    (firmware_sim/bal/forge_emulator.py `Forge`, power-on ``seed``), every message through the wire's encoding.
    ``policy``: a ForgePolicy or None (the fallback throughout). Returns the mode (``.last``: the episode)."""
    from controller.modes.bal.forge import ForgeMode
    from firmware_sim.bal.forge_emulator import Forge

    def decide(n: int, x: np.ndarray, theta: np.ndarray):
        if policy is None:
            return None, "no_policy"
        u = policy.decide(n, x, theta)
        return u, None if u is not None else "failed"

    forge, mode = Forge(problem, seed), ForgeMode(problem, cfg, decide)
    mode.start_episode()
    frame = None
    while mode.busy:  # the daemon's tick (controller/daemon.py): reading → update → gate → commanded → write
        if frame is None:
            cmd = mode.safe()
        else:
            cmd = mode.gate(mode.update(np.array(mode.reading(frame)), 0.0))
            mode.commanded(cmd, 0.0)
        msg = mode.outgoing(cmd)
        frame = None if msg is None else _wire(forge.handle(_wire(msg)))
    return mode
