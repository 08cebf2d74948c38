"""What every session mode (controller/modes/base.py) shares around one acquisition: the push ops
``scan`` (one acquisition per request, its summary as the reply) and ``abort`` (halt the one in flight,
reply once the actuators rest), refusals (busy, held, device down, device error), and the abort/hold
path that must not hang on a request stuck outside its acquisition.

A subclass supplies ``acquire(header)`` (prepare the sample, run the acquisition, summarise it), ``running``
and ``stop()`` (abort the acquisition in flight and wait until the actuators rest), and its timing knobs.
"""
from __future__ import annotations

import asyncio
import logging
import time
from abc import abstractmethod
from typing import Any

from controller.link.push_wire import PushHeader
from controller.modes.base import ModeHost, PushOp, SessionMode

log = logging.getLogger("edgetune.daemon")

HELD = {"accepted": False, "reason": "held", "detail": "operator hold: scans resume after `edgetune link resume`"}


class Held(Exception):
    """The operator held the daemon while the acquisition was being prepared."""


class AcquisitionSession(SessionMode):
    OPS = ("scan", "abort")

    def __init__(self, host: ModeHost, poll_s: float, abort_timeout_s: float) -> None:
        self.host, self.poll_s, self.abort_timeout_s = host, poll_s, abort_timeout_s
        self.scans = 0
        self._scan_lock = asyncio.Lock()  # held from a scan request to its reply

    @property
    @abstractmethod
    def running(self) -> bool:
        """An acquisition is in flight."""

    @abstractmethod
    async def acquire(self, header: PushHeader) -> dict[str, Any]:
        """Run one acquisition (raise Held when held before it starts); the reply's fields."""

    @abstractmethod
    async def stop(self) -> None:
        """Abort the acquisition in flight; returns when the actuators rest."""

    def ops(self) -> dict[str, PushOp]:
        return {"scan": self._scan_op, "abort": self._abort_op}

    def held_check(self) -> None:
        if self.host.held:
            raise Held

    async def _scan_op(self, header: PushHeader) -> dict[str, Any]:
        if self._scan_lock.locked():
            return {"accepted": False, "reason": "busy", "detail": "a scan is running"}
        async with self._scan_lock:
            if self.host.held:
                return HELD
            if not self.host.driver.connected:
                return {"accepted": False, "reason": "device_down", "detail": f"no device on {self.host.cfg.device.port}"}
            try:
                summary = await self.acquire(header)
            except Held:
                return HELD
            except (TimeoutError, ValueError) as e:  # Nak, lost device, a command the gate refused
                log.warning("scan failed: %s", e)
                self.host.record("scan", {"error": str(e)})
                return {"accepted": False, "reason": "device_error", "detail": str(e)}
            return {"accepted": True, "reason": "scanned", **summary}

    async def _abort_op(self, header: PushHeader) -> dict[str, Any]:
        return {"accepted": True, "reason": "aborted" if await self.abort("abort") else "idle"}

    async def abort(self, by: str) -> bool:
        """Halt the scan in flight (if any) and wait until the stage rests; True when one was running."""
        deadline = time.monotonic() + self.abort_timeout_s
        while self._scan_lock.locked() and not self.running:  # a scan op before or after its scan (ms)
            if time.monotonic() > deadline:  # e.g. saving a reconstruction to storage that does not answer
                log.error("%s: the scan request did not reach or leave its scan within %g s (move_timeout_s); "
                          "aborting what runs now", by, self.abort_timeout_s)
                break
            await asyncio.sleep(self.poll_s)
        running = self.running
        await self.stop()
        if running:
            self.host.record("abort", {"scan": self.scans + 1, "by": by})
        return running

    async def actuators_safe(self) -> None:
        await self.stop()  # the stage rests before anything goes down

    def stop_details(self) -> dict[str, Any]:
        return {"scans": self.scans}
