"""rl-pid mode: the stabilize loop, with an ONNX actor re-tuning the PID on the edge (no host needed).

Paper (mems-mirror-pid-rl, §II): the state is the last k observations o_i = (x_pos, y_pos, u_x, u_y,
x_target, y_target) and the action is {P_x, I_x, P_y, I_y}; D stays at its baseline. Here the
observations are per tick in raw units (px, V; the graph normalises), oldest first, flattened to
(k·6,); every `every_n` ticks the actor runs and the gains change bumplessly (controller.modes.mems.pid).
A failed decision (`PolicySlot.infer`: the call raised, ran over budget or was ended by the watchdog, or
its action is not finite) gives the baseline gains for that decision (counted); after too many the slot
quarantines the policy, and the next decision runs the previous one, or the baseline. Without an active
policy the gains are left alone (the baseline, unless the host set others), and a rollback (or a
quarantine) to no policy restores the baseline. The achieved decision period is measured so the daemon
can report its drift from the manifest's.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from controller.config import EdgeConfig, GainEnvelope
from controller.link.edge_push import DRIFT_WARN, period_drift
from controller.modes.base import ModeHost, ModeSpec
from controller.modes.mems.pid import Pid
from controller.modes.mems.stabilize import StabilizeMode, mems_args
from controller.modes.registry import register
from controller.modes.mems.spec import ACT_UNITS, ACTIONS, OBS_FIELDS, OBS_UNITS, TASK
from controller.policy.slot import LoadedPolicy, PolicySlot, PolicySpec
from controller.protocol import mems as p
from controller.safety import SafetyGate

log = logging.getLogger("edgetune.daemon")
DRIFT_REPORT_S = 10  # seconds between decision-period records

_ACTION_INDEX = ((0, 0), (0, 1), (1, 0), (1, 1))  # action i -> gains[axis, term]


def policy_spec(max_steps: int) -> PolicySpec:
    return PolicySpec(task=TASK, obs_step=len(OBS_FIELDS), act_dim=len(ACTIONS), max_steps=max_steps,
                      obs_units=OBS_UNITS, act_units=ACT_UNITS)


def envelope_arrays(env: GainEnvelope) -> tuple[np.ndarray, np.ndarray]:
    """The gain envelope as (low, high) arrays [axis][P, I, D]."""
    axes = (env.x, env.y)
    return (np.array([[a.kp.min, a.ki.min, a.kd.min] for a in axes]),
            np.array([[a.kp.max, a.ki.max, a.kd.max] for a in axes]))


class RlPidMode(StabilizeMode):
    def __init__(self, pid: Pid, gate: SafetyGate, baseline_gains: np.ndarray, target_px: np.ndarray,
                 slot: PolicySlot, every_n: int, envelope: tuple[np.ndarray, np.ndarray]) -> None:
        super().__init__(pid, gate, baseline_gains, target_px)
        self.pid_measured = np.zeros(2)  # this tick's reading
        self.slot, self.every_n = slot, every_n
        self.gain_low, self.gain_high = envelope
        h = self._h = slot.spec.max_steps
        self._hist = np.zeros((2 * h, len(OBS_FIELDS)), dtype=np.float32)  # each row twice: any window is a view
        self._next = 0  # row the next observation goes to
        self._filled = 0
        self._ticks = 0
        self._gains = self.baseline_gains.copy()
        self.decisions = 0
        self._policy: LoadedPolicy | None = None
        self._last_decision_s: float | None = None
        self._period_sum_s, self._period_n = 0.0, 0
        self._drift_warned: object = None  # the policy whose decision-period drift was logged

    def commanded(self, cmd: np.ndarray, t_s: float) -> None:
        """Append the tick's observation (reading, the written command, target); every `every_n` ticks decide."""
        i, h, row, m = self._next, self._h, self._hist[self._next], self.pid_measured
        row[0], row[1], row[2], row[3], row[4], row[5] = m[0], m[1], cmd[0], cmd[1], self.target[0], self.target[1]
        self._hist[i + h] = row
        self._next = (i + 1) % h
        self._filled = min(self._filled + 1, h)
        self._ticks += 1
        if self._ticks >= self.every_n:
            self._ticks = 0
            self._decide(t_s)  # the new gains act from the next tick

    def link_lost(self) -> str:
        """The host link went down: an active policy keeps deciding (it needs no host); without one, the
        baseline gains."""
        return "policy" if self.slot.active is not None else super().link_lost()

    def update(self, reading: np.ndarray, t_s: float) -> np.ndarray:
        self.pid_measured[:] = reading
        return super().update(reading, t_s)

    def safe(self) -> np.ndarray:
        self._filled, self._last_decision_s = 0, None  # a gap in the readings: start the history again
        return super().safe()

    def _decide(self, t_s: float) -> None:
        p = self.slot.active
        if p is not self._policy:  # swapped: measure the new policy's period from scratch
            if p is None:  # rolled back past the first push: the baseline gains again
                self.restore_baseline()
            self._policy, self._last_decision_s = p, None
            self._period_sum_s, self._period_n = 0.0, 0
        if p is None or self._filled < p.steps:
            return
        end = self._next + self._h
        action = self.slot.infer(self._hist[end - p.steps:end].reshape(-1))
        g = self._gains
        g[...] = self.baseline_gains
        if action is not None:  # None: the decision failed (counted by the slot), baseline gains for this one
            for a, (axis, term) in zip(action, _ACTION_INDEX):
                g[axis, term] = a
            np.clip(g, self.gain_low, self.gain_high, out=g)
        self.pid.set_gains(g)
        self.decisions += 1
        if self._last_decision_s is not None:
            self._period_sum_s += t_s - self._last_decision_s
            self._period_n += 1
        self._last_decision_s = t_s

    def take_period(self) -> tuple[LoadedPolicy, int, float] | None:
        """(policy, decisions, mean achieved decision period [s]) since the last call, or None."""
        if self._policy is None or self._period_n == 0:
            return None
        out = (self._policy, self._period_n, self._period_sum_s / self._period_n)
        self._period_sum_s, self._period_n = 0.0, 0
        return out

    def each_second(self, host: Any, seconds: int) -> None:
        self.report_decision_period(host, record=seconds % DRIFT_REPORT_S == 0)

    def report_decision_period(self, host: Any, record: bool) -> None:
        """The decision period the loop achieves vs. the one the active policy was trained at (metrics, a
        recorder event every DRIFT_REPORT_S, one warning per policy beyond DRIFT_WARN)."""
        if (period := self.take_period()) is None:
            return
        policy, n, achieved_s = period
        trained_s = policy.manifest.decision_period_s
        drift = period_drift(achieved_s, trained_s)
        if host.metrics is not None:
            host.metrics.policy_period(achieved_s, drift)
        if record:
            host.record("decision_period", {"version": policy.version, "decisions": n, "achieved_s": achieved_s,
                                            "manifest_s": trained_s, "drift": drift})
        if abs(drift) > DRIFT_WARN and self._drift_warned is not policy:
            self._drift_warned = policy
            log.warning("policy %s decides every %.4g s, trained at %.4g s (drift %+.1f%%)", policy.version,
                        achieved_s, trained_s, 100 * drift)


def _slot(cfg: EdgeConfig, on_request: Callable[[], None]) -> PolicySlot:
    return PolicySlot(policy_spec(cfg.policy.max_history), budget_s=cfg.policy.max_inference_fraction / cfg.loop.rate_hz,
                      validate_timeout_s=cfg.policy.validate_timeout_s)


def _build(host: ModeHost) -> RlPidMode:
    assert host.slot is not None
    cfg = host.cfg
    return RlPidMode(*mems_args(cfg), host.slot, cfg.policy.decision_every_n_ticks, envelope_arrays(cfg.hostlink.envelope))


SPEC = register(ModeSpec(name="rl-pid", kind="tick", messages=p.MEMS, streams=True, build=_build, slot=_slot))
