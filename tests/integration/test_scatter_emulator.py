"""The inverse-scattering emulator (rotating source arm + ring receivers) on a real pty, driven by the edge's
SerialDriver (pyserial), and the arm's kinematics in process."""
from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import numpy as np
import pytest
import serial

from controller.modes.scatter import physics, spec
from controller.protocol import common, framing, scatter
from firmware_sim.scatter.arm import Arm, ArmParams
from firmware_sim.scatter.emulator import ScatterEmulator
from firmware_sim.scatter.receiver import ReceiverParams, clean
from proc_util import pty_server
from scatter_policy import disk
from stage_device import StageDevice, served

N = 24
ETA = disk(N)
FAST = dict(speed=20.0)  # device time 20 × the wall: a half turn (1.25 s) in 63 ms


class Device(StageDevice):
    status_request, status_type = scatter.ArmStatusRequest(), scatter.ArmStatus

    async def move(self, angle: float) -> scatter.ArmStatus:
        await self.driver.command(scatter.MoveArm(angle))
        return await self.wait(lambda s: s.in_position)

    async def acquire(self, receivers: tuple[int, ...]) -> scatter.Data:
        return await self.driver.query(scatter.Acquire(receivers), scatter.Data)


@pytest.fixture
async def device() -> AsyncIterator:
    async with AsyncExitStack() as stack:
        async def start(eta: np.ndarray = ETA, key: int = 5, **kw) -> Device:
            emu = ScatterEmulator(eta, key, **{**FAST, **kw})
            return Device(emu, await stack.enter_async_context(served(emu, scatter.SCATTER)))

        yield start


def expected(source: int, f: int, receivers, order: physics.Order = 2) -> np.ndarray:
    k = spec.wavenumbers(N)[f]
    return physics.data(ETA, k, [spec.incident_direction_deg(source)], list(receivers), order)[0]


# --- in process: the arm --------------------------------------------------------------------------

def test_arm_moves_within_its_limits_and_halts_short_of_the_target() -> None:
    p = ArmParams()
    arm = Arm(p, seed=1)
    assert arm.angle_deg(0.0) == 0.0 and arm.in_position(p.settle_s)
    arm.command(0.0, 180.0)  # 0.25 s up to 180°/s, 0.75 s cruising, 0.25 s down: 1.25 s
    assert arm.moving(1.2) and not arm.in_position(1.26) and arm.in_position(1.25 + p.settle_s + 1e-6)
    assert arm.angle_deg(2.0) == pytest.approx(180.0, abs=0.01)
    with pytest.raises(ValueError, match="moving"):
        arm.command(0.5, 10.0)
    arm.command(2.0, 0.0)
    arm.halt(2.25)  # at full speed after 0.25 s: at 157.5°, braking takes v²/2a = 22.5° more
    assert arm.target_deg == pytest.approx(180.0 - 22.5 - 22.5, abs=0.1) and arm.in_position(2.6)
    for bad in (-0.1, 359.5, math.nan):
        with pytest.raises(ValueError, match="limits"):
            arm.command(3.0, bad)
    with pytest.raises(ValueError, match="range"):
        ArmParams(limits_deg=(10.0, 10.0))


def test_receiver_noise_is_at_the_snr_asked_and_keyed() -> None:
    from firmware_sim.scatter.receiver import acquire

    receivers = np.arange(0, 360, 36)
    values = clean(ETA, 30, 2, receivers, 2)
    p = ReceiverParams(snr_db=20.0)
    noise = np.array([acquire(ETA, 30, 2, receivers, p, 5, i) - values for i in range(200)])
    ratio = np.mean(np.abs(noise) ** 2) / np.mean(np.abs(values) ** 2)
    assert 10 * np.log10(ratio) == pytest.approx(-20.0, abs=0.3)
    assert np.array_equal(acquire(ETA, 30, 2, receivers, p, 5, 7), acquire(ETA, 30, 2, receivers, p, 5, 7))
    assert not np.allclose(acquire(ETA, 30, 2, receivers, p, 6, 7), acquire(ETA, 30, 2, receivers, p, 5, 7))
    assert np.array_equal(acquire(ETA, 30, 2, receivers, ReceiverParams(), 5, 7), values)
    for bad in (dict(order=4), dict(snr_db=math.nan)):
        with pytest.raises(ValueError):
            ReceiverParams(**bad)
    with pytest.raises(ValueError, match="frequency index"):
        clean(ETA, 30, 4, receivers, 2)


# --- over the pty --------------------------------------------------------------------------------

async def test_a_scan_gives_the_physics_data_of_its_design(device) -> None:
    dev = await device(receiver=ReceiverParams(order=2))
    assert dev.driver.identity.device == "edgetune-scatter"
    info = await dev.driver.request(scatter.InfoRequest(), scatter.Info)
    assert (info.key, info.n, info.order, info.snr_db, info.min_deg, info.max_deg) == (5, N, 2, math.inf, 0.0, 359.0)
    design = [(10, 0), (200, 3), (95, 1), (359, 2)]
    for t, (angle, f) in enumerate(design, 1):
        st = await dev.move(angle)
        assert st.target_deg == angle and abs(st.angle_deg - angle) < 0.02
        await dev.driver.command(scatter.SetFrequency(f))
        receivers = tuple(a for a, _ in design[:t])
        data = await dev.acquire(receivers)
        assert (data.index, data.source_deg, data.frequency) == (t - 1, angle, f)
        want = expected(angle, f, receivers)
        assert np.allclose(data.field(), want, rtol=1e-6, atol=1e-6 * np.abs(want).max()), (angle, f)
    assert (await dev.status()).frequency == 2


