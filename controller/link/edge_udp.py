"""The edge end of the host link: UDP (asyncio-dgram), HMAC-SHA256 datagrams (docs/hostlink.md).

``start()`` binds the socket; the daemon's Supervisor runs ``receive_forever()`` and ``watch_forever()``.
The receive task authenticates each datagram and checks its freshness (controller.link.auth.decode)
before anything else; a refused datagram is dropped and counted by kind, never answered, and never moves
the telemetry destination. A fresh authenticated host → edge message is answered (Pong, Ack), makes its
sender the telemetry destination, and its command goes to a bounded ``Mailbox`` that the tick polls at
its boundary (never waiting). Telemetry and replies are sent with a non-blocking ``sendto``; a send that
would block is dropped and counted. The watchdog marks the link "lost" after ``silence_timeout_s``
without a valid datagram and posts ``LinkChange(up=False, gains=baseline)`` (the next valid datagram
posts ``LinkChange(up=True)``), persists the replay state (a failed write is counted and retried, never
fatal), and once a second reads the kernel's drop count for the socket. Drops and write failures are
logged as rate-limited summaries.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Callable, Literal

import asyncio_dgram

from controller.config import GainEnvelope, HostLinkConfig, PidConfig, Range
from controller.link.auth import (
    Ack, AxisGains, BadVersion, Gains, HostLinkError, Keyring, Ping, Pong, ReplayGuard, SetGains, Signer, Telemetry,
    decode, version_notice, wall_us, write_state,
)
from controller.modes.mems import gain_sets
from controller.ratelog import Summary

log = logging.getLogger(__name__)
REPORT_S = 10.0  # at most one log line per this about dropped datagrams, and about failed state writes
KERNEL_DROPS_S = 1.0  # how often the watchdog reads the kernel's drop count


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
    """The gains the host may set nearest to ``gains``: (P, I) of each axis into the envelope's gain set (P into
    the set's range, I ≤ I_max(P): controller/modes/mems/gain_sets.py), then every term into the envelope's box
    (the configured limits hold last). Returns (clamped gains, whether anything changed). Every path that sets
    gains from outside the edge calls this."""

    def c(v: float, r: Range) -> float:
        return min(max(v, r.min), r.max)

    axes = []
    for axis, (g, e) in enumerate(((gains.x, env.x), (gains.y, env.y))):
        kp, ki = c(g.kp, e.kp), g.ki
        if env.gain_set != "box":
            p_min, p_max, i_max = gain_sets.limit(env.gain_set, axis, kp)
            kp = min(max(kp, p_min), p_max)
            ki = min(ki, i_max)
        axes.append(AxisGains(c(kp, e.kp), c(ki, e.ki), c(g.kd, e.kd)))
    out = Gains(*axes)
    return out, out != gains


class HostLink:
    """UDP endpoint on the edge. ``await start()``, run ``receive_forever()`` and ``watch_forever()``
    (supervised), poll ``mailbox`` each tick, ``await close()``."""

    def __init__(self, cfg: HostLinkConfig, keyring: Keyring, baseline: Gains,
                 *, clock: Callable[[], int] = wall_us) -> None:
        self.cfg, self.keyring, self.baseline, self.clock = cfg, keyring, baseline, clock
        self.guard = ReplayGuard(cfg.replay_window, cfg.max_clock_skew_s, clock)
        self.mailbox = Mailbox(cfg.mailbox_size)
        self.counters: Counter[str] = Counter()  # rx_ok, drop kinds, tx_dropped, tx_error, link_lost ...
        self.state: Literal["idle", "up", "lost"] = "idle"
        self.drops = Summary(self._report_drops, REPORT_S)
        self.state_errors = Summary(self._report_state_errors, REPORT_S)
        self._host: tuple[str, int] | None = None  # where replies and telemetry go
        self._signers: dict[int, Signer] = {}
        self._host_key: int | None = None
        self._last_rx = 0.0
        self._last_notice = float("-inf")  # monotonic, of the last version notice
        self._stream: asyncio_dgram.DatagramServer | None = None
        self._sock: socket.socket | None = None

    async def start(self) -> None:
        """Load the gain set's table and the replay state, and bind (a missing or bad table or a corrupt state
        file raises ValueError; a bind error OSError)."""
        if self.cfg.envelope.gain_set != "box":
            gain_sets.table(self.cfg.envelope.gain_set)  # read once: never first on the receive path
        self.guard.load(self.cfg.state_file)
        family, _, _, _, addr = socket.getaddrinfo(self.cfg.host, self.cfg.port, type=socket.SOCK_DGRAM)[0]
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._sock.setblocking(False)
            self._sock.bind(addr)
        except OSError:
            self._sock.close()
            raise
        self._stream = await asyncio_dgram.from_socket(self._sock)  # we keep the socket for sendto

    @property
    def address(self) -> tuple[str, int]:
        assert self._stream is not None, "start() first"
        return self._stream.sockname[:2]

    async def close(self) -> None:
        """Close the socket and persist the replay state (after the supervised tasks are cancelled)."""
        if self._stream is not None:
            self._stream.close()
        self._sock = None  # the stream closes it
        try:
            self.guard.save(self.cfg.state_file)
        except OSError as e:
            self._state_write_failed(e)
        self.drops.flush()
        self.state_errors.flush()

    def wants_telemetry(self, tick: int) -> bool:
        """True on decimated ticks while a host is listening (cheap; call every tick)."""
        return self.state == "up" and tick % self.cfg.telemetry_decimation == 0

    def send_telemetry(self, t: Telemetry) -> None:
        if self._host_key is not None:
            self._send(t, self._host_key)

    def _notify_version(self, addr: tuple[str, int]) -> None:
        """Tell a sender of another protocol version which one this edge speaks (3 bytes, at most one a second)."""
        now = time.monotonic()
        if self._sock is None or now - self._last_notice < 1.0:
            return
        self._last_notice = now
        try:
            self._sock.sendto(version_notice(), addr)
            self.counters["version_notice"] += 1
        except OSError:
            self.counters["tx_dropped"] += 1

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

    async def receive_forever(self) -> None:
        """Receive and handle datagrams until the socket is closed (a supervised task)."""
        assert self._stream is not None, "start() first"
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
        except HostLinkError as e:  # dropped: no reply, the telemetry destination stays
            self.counters[e.kind] += 1
            self.drops.add(e.kind)
            if isinstance(e, BadVersion):
                self._notify_version(addr)
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
            gains, clamped = self.post_gains(msg.gains)
            self._send(Ack(env.seq, gains, clamped), env.key_id)
            return
        self.mailbox.post(msg)  # SetTarget and later commands: applied at the tick boundary
        self._send(Ack(env.seq), env.key_id)

    def post_gains(self, gains: Gains) -> tuple[Gains, bool]:
        """Clamp requested gains into the envelope and post them for the tick boundary: the one path for every
        host-set gain (the host link's SetGains, the EPICS Gains-SP). Returns (gains posted, whether clamped)."""
        out, clamped = clamp_gains(gains, self.cfg.envelope)
        self.counters["gains_clamped"] += int(clamped)
        self.mailbox.post(SetGains(out))
        return out, clamped

    async def watch_forever(self) -> None:
        """Link-loss watchdog, replay-state persistence, kernel drop count (a supervised task)."""
        period = min(self.cfg.silence_timeout_s / 4, 0.5)
        next_drops = 0.0
        while True:
            await asyncio.sleep(period)
            if self.state == "up" and time.monotonic() - self._last_rx > self.cfg.silence_timeout_s:
                self.state = "lost"
                self.counters["link_lost"] += 1
                self.mailbox.post(LinkChange(up=False, gains=self.baseline))
            if self.guard.dirty:  # persist replay state off the loop
                try:
                    await asyncio.to_thread(write_state, self.cfg.state_file, self.guard.snapshot())
                except OSError as e:
                    self._state_write_failed(e)
            if time.monotonic() >= next_drops:
                next_drops = time.monotonic() + KERNEL_DROPS_S
                if (dropped := await asyncio.to_thread(self.kernel_drops)) is not None:
                    self.counters["rx_kernel_dropped"] = dropped
                self.drops.tick()
                self.state_errors.tick()

    def _state_write_failed(self, e: OSError) -> None:
        self.guard.dirty = True  # retried at the next watchdog period
        self.counters["state_write_error"] += 1
        self.state_errors.add(str(e))

    def kernel_drops(self) -> int | None:
        """Datagrams the kernel dropped on this socket (receive buffer full), from the ``drops`` column of
        /proc/net/udp (udp6) for the socket's inode; None where unavailable."""
        if (sock := self._sock) is None:
            return None
        table = "/proc/net/udp6" if sock.family == socket.AF_INET6 else "/proc/net/udp"
        try:
            inode = str(os.fstat(sock.fileno()).st_ino)
            with open(table, encoding="ascii") as f:
                next(f)  # column names
                for line in f:
                    cols = line.split()  # sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref ptr drops
                    if cols[9] == inode:
                        return int(cols[12])
        except (OSError, ValueError, IndexError, StopIteration):
            return None
        return None

    def _report_drops(self, counts: dict[str, int], seconds: float) -> None:
        log.warning("host link: dropped %d datagram(s) in %.0f s (%s)", sum(counts.values()), seconds,
                    ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))

    def _report_state_errors(self, counts: dict[str, int], seconds: float) -> None:
        log.error("host link: cannot persist the replay state to %s (%d failure(s) in %.0f s; retrying): %s",
                  self.cfg.state_file, sum(counts.values()), seconds, "; ".join(counts))
