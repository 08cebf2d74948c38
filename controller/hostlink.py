"""The edge end of the host link: UDP (asyncio-dgram), HMAC-SHA256 datagrams (docs/hostlink.md).

The receive task authenticates each datagram (controller.hostlink_wire), counts drops by kind, answers
pings and acknowledges commands, and posts valid commands to a bounded ``Mailbox`` that the tick
polls at its boundary (never waiting). Telemetry and replies are sent with a non-blocking ``sendto``;
a send that would block is dropped and counted. A watchdog marks the link "lost" after
``silence_timeout_s`` without a valid datagram and posts ``LinkChange(up=False, gains=baseline)``;
the next valid datagram posts ``LinkChange(up=True)``.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Callable, Literal

import asyncio_dgram

from controller.config import GainEnvelope, HostLinkConfig, PidConfig, Range
from controller.hostlink_wire import (
    Ack, AxisGains, Err, Gains, HostLinkError, Keyring, Ping, Pong, ReplayGuard, SetGains, Signer,
    Telemetry, decode, wall_us, write_state,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinkChange:
    """Posted when the link state changes; ``gains`` (baseline) is set when it was lost."""

    up: bool
    gains: Gains | None = None


class Mailbox:
    """Bounded hand-over from the network task to the tick; when full the oldest item is dropped."""

    def __init__(self, size: int) -> None:
        self._items: deque[Any] = deque(maxlen=size)
        self.overflow = 0

    def post(self, item: Any) -> None:
        if len(self._items) == self._items.maxlen:
            self.overflow += 1
        self._items.append(item)

    def poll(self) -> Any | None:
        """The oldest item, or None; never blocks (call in a loop at the tick boundary)."""
        return self._items.popleft() if self._items else None


def baseline_gains(pid: PidConfig) -> Gains:
    return Gains(AxisGains(pid.x.kp, pid.x.ki, pid.x.kd), AxisGains(pid.y.kp, pid.y.ki, pid.y.kd))


def clamp_gains(gains: Gains, env: GainEnvelope) -> tuple[Gains, bool]:
    """Clamp every axis/term into the envelope; returns (clamped gains, whether anything changed)."""

    def c(v: float, r: Range) -> float:
        return min(max(v, r.min), r.max)

    out = Gains(*(AxisGains(c(g.kp, e.kp), c(g.ki, e.ki), c(g.kd, e.kd))
                  for g, e in ((gains.x, env.x), (gains.y, env.y))))
    return out, out != gains


class HostLink:
    """UDP endpoint on the edge. ``await start()``, poll ``mailbox`` each tick, ``await close()``."""

    def __init__(self, cfg: HostLinkConfig, keyring: Keyring, baseline: Gains,
                 *, clock: Callable[[], int] = wall_us) -> None:
        self.cfg, self.keyring, self.baseline, self.clock = cfg, keyring, baseline, clock
        self.guard = ReplayGuard(cfg.replay_window, cfg.max_clock_skew_s, clock)
        self.mailbox = Mailbox(cfg.mailbox_size)
        self.counters: Counter[str] = Counter()  # rx_ok, drop kinds, tx_dropped, tx_error, link_lost ...
        self.state: Literal["idle", "up", "lost"] = "idle"
        self._host: tuple[str, int] | None = None  # where replies and telemetry go
        self._signers: dict[int, Signer] = {}
        self._host_key: int | None = None
        self._last_rx = 0.0
        self._stream: asyncio_dgram.DatagramServer | None = None
        self._sock: socket.socket | None = None
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        self.guard.load(self.cfg.state_file)
        family, _, _, _, addr = socket.getaddrinfo(self.cfg.host, self.cfg.port, type=socket.SOCK_DGRAM)[0]
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._sock.bind(addr)
        self._stream = await asyncio_dgram.from_socket(self._sock)  # we keep the socket for sendto
        self._tasks = [asyncio.create_task(self._receive()), asyncio.create_task(self._watchdog())]

    @property
    def address(self) -> tuple[str, int]:
        assert self._stream is not None, "start() first"
        return self._stream.sockname[:2]

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._stream is not None:
            self._stream.close()
        self.guard.save(self.cfg.state_file)

    def wants_telemetry(self, tick: int) -> bool:
        """True on decimated ticks while a host is listening (cheap; call every tick)."""
        return self.state == "up" and tick % self.cfg.telemetry_decimation == 0

    def send_telemetry(self, t: Telemetry) -> None:
        if self._host_key is not None:
            self._send(t, self._host_key)

    def _send(self, msg: Any, key_id: int) -> None:
        """Non-blocking: a datagram that cannot be sent right now is dropped and counted."""
        if self._sock is None or self._host is None:
            return
        signer = self._signers.get(key_id)
        if signer is None:
            signer = self._signers[key_id] = Signer(self.keyring, key_id, self.clock)
        try:
            self._sock.sendto(signer.seal(msg), self._host)
            self.counters["tx_ok"] += 1
        except (BlockingIOError, InterruptedError):
            self.counters["tx_dropped"] += 1
        except OSError:
            self.counters["tx_error"] += 1

    async def _receive(self) -> None:
        assert self._stream is not None
        while True:
            try:
                data, addr = await self._stream.recv()
            except asyncio_dgram.TransportClosed:
                return
            except OSError:  # e.g. an ICMP error reported on the socket
                self.counters["socket_error"] += 1
                continue
            try:
                self.handle(data, addr)
            except Exception:  # a bug must not take the link down: count and log it
                self.counters["internal_error"] += 1
                log.exception("host link: error handling a datagram from %s", addr)

    def handle(self, data: bytes, addr: tuple[str, int]) -> None:
        """Process one datagram (public for tests and for a daemon feeding its own socket)."""
        try:
            env = decode(data, self.keyring, self.guard, expect="to_edge")
        except HostLinkError as e:
            self.counters[e.kind] += 1
            if e.seq is not None and e.key_id is not None:  # authenticated but refused: tell the host
                self._host = addr
                self._send(Err(e.seq, str(e)[:200]), e.key_id)
            return
        self.counters["rx_ok"] += 1
        self._last_rx = time.monotonic()
        self._host, self._host_key = addr, env.key_id
        if self.state != "up":
            self.state = "up"
            self.mailbox.post(LinkChange(up=True))
        msg = env.msg
        if isinstance(msg, Ping):
            self._send(Pong(msg.nonce), env.key_id)
            return
        if isinstance(msg, SetGains):
            gains, clamped = clamp_gains(msg.gains, self.cfg.envelope)
            self.counters["gains_clamped"] += int(clamped)
            self.mailbox.post(SetGains(gains))
            self._send(Ack(env.seq, gains, clamped), env.key_id)
            return
        self.mailbox.post(msg)  # SetTarget and later commands: applied at the tick boundary
        self._send(Ack(env.seq), env.key_id)

    async def _watchdog(self) -> None:
        period = min(self.cfg.silence_timeout_s / 4, 0.5)
        while True:
            await asyncio.sleep(period)
            if self.state == "up" and time.monotonic() - self._last_rx > self.cfg.silence_timeout_s:
                self.state = "lost"
                self.counters["link_lost"] += 1
                self.mailbox.post(LinkChange(up=False, gains=self.baseline))
            if self.guard.dirty:  # persist replay state off the loop
                await asyncio.to_thread(write_state, self.cfg.state_file, self.guard.snapshot())
