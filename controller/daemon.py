"""The edge daemon: device driver + scheduler + mode + safety gate + host link + recorder + metrics,
and in rl-pid mode the policy slot with its model-push server (controller/policy/slot.py, controller/link/edge_push.py).
Start-up, supervised tasks, the operator hold and shutdown are shared with the angles daemon
(controller/lifecycle.py).

One tick (read → update → write, ros2_control style):
  1. apply what the host sent since the last tick (gains, target, link state, a validated policy swap
     or rollback) — tick boundary only;
  2. the mode turns the latest camera frame into a command; the safety gate clamps it. Without a
     fresh frame, or under an operator hold, the command is the configured safe value (the PID is
     reset; host gains and targets are still taken and act from the resume on);
  3. the command is written to the device (non-blocking);
  4. telemetry goes to the recorder ring (always; flags: 1 stale, 2 held) and to the host (decimated,
     non-blocking).
Everything slow (connecting, disk, metrics export, sd_notify) runs in other tasks or threads.
"""
from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Awaitable, Callable

import numpy as np

from controller.config import EdgeConfig
from controller.driver import SerialDriver
from controller.link.edge_udp import HostLink, LinkChange, baseline_gains
from controller.link.auth import Gains, SetDisturbance, SetGains, SetTarget, Telemetry
from controller.lifecycle import EdgeDaemon, Undo, check_state_file, starting
from controller.modes.mems.rl_pid import RlPidMode, envelope_arrays, policy_spec
from controller.modes.mems.stabilize import StabilizeMode
from controller.modes.mems.pid import Pid
from controller.policy.slot import PolicySlot
from controller.protocol.mems import MEMS, Frame
from controller.protocol.mems import SetDisturbance as DeviceSetDisturbance
from controller.link.edge_push import DRIFT_WARN, period_drift
from controller.safety import SafetyGate
from controller.scheduler import FrameTrigger, Scheduler, Tick, realtime

log = logging.getLogger("edgetune.daemon")
DRIFT_REPORT_S = 10  # seconds between decision-period records
FLAG_STALE, FLAG_HELD = 1, 2  # recorder tick flags


def _gate(cfg: EdgeConfig) -> SafetyGate:
    lim, safe = cfg.device.voltage_limits_v, cfg.device.safe_voltage_v
    return SafetyGate(low=np.array([lim.x.min, lim.y.min]), high=np.array([lim.x.max, lim.y.max]),
                      safe=np.array([safe.x, safe.y]))


