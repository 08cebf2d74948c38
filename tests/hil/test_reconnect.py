"""The device comes back fast: after the emulator is killed the driver's backoff grows, but when the port's path
reappears (the emulator restarted on the same stable symlink) the daemon reconnects at once."""
from __future__ import annotations

import asyncio
import time

import pytest

from controller.recorder import read_events
from hil.stand import SimulatedStand

pytestmark = pytest.mark.hil


async def test_reconnects_within_a_second_of_the_port_reappearing_after_the_backoff_grew(tmp_path) -> None:
    # backoff 2 s, then 4 s: without the path watch the reconnect would wait for the attempt ~6 s after the kill
    config = {"device": {"reconnect_backoff_min_s": 2.0, "reconnect_backoff_max_s": 8.0}}
    async with SimulatedStand(tmp_path / "stand", serial_faults=True, config=config) as stand:
        assert stand.emulator is not None
        stand.emulator.kill()  # the instrument's firmware dies; the symlink dangles
        await asyncio.to_thread(stand.emulator.wait, 5)
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
    assert -0.2 < delay_s < 1.0, f"reconnected {delay_s:.2f} s after the port reappeared"
