"""The daemon side of its Channel Access PVs (docs/epics.md): caproto itself runs in a process of its own
(controller/epics/child.py), so that its work never holds the GIL the tick loop needs.

``EpicsServer(daemon)``: ``start()`` spawns the process and returns once it has bound its ports (its failure: an
OSError, the StartupError); ``serve_forever()`` (a supervised network task) runs the ``Publisher`` and answers
the process's set-point requests until the process ends (an error: the supervisor restarts it, counted) or the
task is cancelled (the process is ended). The process is a daemonic child that also dies with the daemon
however that ends. Nothing of this runs on the tick path: the tick writes a ``LoopSnapshot``
(controller/epics/snapshot.py) and the publisher sends what changed by more than its deadband, from it and from
the daemon's state, at ≤ ``rate_hz`` right after a tick, as one small message on the pipe
(controller/epics/pipe.py; a process that stops reading makes it drop updates, counted, never block).

Set points (``DaemonBridge``) take the host link's path into the loop: a target is a ``SetTarget`` (the host
link's validation: finite floats) and gains go through ``HostLink.post_gains`` (the envelope clamp), both posted
into the host link's mailbox that the tick polls at its boundary; scans start and abort through the mode's push
ops. A target put returns once the loop has settled there (``LoopSnapshot``) and fails after
``settle_timeout_s`` (or at once under an operator hold, or when a later target supersedes it); a gains put
returns the gains in force (clamped) once a tick has applied them; at most ``max_pending_puts`` are in flight.
A put's reply carries the read-backs at its end (the process writes them before it completes the put-callback),
so a client reading right after the put-callback sees its effect.
The process's refusal counts (module doc of child.py) come back once a second into the daemon's fault metrics
``epics_*`` and a rate-limited log summary.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import multiprocessing
import os
import socket
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from controller.config import EpicsConfig
from controller.epics import MAX_SUMMARY
from controller.epics.pipe import backlog, child_main, receive, send
from controller.epics.snapshot import LoopSnapshot
from controller.latency import summarize_ns
from controller.link.auth import Gains, SetTarget
from controller.link.push_wire import PushHeader
from controller.modes.acquisition import AcquisitionSession
from controller.modes.mems.stabilize import StabilizeMode
from controller.ratelog import Summary

if TYPE_CHECKING:
    from controller.daemon import Daemon

log = logging.getLogger("edgetune.epics")
REPORT_S = 10.0  # at most one log line per this about refusals
START_TIMEOUT_S = 30.0  # the process's start-up (imports: about a second, more on a loaded edge) and bind
STOP_TIMEOUT_S = 5.0  # an ended process is reaped within this
STATS_S = 1.0  # tick rate and lateness p99 are computed over windows of this
MAX_BACKLOG = 64 * 1024  # bytes on the pipe the process has not taken: beyond, read-back updates are dropped
MAX_STRING = 39  # DBR_STRING: 40 bytes with the terminating NUL
SCAN_STATE = {"idle": "Idle", "done": "Done", "aborted": "Aborted", "failed": "Failed"}
PUTS = ("move_target", "set_gains", "start_scan", "abort_scan")  # what the process may ask of DaemonBridge


def compact_summary(summary: dict[str, Any], limit: int = MAX_SUMMARY) -> str:
    """A scan's summary as JSON of at most ``limit`` characters: lists longer than 32 items become their length
    first, then only the scalar fields are kept, then only the scan number and how it stopped."""
    shorter = (
        lambda d: {k: f"<{len(v)} items>" if isinstance(v, list) and len(v) > 32 else v for k, v in d.items()},
        lambda d: {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool)) or v is None},
        lambda d: {k: d.get(k) for k in ("scan", "stopped_by", "error")},
    )
    text = _json(summary)
    for shorten in shorter:
        if len(text) <= limit:
            break
        text = _json(shorten(summary))
    return text[:limit]


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


class DaemonBridge:
    """The set points' path into the daemon (what the process's ``ChildBridge`` forwards) and the refusal counts."""

    def __init__(self, daemon: Daemon, cfg: EpicsConfig, snapshot: LoopSnapshot | None) -> None:
        self.d, self.cfg, self.snapshot = daemon, cfg, snapshot
        self.counters: Counter[str] = Counter()
        self.refusals = Summary(self._report, REPORT_S)
        self._last_refused = ""
        self._pending = 0
        self._target: tuple[float, float] | None = None  # the latest target put, while one is in flight
        self._target_seq = 0
        self._scan: asyncio.Future[dict[str, Any]] | None = None  # the latest scan a put started (held while it runs)

    # -- refusals ---------------------------------------------------------------------------------

    def child_counts(self, counts: dict[str, int], last_refused: str) -> None:
        """The process's refusals since its last report (kinds, or ``write_refused:<pv>``)."""
        for key, n in counts.items():
            self.counters[key.split(":", 1)[0]] += n
            self.refusals.add(key, n)
        self._last_refused = last_refused or self._last_refused

    def refuse(self, kind: str) -> None:
        """A set-point put refused here (``put_busy``)."""
        self.counters[kind] += 1
        self.refusals.add(kind)

    def _report(self, counts: dict[str, int], seconds: float) -> None:
        log.warning("EPICS: refused %d in %.0f s (%s; last refused write from host %s)", sum(counts.values()),
                    seconds, ", ".join(f"{k}={v}" for k, v in sorted(counts.items())), self._last_refused or "-")

    # -- set points -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _put(self, what: str) -> Iterator[None]:
        """One set-point put in flight (at most ``max_pending_puts``); a failure is counted and logged."""
        if self._pending >= self.cfg.max_pending_puts:
            self.refuse("put_busy")
            raise RuntimeError(f"busy: {self._pending} set-point puts in flight")
        self._pending += 1
        try:
            yield
        except Exception as e:
            self.counters[f"{what}_failed"] += 1
            log.info("EPICS %s put failed: %s", what, e)
            raise
        finally:
            self._pending -= 1

    def _tick_mode(self) -> tuple[StabilizeMode, LoopSnapshot]:
        mode, snap = self.d.mode, self.snapshot
        if not isinstance(mode, StabilizeMode) or snap is None:
            raise RuntimeError(f"mode {self.d.cfg.loop.mode!r} takes no target or gains")
        return mode, snap

    async def move_target(self, x: float | None = None, y: float | None = None) -> float:
        """Post the new target (the other axis: the latest requested) and return once the loop has settled
        there; raises on a bad value, under an operator hold, when superseded, or after ``settle_timeout_s``."""
        with self._put("target"):
            mode, snap = self._tick_mode()
            if self.d.held:
                raise RuntimeError("operator hold: the loop is not moving (`edgetune link resume`)")
            cur = self._target or (float(mode.target[0]), float(mode.target[1]))
            tx, ty = float(cur[0] if x is None else x), float(cur[1] if y is None else y)
            msg = SetTarget(tx, ty)  # the host link's validation (finite floats); ValidationError is a ValueError
            self._target_seq += 1
            seq, self._target = self._target_seq, (tx, ty)
            self.d.hostlink.mailbox.post(msg)
            try:
                async with asyncio.timeout(self.cfg.settle_timeout_s):
                    while True:
                        await snap.next_tick()
                        if seq != self._target_seq:
                            raise RuntimeError(f"superseded by a later target put ({self._target})")
                        if snap.tx == tx and snap.ty == ty and snap.settled:
                            return tx if x is not None else ty
            except TimeoutError:
                raise TimeoutError(f"not settled within {self.cfg.settle_timeout_s:g} s at ({tx:g}, {ty:g}) px "
                                   f"(|error| {snap.error:.3g} px, tolerance {self.cfg.settle_tolerance_px:g} px "
                                   f"for {self.cfg.settle_ticks} ticks)") from None
            finally:
                if seq == self._target_seq:
                    self._target = None

    async def set_gains(self, values: Any) -> list[float]:
        """Clamp into the host link's envelope, post, and return the gains in force once a tick applied them."""
        with self._put("gains"):
            _, snap = self._tick_mode()
            v = np.asarray(values, dtype=np.float64).ravel()
            if v.shape != (6,):
                raise ValueError(f"Gains-SP takes 6 values (kp_x, ki_x, kd_x, kp_y, ki_y, kd_y), got {v.size}")
            posted, clamped = self.d.hostlink.post_gains(Gains.from_rows(v.reshape(2, 3).tolist()))
            if clamped:
                self.counters["gains_clamped"] += 1
            try:
                async with asyncio.timeout(self.cfg.apply_timeout_s):
                    await snap.next_tick()
            except TimeoutError:
                raise TimeoutError(f"no tick applied the gains within {self.cfg.apply_timeout_s:g} s") from None
            return [float(g) for row in posted.rows() for g in row]

    def _session(self) -> AcquisitionSession:
        if not isinstance(self.d.mode, AcquisitionSession):
            raise RuntimeError(f"mode {self.d.cfg.loop.mode!r} runs no scans")
        return self.d.mode

    async def start_scan(self) -> None:
        """One scan with the mode's configured defaults (the push op ``scan``); returns when it has ended. The scan
        runs on when the put is cancelled (the CA process died): it ends, and records itself, as any scan."""
        with self._put("scan"):
            self._scan = asyncio.ensure_future(self._session().ops()["scan"](PushHeader(op="scan")))
            reply = await asyncio.shield(self._scan)
            if not reply["accepted"]:
                raise RuntimeError(f"scan refused: {reply['reason']}: {reply.get('detail', '')}")

    async def abort_scan(self) -> None:
        with self._put("abort"):
            await self._session().ops()["abort"](PushHeader(op="abort"))


