"""What a tick mode's tick leaves for the EPICS server: the spot, the target in force, the error and how many
consecutive ticks it has been within the settle tolerance. ``update`` is a handful of float stores and one
``hypot`` (no caproto, no allocation); the publisher reads the fields at its own rate and set-point puts await
``next_tick()`` (woken only while one waits).

"Settled" (docs/epics.md): |spot − target| < ``tolerance_px`` for ``ticks`` consecutive ticks; the count starts
again when the target changes, and a lost spot (NaN) or a held loop never counts.
"""
from __future__ import annotations

import asyncio
import math


class LoopSnapshot:
    def __init__(self, tolerance_px: float, ticks: int) -> None:
        self.tolerance_px, self.ticks = tolerance_px, ticks
        self.x = self.y = self.tx = self.ty = self.error = math.nan
        self.within = 0  # consecutive ticks within the tolerance at the current target
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def settled(self) -> bool:
        return self.within >= self.ticks

    def update(self, x: float, y: float, tx: float, ty: float, held: bool) -> None:
        """The tick's reading (NaN: lost) and the target in force after its host commands."""
        if tx != self.tx or ty != self.ty:
            self.within = 0
        err = math.hypot(x - tx, y - ty)
        self.within = self.within + 1 if err < self.tolerance_px and not held else 0
        self.x, self.y, self.tx, self.ty, self.error = x, y, tx, ty, err
        if self._waiters:
            for w in self._waiters:
                if not w.done():
                    w.set_result(None)
            self._waiters.clear()

    async def next_tick(self) -> None:
        """Return after the next tick's ``update`` (callers bound the wait)."""
        w = asyncio.get_running_loop().create_future()
        self._waiters.append(w)
        await w
