"""The ptychography emulator (scan stage + pixel detector) on a real pty, driven by the edge's SerialDriver
(pyserial), and the stage's kinematics in process."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import numpy as np
import pytest
import serial

from stage_device import StageDevice, served
from controller.modes.ptycho.optics import Optics, probe
from controller.protocol import common, framing, ptycho
from firmware_sim.ptycho.detector import DetectorParams, counts, snap
from firmware_sim.ptycho.emulator import PtychoEmulator
from firmware_sim.ptycho.stage import Profile, ScanStage, StageParams, axis_time_s, move_time_s
from proc_util import pty_server

OPTICS = Optics()
PIXEL = OPTICS.pixel_A


def phase_map(key: int) -> np.ndarray:
    """Any finite phase map of the object's size (the emulator takes whatever it is given)."""
    return np.random.default_rng(key).uniform(0.0, 0.6, (OPTICS.object_px, OPTICS.object_px))


def expected(i: int, j: int, key: int = 5, dose: float = OPTICS.dose) -> np.ndarray:
    return counts(probe(OPTICS), phase_map(key), (i, j), dose, key)


class Device(StageDevice):
    status_request, status_type = ptycho.StageStatusRequest(), ptycho.StageStatus

    async def move(self, i: int, j: int) -> ptycho.StageStatus:
        await self.driver.command(ptycho.MoveTo(j * PIXEL, i * PIXEL))
        return await self.wait(lambda s: s.in_position)

    async def acquire(self, exposure_us: int = 1000, timeout: float = 3.0) -> ptycho.Frame | None:
        """The next frame, or None when none arrives within ``timeout`` [s]."""
        n = len(self.data)
        await self.driver.command(ptycho.Acquire(exposure_us))
        end = time.monotonic() + timeout
        while len(self.data) == n:
            if time.monotonic() > end:
                return None
            await asyncio.sleep(0.002)
        return self.data[-1]


@pytest.fixture
async def device() -> AsyncIterator:
    async with AsyncExitStack() as stack:
        async def start(key: int = 5, **kw) -> Device:
            emu = PtychoEmulator(phase_map(key), key, **kw)
            return Device(emu, await stack.enter_async_context(served(emu, ptycho.PTYCHO)))

        yield start


# --- in process: the stage's kinematics ------------------------------------------------------------

def test_move_time_grows_with_distance_trapezoid_and_triangle() -> None:
    p = StageParams()
    # v²/a = 10 Å: shorter moves are triangles 2√(d/a), longer ones trapezoids d/v + v/a
    assert axis_time_s(p, [0.2, 10.0, 19.8]) == pytest.approx([2 * np.sqrt(0.2 / 4e7), 1e-3, 19.8 / 2e4 + 5e-4])
    t = move_time_s(p, np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0]]), np.array([[0.2, 0.2], [19.8, 0.2], [5.0, 5.0]]))
    assert t == pytest.approx([1.4142e-4 + 1e-4, 1.49e-3 + 1e-4, 1e-4], rel=1e-4)  # the slower axis + settle


def test_profile_respects_speed_and_acceleration_and_halt_brakes_short_of_the_target() -> None:
    p = StageParams()
    prof = Profile.move(p, 0.5, 19.8, 0.0)
    ts = np.linspace(0.5, prof.end_s, 2001)
    x, v = np.array([prof.at(t) for t in ts]).T
    assert x[0] == 19.8 and x[-1] == 0.0 and np.all(np.diff(x) <= 1e-12)  # monotone, no overshoot
    assert np.abs(v).max() == pytest.approx(p.max_speed_A_s) and np.abs(np.diff(v) / np.diff(ts)).max() <= p.accel_A_s2 * 1.001
    stage = ScanStage(p, seed=1, t_s=0.0)
    stage.command(0.0, 0.0, 19.8)
    stage.halt(3e-4)  # y accelerating from 9.9 Å: v = a·t = 1.2e4 Å/s, braking distance v²/2a = 1.8 Å
    assert stage.target_A[1] == pytest.approx(9.9 + 1.8 + 1.8, abs=0.05) and stage.moving(5e-4)
    assert stage.in_position(6e-4 + p.settle_s) and stage.position_A(1.0) == pytest.approx(stage.target_A)


def test_stage_refuses_targets_out_of_range_and_the_emulator_refuses_a_bad_set_up() -> None:
    stage = ScanStage(StageParams(), seed=0)
    for x, y in ((19.81, 0.0), (0.0, -0.01), (np.nan, 1.0)):
        with pytest.raises(ValueError, match="outside the stage range"):
            stage.command(0.0, x, y)
    with pytest.raises(ValueError, match="range"):
        StageParams(range_A=(5.0, 5.0))
    with pytest.raises(ValueError, match="163 × 163"):
        PtychoEmulator(np.zeros((100, 100)), 0)
    with pytest.raises(ValueError, match="beyond the scan grid"):
        PtychoEmulator(phase_map(0), 0, stage=StageParams(range_A=(0.0, 25.0)))
    with pytest.raises(ValueError, match="cannot hold one frame"):
        PtychoEmulator(phase_map(0), 0, tx_buffer=4096)
    with pytest.raises(ValueError, match="dose"):
        DetectorParams(dose=0.0)


