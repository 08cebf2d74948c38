"""The CT firmware emulator (stage + detector) on a real pty, driven by the edge's SerialDriver."""
from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import numpy as np
import pytest
import serial
from cobs import cobs

from controller.protocol import common, ct, framing
from stage_device import StageDevice, served
from firmware_sim.ct.physics import line_integrals
from firmware_sim.ct.emulator import CtEmulator, make_sample
from proc_util import pty_server

E = common.ErrorCode
SAMPLE = ct.SetSample(ct.SampleKind.PENTAGON, 3, ct.Split.TRAIN, 63)


class Device(StageDevice):
    status_request, status_type = ct.StageStatusRequest(), ct.StageStatus

    async def home(self) -> None:
        await self.driver.command(ct.Home())
        await self.wait(lambda s: s.homed and s.in_position)

    async def projection(self, exposure_s: float = 0.08) -> ct.Projection:
        n = len(self.data)
        await self.driver.command(ct.Acquire(exposure_s))
        end = time.monotonic() + 3.0
        while len(self.data) == n:
            assert time.monotonic() < end
            await asyncio.sleep(0.002)
        return self.data[-1]


@pytest.fixture
async def ct_device() -> AsyncIterator:
    async with AsyncExitStack() as stack:
        async def start(**kw) -> Device:
            emu = CtEmulator(sample=kw.pop("sample", SAMPLE), **kw)
            return Device(emu, await stack.enter_async_context(served(emu, ct.CT)))

        yield start


async def test_unhomed_stage_refuses_motion_and_acquisition_then_homes(ct_device) -> None:
    dev = await ct_device(seed=1, speed=4.0)
    assert dev.driver.identity.device == CtEmulator.DEVICE
    st = await dev.status()
    assert math.isnan(st.angle_deg) and not st.homed and not st.moving
    assert await dev.refused(ct.MoveTo(10.0)) == "NOT_HOMED"
    assert await dev.refused(ct.Acquire(0.08)) == "NOT_HOMED"
    await dev.home()
    st = await dev.status()
    assert st.angle_deg == 0.0 and st.target_deg == 0.0 and not st.at_min and not st.at_max
    assert (await dev.driver.status()).cmd_rejected == 2


async def test_move_follows_slew_accel_and_settle(ct_device) -> None:
    dev = await ct_device(seed=2, speed=4.0, tick_hz=500.0)
    await dev.home()
    await dev.driver.command(ct.MoveTo(90.0))
    t0 = (await dev.status()).t_us
    seen: list[ct.StageStatus] = []
    while not (st := await dev.status()).in_position:
        seen.append(st)
        await asyncio.sleep(0.001)
    arrived = next(s.t_us for s in seen if not s.moving)  # at rest on the target, settling
    # Trapezoid (90°/s, 360°/s²): 0.25 s accelerating + 0.75 s cruising + 0.25 s braking, then 50 ms settle.
    assert (arrived - t0) / 1e6 == pytest.approx(1.25, abs=0.03)
    assert (st.t_us - arrived) / 1e6 == pytest.approx(0.05, abs=0.02)
    assert max(s.angle_deg for s in seen) <= 90.0 and st.angle_deg == pytest.approx(90.0, abs=0.003)
    # mid-move angles follow the trapezoid: at t = 0.25 s the stage has covered a·t²/2 = 11.25°
    early = min(seen, key=lambda s: abs(s.t_us - t0 - 250_000))
    assert early.angle_deg == pytest.approx(360.0 * ((early.t_us - t0) / 1e6) ** 2 / 2, abs=1.0)


async def test_busy_and_out_of_range_commands_are_refused_and_counted(ct_device) -> None:
    dev = await ct_device(seed=3, speed=4.0)
    await dev.home()
    await dev.driver.command(ct.MoveTo(300.0))  # ≈ 0.9 s of wall time to be refused in
    await dev.wait(lambda s: s.moving and s.angle_deg > 1.0)
    assert [await dev.refused(m) for m in (ct.MoveTo(30.0), ct.Acquire(0.08), ct.Home())] == ["BUSY"] * 3
    st = await dev.wait(lambda s: s.in_position)
    assert st.angle_deg == pytest.approx(300.0, abs=0.003) and st.busy_refused == 3
    for msg, why in ((ct.MoveTo(365.5), "OUT_OF_RANGE"), (ct.MoveTo(-5.5), "OUT_OF_RANGE"),
                     (ct.MoveTo(math.nan), "NOT_FINITE"), (ct.Acquire(0.0), "OUT_OF_RANGE"),
                     (ct.Acquire(math.inf), "NOT_FINITE"), (ct.SetSample(7, 0, 0, 63), "BAD_PARAM"),
                     (ct.SetSample(0, 0, 0, 64), "BAD_PARAM"), (ct.SetNoise(9), "BAD_PARAM"),
                     (ct.SetNoise(1, 1.5), "OUT_OF_RANGE"), (ct.Projection(0.0, 0, 0.1, ()), "UNSUPPORTED")):
        assert await dev.refused(msg) == why, msg
    st = await dev.status()
    assert st.target_deg == pytest.approx(300.0) and not st.moving and st.busy_refused == 3
    await dev.driver.command(ct.MoveTo(365.0))  # the soft limit itself is allowed and flagged
    assert (await dev.wait(lambda s: s.in_position, timeout=10.0)).at_max


