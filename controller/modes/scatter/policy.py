"""The transceiver policy on the edge (controller/modes/scatter/spec.py: the observation s_t and the GRU state →
angle logits (used angles masked), frequency logits per angle, the next state), and its validator and opener for
the policy slot. Greedy, as the paper's evaluation: the arg-max angle among the unused ones (masked here too,
whatever the graph does), then the arg-max frequency of that angle's row.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from controller.modes.scatter import spec
from controller.policy.manifest import StateSpec
from controller.policy.runtime import (PolicyRejected, PolicySession, RecurrentPolicy, check_graph_io, load_for_task,
                                       open_session)

N_FREQ = len(spec.FREQUENCY_FACTORS)


def graph_inputs(budget: int = spec.BUDGET) -> dict[str, tuple[int, ...]]:
    """Per-sample shapes of the policy's non-state inputs."""
    return {spec.OBS: (spec.obs_size(budget),)}


def graph_outputs() -> dict[str, tuple[int, ...]]:
    """Per-sample shapes of the policy's non-state outputs."""
    return {spec.ANGLE_LOGITS: (spec.N_ANGLES,), spec.FREQUENCY_LOGITS: (spec.N_ANGLES, N_FREQ)}


def used_angles(obs: np.ndarray, budget: int = spec.BUDGET) -> np.ndarray:
    """(360,) bool: the angles the observation's angle–frequency block marks as placed."""
    return np.asarray(obs)[2 * budget : 2 * budget + spec.N_ANGLES] > 0


class TransceiverPolicy(RecurrentPolicy):
    """The transceiver policy, its GRU state carried between the decisions of a scan (``reset()`` at each scan's
    start)."""

    def __init__(self, model: str | Path | bytes, state: StateSpec, budget: int = spec.BUDGET) -> None:
        session = open_session(model)
        if (state.name, state.next, len(state.shape), state.shape[0]) != (
                spec.HIDDEN, spec.HIDDEN_NEXT, 2, spec.LAYERS):
            raise PolicyRejected("wrong_shape", f"transceiver policy: the state must be {spec.HIDDEN} "
                                                f"({spec.LAYERS}, H) → {spec.HIDDEN_NEXT}, got {state}")
        check_graph_io(session, {**graph_inputs(budget), spec.HIDDEN: state.shape},
                       {**graph_outputs(), spec.HIDDEN_NEXT: state.shape})
        self.binding = PolicySession(session, graph_inputs(budget), graph_outputs(), [state])
        self.budget = budget
        self._obs, self._hidden = self.binding.inputs[spec.OBS], self.binding.state[spec.HIDDEN]
        self._angles, self._freqs = self.binding.outputs[spec.ANGLE_LOGITS], self.binding.outputs[spec.FREQUENCY_LOGITS]
        super().__init__()

    @classmethod
    def from_artifact(cls, directory: str | Path, budget: int = spec.BUDGET) -> TransceiverPolicy:
        """Load an artifact directory: manifest and sha256, task, the named tensors and ONE state (``hidden``
        (LAYERS, H) → ``hidden_next``), the graph's I/O, and finite logits on two probes (the empty first
        observation; a random one half way through a scan), the state reset afterwards."""
        manifest, model = load_for_task(Path(directory), spec.TASK)
        ins = {t.name: t.shape for t in manifest.inputs}
        outs = {t.name: t.shape for t in manifest.outputs}
        if ins != graph_inputs(budget) or outs != graph_outputs() or len(manifest.state) != 1:
            raise PolicyRejected("wrong_shape", f"manifest says inputs {ins} outputs {outs} and "
                                                f"{len(manifest.state)} states; this mode takes inputs "
                                                f"{graph_inputs(budget)} outputs {graph_outputs()} and one state")
        policy = cls(model, manifest.state[0], budget)
        policy.manifest, policy.path = manifest, Path(directory)
        rng = np.random.default_rng(0)
        half = budget // 2
        mid = spec.observation(rng.normal(0, 1e-3, half) + 1j * rng.normal(0, 1e-3, half), 16.0,
                               rng.choice(spec.N_ANGLES, half, replace=False), rng.integers(0, N_FREQ, half), 32,
                               budget)
        policy.probe(policy.decide, [(np.zeros(spec.obs_size(budget), np.float32),), (mid,)], PolicyRejected,
                     "transceiver policy")
        return policy

    def decide(self, obs: np.ndarray, run_options: ort.RunOptions | None = None) -> tuple[int, int] | None:
        """(angle, frequency index) for the observation s_t (spec.observation): the arg-max of the angle logits
        over the unused angles, then the arg-max of that angle's frequency row. None (counted in ``faults``, the
        state kept) when the logits or the state are not finite, or no angle is left."""
        used = used_angles(obs, self.budget)
        hidden = self.state()
        self._obs[0] = obs
        self.binding.step(run_options)
        logits = np.where(used, -np.inf, self._angles[0])
        if used.all() or not (np.isfinite(self._angles[0]).all() and np.isfinite(self._freqs[0]).all()
                              and np.isfinite(self._hidden).all()):
            self.faults += 1
            self.restore(hidden)
            return None
        angle = int(np.argmax(logits))
        return angle, int(np.argmax(self._freqs[0, angle]))


@dataclass(frozen=True)
class Choice:
    """One step's transceiver: its angle and frequency index, who chose it ("policy" or "fallback") and, for a
    fallback, why ("no_policy", "failed", "out_of_limits", "used", "bad_frequency")."""

    angle: int
    frequency: int
    source: str
    reason: str | None = None


class Designer:
    """The transceiver mode's safety gate around the policy, shared by the edge (controller/modes/scatter/
    session.py) and the in-process run (learner/scatter/export.py `edge_episode`): a decision is refused when its
    angle lies outside the arm limits (``allowed``: the integer angles inside them) or was used, or its frequency
    index is not in the set; a refused or failed decision falls back to the next angle of a uniform design
    (`fallback`) with the frequency cycling. A refused decision's GRU state is kept (the policy has seen the
    observation, and the next one shows the fallback that overrode it: every observation passes through the GRU, as
    in training); a failed one's was put back by the decision itself."""

    def __init__(self, allowed: range, budget: int = spec.BUDGET) -> None:
        self.allowed, self.budget = allowed, budget
        self.uniform = [allowed[round(i * len(allowed) / budget)] for i in range(budget)]

    def refusal(self, decision: tuple[int, int] | None, used: list[int]) -> str | None:
        """Why ``decision`` may not be taken (None: it may)."""
        if decision is None:
            return "failed"
        angle, frequency = decision
        if angle not in self.allowed:
            return "out_of_limits"
        if angle in used:
            return "used"
        if not 0 <= frequency < N_FREQ:
            return "bad_frequency"
        return None

    def fallback(self, used: list[int]) -> tuple[int, int]:
        """Step t = len(used): the first unused angle of the uniform design from its t-th on (then of all the
        allowed angles), at frequency index t mod 4."""
        t = len(used)
        angle = next(a for a in (*self.uniform[t:], *self.uniform[:t], *self.allowed) if a not in used)
        return angle, t % N_FREQ

    def resolve(self, policy: TransceiverPolicy | None, decision: tuple[int, int] | None, used: list[int]) -> Choice:
        """The step's choice from the policy's ``decision``."""
        reason = "no_policy" if policy is None else self.refusal(decision, used)
        if reason is None:
            return Choice(*decision, "policy")  # type: ignore[misc]
        return Choice(*self.fallback(used), "fallback", reason)