# --- over the pty --------------------------------------------------------------------------------

async def test_move_in_position_acquire_gives_the_keyed_counts_of_that_position(device) -> None:
    dev = await device(key=5)
    assert dev.driver.identity.device == "edgetune-ptycho"
    info = await dev.driver.request(ptycho.InfoRequest(), ptycho.Info)
    assert (info.key, info.dose, info.exposure_us, info.window, info.grid) == (5, OPTICS.dose, 1000, 64, 100)
    assert info.max_A == pytest.approx(19.8) and info.defocus_A == 0.0
    for i, j in ((0, 0), (37, 99), (99, 12)):
        st = await dev.move(i, j)
        assert (st.target_x_A, st.target_y_A) == pytest.approx((j * PIXEL, i * PIXEL))
        frame = await dev.acquire()
        assert frame is not None and frame.dose == OPTICS.dose and frame.exposure_us == 1000
        assert np.array_equal(frame.counts(), expected(i, j)), (i, j)
        assert (frame.x_A, frame.y_A) == pytest.approx((j * PIXEL, i * PIXEL), abs=0.05)
    again = await dev.acquire()  # the same position again: the same counts (keyed, not drawn in order)
    assert np.array_equal(again.counts(), expected(99, 12)) and [f.index for f in dev.data] == [0, 1, 2, 3]
    assert dev.driver.decoder.chunked_ok == 4 and dev.driver.decoder.chunk_rejected == 0


async def test_exposure_dose_sample_and_frame_timing(device) -> None:
    dev = await device(key=5, sampler=phase_map, detector=DetectorParams(dose=1e5))
    await dev.move(20, 30)
    t0 = (await dev.status()).t_us
    frame = await dev.acquire(200_000)  # 0.2 s: 200 × the nominal exposure and dose
    assert (frame.t_us - t0) / 1e6 == pytest.approx(0.2, abs=0.03) and frame.dose == 2e7
    assert np.array_equal(frame.counts(), expected(20, 30, dose=2e7))
    await dev.driver.command(ptycho.SetSample(9))
    await dev.driver.command(ptycho.SetDose(2.1e5))
    frame = await dev.acquire()
    assert np.array_equal(frame.counts(), expected(20, 30, key=9)) and frame.counts().sum() == pytest.approx(2.1e5, rel=0.01)


async def test_move_time_follows_the_distance_on_the_device_clock(device) -> None:
    p = StageParams()
    dev = await device(speed=0.05)  # device time 20 × slower than the wall: ms moves resolved by polling
    for i, j in ((49, 50), (0, 0)):  # from the centre (9.9 Å): one pixel (0.24 ms), then 9.9 Å (1.1 ms)
        before = (await dev.status()).t_us
        start = await dev.status()
        await dev.driver.command(ptycho.MoveTo(j * PIXEL, i * PIXEL))
        after = (await dev.status()).t_us
        seen = [await dev.status()]
        while not seen[-1].in_position:
            seen.append(await dev.status())
        t_move = float(move_time_s(p, np.array([start.target_x_A, start.target_y_A]), np.array([j, i]) * PIXEL)) * 1e6
        arrived = seen[-1].t_us
        last_out = max([s.t_us for s in seen if not s.in_position], default=before)
        assert last_out < after + t_move and arrived >= before + t_move, (i, j, t_move)
        assert arrived - after < t_move + 1500  # and no later than the polling explains (1.5 ms device = 30 ms wall)


async def test_refusals_are_nak_on_the_wire_and_leave_the_stage(device) -> None:
    dev = await device(speed=0.01)
    await dev.move(10, 10)
    for msg, why in ((ptycho.MoveTo(19.85, 0.0), "OUT_OF_RANGE"), (ptycho.MoveTo(0.0, -0.2), "OUT_OF_RANGE"),
                     (ptycho.MoveTo(float("nan"), 1.0), "NOT_FINITE"), (ptycho.Acquire(0), "OUT_OF_RANGE"),
                     (ptycho.Acquire(10_000_001), "OUT_OF_RANGE"), (ptycho.SetDose(-1.0), "OUT_OF_RANGE"),
                     (ptycho.SetDose(float("inf")), "NOT_FINITE"), (ptycho.SetSample(3), "UNSUPPORTED"),
                     (ptycho.Frame.of(0, 0, 0.0, 0.0, 1.0, 1, np.zeros((2, 2), int)), "UNSUPPORTED")):
        assert await dev.refused(msg) == why, msg
    st = await dev.status()
    assert (st.target_x_A, st.target_y_A) == pytest.approx((2.0, 2.0)) and st.in_position and st.busy_refused == 0
    await dev.driver.command(ptycho.MoveTo(19.8, 19.8))  # the range's edge itself is allowed; 1.4 ms = 0.14 s wall
    assert [await dev.refused(m) for m in (ptycho.MoveTo(1.0, 1.0), ptycho.Acquire(1000))] == ["BUSY"] * 2
    await dev.driver.command(ptycho.Halt())
    st = await dev.wait(lambda s: s.in_position)
    assert 2.0 < st.target_x_A < 19.8 and st.busy_refused == 2 and (await dev.driver.status()).cmd_rejected == 11