class Publisher:
    """Sends the read-backs to the process at ``rate_hz``, right after a tick, each only when it changed by more
    than its deadband; tick rate, lateness p99 and overruns once per ``STATS_S``."""

    def __init__(self, daemon: Daemon, cfg: EpicsConfig, snapshot: LoopSnapshot | None, counters: Counter[str]) -> None:
        self.d, self.cfg, self.snapshot, self.counters = daemon, cfg, snapshot, counters
        self.deadband = {"x": cfg.deadband_px, "y": cfg.deadband_px, "target_x": cfg.deadband_px,
                         "target_y": cfg.deadband_px, "error": cfg.deadband_px, "tick_rate": cfg.deadband_hz,
                         "lateness_p99": cfg.deadband_us}
        self.last: dict[str, Any] = {}
        self.posts = 0  # values sent
        self.writer: asyncio.StreamWriter | None = None  # the pipe to the process serving now
        self._stats: dict[str, Any] = {"tick_rate": 0.0, "lateness_p99": 0.0, "overruns": 0}
        self._seen_ticks, self._seen_lateness, self._stats_t = 0, 0, time.monotonic()

    async def run(self, writer: asyncio.StreamWriter) -> None:
        """Publish into a freshly started process (every value, then what changes) until cancelled."""
        self.writer, self.last = writer, {}
        try:
            mode = self.d.mode
            if isinstance(mode, StabilizeMode):  # the set points start at what is in force (not 0)
                send(writer, ("values", {"target_x_sp": float(mode.target[0]), "target_y_sp": float(mode.target[1]),
                                         "gains_sp": mode.gains.ravel().tolist()}))
            period = 1.0 / self.cfg.rate_hz
            next_t = time.monotonic()
            while True:
                self.publish()
                next_t = max(next_t + period, time.monotonic())  # no burst to catch up after a stall
                await asyncio.sleep(next_t - time.monotonic())
                if self.snapshot is not None:  # a tick mode: send right after a tick, not on one waking late
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(period):
                            await self.snapshot.next_tick()
        finally:
            self.writer = None

    def publish(self) -> None:
        """Send what changed (one message); nothing while no process serves, dropped (counted) while the process
        has not taken what was sent before."""
        if (writer := self.writer) is None or writer.is_closing():
            return
        if backlog(writer) > MAX_BACKLOG:
            self.counters["publish_behind"] += 1
            return
        if changed := self.changed():
            send(writer, ("values", changed))

    def changed(self) -> dict[str, Any]:
        """The values that changed since they were last sent, counted as sent (the caller sends them)."""
        changed = {a: v for a, v in self.values().items() if self._changed(a, v)}
        self.last.update(changed)
        self.posts += len(changed)
        return changed

    def _changed(self, attr: str, value: Any) -> bool:
        if attr not in self.last:
            return True
        old = self.last[attr]
        if isinstance(value, float):
            if math.isnan(value) or math.isnan(old):
                return math.isnan(value) != math.isnan(old)
            return abs(value - old) > self.deadband.get(attr, 0.0)
        return value != old

    def _loop_stats(self) -> dict[str, Any]:
        stats = getattr(self.d.scheduler, "stats", None)
        now = time.monotonic()
        if stats is not None and stats.ticks == 0:
            self._stats_t = now  # the first window starts with the loop, not with the daemon's start-up
        if stats is None or now - self._stats_t < STATS_S:
            return self._stats
        samples, _ = stats.lateness.since(self._seen_lateness)
        self._seen_lateness = stats.lateness.count
        self._stats = {"tick_rate": (stats.ticks - self._seen_ticks) / (now - self._stats_t),
                       "lateness_p99": summarize_ns(samples)["p99_us"],
                       "overruns": stats.overruns}
        self._seen_ticks, self._stats_t = stats.ticks, now
        return self._stats

    def values(self) -> dict[str, Any]:
        d = self.d
        active = d.slot.active if d.slot is not None else None
        out: dict[str, Any] = {"mode": d.cfg.loop.mode, **self._loop_stats(),
                               "link": "Up" if d.hostlink.state == "up" else "Down",
                               "policy_version": active.version[:MAX_STRING] if active is not None else "",
                               "held": "Yes" if d.held else "No"}
        if (s := self.snapshot) is not None:
            out.update(x=s.x, y=s.y, target_x=s.tx, target_y=s.ty, error=s.error, settled="Yes" if s.settled else "No",
                       gains=d.mode.gains.ravel().tolist())  # type: ignore[union-attr]
        if isinstance(d.mode, AcquisitionSession):
            out.update(self._scan(d.mode))
        return out

    @staticmethod
    def _scan(session: AcquisitionSession) -> dict[str, Any]:
        points = session.progress()[1] if hasattr(session.mode, "result") else 0  # before the first scan: none
        running = session.status()["scanning"]
        done = not running and session.outcome == "done"
        return {"scan_state": "Running" if running else SCAN_STATE[session.outcome],
                "scan_progress": 1.0 if done else points / session.mode.max_steps, "scan_points": points,
                "scan_summary": compact_summary(session.last_summary) if session.last_summary else ""}


