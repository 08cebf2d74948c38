"""Tests' handles on stage emulators over a real pty (shared by the CT and ptycho tests): status requests,
refusals, waits and received data frames (`StageDevice`), an emulator served with a connected driver (`served`),
and a daemon process up with its device (`wait_ready`)."""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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


@asynccontextmanager
async def served(emu: Any, messages: framing.MessageSet) -> AsyncIterator[SerialDriver]:
    """The emulator running in a thread on its pty and a driver connected to it; both stopped on exit."""
    stop = threading.Event()
    driver = SerialDriver(emu.open(), messages=messages, silence_timeout_s=None)
    th = threading.Thread(target=emu.run, args=(stop,), daemon=True)
    th.start()
    try:
        await driver.start(connect_timeout_s=3.0)
        yield driver
    finally:
        await driver.close()
        stop.set()
        th.join(2)
        emu.close()


async def wait_ready(stand: Any, client: Any, timeout_s: float = 20.0) -> dict:
    """The daemon's status once it is up with its device (its log in the failure when it died)."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert stand.daemon is not None and stand.daemon.poll() is None, (stand.workdir / "daemon.log").read_text()
        try:
            status = await asyncio.to_thread(client.status)
            if status["device_up"]:
                return status
        except OSError:
            pass
        assert time.monotonic() < deadline, f"the daemon did not come up within {timeout_s} s"
        await asyncio.sleep(0.1)


@asynccontextmanager
async def daemon_with_policy(stand: Any, policy_dir: Any, version: str) -> AsyncIterator[Any]:
    """Start the stand's emulator and daemon, push the policy at ``policy_dir`` (it must be accepted as
    ``version``) and yield the push client; the stand is closed on the way out."""
    from controller.link.auth import write_keyfile
    from controller.link.host_push import PushClient

    stand.start_emulator()
    write_keyfile(stand.key_file, (1, 2))
    stand.write_config()
    stand.start_daemon()
    assert stand.keyring is not None
    client = PushClient(stand.push_addr, stand.keyring, 1)
    try:
        status = await wait_ready(stand, client)
        assert status["active"] is None and not status.get("scanning")  # tick modes do not scan
        pushed = await asyncio.to_thread(client.push, policy_dir)
        assert pushed["accepted"] and pushed["version"] == version, pushed
        yield client
    finally:
        await stand.close()
