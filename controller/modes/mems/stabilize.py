"""Stabilize mode: camera frame → PID → mirror voltages, every tick (docs/design.md). A tick mode
(controller/modes/base.py), registered as "stabilize"; the daemon gates its commands with the mirror's
voltage limits (``mirror_gate``)."""
from __future__ import annotations

from typing import Any

import numpy as np

from controller.config import EdgeConfig
from controller.link.auth import SetDisturbance, SetGains, SetTarget
from controller.link.edge_udp import baseline_gains
from controller.modes.base import ModeHost, ModeSpec, TickMode
from controller.modes.mems.pid import Pid
from controller.modes.registry import register
from controller.protocol import mems as p
from controller.safety import SafetyGate


class StabilizeMode(TickMode):
    """Keeps the spot on the target with a PID per axis; gains change only between ticks."""

    def __init__(self, pid: Pid, gate: SafetyGate, baseline_gains: np.ndarray, target_px: np.ndarray) -> None:
        self.pid = pid
        self.gate = gate
        self.baseline_gains = np.array(baseline_gains, dtype=np.float64)
        self.target = np.array(target_px, dtype=np.float64)
        pid.set_gains(self.baseline_gains)

    @property
    def gains(self) -> np.ndarray:
        return self.pid.gains

    def set_gains(self, gains: np.ndarray) -> None:
        self.pid.set_gains(gains)

    def restore_baseline(self) -> None:
        self.pid.set_gains(self.baseline_gains)

    def set_target(self, x_px: float, y_px: float) -> None:
        self.target[0], self.target[1] = x_px, y_px

    def update(self, reading: np.ndarray, t_s: float) -> np.ndarray:
        """One tick: the PID's command [V] for the spot (x, y) [px] (NaN for a lost spot: the PID holds that axis)."""
        return self.pid.update(reading, self.target, t_s)

    def safe(self) -> np.ndarray:
        """The command for a tick without a valid reading (device lost): the configured safe value."""
        self.pid.reset()
        return self.gate.safe

    def host_message(self, msg: Any, host: ModeHost) -> bool:
        if isinstance(msg, SetGains):
            self.set_gains(np.asarray(msg.gains.rows()))
            host.record("gains", {"gains": msg.gains.rows(), "source": "host"})
        elif isinstance(msg, SetTarget):
            self.set_target(msg.x_px, msg.y_px)
            host.record("target", {"x_px": msg.x_px, "y_px": msg.y_px})
        elif isinstance(msg, SetDisturbance):
            host.background(host.driver.command(p.SetDisturbance(msg.profile, msg.seed, *msg.p)), "disturbance")
        else:
            return False
        return True

    def link_lost(self) -> str:
        """The host link went down: back to the baseline gains."""
        self.restore_baseline()
        return "baseline"

    def gauges(self) -> dict[str, Any]:
        return {"gains": self.gains}


def mirror_gate(cfg: EdgeConfig) -> SafetyGate:
    """The mirror's voltage limits and safe value ([device])."""
    lim, safe = cfg.device.voltage_limits_v, cfg.device.safe_voltage_v
    return SafetyGate(low=np.array([lim.x.min, lim.y.min]), high=np.array([lim.x.max, lim.y.max]),
                      safe=np.array([safe.x, safe.y]))


def mirror_pid(cfg: EdgeConfig) -> Pid:
    """The PID with the baseline gains and output limits of [pid]."""
    return Pid(np.asarray(baseline_gains(cfg.pid).rows()), u_min=[cfg.pid.x.output_v.min, cfg.pid.y.output_v.min],
               u_max=[cfg.pid.x.output_v.max, cfg.pid.y.output_v.max], tau_d=cfg.pid.x.tau_s)


def mems_args(cfg: EdgeConfig) -> tuple[Pid, SafetyGate, np.ndarray, np.ndarray]:
    """(pid, gate, baseline gains, target): what every MEMS tick mode starts from."""
    return mirror_pid(cfg), mirror_gate(cfg), np.asarray(baseline_gains(cfg.pid).rows()), np.array([cfg.target.x_px, cfg.target.y_px])


SPEC = register(ModeSpec(name="stabilize", kind="tick", messages=p.MEMS, streams=True,
                         build=lambda host: StabilizeMode(*mems_args(host.cfg))))