class Daemon(EdgeDaemon):
    """Build from a validated config; ``await run()`` until ``stop()`` (or SIGTERM/SIGINT)."""

    name = "the tick loop"

    def __init__(self, cfg: EdgeConfig) -> None:
        self.baseline = baseline_gains(cfg.pid)
        gate = _gate(cfg)
        pid = Pid(np.asarray(self.baseline.rows()), u_min=[cfg.pid.x.output_v.min, cfg.pid.y.output_v.min],
                  u_max=[cfg.pid.x.output_v.max, cfg.pid.y.output_v.max], tau_d=cfg.pid.x.tau_s)
        baseline, target = np.asarray(self.baseline.rows()), np.array([cfg.target.x_px, cfg.target.y_px])
        slot: PolicySlot | None = None
        if cfg.loop.mode == "rl-pid":
            slot = PolicySlot(policy_spec(cfg.policy.max_history),
                              budget_s=cfg.policy.max_inference_fraction / cfg.loop.rate_hz,
                              validate_timeout_s=cfg.policy.validate_timeout_s)
            self.mode: StabilizeMode = RlPidMode(pid, gate, baseline, target, slot, cfg.policy.decision_every_n_ticks,
                                                 envelope_arrays(cfg.hostlink.envelope))
        else:
            self.mode = StabilizeMode(pid, gate, baseline, target)
        # frame-paced: without frames (device away) tick on at a slower pace, commanding the safe value
        self.trigger = (FrameTrigger(fallback_s=2.0 / cfg.loop.rate_hz + cfg.device.read_timeout_s)
                        if cfg.loop.pacing == "frames" else None)
        self.scheduler = Scheduler(1.0 / cfg.loop.rate_hz, trigger=self.trigger)
        driver = SerialDriver(cfg.device.port, cfg.device.baud, backoff_min_s=cfg.device.reconnect_backoff_min_s,
                              messages=MEMS, backoff_max_s=cfg.device.reconnect_backoff_max_s,
                              on_frame=self._on_frame, on_link=self._on_device_link,
                              silence_timeout_s=2 * cfg.device.read_timeout_s)  # the MEMS stand streams
        check_state_file(cfg.hostlink.state_file, "host-link state file")
        super().__init__(cfg, driver, slot, nominal_period_s=cfg.policy.decision_every_n_ticks / cfg.loop.rate_hz,
                         stats=self.scheduler.stats)
        self.hostlink = HostLink(cfg.hostlink, self.keyring, self.baseline)
        self.frame: Frame | None = None
        self.frame_t_ns = 0
        self._drift_warned: object = None  # the policy whose decision-period drift was logged
        self._background_tasks: set[asyncio.Task] = set()

    # -- callbacks from the driver (run on the loop, between ticks) --------------------------------

    def _on_frame(self, frame: Frame, t_ns: int) -> None:
        self.frame, self.frame_t_ns = frame, t_ns
        if self.trigger is not None:
            self.trigger.notify(t_ns)

    def _on_device_link(self, up: bool, reason: str) -> None:
        super()._on_device_link(up, reason)
        if up:
            self.driver.write_voltages(*self.mode.gate.safe)  # start from the safe command
        else:
            self.frame = None

    # -- the tick --------------------------------------------------------------------------------

    def _apply_host_commands(self) -> None:
        mode, mailbox = self.mode, self.hostlink.mailbox
        while (msg := mailbox.poll()) is not None:
            if isinstance(msg, SetGains):
                mode.set_gains(np.asarray(msg.gains.rows()))
                self.record("gains", {"gains": msg.gains.rows(), "source": "host"})
            elif isinstance(msg, SetTarget):
                mode.set_target(msg.x_px, msg.y_px)
                self.record("target", {"x_px": msg.x_px, "y_px": msg.y_px})
            elif isinstance(msg, SetDisturbance):
                self._background(self.driver.command(DeviceSetDisturbance(msg.profile, msg.seed, *msg.p)), "disturbance")
            elif isinstance(msg, LinkChange):
                if not msg.up:
                    mode.restore_baseline()
                self.record("link", {"up": msg.up, "gains": "baseline" if not msg.up else "held"})

    def tick(self, tick: Tick) -> None:
        self._apply_host_commands()
        if self.slot is not None and self.slot.boundary() and self.metrics is not None:
            self.metrics.model_swapped()
        mode, frame = self.mode, self.frame
        stale = frame is None or tick.t_ns - self.frame_t_ns > self.cfg.device.read_timeout_s * 1e9
        x, y = (math.nan, math.nan) if stale or frame.lost else (frame.x_px, frame.y_px)
        cmd = mode.safe() if stale or self.held else mode.step(x, y, tick.t_ns * 1e-9)
        if self.driver.connected:
            self.driver.write_voltages(float(cmd[0]), float(cmd[1]))
        gains = mode.gains
        tx, ty, cx, cy = float(mode.target[0]), float(mode.target[1]), float(cmd[0]), float(cmd[1])
        self.recorder.record_tick(tick.index, tick.t_ns, tick.lateness_ns, x, y, tx, ty, cx, cy,
                                  gains.ravel().tolist(), FLAG_STALE * stale | FLAG_HELD * self.held)
        if self.hostlink.wants_telemetry(tick.index):
            self.hostlink.send_telemetry(Telemetry(tick.index, tick.t_ns, x, y, tx, ty, cx, cy, Gains.from_rows(gains)))

    def _background(self, coro: Any, what: str) -> None:
        """Run slow work (device round trips) off the tick; failures are logged and recorded."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background_tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._background_tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("%s failed: %s", what, t.exception())
                self.record("fault", {"what": what, "error": str(t.exception())})

        task.add_done_callback(done)

    # -- lifecycle (controller/lifecycle.py) -------------------------------------------------------

    def stop(self) -> None:
        super().stop()
        self.scheduler.stop()

    async def _bind(self, undo: Undo) -> None:
        h = self.cfg.hostlink
        with starting(f"host link on {h.host}:{h.port}"):
            await self.hostlink.start()
        undo.add("host link", self.hostlink.close)
        await super()._bind(undo)

    def _network_tasks(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        return [*super()._network_tasks(), ("hostlink-receive", self.hostlink.receive_forever),
                ("hostlink-watchdog", self.hostlink.watch_forever)]

    async def _serve(self) -> None:
        prio = self.cfg.loop.realtime_priority
        with realtime(prio) as rt:
            self.record("loop", {"sched": "fifo" if rt else "other", "priority": prio if rt else 0})
            await self.scheduler.run(self.tick)

    async def _apply_hold(self, held: bool) -> None:
        """The tick reads ``held``: the next one commands the safe value (or the mode's again)."""

    async def _actuators_safe(self) -> None:
        if self.driver.connected:  # actuators safe before anything else goes down
            self.driver.write_voltages(*map(float, self.mode.gate.safe))

    def _log_up(self) -> None:
        log.info("daemon up: device %s, host link %s:%d, model push %s:%d, %.0f Hz (%s-paced), mode %s",
                 self.cfg.device.port, *self.hostlink.address, *self.push.address, self.cfg.loop.rate_hz,
                 self.cfg.loop.pacing, self.cfg.loop.mode)

    def _log_stopped(self) -> None:
        log.info("daemon stopped after %d ticks (%d overruns)", self.scheduler.stats.ticks,
                 self.scheduler.stats.overruns)

    def _stop_details(self) -> dict[str, Any]:
        return {"ticks": self.scheduler.stats.ticks}

    # -- housekeeping ------------------------------------------------------------------------------

    def _gauges(self) -> dict[str, Any]:
        return {"link_up": self.hostlink.state == "up", "gains": self.mode.gains}

    def _faults(self) -> dict[str, int]:
        """The shared fault kinds, the host link's drops (its rx_ok/tx_ok are traffic) and the safety gate's."""
        link = {k: v for k, v in self.hostlink.counters.items() if not k.endswith("_ok")}
        return {**super()._faults(), **link, "command_clamped": self.mode.gate.clamped,
                "command_non_finite": self.mode.gate.non_finite}

    def _each_second(self, seconds: int) -> None:
        if isinstance(self.mode, RlPidMode):
            self._report_decision_period(self.mode, record=seconds % DRIFT_REPORT_S == 0)

    def _report_decision_period(self, mode: RlPidMode, record: bool) -> None:
        """The decision period the loop achieves vs. the one the active policy was trained at."""
        if (period := mode.take_period()) is None:
            return
        policy, n, achieved_s = period
        trained_s = policy.manifest.decision_period_s
        drift = period_drift(achieved_s, trained_s)
        if self.metrics is not None:
            self.metrics.policy_period(achieved_s, drift)
        if record:
            self.record("decision_period", {"version": policy.version, "decisions": n, "achieved_s": achieved_s,
                                            "manifest_s": trained_s, "drift": drift})
        if abs(drift) > DRIFT_WARN and self._drift_warned is not policy:
            self._drift_warned = policy
            log.warning("policy %s decides every %.4g s, trained at %.4g s (drift %+.1f%%)", policy.version,
                        achieved_s, trained_s, 100 * drift)
