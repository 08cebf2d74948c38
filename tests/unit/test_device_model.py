"""The device-model contract (firmware_sim.device): every instrument model satisfies it, and a batch of one run
through it gives the same numbers as the firmware emulator that serves the model (one physics source)."""
from __future__ import annotations

import numpy as np
import pytest

from controller.protocol import ct as p
from controller.protocol import framing
from firmware_sim.ct.emulator import CtEmulator
from firmware_sim.ct.physics import Detector, DetectorParams, RotationStage
from firmware_sim.device import DeviceModel, rollout
from firmware_sim.mems.emulator import MemsEmulator
from firmware_sim.mems.physics import MemsStand


@pytest.mark.parametrize("model", [MemsStand(), RotationStage(), Detector(DetectorParams())])
def test_each_instrument_model_satisfies_the_contract(model):
    assert isinstance(model, DeviceModel)


def test_mems_batch_of_one_equals_the_emulator():
    emu = MemsEmulator(seed=5)
    commands = [np.array([[300.0 * k, -200.0 * k]]) for k in range(40)]
    for c in commands:
        emu.command[:] = c
        emu._tick()
    state, frames = rollout(emu.stand, 5, commands, 1.0 / emu.frame_rate)
    assert state.t_s == emu.state.t_s
    np.testing.assert_array_equal(state.m2_px, emu.state.m2_px)
    np.testing.assert_array_equal(state.delay_line, emu.state.delay_line)
    # and the batch axis is real: row 0 of a batch of 3 follows the same dynamics deterministically
    batch_state, _ = rollout(emu.stand, 5, [np.repeat(c, 3, axis=0) for c in commands], 1.0 / emu.frame_rate, batch=3)
    assert batch_state.m2_px.shape == (3, 2)


def test_ct_stage_and_detector_batch_of_one_equal_the_emulator():
    emu = CtEmulator(seed=7, tick_hz=200.0)
    sent: list[framing.Message] = []
    emu._send = sent.append  # the projection the device would put on the wire
    dt = 1.0 / emu.tick_hz
    stage, det = emu.stage, Detector(emu.detector)
    state = stage.reset(7)
    np.testing.assert_array_equal(state.angle_deg, emu.state.angle_deg)

    def tick_both(n: int, command=None):
        nonlocal state
        for k in range(n):
            state, _ = stage.step(state, command if k == 0 else None, dt)
            emu._tick()
        np.testing.assert_array_equal(state.angle_deg, emu.state.angle_deg)

    assert emu._handle(p.Home()) is None
    state = stage.home(state)
    tick_both(400)
    assert emu._handle(p.MoveTo(33.0)) is None
    tick_both(400, np.array([33.0]))
    assert emu.in_position
    assert emu._handle(p.Acquire(0.08)) is None
    tick_both(17)
    projection = [m for m in sent if isinstance(m, p.Projection)]
    assert len(projection) == 1
    dstate, data = det.step(det.reset(7, sample=emu.sample), state.angle_deg, 0.08)
    np.testing.assert_array_equal(data[0], np.asarray(projection[0].data, np.float32))
    assert dstate.t_s == 0.08
