"""Rate-limited reporting of events whose rate someone else controls (an attacker, a failing disk).

``Summary.add(key)`` counts; the counts since the last report go to ``emit(counts, seconds)`` at most
once every ``interval_s``: the first event at once (so a problem shows up when it starts), later ones
gathered into the next report. Call ``tick()`` now and then (e.g. once a second) so what arrived after
a report is reported when the interval is over, and ``flush()`` at shutdown. ``RateLimitedLog``: warnings
with their own text, at most one per interval, the ones held back counted in the next.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any, Callable

Emit = Callable[[dict[str, int], float], None]


class Summary:
    def __init__(self, emit: Emit, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.emit, self.interval_s, self.clock = emit, interval_s, clock
        self._pending: Counter[str] = Counter()
        self._since = self._last = -float("inf")  # start of the gathered counts; time of the last report

    def add(self, key: str, n: int = 1) -> None:
        if not self._pending:
            self._since = self.clock()
        self._pending[key] += n
        self.tick()

    def tick(self) -> None:
        """Report what has been gathered if the interval since the last report is over."""
        if self._pending and self.clock() - self._last >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        now = self.clock()
        counts, self._pending = dict(self._pending), Counter()
        self._last = now
        self.emit(counts, max(now - self._since, 0.0))


class RateLimitedLog:
    """Warnings at most one per `interval_s`; the lines held back are counted in the next one."""

    def __init__(self, logger: logging.Logger, interval_s: float = 5.0) -> None:
        self.logger, self.interval_s = logger, interval_s
        self._next_s = 0.0
        self._held = 0

    def warning(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now < self._next_s:
            self._held += 1
            return
        if self._held:
            msg, args = msg + " (and %d more since the last line)", (*args, self._held)
        self._held, self._next_s = 0, now + self.interval_s
        self.logger.warning(msg, *args)
