"""systemd notify protocol (sd_notify(3)): READY, STATUS, STOPPING, WATCHDOG — one datagram each.

No-op when `$NOTIFY_SOCKET` is unset (not started by systemd). The watchdog pings only while the
daemon is healthy: ticks are recent and the overruns in the last interval stay below a threshold (a
daemon with a tick loop), and no supervised task is dead (controller/supervisor.py), so a wedged or
persistently late loop, or a task that keeps dying, is restarted by systemd (WatchdogSec +
Restart=on-failure).
"""
from __future__ import annotations

import logging
import os
import socket

from typing import Callable

from controller.scheduler import SchedulerStats

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        addr = os.environ.get("NOTIFY_SOCKET") if address is None else address
        if addr and addr[0] == "@":  # abstract namespace
            addr = "\0" + addr[1:]
        self.address = addr or None
        self._sock: socket.socket | None = None
        if self.address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)
        self.errors = 0

    def notify(self, *fields: str) -> bool:
        """Send `fields` (e.g. "READY=1", "STATUS=…") as one datagram; False if not sent."""
        if self._sock is None:
            return False
        try:
            self._sock.sendto("\n".join(fields).encode(), self.address)
            return True
        except OSError as e:  # systemd gone or socket full: never fatal to the loop
            self.errors += 1
            log.warning("sd_notify to %r failed: %s", self.address, e)
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


_default: Notifier | None = None


def notify(*fields: str) -> bool:
    """sd_notify through `$NOTIFY_SOCKET` (read once); False when not under systemd."""
    global _default
    if _default is None:
        _default = Notifier()
    return _default.notify(*fields)


def watchdog_interval_s() -> float | None:
    """Half of systemd's WatchdogSec (from $WATCHDOG_USEC, when meant for this process), else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


class Watchdog:
    """Pings WATCHDOG=1 at most every `interval_s`, and only while the daemon is healthy: with `stats` (a tick
    loop), a tick within `max_silence_s` and fewer than `max_overruns` overruns since the previous ping; with
    `dead`, no supervised task dead. Without a watchdog interval (systemd's WatchdogSec unset) it does nothing."""

    def __init__(self, stats: SchedulerStats | None, interval_s: float | None = None, notifier: Notifier | None = None,
                 max_overruns: int = 10, max_silence_s: float = 1.0, dead: Callable[[], list[str]] | None = None) -> None:
        self.stats, self.dead = stats, dead
        self.interval_ns = None if (iv := interval_s or watchdog_interval_s()) is None else int(iv * 1e9)
        self._send = notifier.notify if notifier is not None else notify
        self.max_overruns, self.max_silence_ns = max_overruns, int(max_silence_s * 1e9)
        self._overruns_seen = stats.overruns if stats is not None else 0
        self._last_check_ns: int | None = None
        self.pings = self.withheld = 0

    def problem(self, now_ns: int) -> str | None:
        """Why the daemon is unhealthy now, or None."""
        st = self.stats
        if st is not None:
            overruns, self._overruns_seen = st.overruns - self._overruns_seen, st.overruns
            if st.ticks == 0:
                return "no tick yet"
            if now_ns - st.last_tick_ns > self.max_silence_ns:
                return f"loop silent (last tick {(now_ns - st.last_tick_ns) / 1e9:.3f} s ago)"
            if overruns >= self.max_overruns:
                return f"loop late ({overruns} overruns since the last check)"
        if self.dead is not None and (dead := self.dead()):
            return f"supervised task dead: {', '.join(dead)}"
        return None

    def healthy(self, now_ns: int) -> bool:
        return self.problem(now_ns) is None

    def maybe_ping(self, now_ns: int) -> bool:
        """Call often (e.g. once a second); returns True when it pinged."""
        if self.interval_ns is None:
            return False
        if self._last_check_ns is not None and now_ns - self._last_check_ns < self.interval_ns:
            return False
        self._last_check_ns = now_ns
        if (problem := self.problem(now_ns)) is None:
            self.pings += self._send("WATCHDOG=1")
            return True
        self.withheld += 1
        log.warning("watchdog ping withheld: %s", problem)
        return False
