"""Chunked data over a real pty: the firmware emulator sends 64 × 64 float32 patterns to the edge's
SerialDriver; they arrive bit-exact, and under the serial fault injectors a damaged pattern is counted
and dropped (never delivered wrong) while the next one gets through. The driver refuses a device other
than the one its message set names."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from controller.driver import SerialDriver
from controller.protocol import common, ct, mems
from firmware_sim.mems.emulator import MemsEmulator
from hil.faults.serial import SerialFaults


@pytest.fixture
async def link() -> AsyncIterator[tuple[MemsEmulator, SerialDriver, list[common.Pattern]]]:
    emu = MemsEmulator(seed=0, tx_buffer=256 * 1024)  # holds every pattern a test queues at once
    got: list[common.Pattern] = []
    driver = SerialDriver(emu.open(), messages=mems.MEMS,
                          on_frame=lambda m, _t: got.append(m) if isinstance(m, common.Pattern) else None)
    stop = threading.Event()
    th = threading.Thread(target=emu.run, args=(stop,), daemon=True)
    th.start()
    try:
        await driver.start(connect_timeout_s=3.0)
        await driver.command(common.StreamStop())  # only patterns on the wire: the faults hit their chunks
        yield emu, driver, got
    finally:
        await driver.close()
        stop.set()
        th.join(2)
        emu.close()


def frame64(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1e3, (64, 64)).astype("<f4")


async def wait_for(got: list, n: int, timeout_s: float = 3.0) -> None:
    async with asyncio.timeout(timeout_s):
        while len(got) < n:
            await asyncio.sleep(0.005)


def as_array(msg: common.Pattern) -> np.ndarray:
    return np.frombuffer(msg.data, "<f4").reshape(msg.height, msg.width)


async def test_a_64x64_float32_frame_crosses_the_pty_bit_exact(link) -> None:
    emu, driver, got = link
    sent = [frame64(i) for i in range(3)]
    sent[1][5, 7] = np.nan
    for a in sent:
        emu.send_pattern(a.tobytes(), 64, 64)
    await wait_for(got, 3)
    assert [m.index for m in got] == [0, 1, 2]
    for a, m in zip(sent, got):
        assert m.data == a.tobytes() and as_array(m).shape == (64, 64)
    dec = driver.decoder
    assert dec.chunked_ok == 3 and dec.chunk_rejected == 0 and dec.rejected == 0 and dec.seq_gaps == 0


@pytest.mark.parametrize("kind", ["garbage", "drop", "truncate", "flip", "dropbyte"])
async def test_damaged_patterns_are_counted_and_dropped_later_ones_get_through(link, kind) -> None:
    emu, driver, got = link
    faults = SerialFaults(emu.control)
    dec = driver.decoder
    before = dec.rejected + dec.chunk_rejected + dec.seq_gaps
    sent = {}
    for i in range(4):  # a fault on a chunk of every second pattern; garbage between them
        a = frame64(10 + i)
        if i % 2 == 0:
            faults.inject(kind, 200 if kind == "garbage" else 1)
        emu.send_pattern(a.tobytes(), 64, 64)
        sent[i] = a.tobytes()
    emu.send_pattern(frame64(99).tobytes(), 64, 64)  # the last one always gets through
    end = time.monotonic() + 3.0
    while not got or got[-1].index != 4:
        assert time.monotonic() < end, f"patterns {[m.index for m in got]}, decoder {dec.counters()}"
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)
    for m in got[:-1]:
        assert m.data == sent[m.index]  # never delivered wrong
    assert got[-1].data == frame64(99).tobytes()
    if kind != "garbage":  # a damaged frame always costs its pattern
        assert [m.index for m in got] == [1, 3, 4]
    assert dec.rejected + dec.chunk_rejected + dec.seq_gaps > before


async def test_the_driver_refuses_another_device_and_retries(caplog) -> None:
    """A MEMS stand on the port a CT driver expects (a reused pty number): no connect, logged, retried."""
    emu = MemsEmulator(seed=0)
    driver = SerialDriver(emu.open(), messages=ct.CT, silence_timeout_s=None, backoff_min_s=0.1)
    stop = threading.Event()
    th = threading.Thread(target=emu.run, args=(stop,), daemon=True)
    th.start()
    try:
        with caplog.at_level(logging.WARNING, logger="controller.driver"):
            await driver.start()
            end = time.monotonic() + 5.0
            while driver.stats.wrong_device < 2:
                assert time.monotonic() < end, "the driver did not retry"
                await asyncio.sleep(0.02)
        assert not driver.connected and driver.stats.connects == 0 and driver.identity is None
        assert "expected edgetune-ct, got edgetune-mems" in caplog.text
        assert not emu.streaming  # the stream was never started on the wrong device
    finally:
        await driver.close()
        stop.set()
        th.join(2)
        emu.close()
