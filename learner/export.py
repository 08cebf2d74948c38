"""Export an actor to the edge's policy artifact: `model.onnx` + `manifest.json` (controller/policy/manifest.py).

The graph is self-contained: raw observation -> (obs − mean)/std -> actor (ends in tanh, [-1, 1])
-> action map (default: affine to [low, high]; MEMS: into the robust gains, learner/mems/robust_gains.py)
-> clamp to [low, high]. The edge feeds raw readings and gets physical actions.
`write_artifact` and `check_outputs` are the task-independent steps (ONNX export, onnxruntime-vs-torch
parity, manifest), shared with other graphs (learner/ct/export.py).
"""
from __future__ import annotations

import copy
import importlib.metadata
import platform
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from controller.policy.manifest import (
    MODEL_NAME,
    Bounds,
    InputSpec,
    Manifest,
    Normalisation,
    OutputSpec,
    StateSpec,
    file_sha256,
    write_manifest,
)

PARITY_ATOL = 1e-5  # in units of the output's scale (MEMS: each action's range, high − low): float32 cannot do better on 4800 V/(px·s)


class ExportError(RuntimeError):
    pass


class PolicyGraph(nn.Module):
    """Wraps a [-1, 1]-valued actor with observation normalisation and action rescaling/clipping."""

    def __init__(self, actor: nn.Module, obs_mean, obs_std, low, high, action_map: nn.Module | None = None):
        super().__init__()
        f32 = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float32))  # noqa: E731
        self.register_buffer("mean", f32(obs_mean))
        self.register_buffer("std", f32(obs_std))
        self.register_buffer("low", f32(low))
        self.register_buffer("high", f32(high))
        self.actor, self.action_map = actor, action_map or BoxMap(self.low, self.high)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        a = self.action_map(self.actor((obs - self.mean) / self.std))
        return torch.minimum(torch.maximum(a, self.low), self.high)


class BoxMap(nn.Module):
    """[-1, 1] -> [low, high], affine."""

    def __init__(self, low: torch.Tensor, high: torch.Tensor):
        super().__init__()
        self.register_buffer("low", low.clone())
        self.register_buffer("span", (high - low).clone())

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.low + (a + 1.0) * 0.5 * self.span


def _producer() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("edgetune", "torch", "onnx", "onnxruntime"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def check_outputs(graph: nn.Module, model_path: Path, feeds: Iterable[dict[str, np.ndarray]],
                  scale: Callable[[list[np.ndarray]], float | np.ndarray], atol: float = PARITY_ATOL) -> float:
    """Max |onnxruntime − torch| / scale(torch outputs) over `feeds` (input name -> array, in the order of
    graph.forward's arguments; every graph output compared); raises ExportError above `atol`."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for feed in feeds:
        got = sess.run(None, feed)
        with torch.inference_mode():
            out = graph(*(torch.from_numpy(x) for x in feed.values()))
        want = [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]
        if [g.shape for g in got] != [w.shape for w in want]:
            raise ExportError(f"onnxruntime output shapes {[g.shape for g in got]} != torch {[w.shape for w in want]}")
        s = scale(want)
        worst = max(worst, *(float(np.max(np.abs(g - w) / s)) for g, w in zip(got, want)))
    if not worst <= atol:
        raise ExportError(f"onnxruntime and torch differ by {worst:.3g} > {atol:g}")
    return worst


def check_parity(graph: PolicyGraph, model_path: Path, obs_dim: int, mean, std, seed: int = 0) -> float:
    """Max |onnxruntime − torch| / (high − low) over random raw observations; raises ExportError above PARITY_ATOL."""
    rng = np.random.default_rng(seed)
    feeds = [{"obs": (np.asarray(mean) + 3.0 * np.asarray(std) * rng.standard_normal((batch, obs_dim))).astype(np.float32)}
             for batch in (1, 7, 256)]
    span = (graph.high - graph.low).numpy()
    return check_outputs(graph, model_path, feeds, lambda _: span)


def write_artifact(
    graph: nn.Module,
    out_dir: str | Path,
    inputs: dict[str, torch.Tensor],
    outputs: Sequence[str],
    parity: Callable[[Path], float],
    *,
    task: str,
    version: str,
    input_specs: Sequence[InputSpec],
    output_specs: Sequence[OutputSpec],
    state: Sequence[StateSpec] = (),
    decision_period_s: float,
    training_run: str,
    opset: int,
) -> Manifest:
    """Export `graph` (CPU, eval mode) to `out_dir/model.onnx` with example `inputs` (name -> tensor) and a
    dynamic batch axis on every input and output, run `parity(model_path)`, then write and return the (v2) manifest
    of `input_specs`, `output_specs` and recurrent `state` (their graph names among `inputs` / `outputs`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / MODEL_NAME
    torch.onnx.export(
        graph,
        tuple(inputs.values()),
        str(model_path),
        dynamo=False,  # the TorchScript exporter; the dynamo one needs onnxscript (not an edgetune dependency)
        input_names=list(inputs),
        output_names=list(outputs),
        dynamic_axes={name: {0: "batch"} for name in (*inputs, *outputs)},
        opset_version=opset,
    )
    parity(model_path)
    manifest = Manifest(task=task, version=version, inputs=list(input_specs), outputs=list(output_specs), state=list(state),
                        decision_period_s=decision_period_s, training_run=training_run, producer=_producer(),
                        opset=opset, sha256=file_sha256(model_path), created=datetime.now(timezone.utc))
    write_manifest(manifest, out)
    return manifest


def export_policy(
    actor: nn.Module,
    out_dir: str | Path,
    *,
    task: str,
    obs_mean: Sequence[float],
    obs_std: Sequence[float],
    obs_units: Sequence[str],
    low: Sequence[float],
    high: Sequence[float],
    act_units: Sequence[str],
    decision_period_s: float,
    training_run: str | None = None,
    version: str = "1",
    opset: int = 17,
    action_map: nn.Module | None = None,
) -> Manifest:
    """Write `out_dir/model.onnx` and `out_dir/manifest.json`; return the manifest.

    `actor` maps normalised observations (batch, obs_dim) to actions in [-1, 1]; `action_map` (default:
    affine) takes those to physical actions, which are then clamped to [low, high]. The manifest is
    validated (controller.policy.manifest) before anything is written; parity with onnxruntime is checked.
    """
    obs_dim, act_dim = len(obs_mean), len(low)
    observation = InputSpec(name="obs", shape=(obs_dim,), units=list(obs_units),
                            normalisation=Normalisation(mean=list(map(float, obs_mean)), std=list(map(float, obs_std))))
    action = OutputSpec(name="action", shape=(act_dim,), units=list(act_units),
                        bounds=Bounds(low=list(map(float, low)), high=list(map(float, high))))
    graph = PolicyGraph(copy.deepcopy(actor).cpu(), obs_mean, obs_std, low, high,
                        None if action_map is None else copy.deepcopy(action_map).cpu()).eval()  # leave the caller's actor where it is
    return write_artifact(
        graph, out_dir, {"obs": torch.zeros(1, obs_dim)}, ["action"],
        lambda model_path: check_parity(graph, model_path, obs_dim, obs_mean, obs_std),
        task=task, version=version, input_specs=[observation], output_specs=[action], decision_period_s=decision_period_s,
        training_run=training_run or uuid.uuid4().hex, opset=opset,
    )