class _Process:
    """A started Channel Access process and the daemon's end of its pipe."""

    def __init__(self, process: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.process, self.reader, self.writer = process, reader, writer

    async def stop(self) -> int | None:
        """End it (nothing there needs an orderly end) and reap it; its exit code (None: not reaped in time)."""
        self.writer.close()
        if self.process.exitcode is None:
            self.process.kill()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT_S):
                while self.process.is_alive():  # waitpid(WNOHANG): reaps it
                    await asyncio.sleep(0.01)
        return self.process.exitcode


class EpicsServer:
    """The daemon's PV server (module doc): ``await start()``, supervise ``serve_forever()``, ``close()``."""

    def __init__(self, daemon: Daemon) -> None:
        cfg = self.cfg = daemon.cfg.epics
        mode, mems = daemon.mode, isinstance(daemon.mode, StabilizeMode)
        self.snapshot = LoopSnapshot(cfg.settle_tolerance_px, cfg.settle_ticks) if mems else None
        self.bridge = DaemonBridge(daemon, cfg, self.snapshot)
        self.kind = "mems" if mems else "scan" if isinstance(mode, AcquisitionSession) else "loop"  # child.GROUPS
        self.counters = self.bridge.counters
        self.publisher = Publisher(daemon, cfg, self.snapshot, self.counters)
        self.pvnames: list[str] = []  # once started
        self._port: int | None = None
        self._started: _Process | None = None  # the process start() started, until serve_forever takes it

    @property
    def address(self) -> tuple[str, int]:
        """(host, TCP port) once serving (the UDP search port is ``cfg.port``)."""
        return self.cfg.host, self._port or self.cfg.port

    async def start(self) -> None:
        """Start the process: return once it has bound its search and TCP ports (an OSError names why not: a
        StartupError), so the daemon is "up" only when its PVs can be found."""
        self._started = await self._spawn()

    async def _spawn(self) -> _Process:
        t0 = time.monotonic()
        ours, theirs = socket.socketpair()
        process = multiprocessing.get_context("spawn").Process(
            target=child_main, name="edgetune-epics", daemon=True,
            args=(self.cfg.model_dump(), self.kind, theirs, os.getpid()))
        try:
            process.start()
            reader, writer = await asyncio.open_connection(sock=ours)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the process's end: its exit closes the pipe
        started = _Process(process, reader, writer)
        msg: tuple[Any, ...] | None = ("failed", f"not bound within {START_TIMEOUT_S:g} s")
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                msg = await receive(reader)
        except TimeoutError:
            pass
        except BaseException:  # cancelled while it starts: it ends too
            await asyncio.shield(started.stop())
            raise
        if msg is None or msg[0] != "ready":
            code = await started.stop()
            raise OSError(msg[1] if msg is not None else f"the EPICS process ended while starting (exit code {code})")
        _, self._port, self.pvnames = msg
        log.info("EPICS server process %d serving %d PVs on %s:%d (started in %.2f s)", process.pid,
                 len(self.pvnames), *self.address, time.monotonic() - t0)
        return started

    async def serve_forever(self) -> None:
        """Publish and answer the process's requests until cancelled, or until the process or the publisher ends
        (then raise: the supervisor starts a new process)."""
        started, self._started = self._started, None
        if started is None:
            started = await self._spawn()
        loop = asyncio.get_running_loop()
        publishing = loop.create_task(self.publisher.run(started.writer))
        publishing.add_done_callback(lambda _: started.writer.close())  # a failed publisher ends this serving
        puts: set[asyncio.Task[None]] = set()
        try:
            while (msg := await receive(started.reader)) is not None:
                if msg[0] == "put":
                    task = loop.create_task(self._put(started.writer, *msg[1:]))
                    puts.add(task)
                    task.add_done_callback(puts.discard)
                elif msg[0] == "counts":
                    self.bridge.child_counts(*msg[1:])
        finally:
            for task in (publishing, *puts):
                task.cancel()
            await asyncio.gather(publishing, *puts, return_exceptions=True)
            code = await started.stop()
        if not publishing.cancelled() and (failed := publishing.exception()) is not None:
            raise RuntimeError(f"the EPICS publisher failed: {failed!r}") from failed
        raise RuntimeError(f"the EPICS server process ended (exit code {code})")

    async def _put(self, writer: asyncio.StreamWriter, put_id: int, what: str, kwargs: dict[str, Any]) -> None:
        """One set point through the bridge; the reply: its result or why it failed (logged by the bridge), and the
        read-backs as the put ends."""
        error, result = None, None
        try:
            if what not in PUTS:
                raise ValueError(f"no set point {what!r}")
            result = await getattr(self.bridge, what)(**kwargs)
        except Exception as e:  # noqa: BLE001 — the put's failure, answered
            error = str(e) or type(e).__name__
        if not writer.is_closing():
            send(writer, ("reply", put_id, error, result, self.publisher.changed()))

    def each_second(self) -> None:
        """Housekeeping: report the refusals gathered since the last summary when its interval is over."""
        self.bridge.refusals.tick()

    async def close(self) -> None:
        """After the supervised tasks: the process start() started, if serve_forever never took it over."""
        if self._started is not None:
            await self._started.stop()
            self._started = None
        self.bridge.refusals.flush()
