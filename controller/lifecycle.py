"""What the edge daemon (controller/daemon.py) shares around every mode's main work:
start-up steps that fail in one line, supervised tasks, the operator hold, metrics and the shutdown order.

Start-up. ``__init__`` checks what can be checked without side effects: the key file, that the state
files' directories, the policy directory and the recorder's directory take new files, and that an
existing ``[device] port`` is a tty (a missing one is waited for: a device may be unplugged at boot).
``run`` then binds the sockets (the subclass's host link, the model-push server, the metrics server),
and only then opens the recorder, so a daemon refused for a port already in use never touches the
store. Each step's OSError, SQLite error or ValueError becomes a ``StartupError`` that names the step
(the CLI prints it as one line and exits with status 2); whatever had started is undone first, the
recorder session closed.

Running. Every long-lived task runs under a ``Supervisor`` (restarted with back-off, logged, counted
as the fault ``task_restart:<name>``): housekeeping (metrics, sd_notify watchdog), the metrics HTTP
server, the recorder's writer thread, the device's reconnect loop, the policy restore and the network
tasks (``_network_tasks``). The watchdog is withheld while any of them is dead. The main work
(``_serve``: the tick loop, or waiting for scan requests) dying ends the daemon: one log line, the same
shutdown, then ``Fatal`` (the CLI exits 1, systemd restarts the service).

Operator hold (push ops ``hold``/``resume``, ``edgetune link hold|resume``): the subclass puts the
actuators to the mode's safe command and keeps them there until ``resume``; the hold is recorded,
shown by ``status`` (served in every mode) and exported as the gauge ``edgetune_hold``. It is not kept
across a restart.

Shutdown (SIGTERM/SIGINT, a fatal error, a failed start): the steps registered while starting run in
reverse order, each on its own: one that fails is logged in one line and the others still run, the
recorder session is always closed. After a full start: the supervised tasks, then the push port stops
listening and cuts its connections (no scan, push or hold arrives once the actuators, device and policy
slot go down), actuators to safe, device, policy slot, recorder (the push port's last refusal summary
and the stop event first), metrics server.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import logging
import os
import signal
import sqlite3
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

from controller.config import EdgeConfig
from controller.driver import SerialDriver, tty_problem
from controller.link.auth import Keyring, load_keyring
from controller.metrics import Metrics
from controller.policy.slot import PolicySlot
from controller.link.edge_push import PushServer
from controller.link.push_wire import PushHeader
from controller.recorder import RUN_EVENTS, Recorder, RecorderError
from controller.scheduler import SchedulerStats
from controller.sdnotify import Watchdog, notify
from controller.supervisor import Supervisor

log = logging.getLogger("edgetune.daemon")

PushOp = Callable[[PushHeader], Awaitable[dict[str, Any]]]
TRAFFIC = frozenset({"attempted", "accepted", "rolled_back"})  # policy-slot counters that are not faults


class StartupError(Exception):
    """The daemon cannot start; the message is one line naming the step and the cause."""


class Fatal(Exception):
    """The daemon's main work died; it was logged in one line and everything was shut down."""


def describe(e: BaseException) -> str:
    """One line: the exception and where it was raised (the innermost frame)."""
    where = ""
    if (tb := traceback.extract_tb(e.__traceback__)):
        f = tb[-1]
        where = f" (at {Path(f.filename).name}:{f.lineno} in {f.name})"
    return f"{type(e).__name__}: {' '.join(str(e).split())}{where}"


@contextlib.contextmanager
def starting(what: str) -> Iterator[None]:
    """Turn the errors of one start-up step into a StartupError: ``what: cause``."""
    try:
        yield
    except (OSError, sqlite3.Error, ValueError, RecorderError) as e:
        raise StartupError(f"{what}: {' '.join(str(e).split())}") from e


