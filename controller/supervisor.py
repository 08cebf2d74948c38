"""Supervised long-lived tasks of the daemon (host link, push server, housekeeping …).

``spawn(name, run)`` runs the coroutine function ``run`` as a task; when it raises, the failure is
logged and counted (``restarts[name]``) and ``run`` is started again after an exponential back-off
(``backoff_min_s`` doubling up to ``backoff_max_s``; reset after a run that lasted ``stable_s``).
A task that returns has finished its work and is not restarted. ``dead()`` names the tasks that are
waiting to be restarted: the daemon withholds the systemd watchdog while any is. ``close()`` cancels them
all and waits at most ``CLOSE_TIMEOUT_S``, so one that does not end cannot hang the daemon's shutdown.
The tick loop is not supervised here: its death ends the daemon (controller/lifecycle.py).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Awaitable, Callable

log = logging.getLogger(__name__)
CLOSE_TIMEOUT_S = 5.0  # how long close() waits for the cancelled tasks to end


class Supervisor:
    def __init__(self, backoff_min_s: float = 0.1, backoff_max_s: float = 5.0, stable_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < backoff_min_s <= backoff_max_s:
            raise ValueError("need 0 < backoff_min_s <= backoff_max_s")
        self.backoff_min_s, self.backoff_max_s, self.stable_s, self.clock = backoff_min_s, backoff_max_s, stable_s, clock
        self.restarts: Counter[str] = Counter()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._down: set[str] = set()

    def spawn(self, name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Start supervising ``run()`` under ``name`` (unique)."""
        if name in self._tasks:
            raise ValueError(f"a task named {name!r} is already supervised")
        task = asyncio.get_running_loop().create_task(self._keep(name, run), name=name)
        self._tasks[name] = task
        return task

    def dead(self) -> list[str]:
        """Tasks that died and wait for their restart."""
        return sorted(self._down)

    async def _keep(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        backoff = self.backoff_min_s
        while True:
            started = self.clock()
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 — any failure of a supervised task is restarted
                self.restarts[name] += 1
                if self.clock() - started >= self.stable_s:
                    backoff = self.backoff_min_s
                log.error("task %r died (%s: %s); restart %d in %.2f s", name, type(e).__name__, e,
                          self.restarts[name], backoff, exc_info=self.restarts[name] == 1)
            self._down.add(name)
            try:
                await asyncio.sleep(backoff)
            finally:
                self._down.discard(name)
            backoff = min(2 * backoff, self.backoff_max_s)

    async def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Cancel every supervised task and wait for them, at most ``timeout_s``: a task still running then (its
        clean-up awaits something that does not answer) is logged by name and left behind."""
        tasks, self._tasks = list(self._tasks.values()), {}
        for t in tasks:
            t.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            if pending:
                log.error("supervised tasks still running %g s after their cancellation, left behind: %s", timeout_s,
                          ", ".join(sorted(t.get_name() for t in pending)))
        self._down.clear()
