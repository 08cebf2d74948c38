"""A test's handle on a stage emulator over a real pty: status requests, refusals, waits, received data frames
(shared by the CT and ptycho emulator tests)."""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import pytest

from controller.driver import SerialDriver
from controller.protocol import framing


class StageDevice:
    """``status_request``/``status_type``: the device's status messages; ``data``: the frames it sent."""

    status_request: framing.Message
    status_type: type

    def __init__(self, emu: Any, driver: SerialDriver) -> None:
        self.emu, self.driver = emu, driver
        self.data: list[Any] = []
        driver.on_frame = lambda msg, _t: self.data.append(msg)

    async def status(self) -> Any:
        return await self.driver.request(self.status_request, self.status_type)

    async def refused(self, msg: framing.Message) -> str:
        with pytest.raises(ValueError, match="device refused") as e:
            await self.driver.command(msg)
        return str(e.value).rsplit(" ", 1)[-1]

    async def wait(self, pred: Callable[[Any], bool], timeout: float = 5.0) -> Any:
        end = time.monotonic() + timeout
        while not pred(st := await self.status()):
            assert time.monotonic() < end, st
            await asyncio.sleep(0.002)
        return st