async def test_exposure_takes_its_time_blocks_motion_and_halt_cancels_it(ct_device) -> None:
    dev = await ct_device(seed=4, speed=2.0)
    await dev.home()
    t0 = (await dev.status()).t_us
    proj = await dev.projection(0.2)
    assert (proj.t_us - t0) / 1e6 == pytest.approx(0.2, abs=0.03) and proj.exposure_s == pytest.approx(0.2)
    await dev.driver.command(ct.Acquire(1.0))  # 0.5 s of wall time
    assert (await dev.status()).exposing
    assert await dev.refused(ct.MoveTo(10.0)) == "BUSY"
    await dev.driver.command(ct.Halt())
    await asyncio.sleep(0.6)  # past the exposure's end: its projection never comes
    assert len(dev.data) == 1 and not (await dev.status()).exposing


async def test_halt_brakes_and_holds_the_stage(ct_device) -> None:
    dev = await ct_device(seed=5, speed=4.0)
    await dev.home()
    await dev.driver.command(ct.MoveTo(180.0))
    await dev.wait(lambda s: s.angle_deg > 60.0)
    await dev.driver.command(ct.Halt())
    braking = await dev.status()
    st = await dev.wait(lambda s: s.in_position)
    # braking from ≤ 90°/s at 360°/s² takes ≤ 11.25°; the stage holds where it came to rest
    assert braking.angle_deg <= st.angle_deg <= braking.angle_deg + 11.25 and st.angle_deg < 170.0
    assert st.target_deg == pytest.approx(st.angle_deg, abs=0.01)
    await asyncio.sleep(0.1)
    assert (await dev.status()).angle_deg == st.angle_deg


async def test_projection_is_the_phantoms_line_integrals_and_gaussian_noise_is_5_percent(ct_device) -> None:
    dev = await ct_device(seed=6, speed=4.0)
    await dev.home()
    await dev.driver.command(ct.MoveTo(37.0))
    await dev.wait(lambda s: s.in_position)
    clean = line_integrals(make_sample(SAMPLE).vertices, np.array([37.0]), 63)[0]
    await dev.driver.command(ct.SetNoise(ct.NoiseModel.NONE))
    proj = await dev.projection()
    assert proj.angle_deg == pytest.approx(37.0, abs=0.003) and len(proj.data) == 63
    assert np.allclose(proj.data, clean, atol=1e-4 * clean.max())
    await dev.driver.command(ct.SetNoise(ct.NoiseModel.GAUSSIAN, 0.05))
    noisy = np.array([(await dev.projection(0.02)).data for _ in range(12)])
    assert (noisy - clean).std() / clean.std() == pytest.approx(0.05, rel=0.15)
    assert len({row.tobytes() for row in noisy}) == 12  # fresh noise per exposure


async def test_poisson_noise_follows_photon_statistics_and_exposure(ct_device) -> None:
    dev = await ct_device(seed=7, speed=4.0)
    await dev.home()
    clean = line_integrals(make_sample(SAMPLE).vertices, np.array([0.0]), 63)[0]
    flux, mu = 1.0e5, dev.emu.detector.mu_per_unit
    await dev.driver.command(ct.SetNoise(ct.NoiseModel.POISSON, 0.0, flux))
    for exposure in (0.1, 0.01):
        y = np.array([(await dev.projection(exposure)).data for _ in range(10)])
        photons = flux * exposure * np.exp(-mu * clean)  # expected counts per bin
        z = (y - clean) * mu * np.sqrt(photons)  # -ln(N/I0)/mu ≈ clean + Normal(0, 1/(mu·√N))
        assert z.mean() == pytest.approx(0.0, abs=0.2) and z.std() == pytest.approx(1.0, abs=0.15), exposure


def test_projection_frames_are_variable_length_and_checked() -> None:
    msg = ct.Projection(12.5, 7, 0.25, tuple(float(i) for i in range(239)))
    frame = framing.encode(msg, 1)
    assert len(frame) < framing.MAX_PAYLOAD and framing.FrameDecoder(ct.CT).feed(frame) == [(1, msg)]
    with pytest.raises(framing.ProtocolError):
        framing.encode(ct.Projection(0.0, 0, 0.1, (0.0,) * 506), 0)  # 505 bins is the most one frame holds
    dec = framing.FrameDecoder(ct.CT)
    cut = framing.encode(ct.Projection(0.0, 0, 0.1, (1.0, 2.0)), 0)
    forged = cobs.decode(cut[:-1])[:-5]  # drop one data byte and the CRC, then re-sign
    forged += zlib.crc32(forged).to_bytes(4, "little")
    assert dec.feed(cobs.encode(forged) + b"\x00") == [] and dec.bad_length == 1


def test_cli_serves_ct_and_stops_on_sigterm() -> None:
    code = "import typer; from firmware_sim.cli import sim_ct; typer.run(sim_ct)"
    with pty_server([sys.executable, "-c", code, "--speed", "2", "--size", "31", "--noise", "poisson"]) as path:
        with serial.Serial(path, timeout=1.0) as port:
            port.write(framing.encode(common.Identify(), 0))
            dec, got = framing.FrameDecoder(ct.CT), []
            end = time.monotonic() + 2.0
            while not got and time.monotonic() < end:
                got = dec.feed(port.read(max(1, port.in_waiting)))
            assert got[0][1].device == CtEmulator.DEVICE
    bad = subprocess.run([sys.executable, "-c", code, "--sample", "hexagon"], capture_output=True, text=True,
                         timeout=20)
    assert bad.returncode != 0 and "hexagon" in bad.stderr
