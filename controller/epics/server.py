"""The daemon's Channel Access server: caproto's asyncio server on the daemon's event loop (docs/epics.md).

``EpicsServer(daemon)``: the PVs of the daemon's mode (controller/epics/pvs.py), ``start()`` checks the address,
``serve_forever()`` (a supervised network task) runs the caproto ``Context`` with the ``Publisher`` as its startup
hook. Nothing of caproto runs on the tick path: the tick writes a ``LoopSnapshot`` (controller/epics/snapshot.py)
and the publisher posts from it, and from the daemon's state, at ≤ ``rate_hz`` with deadbands.

Set points (``DaemonBridge``) take the host link's path into the loop: a target is a ``SetTarget`` (the host
link's validation: finite floats) and gains go through ``HostLink.post_gains`` (the envelope clamp), both posted
into the host link's mailbox that the tick polls at its boundary; scans start and abort through the mode's push
ops. A target put returns once the loop has settled there (``LoopSnapshot``) and fails after
``settle_timeout_s`` (or at once under an operator hold, or when a later target supersedes it); a gains put
returns the gains in force (clamped) once a tick has applied them. Before a put completes the read-backs are
posted, so a client reading right after the put-callback sees its effect.

Channel Access has no authentication (threat model: docs/hostlink.md). ``BoundedContext``/``BoundedCircuit``
bound what one peer can make the server do: connections (``max_connections``: more are closed at once, never
answered), per connection the channels, subscriptions, queued requests and buffered request bytes (one more
closes the connection), a connection that opens no channel within ``handshake_timeout_s`` is closed, and at most
``max_pending_puts`` set-point puts are in flight. Writes are refused unless ``writes = true`` and the client's
self-reported host name is in ``write_hosts``. Every refusal is counted (the daemon's fault metrics ``epics_*``)
and logged as a rate-limited summary; caproto's own per-write traceback for a refused or failed put is filtered
out (the bridge logs one line instead).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterator

import numpy as np
from caproto import (
    AccessRights, CAStatus, CreateChanRequest, EventAddRequest, Forbidden, RemoteProtocolError, WriteNotifyRequest,
)
from caproto.asyncio.server import Context, VirtualCircuit
from caproto.asyncio.utils import _TransportWrapper
from caproto.server import common as caproto_common
from caproto.server.common import DisconnectedCircuit

from controller.config import EpicsConfig
from controller.epics.pvs import MAX_SUMMARY, EdgePVGroup, LoopPVs, MemsPVs, ScanPVs
from controller.epics.snapshot import LoopSnapshot
from controller.link.auth import Gains, SetTarget
from controller.link.push_wire import PushHeader
from controller.modes.acquisition import AcquisitionSession
from controller.modes.mems.stabilize import StabilizeMode
from controller.ratelog import Summary

if TYPE_CHECKING:
    from controller.daemon import Daemon

log = logging.getLogger("edgetune.epics")
REPORT_S = 10.0  # at most one log line per this about refusals
START_TIMEOUT_S = 5.0  # the server must have bound its ports within this
STATS_S = 1.0
SPREAD_FRACTION = 0.15  # of a tick period: the publisher's posts in one go between two ticks  # tick rate and lateness p99 are computed over windows of this
MAX_STRING = 39  # DBR_STRING: 40 bytes with the terminating NUL
SCAN_STATE = {"idle": "Idle", "done": "Done", "aborted": "Aborted", "failed": "Failed"}


class _QuietCaproto(logging.Filter):
    """Drop caproto's traceback for a put that raised (a refused write, a failed move: the bridge logs those), for
    a beacon nobody receives (no CA repeater on the beacon port: ICMP port unreachable, every beacon period), and
    its "High load. Batched" line per batch of monitor updates sent late (a busy loop or a slow client would fill
    the log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Invalid write request", "Failed to send beacon", "High load. Batched"))


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
    """The daemon side of the PVs (controller/epics/pvs.py ``Bridge``): access, and the set points' path."""

    def __init__(self, daemon: Daemon, cfg: EpicsConfig, snapshot: LoopSnapshot | None) -> None:
        self.d, self.cfg, self.snapshot = daemon, cfg, snapshot
        self.counters: Counter[str] = Counter()
        self.refusals = Summary(self._report, REPORT_S)
        self._last_refused = ""
        self._pending = 0
        self._target: tuple[float, float] | None = None  # the latest target put, while one is in flight
        self._target_seq = 0
        self.publish: Callable[[], Awaitable[None]] | None = None  # the publisher's, set by EpicsServer

    async def _published(self) -> None:
        """Post the read-backs now, so a client reading right after a put's completion sees its effect."""
        if self.publish is not None:
            await self.publish()

    # -- access -----------------------------------------------------------------------------------

    def access(self, host: str | None) -> AccessRights:
        if self.cfg.writes and host is not None and host in self.cfg.write_hosts:
            return AccessRights.READ | AccessRights.WRITE
        return AccessRights.READ

    def refused(self, host: str | None, pv: str) -> None:
        """A write the access rules refused (answered ECA_NOWTACCESS; a put without a callback: an error message)."""
        self.counters["write_refused"] += 1
        self._last_refused = repr(host)[:64]
        self.refusals.add(f"write_refused:{pv}")

    def refuse(self, kind: str) -> None:
        """A connection closed or a request refused by the limits (BoundedContext/BoundedCircuit)."""
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
                            await self._published()
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
            self._tick_mode()
            v = np.asarray(values, dtype=np.float64).ravel()
            if v.shape != (6,):
                raise ValueError(f"Gains-SP takes 6 values (kp_x, ki_x, kd_x, kp_y, ki_y, kd_y), got {v.size}")
            posted, clamped = self.d.hostlink.post_gains(Gains.from_rows(v.reshape(2, 3).tolist()))
            if clamped:
                self.counters["gains_clamped"] += 1
            try:
                async with asyncio.timeout(self.cfg.apply_timeout_s):
                    await self.snapshot.next_tick()  # type: ignore[union-attr]
            except TimeoutError:
                raise TimeoutError(f"no tick applied the gains within {self.cfg.apply_timeout_s:g} s") from None
            await self._published()
            return [float(g) for row in posted.rows() for g in row]

    def _session(self) -> AcquisitionSession:
        if not isinstance(self.d.mode, AcquisitionSession):
            raise RuntimeError(f"mode {self.d.cfg.loop.mode!r} runs no scans")
        return self.d.mode

    async def start_scan(self) -> None:
        """One scan with the mode's configured defaults (the push op ``scan``); returns when it has ended."""
        with self._put("scan"):
            reply = await self._session().ops()["scan"](PushHeader(op="scan"))
            await self._published()
            if not reply["accepted"]:
                raise RuntimeError(f"scan refused: {reply['reason']}: {reply.get('detail', '')}")

    async def abort_scan(self) -> None:
        with self._put("abort"):
            await self._session().ops()["abort"](PushHeader(op="abort"))
            await self._published()


class Publisher:
    """Posts the read-backs at ``rate_hz`` (caproto's startup hook), each only when it changed by more than its
    deadband; tick rate, lateness p99 and overruns once per ``STATS_S``."""

    def __init__(self, group: EdgePVGroup, daemon: Daemon, cfg: EpicsConfig, snapshot: LoopSnapshot | None) -> None:
        self.group, self.d, self.cfg, self.snapshot = group, daemon, cfg, snapshot
        self.deadband = {"x": cfg.deadband_px, "y": cfg.deadband_px, "target_x": cfg.deadband_px,
                         "target_y": cfg.deadband_px, "error": cfg.deadband_px, "tick_rate": cfg.deadband_hz,
                         "lateness_p99": cfg.deadband_us}
        self.last: dict[str, Any] = {}
        self.posts = 0
        self._stats: dict[str, Any] = {"tick_rate": 0.0, "lateness_p99": 0.0, "overruns": 0}
        self._seen_ticks, self._seen_lateness, self._stats_t = 0, 0, time.monotonic()

    async def run(self, async_lib: Any = None) -> None:
        mode, pvs = self.d.mode, self.group.attr_pvdb
        if isinstance(mode, StabilizeMode):  # the set points start at what is in force (not 0)
            await pvs["target_x_sp"].write(float(mode.target[0]), verify_value=False)
            await pvs["target_y_sp"].write(float(mode.target[1]), verify_value=False)
            await pvs["gains_sp"].write(mode.gains.ravel().tolist(), verify_value=False)
        period = 1.0 / self.cfg.rate_hz
        next_t = time.monotonic()
        while True:
            await self.publish(spread=True)
            next_t = max(next_t + period, time.monotonic())  # no burst to catch up after a stall
            await asyncio.sleep(next_t - time.monotonic())
            if self.snapshot is not None:  # a tick mode: post right after a tick, between ticks (not one waking late)
                await self._after_tick()

    async def publish(self, spread: bool = False) -> None:
        """Post what changed. ``spread`` (the periodic posts of a tick mode): when the posts so far took
        ``SPREAD_FRACTION`` of a tick period, the rest wait for the next tick, so that no burst reaches the next
        tick's deadline (a put's completion posts at once)."""
        pvs, snap = self.group.attr_pvdb, self.snapshot
        budget_s = SPREAD_FRACTION * self.d.scheduler.period_ns * 1e-9 if spread and snap is not None else math.inf
        t0 = time.perf_counter()
        for attr, value in [(a, v) for a, v in self.values().items() if self._changed(a, v)]:
            if time.perf_counter() - t0 > budget_s:
                await self._after_tick()
                t0 = time.perf_counter()
            self.last[attr] = value
            await pvs[attr].write(value, verify_value=False)
            self.posts += 1

    async def _after_tick(self) -> None:
        """Return right after the next tick (or after one publishing period without a tick)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0 / self.cfg.rate_hz):
                await self.snapshot.next_tick()  # type: ignore[union-attr]

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
        if stats is None or now - self._stats_t < STATS_S:
            return self._stats
        samples, _ = stats.lateness.since(self._seen_lateness)
        self._seen_lateness = stats.lateness.count
        self._stats = {"tick_rate": (stats.ticks - self._seen_ticks) / (now - self._stats_t),
                       "lateness_p99": float(np.percentile(samples, 99.0)) / 1e3 if samples.size else 0.0,
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


class BoundedCircuit(VirtualCircuit):
    """A CA connection with per-connection limits (module doc)."""

    context: BoundedContext

    def __init__(self, circuit: Any, client: Any, context: BoundedContext) -> None:
        super().__init__(circuit, client, context)
        self.command_queue = asyncio.Queue(context.cfg.max_queued_requests)  # full: caproto closes the circuit

    async def run(self) -> None:
        await super().run()
        self.tasks.create(self._handshake_deadline())

    async def _handshake_deadline(self) -> None:
        await asyncio.sleep(self.context.cfg.handshake_timeout_s)
        if not self.circuit.channels:
            self.context.bridge.refuse("handshake_timeout")
            self.client.close()  # the reader sees EOF: caproto's own disconnect path cleans up

    async def recv(self) -> None:
        await super().recv()
        if len(self.circuit._data) > self.context.cfg.max_request_bytes:  # a partial request buffered (caproto 1.3)
            self._refuse("request_too_large")

    async def _command_queue_iteration(self, command: Any) -> Any:
        cfg = self.context.cfg
        if isinstance(command, CreateChanRequest) and len(self.circuit.channels) >= cfg.max_channels:
            self._refuse("too_many_channels")
        if isinstance(command, EventAddRequest) and sum(map(len, self.subscriptions.values())) >= cfg.max_subscriptions:
            self._refuse("too_many_subscriptions")
        if isinstance(command, WriteNotifyRequest):
            try:
                self.circuit.process_command(command)  # the protocol's state (caproto's path starts so too)
            except RemoteProtocolError:
                return await super()._command_queue_iteration(command)  # caproto's answer to a broken request
            chan, db_entry = self._get_db_entry_from_command(command)
            self.write_event.clear()  # as caproto's own write path: reads wait briefly for the write
            await self._start_write_task(lambda: self._write_notify(command, chan, db_entry))
            return None
        return await super()._command_queue_iteration(command)

    async def _write_notify(self, command: WriteNotifyRequest, chan: Any, db_entry: Any) -> None:
        """A put with a callback. The reply is the put-callback's completion, with the status EPICS' own server
        (rsrv) gives a failed one: ECA_NOWTACCESS when refused, ECA_PUTFAIL when the putter raised (the reason
        is logged by the bridge). caproto 1.3 answers a failed one with an error message instead, which
        caproto's own clients do not match to the put: their put-callback would never complete."""
        status = CAStatus.ECA_NORMAL
        try:
            await db_entry.auth_write(self.client_hostname, self.client_username, command.data, command.data_type,
                                      command.metadata, user_address=self.circuit.address)
        except Forbidden:
            status = CAStatus.ECA_NOWTACCESS
        except Exception:  # noqa: BLE001 — the putter's failure is the put's (counted and logged by the bridge)
            status = CAStatus.ECA_PUTFAIL
        finally:
            self.write_event.set()
        await self.send(chan.write(ioid=command.ioid, status=status, data_count=db_entry.length))

    def _refuse(self, kind: str) -> None:
        self.context.bridge.refuse(kind)
        self.client.close()
        raise DisconnectedCircuit(kind)


class BoundedContext(Context):
    """caproto's asyncio server Context on one interface and port, with the connection cap (module doc)."""

    CircuitClass = BoundedCircuit

    def __init__(self, pvdb: dict[str, Any], cfg: EpicsConfig, bridge: DaemonBridge) -> None:
        super().__init__(pvdb, [cfg.host])
        self.cfg, self.bridge = cfg, bridge
        self.ca_server_port = cfg.port  # caproto reads EPICS_CA_SERVER_PORT; the daemon's config decides

    async def server_accept_loop(self, sock: Any) -> None:
        """caproto 1.3's accept loop, except that it keeps its asyncio server and closes it when the context stops:
        caproto's own returns at once and leaves the listening socket registered with the event loop after closing
        it, so a later file descriptor with its number (a timer, a socket) would never wake the loop."""

        def new_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            transport = _TransportWrapper(reader, writer)
            self.server_tasks.create(self.tcp_handler(transport, transport.getpeername()))

        server = await asyncio.start_server(new_client, sock=sock)
        try:
            await asyncio.Event().wait()  # until the context is cancelled
        finally:
            server.close()
            for circuit in list(self.circuits):  # caproto cancels their tasks only: close their connections too
                circuit.client.close()

    async def tcp_handler(self, client: Any, addr: Any) -> None:
        if len(self.circuits) >= self.cfg.max_connections:
            self.bridge.refuse("connection_refused")
            client.close()  # never answered
            return
        await super().tcp_handler(client, addr)


class EpicsServer:
    """The daemon's PV server (module doc): ``await start()``, supervise ``serve_forever()``, ``close()``."""

    def __init__(self, daemon: Daemon) -> None:
        cfg = self.cfg = daemon.cfg.epics
        mode, mems = daemon.mode, isinstance(daemon.mode, StabilizeMode)
        self.snapshot = LoopSnapshot(cfg.settle_tolerance_px, cfg.settle_ticks) if mems else None
        self.bridge = DaemonBridge(daemon, cfg, self.snapshot)
        group = MemsPVs if mems else ScanPVs if isinstance(mode, AcquisitionSession) else LoopPVs
        self.group = group(cfg.prefix, self.bridge)
        self.publisher = Publisher(self.group, daemon, cfg, self.snapshot)
        self.bridge.publish = self.publisher.publish
        self.context: BoundedContext | None = None
        self.counters = self.bridge.counters
        self._task: asyncio.Task[None] | None = None  # the server started by start(), until serve_forever takes it

    @property
    def pvnames(self) -> list[str]:
        return list(self.group.pvdb)

    @property
    def address(self) -> tuple[str, int]:
        """(host, TCP port) once serving (the UDP search port is ``cfg.port``)."""
        port = self.context.port if self.context is not None else None
        return self.cfg.host, port or self.cfg.port

    async def start(self) -> None:
        """Start serving: return once the search and TCP ports are bound (an OSError names a bind failure: a
        StartupError), so the daemon is "up" only when its PVs can be found. Beacons stay on ``host``; caproto's
        logging is kept to warnings (its per-connection lines at INFO would let any peer fill the log)."""
        cfg = self.cfg
        if cfg.host != "0.0.0.0":  # caproto's beacons default to 255.255.255.255
            os.environ.setdefault("EPICS_CAS_BEACON_ADDR_LIST", cfg.host)
            os.environ.setdefault("EPICS_CAS_AUTO_BEACON_ADDR_LIST", "NO")
        # caproto batches a connection's monitor updates for up to 10 ms after the last one queued; sent at once
        # instead, the sends follow the publisher's burst between two ticks rather than landing on a later tick
        caproto_common.HIGH_LOAD_TIMEOUT = 0.0  # caproto 1.3 reads this module global at each batch
        caproto_log = logging.getLogger("caproto")
        if caproto_log.level == logging.NOTSET:
            caproto_log.setLevel(logging.WARNING)
        for name in ("caproto.circ", "caproto.ctx"):
            if not any(isinstance(f, _QuietCaproto) for f in logging.getLogger(name).filters):
                logging.getLogger(name).addFilter(_QuietCaproto())
        task = self._task = self._run()
        async with asyncio.timeout(START_TIMEOUT_S):
            while not (self.context is not None and self.context.udp_socks):
                if task.done():  # a bind error (caproto raises its own kinds): one line for the StartupError
                    e = task.exception()
                    raise OSError(f"{type(e).__name__}: {e}" if e is not None else "the server ended while starting")
                await asyncio.sleep(0.01)

    def _run(self) -> asyncio.Task[None]:
        self.context = BoundedContext(self.group.pvdb, self.cfg, self.bridge)
        return asyncio.get_running_loop().create_task(self.context.run(startup_hook=self.publisher.run))

    async def serve_forever(self) -> None:
        """Run the caproto server and the publisher until cancelled (a supervised task: a restart serves anew)."""
        task, self._task = self._task or self._run(), None
        await task

    def each_second(self) -> None:
        """Housekeeping: report the refusals gathered since the last summary when its interval is over."""
        self.bridge.refusals.tick()

    async def close(self) -> None:
        """After the supervised tasks: the server start() started, if serve_forever never took it over."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.bridge.refusals.flush()
