"""Export a transceiver policy to the edge's artifact (model.onnx + a v2 manifest with the recurrent state), for
the transceiver mode (controller/modes/scatter, contract controller/modes/scatter/spec.py).

The module exported (learner/scatter/policy.py's `Actor`, or any module with its signature) has
  forward(obs (B, OBS), hidden (B, LAYERS, H)) -> (angle_logits (B, 360), frequency_logits (B, 360, 4),
                                                  hidden_next (B, LAYERS, H))
and the manifest declares ``hidden`` as its `state` (zeros at the start of every scan, fed ``hidden_next``).
Parity: onnxruntime against torch over several recurrent steps with the state carried through each side's own
outputs, on observations laid out as spec.observation lays them (≤ learner.export.PARITY_ATOL relative to
max(1, |value|) of the unmasked logits and of the state; the masked logits must stay exactly spec.MASKED when the
graph masks). `edge_episode` runs the edge's scan in process (the HIL scenario's reference; the evaluation's too).
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from controller.modes.scatter import spec
from controller.modes.scatter.policy import (N_FREQ, Designer, TransceiverPolicy, graph_inputs, graph_outputs,
                                             used_angles)
from controller.modes.scatter.session import ScanResult, observation
from controller.policy.manifest import Bounds, InputSpec, Manifest, OutputSpec, StateSpec
from learner.ct.export import LOGIT_BOUND
from learner.export import PARITY_ATOL, ExportError, write_artifact

PARITY_STEPS = 6  # recurrent steps per parity sequence
PARITY_N = 32  # the grid the parity observations' data are scaled for


def state_shape(net: nn.Module, hidden_size: int, budget: int = spec.BUDGET) -> tuple[int, int]:
    """(LAYERS, H): checked on one forward pass on zeros (the outputs and the state must keep their shapes)."""
    with torch.inference_mode():
        angle, freq, nxt = net(torch.zeros(1, spec.obs_size(budget)), torch.zeros(1, spec.LAYERS, hidden_size))
    want = graph_outputs()
    got = (tuple(angle.shape), tuple(freq.shape), tuple(nxt.shape))
    if got != ((1, *want[spec.ANGLE_LOGITS]), (1, *want[spec.FREQUENCY_LOGITS]), (1, spec.LAYERS, hidden_size)):
        raise ExportError(f"the policy gives {got}; the contract is (1, 360), (1, 360, {N_FREQ}) and "
                          f"(1, {spec.LAYERS}, {hidden_size})")
    return spec.LAYERS, hidden_size


def parity_observations(rng: np.random.Generator, steps: int, budget: int = spec.BUDGET) -> list[np.ndarray]:
    """A scan's observations s_0 … s_{steps−1} with random angles, frequencies and data (spec.observation)."""
    angles = rng.choice(spec.N_ANGLES, steps, replace=False)
    freqs = rng.integers(0, N_FREQ, steps)
    k = spec.wavenumbers(PARITY_N)
    scale = 1.0 / spec.data_scale(k, PARITY_N)  # data of order one once scaled
    out = []
    for t in range(steps):  # s_t holds the data of the source placed at step t (none at t = 0)
        f = freqs[t - 1]
        d = (rng.normal(size=t) + 1j * rng.normal(size=t)) * scale[f]
        out.append(spec.observation(d, k[f], angles[:t], freqs[:t], PARITY_N, budget))
    return out


