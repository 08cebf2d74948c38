"""The ptychography scan policy on the edge (controller/modes/ptycho/spec.py: reconstruction, the last
sub-sequence and its count, the prior (the Halton continuation) and the GRU state → the next sub-sequence's
means), and its validator and opener for the policy slot."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from controller.modes.ptycho import spec as ptycho
from controller.policy.manifest import StateSpec
from controller.policy.runtime import (PolicyRejected, PolicySession, RecurrentPolicy, check_graph_io, load_for_task,
                                       open_session)


class ScanPolicy(RecurrentPolicy):
    """The ptychography scan policy (controller/modes/ptycho/spec.py), its GRU state carried between the
    decisions of a scan (``reset()`` at each scan's start)."""

    def __init__(self, model: str | Path | bytes, field: int, state: StateSpec | None = None) -> None:
        """``state``: the manifest's hidden state (default: the graph's ``hidden`` input, starting at zeros)."""
        session = open_session(model)
        if state is None:
            shape = next((a.shape[1:] for a in session.get_inputs() if a.name == ptycho.HIDDEN), None)
            if shape is None or len(shape) != 2 or shape[0] != ptycho.LAYERS or not isinstance(shape[1], int):
                raise PolicyRejected("wrong_shape", f"scan policy: no static {ptycho.HIDDEN} input "
                                                    f"[batch, {ptycho.LAYERS}, H] (got {shape})")
            state = StateSpec(name=ptycho.HIDDEN, shape=tuple(shape), initial=0.0, next=ptycho.HIDDEN_NEXT)
        inputs = {**ptycho.inputs(field), ptycho.HIDDEN: state.shape}
        check_graph_io(session, inputs, {**ptycho.outputs(), ptycho.HIDDEN_NEXT: state.shape})
        self.binding = PolicySession(session, ptycho.inputs(field), ptycho.outputs(), [state])
        self.field = field
        self._recon, self._positions = self.binding.inputs[ptycho.RECON], self.binding.inputs[ptycho.POSITIONS]
        self._count, self._means = self.binding.inputs[ptycho.COUNT], self.binding.outputs[ptycho.MEANS]
        self._prior = self.binding.inputs[ptycho.PRIOR]
        self._hidden = self.binding.state[ptycho.HIDDEN]
        super().__init__()

    @classmethod
    def from_artifact(cls, directory: str | Path, field: int) -> ScanPolicy:
        """Load an artifact directory: manifest and sha256, task, the spec's named tensors and ONE state
        (``hidden`` (LAYERS, H) → ``hidden_next``), the graph's I/O, and finite means on two probes (the empty
        first decision; a random field with a full sub-sequence), the state reset afterwards."""
        manifest, model = load_for_task(Path(directory), ptycho.TASK)
        ins = {t.name: t.shape for t in manifest.inputs}
        outs = {t.name: t.shape for t in manifest.outputs}
        state = manifest.state
        if ins != ptycho.inputs(field) or outs != ptycho.outputs() or len(state) != 1 or (
                state[0].name, state[0].next, len(state[0].shape), state[0].shape[0]) != (
                ptycho.HIDDEN, ptycho.HIDDEN_NEXT, 2, ptycho.LAYERS):
            raise PolicyRejected("wrong_shape", f"manifest says inputs {ins} outputs {outs} state "
                                                f"{[(s.name, s.shape, s.next) for s in state]}; this mode takes "
                                                f"inputs {ptycho.inputs(field)} outputs {ptycho.outputs()} and the "
                                                f"state {ptycho.HIDDEN} ({ptycho.LAYERS}, H) → {ptycho.HIDDEN_NEXT}")
        policy = cls(model, field, state[0])
        policy.manifest, policy.path = manifest, Path(directory)
        rng = np.random.default_rng(0)
        # probes at the inputs' bounds (priors anywhere in [0, 1]²; no Halton here: the validator process stays light)
        corner = np.zeros((ptycho.M_MAX, 2))
        policy.probe(policy.decide, [(np.zeros((field, field), np.float32), np.zeros((0, 2)), corner),
                                     (rng.normal(0.0, 0.3, (field, field)), rng.random((ptycho.M_MAX, 2)),
                                      rng.random((ptycho.M_MAX, 2)))],
                     PolicyRejected, "scan policy")
        return policy

    def decide(self, recon: np.ndarray, positions: np.ndarray, prior: np.ndarray,
               run_options: ort.RunOptions | None = None) -> np.ndarray | None:
        """The next sub-sequence's means (M_MAX, 2) in [0, 1] (a copy) for the reconstructed field (F, F), mean
        removed, the last sub-sequence (m ≤ M_MAX, 2) normalised and the edge's own next sub-sequence ``prior``
        (M_MAX, 2; path.prior); None (counted, the state kept) when they are not finite."""
        m = len(positions)
        if m > ptycho.M_MAX or recon.shape != (self.field, self.field):
            raise ValueError(f"need a ({self.field}, {self.field}) field and ≤ {ptycho.M_MAX} positions, "
                             f"got {recon.shape} and {m}")
        hidden = self.state()
        self._recon[0, 0] = recon
        self._positions.fill(0.0)
        self._positions[0, :m] = positions
        self._count[0, 0] = m
        self._prior[0] = prior
        self.binding.step(run_options)
        means = np.asarray(self._means[0], np.float64).copy()
        if not (np.isfinite(means).all() and np.isfinite(self._hidden).all()):
            self.faults += 1
            self.restore(hidden)
            return None
        return means
