"""Export an actor to the edge's policy artifact: `model.onnx` + `manifest.json` (controller/manifest.py).

The graph is self-contained: raw observation -> (obs − mean)/std -> actor (ends in tanh, [-1, 1])
-> affine map to [low, high] -> clamp. The edge feeds raw readings and gets physical actions.
"""
from __future__ import annotations

import copy
import importlib.metadata
import platform
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from controller.manifest import (
    MODEL_NAME,
    ActionSpec,
    Manifest,
    Normalisation,
    ObservationSpec,
    file_sha256,
    write_manifest,
)

PARITY_ATOL = 1e-5  # in units of each action's range (high − low): float32 cannot do better on 4800 V/(px·s)


class ExportError(RuntimeError):
    pass


class PolicyGraph(nn.Module):
    """Wraps a [-1, 1]-valued actor with observation normalisation and action rescaling/clipping."""

    def __init__(self, actor: nn.Module, obs_mean, obs_std, low, high):
        super().__init__()
        self.actor = actor
        f32 = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float32))  # noqa: E731
        self.register_buffer("mean", f32(obs_mean))
        self.register_buffer("std", f32(obs_std))
        self.register_buffer("low", f32(low))
        self.register_buffer("high", f32(high))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        a = self.actor((obs - self.mean) / self.std)
        a = self.low + (a + 1.0) * 0.5 * (self.high - self.low)
        return torch.minimum(torch.maximum(a, self.low), self.high)


def _producer() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("edgetune", "torch", "onnx", "onnxruntime"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def check_parity(graph: nn.Module, model_path: Path, obs_dim: int, mean, std, seed: int = 0) -> float:
    """Max |onnxruntime − torch| / (high − low) over random raw observations; raises ExportError above PARITY_ATOL."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in (1, 7, 256):
        obs = (np.asarray(mean) + 3.0 * np.asarray(std) * rng.standard_normal((batch, obs_dim))).astype(np.float32)
        (got,) = sess.run(["action"], {"obs": obs})
        with torch.inference_mode():
            want = graph(torch.from_numpy(obs)).numpy()
        if got.shape != want.shape:
            raise ExportError(f"onnxruntime output shape {got.shape} != torch {want.shape}")
        span = (graph.high - graph.low).numpy()
        worst = max(worst, float(np.max(np.abs(got - want) / span)))
    if not worst <= PARITY_ATOL:
        raise ExportError(f"onnxruntime and torch differ by {worst:.3g} > {PARITY_ATOL:g}")
    return worst


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
) -> Manifest:
    """Write `out_dir/model.onnx` and `out_dir/manifest.json`; return the manifest.

    `actor` maps normalised observations (batch, obs_dim) to actions in [-1, 1]. The manifest is
    validated (controller.manifest) before anything is written; parity with onnxruntime is checked.
    """
    obs_dim, act_dim = len(obs_mean), len(low)
    manifest_fields = dict(
        task=task,
        version=version,
        observation=ObservationSpec(shape=(obs_dim,), units=list(obs_units), normalisation=Normalisation(mean=list(map(float, obs_mean)), std=list(map(float, obs_std)))),
        action=ActionSpec(shape=(act_dim,), units=list(act_units), low=list(map(float, low)), high=list(map(float, high))),
        decision_period_s=decision_period_s,
        training_run=training_run or uuid.uuid4().hex,
        producer=_producer(),
        opset=opset,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    graph = PolicyGraph(copy.deepcopy(actor).cpu(), obs_mean, obs_std, low, high).eval()  # leave the caller's actor where it is
    model_path = out / MODEL_NAME
    example = torch.zeros(1, obs_dim)
    torch.onnx.export(
        graph,
        (example,),
        str(model_path),
        dynamo=False,  # the TorchScript exporter; the dynamo one needs onnxscript (not an edgetune dependency)
        input_names=["obs"],
        output_names=["action"],
        dynamic_axes={"obs": {0: "batch"}, "action": {0: "batch"}},
        opset_version=opset,
    )
    check_parity(graph, model_path, obs_dim, obs_mean, obs_std)
    manifest = Manifest(**manifest_fields, sha256=file_sha256(model_path), created=datetime.now(timezone.utc))
    write_manifest(manifest, out)
    return manifest
