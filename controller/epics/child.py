"""The Channel Access process (docs/epics.md): everything caproto runs here, in a process the daemon spawns
(controller/epics/server.py ``EpicsServer``), so that the tick loop's process does no caproto work and its GIL
is the tick's.

``main`` binds the server (``BoundedContext`` with the mode's PVGroup, controller/epics/pvs.py) and reports
("ready", TCP port, PV names) or ("failed", reason) over the pipe (controller/epics/pipe.py); then it writes the
read-backs the daemon sends (("values", {attr: value})), forwards a set point's put, once caproto's access rules
allowed it, as ("put", id, what, kwargs) and completes or fails the client's put-callback with the daemon's
("reply", id, error, result, {attr: value}): the read-backs at the put's end are written first, so a client
reading right after its put-callback sees the put's effect. Its refusal counts go to the daemon once a second
(("counts", {kind: n}, host)). It runs in the normal scheduling class at ``nice`` ([epics], default 0) and ends
when the pipe closes, and with the daemon however that ends (``die_with_parent``).

Channel Access has no authentication (threat model: docs/hostlink.md). ``BoundedContext``/``BoundedCircuit``
bound what one peer can make the server do: connections (``max_connections``: more are closed at once, never
answered), per connection the channels, subscriptions, queued requests and buffered request bytes (one more
closes the connection), and a connection that opens no channel within ``handshake_timeout_s`` is closed. Writes
are refused unless ``writes = true`` and the client's self-reported host name is in ``write_hosts``. caproto's
own per-write traceback for a refused or failed put is filtered out (the daemon logs one line instead).
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import types
from collections import Counter
from typing import TYPE_CHECKING, Any

from caproto import (
    AccessRights, CAStatus, CreateChanRequest, EventAddRequest, Forbidden, RemoteProtocolError, WriteNotifyRequest,
)
from caproto.asyncio.server import Context, VirtualCircuit
from caproto.asyncio.utils import _TransportWrapper
from caproto.server.common import DisconnectedCircuit

from controller.epics.pipe import receive, send
from controller.epics.pvs import EdgePVGroup, LoopPVs, MemsPVs, ScanPVs

if TYPE_CHECKING:
    from controller.config import EpicsConfig

log = logging.getLogger("edgetune.epics")
GROUPS: dict[str, type[EdgePVGroup]] = {"loop": LoopPVs, "mems": MemsPVs, "scan": ScanPVs}
START_TIMEOUT_S = 5.0  # the server must have bound its ports within this
COUNTS_S = 1.0  # refusal counts go to the daemon this often
REPLY_MARGIN_S = 5.0  # a put's reply may come this long after the daemon's own deadline for it


class _QuietCaproto(logging.Filter):
    """Drop caproto's traceback for a put that raised (a refused write, a failed move: the daemon logs those), for
    a beacon nobody receives (no CA repeater on the beacon port: ICMP port unreachable, every beacon period), and
    its "High load. Batched" line per batch of monitor updates sent late (a slow client would fill the log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Invalid write request", "Failed to send beacon", "High load. Batched"))


class ChildBridge:
    """The PVs' ``Bridge`` (controller/epics/pvs.py) in this process: access here, set points in the daemon."""

    def __init__(self, cfg: EpicsConfig, writer: asyncio.StreamWriter) -> None:
        self.cfg, self.writer = cfg, writer
        self.counts: Counter[str] = Counter()  # since the last report to the daemon
        self.last_refused = ""
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[Any]] = {}

    def access(self, host: str | None) -> AccessRights:
        if self.cfg.writes and host is not None and host in self.cfg.write_hosts:
            return AccessRights.READ | AccessRights.WRITE
        return AccessRights.READ

    def refused(self, host: str | None, pv: str) -> None:
        """A write the access rules refused (answered ECA_NOWTACCESS; a put without a callback: an error message)."""
        self.counts[f"write_refused:{pv}"] += 1
        self.last_refused = repr(host)[:64]

    def refuse(self, kind: str) -> None:
        """A connection closed or a request refused by the limits (BoundedContext/BoundedCircuit)."""
        self.counts[kind] += 1

    async def report_counts(self) -> None:
        while True:
            await asyncio.sleep(COUNTS_S)
            if self.counts:
                send(self.writer, ("counts", dict(self.counts), self.last_refused))
                self.counts.clear()

    def reply(self, put_id: int, error: str | None, result: Any) -> None:
        if (f := self._replies.pop(put_id, None)) is not None and not f.done():
            f.set_exception(RuntimeError(error)) if error is not None else f.set_result(result)

    def closed(self) -> None:
        """The daemon is gone: every put in flight fails."""
        for f in self._replies.values():
            if not f.done():
                f.set_exception(RuntimeError("the daemon closed the EPICS pipe"))
        self._replies.clear()

    async def _call(self, what: str, timeout_s: float | None, **kwargs: Any) -> Any:
        """The daemon's answer to a set point (its error: this put's failure); ``timeout_s``: the daemon's own
        deadline for it (None: the scan's end), a margin added."""
        put_id = next(self._ids)
        f = self._replies[put_id] = asyncio.get_running_loop().create_future()
        send(self.writer, ("put", put_id, what, kwargs))
        try:
            async with asyncio.timeout(None if timeout_s is None else timeout_s + REPLY_MARGIN_S):
                return await f
        finally:
            self._replies.pop(put_id, None)

    async def move_target(self, x: float | None = None, y: float | None = None) -> float:
        return await self._call("move_target", self.cfg.settle_timeout_s, x=x, y=y)

    async def set_gains(self, values: Any) -> list[float]:
        return await self._call("set_gains", self.cfg.apply_timeout_s, values=[float(v) for v in values])

    async def start_scan(self) -> None:
        await self._call("start_scan", None)

    async def abort_scan(self) -> None:
        await self._call("abort_scan", None)


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
        is logged by the daemon). caproto 1.3 answers a failed one with an error message instead, which
        caproto's own clients do not match to the put: their put-callback would never complete."""
        status = CAStatus.ECA_NORMAL
        try:
            await db_entry.auth_write(self.client_hostname, self.client_username, command.data, command.data_type,
                                      command.metadata, user_address=self.circuit.address)
        except Forbidden:
            status = CAStatus.ECA_NOWTACCESS
        except Exception:  # noqa: BLE001 — the putter's failure is the put's (counted and logged by the daemon)
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

    def __init__(self, pvdb: dict[str, Any], cfg: EpicsConfig, bridge: ChildBridge) -> None:
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


