"""Export a CT angle-selection run (learner/ct/train.py's policy.pt) as the edge's angle-policy artifact.

The graph follows the angles mode's contract (controller/modes/ct/angles.py):
  obs (B, 1, N, N) float32, the reconstruction x̂_k in [0, 1];  acquired (B, A) float32, 1 = acquired
  -> angle_logits (B, A), acquired angles set to MASKED_LOGIT as in training's masked softmax (the edge
     masks them too; argmax = the greedy angle);  stop_logit (B, 1), stop when > 0 (sigmoid > ½).
Manifest (schema v2): the named inputs and outputs of the task spec (controller/modes/ct/spec.py) with
their units, inputs not normalised, logits unbounded: the bounds are float32's finite range. Only Algorithm 2 ("terminal") fits: Algorithm 1's stop is a 181st action that ends
the scan without acquiring, while the edge acquires the angle chosen with the stop decision.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from controller.modes.ct import spec
from controller.modes.ct.config import AnglesConfig
from controller.policy.manifest import Bounds, InputSpec, Manifest, OutputSpec
from learner.ct.net import MASKED_LOGIT, CTActorCritic
from learner.ct.train import load_policy
from learner.export import ExportError, check_outputs, write_artifact

LOGIT_BOUND = float(np.finfo(np.float32).max)


class AngleGraph(nn.Module):
    """(obs, acquired) -> (masked angle logits, stop logit (B, 1)); the value head is not exported."""

    def __init__(self, net: CTActorCritic) -> None:
        super().__init__()
        self.net = net

    def forward(self, obs: torch.Tensor, acquired: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, _, stop = self.net(obs)
        return logits.masked_fill(acquired > 0.5, MASKED_LOGIT), stop.unsqueeze(-1)


# The empty first reconstruction gets a looser bound than learner.export.PARITY_ATOL (1e-5, every other
# input): there every first-layer map is constant and GroupNorm divides its float32 rounding (≈1e-8) by
# √eps = 3e-3 (ct_63 of 2026-12-05: 1.06e-5 there, ≤ 3.5e-7 on other images); a wrong graph differs by O(1).
EMPTY_IMAGE_ATOL = 1e-4


def _logit_scale(outputs: list[np.ndarray]) -> float:
    """The parity tolerance's unit: the largest unmasked |logit|, at least 1."""
    logits, stop = outputs
    return max(1.0, float(np.abs(logits[logits != MASKED_LOGIT]).max(initial=0.0)), float(np.abs(stop).max()))


def check_parity(graph: AngleGraph, model_path: Path, seed: int = 0) -> float:
    """Max |onnxruntime − torch| / logit scale on the empty first reconstruction (raises ExportError above
    EMPTY_IMAGE_ATOL) and on random images and masks (above learner.export.PARITY_ATOL)."""
    rng = np.random.default_rng(seed)
    n, a = graph.net.size, graph.net.n_logits
    feeds = [{"obs": np.zeros((1, 1, n, n), np.float32), "acquired": np.zeros((1, a), np.float32)}]
    for batch in (1, 8):
        count = rng.integers(0, a // 2, (batch, 1))  # acquired angles per sample
        acquired = (rng.random((batch, a)).argsort(-1) < count).astype(np.float32)
        feeds.append({"obs": rng.random((batch, 1, n, n), np.float32), "acquired": acquired})
    return max(check_outputs(graph, model_path, feeds[:1], _logit_scale, EMPTY_IMAGE_ATOL),
               check_outputs(graph, model_path, feeds[1:], _logit_scale))


def export_ct(run_dir: str | Path, out_dir: str | Path, version: str = "1", opset: int = 17) -> Manifest:
    """Write out_dir/model.onnx + manifest.json for run_dir/policy.pt (Algorithm 2); returns the manifest."""
    run = Path(run_dir)
    policy = run / "policy.pt"
    agent, meta = load_policy(policy, device="cpu")
    if meta["algo"] != "terminal":
        raise ExportError(f"{policy} is a {meta['algo']!r} policy: only 'terminal' (Algorithm 2) fits the "
                          "angles mode, which acquires the angle chosen with the stop decision")
    net: CTActorCritic = agent.net
    n, a = net.size, net.n_logits
    graph = AngleGraph(net).eval()
    unbounded = Bounds(low=[-LOGIT_BOUND], high=[LOGIT_BOUND])
    inputs = [InputSpec(name=name, shape=shape, units=[spec.UNITS[name]]) for name, shape in spec.inputs(n, a).items()]
    outputs = [OutputSpec(name=name, shape=shape, units=[spec.UNITS[name]], bounds=unbounded)
               for name, shape in spec.outputs(a).items()]
    return write_artifact(
        graph, out_dir, {spec.OBS: torch.zeros(1, 1, n, n), spec.ACQUIRED: torch.zeros(1, a)}, list(spec.outputs(a)),
        lambda model_path: check_parity(graph, model_path),
        task=spec.TASK, version=version, input_specs=inputs, output_specs=outputs,
        decision_period_s=AnglesConfig().exposure_s,  # the environment is untimed: one projection's exposure
        training_run=run.resolve().name, opset=opset,
    )