def check_writable_dir(directory: Path, what: str, create: bool = False) -> None:
    """Refuse a directory the daemon cannot create files in (tried with a temporary file, so permissions,
    a read-only mount or a file in its place all count); ``create``: make it first if missing."""
    with starting(f"{what} {directory}"):
        if create:
            directory.mkdir(parents=True, exist_ok=True)
        if not directory.is_dir():
            raise ValueError("does not exist" if not directory.exists() else "is not a directory")
        try:
            fd, probe = tempfile.mkstemp(dir=directory, prefix=".edgetune-probe-")
        except OSError as e:
            raise OSError(e.errno, f"cannot create files there ({e.strerror})") from None
        os.close(fd)
        os.unlink(probe)


def check_state_file(path: Path, what: str) -> None:
    """A state file is replaced atomically (a temporary file renamed over it): its directory must take new
    files and the path must not be a directory."""
    check_writable_dir(path.parent, f"{what} {path}: directory")
    if path.is_dir():
        raise StartupError(f"{what} {path}: is a directory")


class Undo:
    """Shutdown steps registered as start-up proceeds; ``run`` takes them in reverse order, each on its own."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], Any]]] = []

    def add(self, what: str, step: Callable[[], Any]) -> None:
        self._steps.append((what, step))

    async def run(self) -> None:
        while self._steps:
            what, step = self._steps.pop()
            try:
                if inspect.isawaitable(result := step()):
                    await result
            except Exception as e:  # noqa: BLE001 — one failing step must not keep the others (the recorder) open
                log.error("shutdown: %s failed: %s", what, describe(e))


class EdgeDaemon:
    """The shared part of a daemon. A subclass builds its driver, mode and policy slot, calls
    ``super().__init__`` and implements ``_serve`` (its main work until ``stop()``) and ``_apply_hold``;
    it may extend ``_bind`` (sockets of its own), ``_faults``, ``_gauges``, ``_status``, ``_each_second``."""

    name = "daemon"

    def __init__(self, cfg: EdgeConfig, driver: SerialDriver, slot: PolicySlot | None, *, nominal_period_s: float,
                 stats: SchedulerStats | None = None, ops: dict[str, PushOp] | None = None) -> None:
        self.cfg, self.driver, self.slot = cfg, driver, slot
        with starting("host-link key file"):
            self.keyring: Keyring = load_keyring(cfg.hostlink.key_file)  # refuses a world-readable key file
        check_writable_dir(cfg.recorder.path.parent, "recorder directory")
        self.documents: Any = None  # controller.document_stream.DocumentStream, opened with the recorder
        if cfg.recorder.documents is not None:
            check_writable_dir(cfg.recorder.documents, "recorder documents directory", create=True)
            # the optional extra, checked before anything starts (without importing it into the daemon's process)
            if missing := [m for m in ("event_model", "h5py") if importlib.util.find_spec(m) is None]:
                raise StartupError(f"[recorder] documents: event-model documents need the optional extra `docs` "
                                   f"(pip install -e '.[docs]' in a checkout): no module {', '.join(missing)}")
        if slot is not None:
            check_writable_dir(cfg.policy.dir, "policy directory", create=True)
        if (problem := tty_problem(cfg.device.port)) is not None:
            raise StartupError(f"device port: {problem}")
        self.supervisor = Supervisor()
        self.recorder: Recorder | None = None  # opened by run(), after the sockets are bound
        self.held = False
        self.device_faults = 0
        self.push = PushServer(cfg.policy, self.keyring, slot, nominal_period_s=nominal_period_s,
                               max_clock_skew_s=cfg.hostlink.max_clock_skew_s, replay_window=cfg.hostlink.replay_window,
                               record=self.record,
                               ops={"hold": self._hold_op, "resume": self._resume_op, "status": self._status_op,
                                    **(ops or {})})
        self.metrics = Metrics(stats) if cfg.metrics.enabled else None
        self.watchdog = Watchdog(stats, dead=self.supervisor.dead)
        self._stop = asyncio.Event()

    def record(self, kind: str, details: dict[str, Any] | None = None, tick: int | None = None,
               images: dict[str, Any] | None = None) -> None:
        """A recorder event (dropped before the recorder opens); a scan or episode also goes to the live documents,
        with ``images`` (arrays the recorder does not keep: controller/documents.py)."""
        if self.recorder is not None:
            t_ns = time.monotonic_ns()
            recorded = self.recorder.record_event(kind, details, tick, t_ns=t_ns)  # None: refused
            if recorded is not None and self.documents is not None and kind in RUN_EVENTS:
                self.documents.run(kind, recorded, t_ns, images or {})  # numbered by the recorder: the same uid

    @property
    def wants_images(self) -> bool:
        """With live documents (ModeHost.wants_images)."""
        return self.cfg.recorder.documents is not None

    def stop(self) -> None:
        self._stop.set()

    # -- lifecycle -------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Start, serve until ``stop()`` (SIGTERM/SIGINT), shut down. Raises StartupError (nothing left
        running) or Fatal (the main work died)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        undo = Undo()
        up = False
        try:
            await self._start(undo)
            up = True
            self._log_up()
            notify("READY=1", "STATUS=running")
            if not self._stop.is_set():
                await self._serve()
        except StartupError:
            raise
        except Exception as e:
            log.critical("%s died, stopping for a restart: %s", self.name, describe(e))
            raise Fatal(str(e)) from e
        finally:
            if up:
                notify("STOPPING=1")
            await undo.run()
            if up:
                self._log_stopped()

    async def _start(self, undo: Undo) -> None:
        await self._bind(undo)
        cfg = self.cfg
        if self.metrics is not None:
            with starting(f"metrics server on {cfg.metrics.host}:{cfg.metrics.port}"):
                self.metrics.start(cfg.metrics.host, cfg.metrics.port)
            undo.add("metrics server", self.metrics.stop)
        with starting(f"recorder {cfg.recorder.path}"):
            self.recorder = Recorder.open(cfg.recorder.path, batch_rows=cfg.recorder.batch_rows,
                                          flush_ms=cfg.recorder.flush_ms, max_bytes=cfg.recorder.max_bytes,
                                          max_age_days=cfg.recorder.max_age_days,
                                          retention_check_s=cfg.recorder.retention_check_s)
        undo.add("recorder", self._close_recorder)
        self._open_session()
        if self.slot is not None:
            undo.add("policy slot", self.slot.close)
            with starting("policy validator process"):
                self.slot.start_validator()
        undo.add("device", self.driver.close)
        undo.add("actuators to safe", self._actuators_safe)
        sup = self.supervisor
        sup.spawn("recorder-writer", self.recorder.keep_writing)
        if self.metrics is not None:
            sup.spawn("metrics-server", self.metrics.keep_serving)
        sup.spawn("device", self.driver.keep_connected)
        sup.spawn("housekeeping", self._housekeeping)
        sup.spawn("policy-restore", self.push.restore)
        for name, task in self._network_tasks():
            sup.spawn(name, task)
        undo.add("model-push server: stop listening", self.push.stop_listening)  # no request once the rest goes down
        undo.add("supervised tasks", sup.close)

    async def _bind(self, undo: Undo) -> None:
        """Bind the sockets (subclasses add theirs before calling this)."""
        p = self.cfg.policy
        with starting(f"model-push server on {p.push_host}:{p.push_port}"):
            await self.push.start()
        undo.add("model-push server", self.push.close)  # after a full start: only what stop_listening() left

    def _network_tasks(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        """The network's long-lived tasks to supervise: the push server's (the MEMS daemon adds the host link's)."""
        return [("push-server", self.push.serve_forever)]

    def _open_session(self) -> None:
        """The "session" event (wall and monotonic clocks together, the mode: what documents' times derive from)
        and, with ``[recorder] documents``, the live document stream fed by the recorder's writer thread."""
        rec, cfg = self.recorder, self.cfg
        assert rec is not None
        mono, wall = time.monotonic_ns(), time.time_ns()
        rec.record_event("session", {"wall_ns": wall, "mode": cfg.loop.mode}, t_ns=mono)
        if cfg.recorder.documents is not None:
            from controller.document_stream import DocumentStream, Session

            self.documents = DocumentStream(cfg.recorder.documents, Session(rec.session, os.getpid(), rec.started_wall_ns,
                                                                           wall - mono, cfg.loop.mode))
            rec.on_commit = self.documents.ticks

    def _close_recorder(self) -> None:
        """The push port's last refusal summary and the stop event, then close the session (and its documents)."""
        assert self.recorder is not None
        self.push.refusals.flush()
        self.recorder.record_event("stop", self._stop_details())
        self.recorder.close()
        if self.documents is not None:
            self.documents.close()

    async def _actuators_safe(self) -> None:
        """Before the device goes down (subclasses: write the safe command, halt the stage)."""

    def _log_up(self) -> None: ...

    def _log_stopped(self) -> None: ...

    def _stop_details(self) -> dict[str, Any]:
        return {}

    async def _serve(self) -> None:
        raise NotImplementedError

    # -- housekeeping and metrics ----------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        """Once a second, off the main path: metrics, the subclass's checks, the systemd watchdog."""
        seconds = 0
        while True:
            await asyncio.sleep(1.0)
            seconds += 1
            if self.metrics is not None:
                rec = self.recorder
                self.metrics.update(faults=self._faults(), held=self.held,
                                    recorder_alarm=rec is not None and rec.alarm, **self._gauges())
            self._each_second(seconds)
            self.watchdog.maybe_ping(time.monotonic_ns())

    def _each_second(self, seconds: int) -> None: ...

    def _gauges(self) -> dict[str, Any]:
        return {}

    def _faults(self) -> dict[str, int]:
        """Fault counts by kind for the metrics (docs/metrics.md): device and serial, model-push refusals,
        policy-slot faults (not its traffic), recorder losses, supervised-task restarts."""
        d, rec = self.driver, self.recorder
        out = {"device": self.device_faults, "serial_rejected": d.decoder.rejected,
               "serial_frames_missed": d.decoder.seq_gaps, "serial_write_dropped": d.stats.write_dropped,
               "serial_chunk_rejected": d.decoder.chunk_rejected, "serial_wrong_device": d.stats.wrong_device,
               **{f"push_{k}": v for k, v in self.push.counters.items()},
               **{f"task_restart:{k}": v for k, v in self.supervisor.restarts.items()}}
        if self.slot is not None:
            out.update({f"policy_{k}": v for k, v in self.slot.counters.items() if k not in TRAFFIC})
        if rec is not None:
            out.update(recorder_dropped=rec.dropped, recorder_write_failed=rec.write_failed, recorder_bad=rec.bad,
                       recorder_events_failed=rec.events_failed, recorder_events_bad=rec.events_bad)
        if self.documents is not None:
            out.update(documents_dropped=self.documents.dropped, documents_failed=self.documents.failed)
        return out

    def _on_device_link(self, up: bool, reason: str) -> None:
        self.record("device", {"up": up, "reason": reason})
        if not up:
            self.device_faults += 1

    # -- push-channel ops: hold, resume, status --------------------------------------------------------

    async def _hold_op(self, header: PushHeader) -> dict[str, Any]:
        return await self._set_hold(True)

    async def _resume_op(self, header: PushHeader) -> dict[str, Any]:
        return await self._set_hold(False)

    async def _set_hold(self, held: bool) -> dict[str, Any]:
        changed, self.held = self.held != held, held
        if changed:
            log.warning("operator %s", "hold: actuators to the safe command" if held else "resume")
            self.record("hold", {"held": held})
            await self._apply_hold(held)
        return {"accepted": True, "reason": "held" if held else "resumed", "held": held, "changed": changed}

    async def _apply_hold(self, held: bool) -> None:
        raise NotImplementedError

    async def _status_op(self, header: PushHeader) -> dict[str, Any]:
        return {"accepted": True, "reason": "ok", "mode": self.cfg.loop.mode, "held": self.held,
                **self.push.status(), **self._status()}

    def _status(self) -> dict[str, Any]:
        return {}