def _quiet_caproto(cfg: EpicsConfig) -> None:
    """Beacons stay on ``host``; caproto's logging is kept to warnings (its per-connection lines at INFO would let
    any peer fill the log), on stderr (the daemon's)."""
    if cfg.host != "0.0.0.0":  # caproto's beacons default to 255.255.255.255
        os.environ.setdefault("EPICS_CAS_BEACON_ADDR_LIST", cfg.host)
        os.environ.setdefault("EPICS_CAS_AUTO_BEACON_ADDR_LIST", "NO")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("caproto.circ", "caproto.ctx"):
        logging.getLogger(name).addFilter(_QuietCaproto())


async def _bound(ctx: BoundedContext, serving: asyncio.Task[None]) -> None:
    """Return once the search and TCP ports are bound; an OSError names a bind failure (caproto raises its own
    kinds)."""
    async with asyncio.timeout(START_TIMEOUT_S):
        while not ctx.udp_socks:
            if serving.done():
                e = serving.exception()
                raise OSError(f"{type(e).__name__}: {e}" if e is not None else "the server ended while starting")
            await asyncio.sleep(0.01)


async def serve(cfg: EpicsConfig, kind: str, sock: socket.socket) -> None:
    """Bind, report, then serve until the pipe closes or the server ends (module doc)."""
    reader, writer = await asyncio.open_connection(sock=sock)
    bridge = ChildBridge(cfg, writer)
    group = GROUPS[kind](cfg.prefix, bridge)
    ctx = BoundedContext(group.pvdb, cfg, bridge)
    serving = asyncio.get_running_loop().create_task(ctx.run())
    try:
        await _bound(ctx, serving)
    except (OSError, TimeoutError) as e:
        send(writer, ("failed", str(e) or f"the ports were not bound within {START_TIMEOUT_S:g} s"))
        await writer.drain()
        return
    send(writer, ("ready", ctx.port, list(group.pvdb)))
    loop = asyncio.get_running_loop()
    tasks = {serving, loop.create_task(bridge.report_counts()), loop.create_task(_follow(reader, group, bridge))}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)  # the pipe closed, or the server ended
    finally:
        bridge.closed()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _follow(reader: asyncio.StreamReader, group: EdgePVGroup, bridge: ChildBridge) -> None:
    """Apply the daemon's messages until it closes the pipe."""
    pvs = group.attr_pvdb

    async def write(values: dict[str, Any]) -> None:
        for attr, value in values.items():
            await pvs[attr].write(value, verify_value=False)

    while (msg := await receive(reader)) is not None:
        if msg[0] == "values":
            await write(msg[1])
        elif msg[0] == "reply":
            put_id, error, result, readbacks = msg[1:]
            await write(readbacks)
            bridge.reply(put_id, error, result)


def main(section: dict[str, Any], kind: str, sock: socket.socket, parent: int) -> None:
    """The process's entry point (spawned by the daemon: controller/epics/server.py). ``section``: the validated
    [epics] section's fields (as ``EpicsConfig.model_dump()``: not importing the config's parser saves start-up)."""
    from controller.lifeline import die_with_parent, off_loop_priority

    die_with_parent(parent)
    cfg: EpicsConfig = types.SimpleNamespace(**section)  # type: ignore[assignment]
    off_loop_priority(cfg.nice)
    _quiet_caproto(cfg)
    asyncio.run(serve(cfg, kind, sock))
