"""The one edge daemon: device driver + mode + safety gate + host link + recorder + metrics + push channel,
for every mode. The mode comes from the registry (controller/modes/registry.py) by ``loop.mode``; its spec
names its message set, its policy slot, its push ops and how to build it. Start-up, supervised tasks, the
operator hold, metrics, the systemd watchdog and shutdown are controller/lifecycle.py's.

A *tick mode* (stabilize, rl-pid) runs on the scheduler. One tick (read → update → write, ros2_control style):
  1. apply what the host sent since the last tick (the mode's commands: gains, target; link state) and a
     validated policy swap or rollback — tick boundary only;
  2. the mode turns the latest reading into a command; without a fresh reading, or under an operator hold,
     the command is the mode's safe command;
  3. the safety gate (the mode's: controller/safety.py) clamps it (a non-finite one becomes the safe command;
     both counted), it is written to the device (non-blocking), and the mode is told what was written;
  4. telemetry goes to the recorder ring (always; flags: 1 stale, 2 held), to the EPICS snapshot (with
     [epics]: a few float stores the PV server publishes from, controller/epics) and to the host (decimated,
     non-blocking).
A *session mode* (angles) rests until a push op (scan, abort, …) starts or stops a session; its stage moves
pass its own gate (controller/safety.py's StageGate). The host link runs in every mode: pings, link
up/down (recorded, the metrics' link gauge) and the mode's host commands; the watchdog pings while the
housekeeping runs and no supervised task is dead (and, for a tick mode, the loop ticks on time).
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
from controller.epics import epics_server
from controller.lifecycle import EdgeDaemon, Undo, check_state_file, starting
from controller.link.auth import Gains, Telemetry
from controller.link.edge_udp import HostLink, LinkChange, baseline_gains
from controller.modes import registry
from controller.modes.base import ModeSpec, SessionMode, TickMode
from controller.protocol.mems import Frame
from controller.scheduler import FrameTrigger, Scheduler, Tick, realtime

log = logging.getLogger("edgetune.daemon")
FLAG_STALE, FLAG_HELD = 1, 2  # recorder tick flags


class Daemon(EdgeDaemon):
    """Build from a validated config; ``await run()`` until ``stop()`` (or SIGTERM/SIGINT)."""

    def __init__(self, cfg: EdgeConfig) -> None:
        spec: ModeSpec = registry.get(cfg.loop.mode)
        self.spec = spec
        self.name = "the tick loop" if spec.kind == "tick" else f"the {spec.name} daemon"
        dev = cfg.device
        self.trigger: FrameTrigger | None = None
        self.scheduler: Scheduler | None = None
        if spec.kind == "tick":
            # frame-paced: without frames (device away) tick on at a slower pace, commanding the safe value
            self.trigger = (FrameTrigger(fallback_s=2.0 / cfg.loop.rate_hz + dev.read_timeout_s)
                            if cfg.loop.pacing == "frames" else None)
            self.scheduler = Scheduler(1.0 / cfg.loop.rate_hz, trigger=self.trigger)
        driver = SerialDriver(dev.port, dev.baud, messages=spec.messages, backoff_min_s=dev.reconnect_backoff_min_s,
                              backoff_max_s=dev.reconnect_backoff_max_s, on_frame=self._on_frame,
                              on_link=self._on_device_link,
                              **({"silence_timeout_s": 2 * dev.read_timeout_s} if spec.streams else {}))
        slot = None
        if spec.slot is not None:
            slot = spec.slot(cfg, lambda: self.mode.boundary())  # type: ignore[union-attr]
        check_state_file(cfg.hostlink.state_file, "host-link state file")
        self.driver, self.slot, self.cfg, self.held = driver, slot, cfg, False  # what the mode's build reads
        self.mode = spec.build(self)
        ops = self.mode.ops()
        super().__init__(cfg, driver, slot, nominal_period_s=spec.decision_period_s(cfg),
                         stats=self.scheduler.stats if self.scheduler is not None else None, ops=ops)
        self.hostlink = HostLink(cfg.hostlink, self.keyring, baseline_gains(cfg.pid))
        self.epics = epics_server(self) if cfg.epics.enabled else None  # Channel Access PVs (controller/epics)
        self.snapshot = self.epics.snapshot if self.epics is not None else None  # what the tick leaves for them
        self.frame: Frame | None = None
        self.frame_t_ns = 0
        self._reading = np.zeros(2)
        self._background_tasks: set[asyncio.Task] = set()

    @property
    def session(self) -> str:
        assert self.recorder is not None
        return self.recorder.session

    # -- callbacks from the driver (run on the loop, between ticks) --------------------------------

    def _on_frame(self, frame: Any, t_ns: int) -> None:
        self.frame, self.frame_t_ns = frame, t_ns
        if self.trigger is not None:
            self.trigger.notify(t_ns)

    def _on_device_link(self, up: bool, reason: str) -> None:
        super()._on_device_link(up, reason)
        if not up:
            self.frame = None
        elif isinstance(self.mode, TickMode):
            self._write(self.mode.gate.safe)  # start from the safe command

    # -- host link ---------------------------------------------------------------------------------

    def _apply_host_commands(self) -> None:
        """The host's commands since the last call (a tick boundary, or once a second for a session mode)."""
        mode, mailbox = self.mode, self.hostlink.mailbox
        while (msg := mailbox.poll()) is not None:
            if isinstance(msg, LinkChange):
                fallback = mode.link_lost() if not msg.up and isinstance(mode, TickMode) else None
                self.record("link", {"up": msg.up, **({"fallback": fallback} if fallback else {})})
            elif not (isinstance(mode, TickMode) and mode.host_message(msg, self)):
                self.hostlink.counters["unsupported"] += 1

    # -- the tick (tick modes) ---------------------------------------------------------------------

    def _write(self, command: np.ndarray) -> None:
        if self.driver.connected:
            self.mode.write(self.driver, command)  # type: ignore[union-attr]

    def tick(self, tick: Tick) -> None:
        self._apply_host_commands()
        if self.slot is not None and self.slot.boundary() and self.metrics is not None:
            self.metrics.model_swapped()
        mode, frame = self.mode, self.frame
        assert isinstance(mode, TickMode)
        stale = frame is None or tick.t_ns - self.frame_t_ns > self.cfg.device.read_timeout_s * 1e9
        x, y = (math.nan, math.nan) if stale else mode.reading(frame)
        t_s = tick.t_ns * 1e-9
        if stale or self.held:
            cmd = mode.safe()
        else:
            r = self._reading
            r[0], r[1] = x, y
            cmd = mode.gate(mode.update(r, t_s))  # the one safety gate, just before the write
            mode.commanded(cmd, t_s)
        self._write(cmd)
        gains = mode.gains
        tx, ty, cx, cy = float(mode.target[0]), float(mode.target[1]), float(cmd[0]), float(cmd[1])
        self.recorder.record_tick(tick.index, tick.t_ns, tick.lateness_ns, x, y, tx, ty, cx, cy,
                                  gains.ravel().tolist(), FLAG_STALE * stale | FLAG_HELD * self.held)
        if self.snapshot is not None:
            self.snapshot.update(x, y, tx, ty, self.held)
        if self.hostlink.wants_telemetry(tick.index):
            self.hostlink.send_telemetry(Telemetry(tick.index, tick.t_ns, x, y, tx, ty, cx, cy, Gains.from_rows(gains)))

    def background(self, coro: Any, what: str) -> None:
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
        if self.scheduler is not None:
            self.scheduler.stop()

    async def _bind(self, undo: Undo) -> None:
        h = self.cfg.hostlink
        with starting(f"host link on {h.host}:{h.port}"):
            await self.hostlink.start()
        undo.add("host link", self.hostlink.close)
        if self.epics is not None:
            e = self.cfg.epics
            with starting(f"EPICS server on {e.host}:{e.port}"):
                await self.epics.start()
            undo.add("EPICS server", self.epics.close)
        await super()._bind(undo)

    def _network_tasks(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        epics = [("epics", self.epics.serve_forever)] if self.epics is not None else []
        return [*super()._network_tasks(), ("hostlink-receive", self.hostlink.receive_forever),
                ("hostlink-watchdog", self.hostlink.watch_forever), *epics]

    async def _serve(self) -> None:
        if self.scheduler is None:  # a session mode: its sessions run from the push ops
            await self._stop.wait()
            return
        prio = self.cfg.loop.realtime_priority
        with realtime(prio) as rt:
            self.record("loop", {"sched": "fifo" if rt else "other", "priority": prio if rt else 0})
            await self.scheduler.run(self.tick)

    async def _apply_hold(self, held: bool) -> None:
        """A tick mode: the tick reads ``held`` (the next one commands the safe value, or the mode's again).
        A session mode: the session in flight is aborted."""
        if isinstance(self.mode, SessionMode):
            await self.mode.apply_hold(held)

    async def _actuators_safe(self) -> None:
        if isinstance(self.mode, SessionMode):
            await self.mode.actuators_safe()
        else:
            self._write(self.mode.gate.safe)  # actuators safe before anything else goes down

    def _log_up(self) -> None:
        c = self.cfg
        if self.scheduler is not None:
            details = f"{c.loop.rate_hz:.0f} Hz ({c.loop.pacing}-paced)"
        else:
            details = self.mode.describe()  # type: ignore[union-attr]
        log.info("daemon up: device %s, host link %s:%d, model push %s:%d, mode %s, %s", c.device.port,
                 *self.hostlink.address, *self.push.address, c.loop.mode, details)

    def _log_stopped(self) -> None:
        if self.scheduler is None:
            log.info("%s daemon stopped after %d scans", self.spec.name, self.mode.scans)  # type: ignore[union-attr]
        else:
            log.info("daemon stopped after %d ticks (%d overruns)", self.scheduler.stats.ticks,
                     self.scheduler.stats.overruns)

    def _stop_details(self) -> dict[str, Any]:
        if isinstance(self.mode, SessionMode):
            return self.mode.stop_details()
        assert self.scheduler is not None
        return {"ticks": self.scheduler.stats.ticks}

    def _status(self) -> dict[str, Any]:
        return self.mode.status()

    # -- housekeeping ------------------------------------------------------------------------------

    def _gauges(self) -> dict[str, Any]:
        gauges = self.mode.gauges() if isinstance(self.mode, TickMode) else {}
        return {"link_up": self.hostlink.state == "up", **gauges}

    def _faults(self) -> dict[str, int]:
        """The shared fault kinds, the host link's drops (its rx_ok/tx_ok are traffic) and the safety gate's."""
        link = {k: v for k, v in self.hostlink.counters.items() if not k.endswith("_ok")}
        gate = self.mode.gate
        epics = {f"epics_{k}": v for k, v in self.epics.counters.items()} if self.epics is not None else {}
        return {**super()._faults(), **link, "command_clamped": gate.clamped, "command_non_finite": gate.non_finite,
                **epics}

    def _each_second(self, seconds: int) -> None:
        if self.epics is not None:
            self.epics.each_second()
        if isinstance(self.mode, SessionMode):
            self._apply_host_commands()
        else:
            self.mode.each_second(self, seconds)