async def test_read_back_is_noisy_quantised_and_the_pattern_is_at_the_actual_position(device) -> None:
    wobbly = StageParams(settle_error_A=0.3)  # a rest error beyond half a pixel: the detector sees where it is
    dev = await device(stage=wobbly, seed=3)
    rest = []
    for i, j in ((50, 50), (50, 51), (51, 50), (60, 60)):
        await dev.move(i, j)
        actual = dev.emu.stage.position_A(dev.emu.now_s())
        rest.append(snap(actual, OPTICS) != (i, j))
        frame = await dev.acquire()
        assert np.array_equal(frame.counts(), expected(*snap(actual, OPTICS)))
    assert any(rest)  # at least one move rested nearer another pixel (seeded)
    reads = np.array([[(s := await dev.status()).x_A, s.y_A] for _ in range(60)])
    actual = dev.emu.stage.position_A(dev.emu.now_s())
    steps = reads / wobbly.readback_step_A
    assert np.allclose(steps, np.round(steps), atol=1e-3)  # quantised to 1 pm (as f32 on the wire)
    assert reads.std(axis=0) == pytest.approx([wobbly.readback_noise_A] * 2, rel=0.35)
    assert reads.mean(axis=0) == pytest.approx(actual, abs=0.003)


async def test_reset_recentres_the_stage_and_keeps_sample_and_dose(device) -> None:
    dev = await device(key=5, detector=DetectorParams(dose=1e5))
    await dev.move(3, 4)
    await dev.acquire()
    await dev.driver.command(common.Reset(7))
    st = await dev.status()
    assert (st.target_x_A, st.target_y_A) == pytest.approx((9.9, 9.9)) and st.in_position and not st.moving
    frame = await dev.acquire()  # at the centre (no rest error at power-up), with the same sample and dose
    assert frame.index == 0 and np.array_equal(frame.counts(), expected(*snap(np.full(2, 9.9), OPTICS), dose=1e5))


@pytest.mark.parametrize("fault", ["garbage", "drop", "flip"])
async def test_a_frame_damaged_on_the_wire_is_counted_and_dropped_and_reacquired_exactly(device, fault) -> None:
    dev = await device()
    await dev.move(40, 70)
    dec = dev.driver.decoder
    await dev.driver.command(ptycho.Acquire(200_000))  # the fault is queued while it exposes (no other traffic)
    if fault == "garbage":
        dev.emu.inject(b"\x55" * 200)  # no delimiter: it merges with the frame's first chunk
    else:
        dev.emu.wire_fault(fault, 1)  # the frame's first chunk
    await asyncio.sleep(0.5)
    assert dev.data == [] and dec.rejected + dec.chunk_rejected > 0 and dec.chunk_missing == 8
    frame = await dev.acquire()
    assert frame is not None and frame.index == 1 and np.array_equal(frame.counts(), expected(40, 70))


def test_cli_serves_ptycho_and_stops_on_sigterm(tmp_path) -> None:
    np.save(tmp_path / "phase.npy", phase_map(2))
    code = "import typer; from firmware_sim.cli import sim_ptycho; typer.run(sim_ptycho)"
    args = ["--phase-npy", str(tmp_path / "phase.npy"), "--key", "2", "--defocus", "20", "--dose", "1e5"]
    with pty_server([sys.executable, "-c", code, *args]) as path:
        with serial.Serial(path, timeout=1.0) as port:
            port.write(framing.encode(common.Identify(), 0) + framing.encode(ptycho.InfoRequest(), 1))
            dec, got = framing.FrameDecoder(ptycho.PTYCHO), []
            end = time.monotonic() + 2.0
            while len(got) < 2 and time.monotonic() < end:
                got += dec.feed(port.read(max(1, port.in_waiting)))
            ident, info = (m for _, m in got)
            assert ident.device == "edgetune-ptycho" and (info.key, info.dose, info.defocus_A) == (2, 1e5, 20.0)
    np.save(tmp_path / "small.npy", np.zeros((8, 8)))
    bad = subprocess.run([sys.executable, "-c", code, "--phase-npy", str(tmp_path / "small.npy")],
                         capture_output=True, text=True, timeout=20)
    assert bad.returncode != 0 and "163 × 163" in bad.stderr