def check_parity(net: nn.Module, model_path: Path, hidden: tuple[int, int], seed: int = 0, steps: int = PARITY_STEPS,
                 budget: int = spec.BUDGET) -> float:
    """Max relative |onnxruntime − torch| over ``steps`` recurrent steps (batches of 1 and 3), each side carrying
    its own state from zeros; raises ExportError above PARITY_ATOL or when the two mask different logits."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst = 0.0
    for batch in (1, 3):
        scans = [parity_observations(rng, steps, budget) for _ in range(batch)]
        h_ort, h_torch = np.zeros((batch, *hidden), np.float32), torch.zeros(batch, *hidden)
        for t in range(steps):
            obs = np.stack([s[t] for s in scans])
            a_ort, f_ort, h_ort = sess.run([spec.ANGLE_LOGITS, spec.FREQUENCY_LOGITS, spec.HIDDEN_NEXT],
                                           {spec.OBS: obs, spec.HIDDEN: h_ort})
            with torch.inference_mode():
                a, f, h_torch = net(torch.from_numpy(obs), h_torch)
            a, f = a.numpy(), f.numpy()
            if not np.array_equal(a_ort == spec.MASKED, a == spec.MASKED):
                raise ExportError(f"onnxruntime and torch mask different angles at step {t}")
            free = ~np.stack([used_angles(o, budget) for o in obs])
            for x, y in ((a_ort[free], a[free]), (f_ort, f), (h_ort, h_torch.numpy())):
                worst = max(worst, float(np.abs(x - y).max()) / max(1.0, float(np.abs(y).max())))
    if not worst <= PARITY_ATOL:
        raise ExportError(f"onnxruntime and torch differ by {worst:.3g} > {PARITY_ATOL:g} over {steps} steps")
    return worst


def export_transceiver_policy(net: nn.Module, out_dir: str | Path, *, hidden_size: int, training_run: str,
                              version: str = "1", decision_period_s: float = 0.1, opset: int = 17) -> Manifest:
    """Write out_dir/model.onnx + manifest.json for ``net`` (module doc; its GRU state (LAYERS, hidden_size));
    returns the manifest."""
    graph = copy.deepcopy(net).cpu().eval()
    hidden = state_shape(graph, hidden_size)
    inputs = [InputSpec(name=n, shape=s, units=[spec.UNITS[n]]) for n, s in graph_inputs().items()]
    unbounded = Bounds(low=[-LOGIT_BOUND], high=[LOGIT_BOUND])  # logits: float32's finite range
    outputs = [OutputSpec(name=n, shape=s, units=[spec.UNITS[n]], bounds=unbounded) for n, s in graph_outputs().items()]
    state = [StateSpec(name=spec.HIDDEN, shape=hidden, initial=0.0, next=spec.HIDDEN_NEXT)]
    example = {spec.OBS: torch.zeros(1, spec.obs_size()), spec.HIDDEN: torch.zeros(1, *hidden)}
    return write_artifact(
        graph, out_dir, example, [spec.ANGLE_LOGITS, spec.FREQUENCY_LOGITS, spec.HIDDEN_NEXT],
        lambda model_path: check_parity(graph, model_path, hidden),
        task=spec.TASK, version=version, input_specs=inputs, output_specs=outputs, state=state,
        decision_period_s=decision_period_s, training_run=training_run, opset=opset)


class FixedFrequency(nn.Module):
    """A learn-angle actor as the learner runs it (learner/scatter/policy.py, mode "angle"): its angle head, and
    every angle's frequency row replaced by one that picks the run's fixed frequency index (its own frequency head
    was never trained)."""

    def __init__(self, actor: nn.Module, freq: int) -> None:
        super().__init__()
        if not 0 <= freq < N_FREQ:
            raise ValueError(f"the fixed frequency must be an index 0..{N_FREQ - 1}, got {freq!r}")
        self.actor = actor
        row = torch.full((N_FREQ,), spec.MASKED)
        row[freq] = 0.0
        self.register_buffer("row", row)

    def forward(self, obs: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        angle, freq, nxt = self.actor(obs, hidden)
        return angle, torch.zeros_like(freq) + self.row, nxt


def export_scatter(run: str | Path, out_dir: str | Path, version: str = "1") -> Manifest:
    """Export a `train scatter` run's policy.pt (its actor) as a transceiver-policy artifact: a learn-both run as
    it is, a learn-angle run with its fixed frequency (`FixedFrequency`); a learn-frequency run is refused (its
    angles were random draws, its angle head never trained)."""
    from learner.scatter.train import load_policy

    actor, meta = load_policy(Path(run) / "policy.pt")
    mode = meta["config"]["mode"]
    if mode == "frequency":
        raise ValueError(f"{run}: a learn-frequency run places its angles at random (its angle head is untrained); "
                         "the edge's greedy policy needs a learn-both or learn-angle run")
    net = FixedFrequency(actor, meta["config"]["fixed_freq"]) if mode == "angle" else actor
    return export_transceiver_policy(net, out_dir, hidden_size=actor.cfg.hidden, training_run=str(run),
                                     version=version)


def edge_episode(policy: TransceiverPolicy | None, eta: np.ndarray, order: int,
                 allowed: range = range(spec.N_ANGLES)) -> ScanResult:
    """The transceiver mode's scan run in process, without a device or reconstruction: the same policy runtime
    and safety gate (controller/modes/scatter: `observation`, `Designer`) on noise-free data from the one physics
    source (firmware_sim/scatter/receiver.py), rounded to complex64 as the wire carries them. The edge's choices
    on `edgetune sim scatter` with the same scatterer equal this run's (tests/hil/test_scatter_hil.py)."""
    from firmware_sim.scatter.receiver import clean

    designer, res, n = Designer(allowed), ScanResult(), np.shape(eta)[0]
    if policy is not None:
        policy.reset()
    for _ in range(spec.BUDGET):
        decision = policy.decide(observation(res, n)) if policy is not None else None
        choice = designer.resolve(policy, decision, res.angles)
        receivers = np.array([*res.angles, choice.angle])
        res.rows.append(clean(eta, choice.angle, choice.frequency, receivers, order).astype(np.complex64))
        res.angles.append(choice.angle)
        res.frequencies.append(choice.frequency)
        res.choices.append(choice)
    return res
