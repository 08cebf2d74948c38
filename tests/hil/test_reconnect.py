"""The device comes back fast: after the emulator is killed the driver's backoff grows, but when the port's path
reappears (the emulator restarted on the same stable symlink) the daemon reconnects at once; while the path
stays present, the wait between attempts is capped."""
from __future__ import annotations

import asyncio
import fcntl
import threading
import time

import pytest

from controller.driver import SerialDriver
from controller.protocol.mems import MEMS
from controller.recorder import read_events
from firmware_sim.mems.emulator import MemsEmulator
from hil.stand import SimulatedStand


@pytest.mark.hil
async def test_reconnects_within_a_second_of_the_port_reappearing_after_the_backoff_grew(tmp_path) -> None:
    # backoff 2 s, then 4 s: without the path watch the reconnect would wait for the attempt ~6 s after the kill
    config = {"device": {"reconnect_backoff_min_s": 2.0, "reconnect_backoff_max_s": 8.0}}
    async with SimulatedStand(tmp_path / "stand", serial_faults=True, config=config) as stand:
        assert stand.emulator is not None
        stand.emulator.kill()  # the instrument's firmware dies
        await asyncio.to_thread(stand.emulator.wait, 5)
        # the link goes, as udev's /dev/serial/by-id link does on unplug (left dangling, it would point at the next
        # pty to take the freed number: another test's emulator when tests run in parallel)
        stand.device_link.unlink()
        log = stand.workdir / "daemon.log"
        async with asyncio.timeout(10):
            while "retrying in 4.00 s" not in log.read_text():  # the second failed attempt (~2 s after the kill)
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(stand.start_emulator)  # returns once the symlink points at the new pty
        t_back = time.monotonic_ns()
        await stand.client.ping()
        await asyncio.sleep(1.5)
        assert stand.terminate_daemon() == 0
    ups = [e["t_ns"] for e in read_events(stand.recorder_path) if e["kind"] == "device" and e["details"]["up"]]
    assert len(ups) == 2, ups
    delay_s = (ups[1] - t_back) / 1e9
    # with the path watch ≈ 0.1 s; without, the next attempt comes ≈ 3.5 s after the restart (a loaded machine: margin)
    assert -0.2 < delay_s < 1.25, f"reconnected {delay_s:.2f} s after the port reappeared"


async def test_a_port_path_that_stays_present_is_retried_every_half_second() -> None:
    """A port whose path exists but cannot be opened (here: another process holds it exclusively; likewise a fixed
    /dev/ttyS* or a persistent symlink to a device that fails) gives no sign of its return: the wait between
    attempts is capped (0.5 s) instead of growing to reconnect_backoff_max_s, so the driver connects soon after
    the port frees. Attempts, capped: 0, 0.5, 1.0, 1.5, 2.0 s …; growing: 0, 0.5, 1.5, 3.5 s."""
    emu = MemsEmulator(seed=0)
    path = emu.open()
    fcntl.flock(emu.slave, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the driver's exclusive open fails, the path stays
    stop = threading.Event()
    th = threading.Thread(target=emu.run, args=(stop,), daemon=True)
    th.start()
    driver = SerialDriver(path, messages=MEMS, backoff_min_s=0.5, backoff_max_s=5.0)
    try:
        await driver.start()
        await asyncio.sleep(1.6)
        assert not driver.connected and driver.stats.connects == 0
        fcntl.flock(emu.slave, fcntl.LOCK_UN)
        t_free = time.monotonic()
        async with asyncio.timeout(10):
            while not driver.connected:
                await asyncio.sleep(0.01)
        delay_s = time.monotonic() - t_free
        assert delay_s < 1.25, f"connected {delay_s:.2f} s after the port was freed"  # growing: ≈ 1.9 s
    finally:
        await driver.close()
        stop.set()
        th.join(2)
        emu.close()
