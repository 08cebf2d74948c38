"""The forge's wire messages (controller/protocol/bal.py) and firmware (firmware_sim/bal/): encode/decode, the
force conversion, lockstep SDE steps with the true θ, limits answered with a Nak, the camera's centroid noise."""
from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from controller.protocol import bal, common, framing
from controller.modes.bal.problem import load_problem
from firmware_sim.bal.camera import Camera, CameraParams
from firmware_sim.bal.forge_emulator import Forge, ForgeEmulator
from stage_device import served

E = common.ErrorCode
PROBLEM = load_problem("forge")


def _round_trip(msg: framing.Message) -> framing.Message:
    ((_, out),) = framing.FrameDecoder(bal.FORGE).feed(framing.encode(msg, 7))
    return out


def test_messages_round_trip_and_ids_follow_scatter() -> None:
    for msg in (bal.StartEpisode(1.5, -2.0), bal.Force(3.0, -1.0), bal.InfoRequest(),
                bal.Position(4, 160000, 1.25, 0.5, -3.0, 2.0, False), bal.Info(0.0625, 8.0, 0.0, 0.0, 10.0, 10.0)):
        assert _round_trip(msg) == msg
    assert bal.Position.IS_DATA and not bal.Force.IS_DATA
    assert min(c.TYPE_ID for c in (bal.StartEpisode, bal.Force, bal.Position, bal.InfoRequest, bal.Info)) == 0x90
    assert bal.FORGE.device == "edgetune-forge"


@pytest.mark.parametrize("u", [(3.0, 4.0), (-2.0, 0.5), (0.0, -7.9), (0.0, 0.0)])
def test_force_command_is_the_magnitude_and_steering_angle(u: tuple[float, float]) -> None:
    cmd = bal.force_command(np.array(u))
    assert cmd.magnitude == pytest.approx(math.hypot(*u), rel=1e-7)
    np.testing.assert_allclose(cmd.vector(), u, atol=1e-6)
    assert _round_trip(cmd) == cmd  # already float32: the wire changes nothing


def test_a_step_is_the_sde_with_the_true_depths() -> None:
    """The firmware's step is firmware_sim/bal/env.py's Euler–Maruyama step with θ_true (same seed, same noise)."""
    from firmware_sim.bal.env import SdeEnv

    forge, env = Forge(PROBLEM, seed=5), SdeEnv(PROBLEM, seed=5)
    start = forge.start(PROBLEM.x0)
    assert isinstance(start, bal.Position) and start.step == 0 and (start.fx, start.fy) == (0.0, 0.0)
    env.reset(PROBLEM.x0[None])
    for k in range(3):
        cmd = bal.force_command(np.array([2.0, 1.0 + k]))
        reading = forge.force(cmd)
        x_env = env.step(cmd.vector()[None])[0][0]
        np.testing.assert_array_equal(forge.x, x_env)
        assert reading.step == k + 1 and reading.t_us == round((k + 1) * PROBLEM.dt * 1e6)
        assert np.hypot(reading.x - x_env[0], reading.y - x_env[1]) < 1e-3  # the camera's read-back
        np.testing.assert_allclose((reading.fx, reading.fy), cmd.vector())


def test_limits_are_refused_and_leave_the_state() -> None:
    forge = Forge(PROBLEM, seed=0)
    assert forge.force(bal.Force(1.0, 0.0)) == E.BAD_PARAM  # no episode yet
    assert forge.start(np.array([-0.5, 5.0])) == E.OUT_OF_RANGE  # outside the box
    assert forge.start(np.array([np.nan, 5.0])) == E.NOT_FINITE
    forge.start(PROBLEM.x0)
    x = forge.x.copy()
    assert forge.force(bal.Force(np.nextafter(PROBLEM.u_max, 9.0), 0.0)) == E.OUT_OF_RANGE
    assert forge.force(bal.Force(-1.0, 0.0)) == E.OUT_OF_RANGE
    assert forge.force(bal.Force(1.0, math.inf)) == E.NOT_FINITE
    np.testing.assert_array_equal(forge.x, x)
    assert forge.step == 0
    for _ in range(PROBLEM.steps):
        assert isinstance(forge.force(bal.Force(0.0, 0.0)), bal.Position)
    assert forge.force(bal.Force(0.0, 0.0)) == E.OUT_OF_RANGE  # the N steps are done


def test_leaving_the_box_ends_the_episode() -> None:
    forge = Forge(PROBLEM, seed=0)
    forge.start(np.array([0.05, 5.0]))
    reading = forge.force(bal.Force(PROBLEM.u_max, math.pi))  # full force out through x = 0
    while reading.in_box:
        reading = forge.force(bal.Force(PROBLEM.u_max, math.pi))
    assert reading.x < 0 and forge.force(bal.Force(0.0, 0.0)) == E.OUT_OF_RANGE


def test_centroid_noise_is_small_unbiased_and_seeded() -> None:
    cam, x = Camera(CameraParams(), seed=3), np.array([1.2345, 6.789])
    err = np.array([cam.read(x) - x for _ in range(500)])
    px = CameraParams().pixel
    assert np.abs(err.mean(0)).max() < 0.02 * px and 0.001 * px < err.std(0).min() < 0.05 * px
    np.testing.assert_array_equal(Camera(CameraParams(), 3).read(x), Camera(CameraParams(), 3).read(x))
    loud = Camera(CameraParams(read_noise=50.0), seed=3)
    assert np.array([loud.read(x) - x for _ in range(200)]).std(0).min() > 5 * err.std(0).max()
    with pytest.raises(ValueError, match="odd"):
        CameraParams(window=10)


async def test_the_firmware_answers_on_a_pty() -> None:
    emu = ForgeEmulator(PROBLEM, seed=1)
    readings: list[bal.Position] = []
    async with served(emu, bal.FORGE) as driver:
        driver.on_frame = lambda msg, _t: readings.append(msg)
        info = await driver.request(bal.InfoRequest(), bal.Info)
        assert (info.dt, info.f_max, info.x_high) == pytest.approx((PROBLEM.dt, PROBLEM.u_max, 10.0))
        with pytest.raises(ValueError, match="OUT_OF_RANGE"):
            await driver.command(bal.StartEpisode(-1.0, 0.0))
        assert driver.send(bal.StartEpisode(*PROBLEM.x0)) and driver.send(bal.force_command(np.array([1.0, 1.0])))
        for _ in range(200):
            if len(readings) == 2:
                break
            await asyncio.sleep(0.01)
    assert [r.step for r in readings] == [0, 1] and emu.cmd_rejected == 1
