"""The policy runtime: an ONNX session with preallocated one-sample buffers bound to every named input and
output of the manifest (controller/policy/manifest.py, v2), and its recurrent state carried between decisions.

`PolicySession` binds the buffers once (onnxruntime IOBinding): a decision writes the inputs in place, runs
(`step`), and reads the outputs in place, with no allocation. A recurrent state tensor (`StateSpec`) is a graph
input that starts at its `initial` value and, after each decision that ran, takes the graph output `next`;
`reset()` puts it back at the start of every session (the slot, whenever a policy becomes active; a mode, at
the start of an episode or a scan). Every call on a decision path runs under the slot's guard
(controller/policy/guard.py, `PolicySlot.guarded`): `step` and the policies' `run`/`decide` take its
`run_options`; a call that fails leaves the state where it was.

`LoadedPolicy` is a manifest's policy for the generic slot (one input, one output, any state: rl-pid);
`AnglePolicy` is the CT angle policy (controller/modes/ct/spec.py) with its two named inputs x̂ and the
acquired mask, and `validated_decision_us` / `open_validated_policy` are its validator and opener for the slot.
`DecisionPolicy` is what the session modes' policies share (the ptycho mode's is controller/modes/ptycho/policy.py).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from controller.modes.ct import spec as ct
from controller.policy.guard import on_cpu_clock
from controller.policy.manifest import Manifest, ManifestError, StateSpec, load_artifact

# Why a model was refused (the slot's counters are `rejected:<reason>`; the pusher gets the reason).
Reason = Literal["bad_manifest", "sha256_mismatch", "wrong_task", "wrong_shape", "corrupt_model", "non_finite",
                 "out_of_bounds", "too_slow", "no_previous", "install_failed", "quarantined"]


class PolicyRejected(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # crosses the validator process boundary
        return type(self), (self.reason, self.detail)


class PolicyError(PolicyRejected, ValueError):
    """An ONNX model that does not fit the angle-policy contract (``reason``: the policy slot's refusal code)."""


def session_options() -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return so


def open_session(model: str | Path | bytes) -> ort.InferenceSession:
    """A one-thread CPU session; raises PolicyRejected("corrupt_model") for a file onnxruntime cannot load."""
    try:
        return ort.InferenceSession(model if isinstance(model, bytes) else str(model), session_options(),
                                    providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types for a bad file
        raise PolicyRejected("corrupt_model", f"onnxruntime cannot load the model: {str(e)[:300]}") from None


def load_for_task(directory: Path, task: str) -> tuple[Manifest, Path]:
    """The artifact's manifest and model path, checked (manifest, sha256) and of `task`; raises PolicyRejected."""
    try:
        manifest, model = load_artifact(directory)
    except ManifestError as e:
        reason: Reason = "sha256_mismatch" if "sha256" in str(e) and "does not match" in str(e) else "bad_manifest"
        raise PolicyRejected(reason, str(e)) from None
    if manifest.task != task:
        raise PolicyRejected("wrong_task", f"model is for task {manifest.task!r}, this mode drives {task!r}")
    return manifest, model


def check_graph_io(session: ort.InferenceSession, inputs: Mapping[str, tuple[int, ...]],
                   outputs: Mapping[str, tuple[int, ...]], optional: Sequence[str] = ()) -> None:
    """The graph takes exactly `inputs` (less any of `optional` it lacks) and gives at least `outputs`, float
    tensors of (batch, *shape) with batch 1 or dynamic; raises PolicyRejected("wrong_shape")."""
    def fits(arg: ort.NodeArg, shape: tuple[int, ...]) -> bool:
        want = (1, *shape)
        return arg.type == "tensor(float)" and len(arg.shape) == len(want) and all(
            not isinstance(d, int) or d == w or (i == 0 and d == 1) for i, (d, w) in enumerate(zip(arg.shape, want)))

    ins = {a.name: a for a in session.get_inputs()}
    outs = {a.name: a for a in session.get_outputs()}
    required = set(inputs) - set(optional)
    ok = required <= set(ins) <= set(inputs) and set(outputs) <= set(outs) and all(
        fits(ins[n], inputs[n]) for n in ins) and all(fits(outs[n], outputs[n]) for n in outputs)
    if not ok:
        got = ", ".join(f"{a.name}{a.shape}:{a.type}" for a in (*ins.values(), *outs.values()))
        want = " ".join(f"{n}[batch, {', '.join(map(str, s))}]" for n, s in inputs.items())
        want_out = " ".join(f"{n}[batch, {', '.join(map(str, s))}]" for n, s in outputs.items())
        raise PolicyRejected("wrong_shape", f"graph has {got}; expected {want} → {want_out} float")


class PolicySession:
    """One-sample buffers bound to a session's named inputs, outputs and recurrent state (module doc)."""

    def __init__(self, session: ort.InferenceSession, inputs: Mapping[str, tuple[int, ...]],
                 outputs: Mapping[str, tuple[int, ...]], state: Sequence[StateSpec] = ()) -> None:
        self.session = session
        self.inputs = {name: np.zeros((1, *shape), np.float32) for name, shape in inputs.items()}
        self.outputs = {name: np.zeros((1, *shape), np.float32) for name, shape in outputs.items()}
        self.state = {s.name: np.full((1, *s.shape), s.initial, np.float32) for s in state}
        self._carry = [(self.state[s.name], np.zeros((1, *s.shape), np.float32), s.initial) for s in state]
        self._binding = session.io_binding()
        for name, buf in (*self.inputs.items(), *self.state.items()):
            self._binding.bind_cpu_input(name, buf)
        for name, buf in (*self.outputs.items(), *((s.next, nxt) for s, (_, nxt, _) in zip(state, self._carry))):
            self._binding.bind_output(name, "cpu", 0, np.float32, list(buf.shape), buf.ctypes.data)

    def reset(self) -> None:
        """Every recurrent state back to its initial value (a new session / episode)."""
        for buf, _, initial in self._carry:
            buf.fill(initial)

    def step(self, run_options: ort.RunOptions | None = None) -> None:
        """One decision on the input buffers; the outputs land in `outputs`, the next state in `state`."""
        self.session.run_with_iobinding(self._binding, run_options)
        for buf, nxt, _ in self._carry:
            np.copyto(buf, nxt)


class LoadedPolicy(PolicySession):
    """A validated single-input, single-output policy of the generic slot (controller/policy/slot.py), with
    its manifest's recurrent state."""

    def __init__(self, manifest: Manifest, path: Path, session: ort.InferenceSession) -> None:
        obs, act = manifest.observation, manifest.action
        super().__init__(session, {obs.name: obs.shape}, {act.name: act.shape}, manifest.state)
        self.manifest, self.path = manifest, path
        self.steps = obs.shape[0]
        self.input, self.output = self.inputs[obs.name], self.outputs[act.name]
        self.latency_us = 0.0

    @property
    def version(self) -> str:
        return self.manifest.version

    def run(self, obs: np.ndarray, run_options: ort.RunOptions | None = None) -> np.ndarray:
        """One inference on raw observations (obs_dim,); returns a view of the output buffer (act_dim,)."""
        self.input[0] = obs
        self.step(run_options)
        return self.output[0]


class DecisionPolicy:
    """What the session modes' policies share: a bound graph, its artifact's manifest and path, the count of
    non-finite decisions, and the decision CPU time measured on probe inputs when the artifact is loaded."""

    binding: PolicySession

    def __init__(self) -> None:
        self.faults = 0  # decisions whose outputs were not finite
        self.manifest: Manifest | None = None  # set by from_artifact
        self.path: Path | None = None
        self.latency_us = 0.0  # median decision CPU time on the probes (from_artifact)

    @property
    def version(self) -> str:
        return self.manifest.version if self.manifest is not None else "unversioned"

    def reset(self) -> None:
        self.binding.reset()

    @classmethod
    def validated_us(cls, directory: Path, budget_s: float, **contract: Any) -> float:
        """A policy slot validator (in its process): ``cls.from_artifact(directory, **contract)`` and a median
        decision within `budget_s`; returns the decision time [µs]."""
        policy = cls.from_artifact(directory, **contract)  # type: ignore[attr-defined]
        if policy.latency_us > budget_s * 1e6:
            raise PolicyRejected("too_slow", f"median decision {policy.latency_us:.0f} µs > {budget_s * 1e6:.0f} µs")
        return policy.latency_us

    @classmethod
    def opened(cls, directory: Path, latency_us: float, **contract: Any) -> DecisionPolicy:
        """A policy slot opener (worker thread): the artifact the validator accepted, its checks run again here."""
        policy = cls.from_artifact(directory, **contract)  # type: ignore[attr-defined]
        policy.latency_us = latency_us
        return policy

    def probe(self, decide: Callable[..., Any], probes: list[tuple[Any, ...]], error: type[PolicyRejected],
              what: str) -> None:
        """Run ``decide`` on each probe (its outputs must be finite: not None), then reset; sets latency_us."""
        times = []
        for args in probes:
            out, cpu_s = on_cpu_clock(decide, *args)
            if out is None:
                raise error("non_finite", f"{what} outputs are not finite on the probe inputs")
            times.append(cpu_s)
        self.reset()
        self.latency_us = 1e6 * float(np.median(times))


class RecurrentPolicy(DecisionPolicy):
    """A session policy with one recurrent state (``_hidden``, the binding's state array, carried between
    decisions): `state` copies it before a decision whose result may be discarded, `restore` puts it back."""

    _hidden: np.ndarray

    def state(self) -> np.ndarray:
        return self._hidden.copy()

    def restore(self, state: np.ndarray) -> None:
        np.copyto(self._hidden, state)


class AnglePolicy(DecisionPolicy):
    """The CT angle policy (controller/modes/ct/spec.py): an ONNX actor with an angle head and a stopping
    head, run greedily; acquired angles are masked here, whatever the graph does."""

    def __init__(self, model: str | Path | bytes, size: int, n_angles: int = 180) -> None:
        try:
            session = open_session(model)
        except PolicyRejected as e:
            raise PolicyError(e.reason, f"cannot load the angle policy: {e.detail}") from None
        inputs, outputs = ct.inputs(size, n_angles), ct.outputs(n_angles)
        try:
            check_graph_io(session, inputs, outputs, optional=[ct.ACQUIRED])
        except PolicyRejected as e:
            raise PolicyError("wrong_shape", f"angle policy: {e.detail}") from None
        present = {a.name for a in session.get_inputs()}
        self.binding = PolicySession(session, {n: s for n, s in inputs.items() if n in present}, outputs)
        self.session, self.n_angles = session, n_angles
        self._obs = self.binding.inputs[ct.OBS]
        self._acquired = self.binding.inputs.get(ct.ACQUIRED)
        self._logits, self._stop = self.binding.outputs[ct.ANGLE_LOGITS], self.binding.outputs[ct.STOP_LOGIT]
        super().__init__()

    @classmethod
    def from_artifact(cls, directory: str | Path, size: int, n_angles: int = 180) -> AnglePolicy:
        """Load an artifact directory: manifest and sha256, task, the manifest's named tensors (v2) or flat
        shapes (v1), the graph's I/O, and finite outputs on probes at the observation's bounds (x̂_1 = 0 with
        nothing acquired; all ones, half acquired)."""
        try:
            manifest, model = load_for_task(Path(directory), ct.TASK)
        except PolicyRejected as e:
            raise PolicyError(e.reason, e.detail) from None
        _check_angle_manifest(manifest, size, n_angles)
        policy = cls(model, size, n_angles)
        policy.manifest, policy.path = manifest, Path(directory)
        policy.probe(policy.decide, [(np.zeros((size, size), np.float32), np.zeros(n_angles, bool)),
                                     (np.ones((size, size), np.float32), np.arange(n_angles) % 2 == 0)],
                     PolicyError, "angle policy")
        return policy

    def decide(self, image: np.ndarray, acquired: np.ndarray,
               run_options: ort.RunOptions | None = None) -> tuple[int, bool] | None:
        """Greedy (grid index, stop) for the reconstruction (N, N) and the acquired mask (A,) bool;
        None (counted) when the outputs are not finite."""
        self._obs[0, 0] = image
        if self._acquired is not None:
            self._acquired[0] = acquired
        self.binding.step(run_options)
        logits, stop = np.asarray(self._logits, np.float64).reshape(-1), float(self._stop.reshape(-1)[0])
        if not (np.all(np.isfinite(logits)) and np.isfinite(stop)):
            self.faults += 1
            return None
        return int(np.argmax(np.where(acquired, -np.inf, logits))), stop > 0.0


def _check_angle_manifest(manifest: Manifest, size: int, n_angles: int) -> None:
    """v2: the spec's named tensors (the acquired mask optional); v1: the flat obs ‖ acquired → logits ‖ stop."""
    ins = {t.name: t.shape for t in manifest.inputs}
    outs = {t.name: t.shape for t in manifest.outputs}
    want_in, want_out = ct.inputs(size, n_angles), ct.outputs(n_angles)
    flat = ({"obs": (size * size + n_angles,)}, {"action": (n_angles + 1,)})
    named = ins.get(ct.OBS) == want_in[ct.OBS] and all(want_in.get(n) == s for n, s in ins.items()) and outs == want_out
    if manifest.state or not (named or (ins, outs) == flat):
        raise PolicyError("wrong_shape", f"manifest says inputs {ins} outputs {outs}; this mode takes inputs "
                                         f"{want_in} outputs {want_out} (v1: obs ({size}·{size} + {n_angles},) "
                                         f"action ({n_angles} + 1,))")


def validated_decision_us(directory: Path, size: int, n_angles: int, budget_s: float) -> float:
    """The policy slot's validator (in its validator process): the angle-policy contract and a median decision
    within `budget_s` (one exposure); returns the decision time [µs]."""
    policy = AnglePolicy.from_artifact(directory, size, n_angles)
    if policy.latency_us > budget_s * 1e6:
        raise PolicyRejected("too_slow", f"median decision {policy.latency_us:.0f} µs > one exposure "
                                         f"({budget_s * 1e6:.0f} µs)")
    return policy.latency_us


def open_validated_policy(directory: Path, latency_us: float, size: int, n_angles: int) -> AnglePolicy:
    """The policy slot's opener (worker thread): the artifact the validator accepted, loaded in the daemon. As
    `controller.policy.slot.open_validated`: the cheap checks run again, and the two probe decisions warm it up."""
    policy = AnglePolicy.from_artifact(directory, size, n_angles)
    policy.latency_us = latency_us
    return policy