async def test_noise_at_the_snr_asked_and_reproducible_after_reset(device) -> None:
    dev = await device(receiver=ReceiverParams(order=1, snr_db=10.0))
    await dev.move(45)
    await dev.driver.command(scatter.SetFrequency(1))
    receivers = tuple(range(0, 360, 36))
    want = expected(45, 1, receivers, order=1)
    first = [(await dev.acquire(receivers)).field() for _ in range(40)]
    ratio = np.mean(np.abs(np.array(first) - want) ** 2) / np.mean(np.abs(want) ** 2)
    assert 10 * np.log10(ratio) == pytest.approx(-10.0, abs=0.6)
    await dev.driver.command(common.Reset(0))
    await dev.move(45)
    await dev.driver.command(scatter.SetFrequency(1))
    again = await dev.acquire(receivers)
    assert again.index == 0 and np.array_equal(again.field(), first[0])


async def test_refusals_are_nak_on_the_wire_and_leave_the_arm(device) -> None:
    dev = await device(arm=ArmParams(limits_deg=(20.0, 300.0)), speed=1.0)
    assert (await dev.status()).target_deg == 20.0  # powered up at the nearest limit to 0°
    for msg, why in ((scatter.MoveArm(19.0), "OUT_OF_RANGE"), (scatter.MoveArm(300.5), "OUT_OF_RANGE"),
                     (scatter.MoveArm(math.nan), "NOT_FINITE"), (scatter.SetFrequency(4), "OUT_OF_RANGE"),
                     (scatter.Acquire((0, 0)), "BAD_PARAM"), (scatter.Acquire((360,)), "OUT_OF_RANGE"),
                     (scatter.Data.of(0, 0, 0, 0, np.ones(1)), "UNSUPPORTED")):
        assert await dev.refused(msg) == why, msg
    await dev.driver.command(scatter.MoveArm(300.0))  # the limit itself is allowed; 1.9 s of motion
    assert [await dev.refused(m) for m in (scatter.MoveArm(30.0), scatter.Acquire((1,)))] == ["BUSY"] * 2
    await dev.driver.command(scatter.Halt())
    st = await dev.wait(lambda s: s.in_position)
    assert 20.0 < st.target_deg < 300.0 and st.busy_refused == 2 and (await dev.driver.status()).cmd_rejected == 9


async def test_garbage_on_the_line_is_counted_and_the_device_still_answers(device) -> None:
    dev = await device()
    await dev.move(90)
    dev.emu.inject(b"\x55" * 300 + b"\x00" + b"\x01\x02\x03\x00")  # a long run, then a truncated frame
    dev.emu.wire_fault("flip", 1)  # the next reply is damaged: the query asks again
    await asyncio.sleep(0.05)  # the firmware loop takes its fault hooks between events
    data = await dev.acquire((90, 0))
    dec = dev.driver.decoder
    assert dec.garbage + dec.truncated >= 2 and dec.bad_crc + dec.garbage >= 1 and dev.driver.stats.lost_replies == 1
    assert data.index == 1 and np.allclose(data.field(), expected(90, 0, (90, 0)), rtol=1e-6, atol=1e-12)


def test_cli_serves_scatter_and_stops_on_sigterm(tmp_path) -> None:
    np.save(tmp_path / "eta.npy", ETA)
    code = "import typer; from firmware_sim.cli import sim_scatter; typer.run(sim_scatter)"
    args = ["--eta", str(tmp_path / "eta.npy"), "--n", str(N), "--order", "3", "--snr-db", "30", "--min-deg", "5"]
    with pty_server([sys.executable, "-c", code, *args]) as path:
        with serial.Serial(path, timeout=1.0) as port:
            port.write(framing.encode(common.Identify(), 0) + framing.encode(scatter.InfoRequest(), 1))
            dec, got = framing.FrameDecoder(scatter.SCATTER), []
            end = time.monotonic() + 2.0
            while len(got) < 2 and time.monotonic() < end:
                got += dec.feed(port.read(max(1, port.in_waiting)))
            ident, info = (m for _, m in got)
            assert ident.device == "edgetune-scatter" and (info.n, info.order, info.snr_db, info.min_deg) == (N, 3, 30, 5)
            port.write(framing.encode(scatter.MoveArm(5.0), 2))
            time.sleep(0.5)  # 5° take 0.17 s, then 20 ms settle
            port.write(framing.encode(scatter.Acquire((5, 90)), 3))
            end = time.monotonic() + 3.0
            while not isinstance(got[-1][1], scatter.Data) and time.monotonic() < end:
                got += dec.feed(port.read(max(1, port.in_waiting)))
            noisy = got[-1][1].field()  # the file's map, resampled to N × N (the same size) and scaled
            clean_ = physics.data(ETA, spec.wavenumbers(N)[0], [185.0], [5, 90], 3)[0]
            snr = 10 * np.log10(np.mean(np.abs(clean_) ** 2) / np.mean(np.abs(noisy - clean_) ** 2))
            assert 15 < snr < 45  # one acquisition of 2 values at 30 dB
    np.save(tmp_path / "bad.npy", np.full((4, 4), np.nan))
    for args, why in ((["--eta", str(tmp_path / "bad.npy")], "NaN"), (["--family", "squares"], "unknown scatterer"),
                      (["--order", "4"], "order")):
        bad = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=20)
        assert bad.returncode != 0 and why in bad.stderr, bad.stderr
