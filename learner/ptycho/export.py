"""Export a scan policy to the edge's artifact (model.onnx + a v2 manifest with the recurrent state), for the
ptycho mode (controller/modes/ptycho/scan.py, contract controller/modes/ptycho/spec.py).

The module exported has the signature
  forward(recon (B, 1, F, F), positions (B, M_MAX, 2), count (B, 1), prior (B, M_MAX, 2), hidden (B, LAYERS, H))
      -> (means (B, M_MAX, 2), hidden_next (B, LAYERS, H))
and the manifest declares ``hidden`` as its `state` (zeros at the start of every scan, fed ``hidden_next``).
Parity: onnxruntime against torch over several decisions with the state carried through each side's own
outputs (≤ learner.export.PARITY_ATOL = 1e-5 of the [0, 1] means and of the state's scale).
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from controller.modes.ptycho import spec
from controller.policy.manifest import Bounds, InputSpec, Manifest, OutputSpec, StateSpec
from learner.export import PARITY_ATOL, ExportError, write_artifact

PARITY_STEPS = 4  # decisions per parity sequence (a scan of 5 sub-sequences makes 4)


def state_shape(net: nn.Module, field: int, hidden_size: int) -> tuple[int, int]:
    """(LAYERS, H): checked on one forward pass on zeros (the state must keep its shape)."""
    with torch.inference_mode():
        means, nxt = net(*_zeros(1, field), torch.zeros(1, spec.LAYERS, hidden_size))
    if tuple(means.shape) != (1, *spec.outputs()[spec.MEANS]) or tuple(nxt.shape) != (1, spec.LAYERS, hidden_size):
        raise ExportError(f"the policy gives means {tuple(means.shape)} and a state {tuple(nxt.shape)}; the contract "
                          f"is (1, {spec.M_MAX}, 2) and (1, {spec.LAYERS}, {hidden_size})")
    return spec.LAYERS, hidden_size


def _zeros(batch: int, field: int) -> tuple[torch.Tensor, ...]:
    """recon, positions, count, prior of ``batch`` empty first decisions."""
    return (torch.zeros(batch, 1, field, field), torch.zeros(batch, spec.M_MAX, 2), torch.zeros(batch, 1),
            torch.zeros(batch, spec.M_MAX, 2))


def check_parity(net: nn.Module, model_path: Path, field: int, hidden: tuple[int, int], seed: int = 0,
                 steps: int = PARITY_STEPS) -> float:
    """Max |onnxruntime − torch| over `steps` decisions (batches of 1 and 3), each side carrying its own state
    from zeros; raises ExportError above PARITY_ATOL (means in [0, 1]; the state relative to max(1, |state|))."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst = 0.0
    for batch in (1, 3):
        h_ort = np.zeros((batch, *hidden), np.float32)
        h_torch = torch.zeros(batch, *hidden)
        for _ in range(steps):
            count = rng.integers(0, spec.M_MAX + 1, (batch, 1))
            positions = rng.random((batch, spec.M_MAX, 2)) * (np.arange(spec.M_MAX)[None, :, None] < count[:, :, None])
            feed = {spec.RECON: rng.normal(0.0, 0.3, (batch, 1, field, field)).astype(np.float32),
                    spec.POSITIONS: positions.astype(np.float32), spec.COUNT: count.astype(np.float32),
                    spec.PRIOR: rng.random((batch, spec.M_MAX, 2)).astype(np.float32), spec.HIDDEN: h_ort}
            means_ort, h_ort = sess.run([spec.MEANS, spec.HIDDEN_NEXT], feed)
            with torch.inference_mode():
                means, h_torch = net(*(torch.from_numpy(feed[n]) for n in spec.inputs(field)), h_torch)
            scale = max(1.0, float(h_torch.abs().max()))
            worst = max(worst, float(np.abs(means_ort - means.numpy()).max()),
                        float(np.abs(h_ort - h_torch.numpy()).max()) / scale)
    if not worst <= PARITY_ATOL:
        raise ExportError(f"onnxruntime and torch differ by {worst:.3g} > {PARITY_ATOL:g} over {steps} decisions")
    return worst


def export_scan_policy(net: nn.Module, out_dir: str | Path, *, field: int, hidden_size: int, training_run: str,
                       version: str = "1", decision_period_s: float = 0.05, opset: int = 17) -> Manifest:
    """Write out_dir/model.onnx + manifest.json for ``net`` (module doc; its GRU state (LAYERS, hidden_size);
    means already in [0, 1], clipped here too); returns the manifest."""
    graph = copy.deepcopy(net).cpu().eval()
    hidden = state_shape(graph, field, hidden_size)
    inputs = [InputSpec(name=n, shape=s, units=[spec.UNITS[n]]) for n, s in spec.inputs(field).items()]
    outputs = [OutputSpec(name=spec.MEANS, shape=spec.outputs()[spec.MEANS], units=[spec.UNITS[spec.MEANS]],
                          bounds=Bounds(low=[0.0], high=[1.0]))]
    state = [StateSpec(name=spec.HIDDEN, shape=hidden, initial=0.0, next=spec.HIDDEN_NEXT)]
    example = dict(zip(spec.inputs(field), _zeros(1, field)))
    return write_artifact(
        _Clipped(graph), out_dir, {**example, spec.HIDDEN: torch.zeros(1, *hidden)}, [spec.MEANS, spec.HIDDEN_NEXT],
        lambda model_path: check_parity(_Clipped(graph), model_path, field, hidden),
        task=spec.TASK, version=version, input_specs=inputs, output_specs=outputs, state=state,
        decision_period_s=decision_period_s, training_run=training_run, opset=opset)


class _Clipped(nn.Module):
    """The policy with its means clipped to the manifest's bounds [0, 1]."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, recon: torch.Tensor, positions: torch.Tensor, count: torch.Tensor, prior: torch.Tensor,
                hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        means, nxt = self.net(recon, positions, count, prior, hidden)
        return means.clamp(0.0, 1.0), nxt


def export_ptycho(run: str | Path, out_dir: str | Path, version: str = "1") -> Manifest:
    """Export a `train ptycho` run's policy.pt (or a bundle folder holding one) as a scan-policy artifact."""
    from learner.ptycho.train import load_policy

    net, _ = load_policy(Path(run) / "policy.pt")
    return export_scan_policy(net, out_dir, field=net.cfg.field, hidden_size=net.cfg.hidden,
                              training_run=str(run), version=version)
