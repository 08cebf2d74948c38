"""ophyd-async devices over a CT stand that speaks edgetune's serial protocol (the emulator, `edgetune sim ct`, or
the instrument's controller): a rotation stage (`CtStage`, movable) and a detector (`CtDetector`, triggerable),
so a Bluesky plan drives the stand directly, without a daemon, e.g. with the angle agent (hil/bluesky/agent.py).

The device steps are the angles mode's own (controller/modes/ct/angles.py): the stage's safety gate on every
target, a move commanded only to a resting stage and done once the stage reports in position, an acquisition
that waits for its projection; homing before the first move. Build the stand inside the RunEngine's event loop
(its driver's reader runs there): ``call_in_bluesky_event_loop`` from bluesky.run_engine.
"""
from __future__ import annotations

import time

import numpy as np
from bluesky.protocols import Movable, Stoppable, Triggerable
from ophyd_async.core import (Array1D, AsyncStatus, Device, StandardReadable, StandardReadableFormat as Format,
                              soft_signal_r_and_setter)

from controller.driver import SerialDriver
from controller.modes.ct.angles import AnglesMode
from controller.modes.ct.config import AnglesConfig


class CtStage(StandardReadable, Movable[float], Stoppable):
    """The rotation stage: ``set(angle)`` gates the target, moves and returns in position; ``angle`` [deg] is where
    it rests (the gated target)."""

    def __init__(self, mode: AnglesMode, name: str = "") -> None:
        self._mode, self._homed = mode, False
        with self.add_children_as_readables(Format.HINTED_SIGNAL):
            self.angle, self._set_angle = soft_signal_r_and_setter(float, 0.0, units="deg")
        super().__init__(name=name)

    @AsyncStatus.wrap
    async def set(self, value: float) -> None:
        mode = self._mode
        if not self._homed:
            await mode.home()
            self._homed = True
        target = mode.gate(float(value), mode.position, time.monotonic())
        await mode.move(target)
        self._set_angle(target)

    async def stop(self, success: bool = True) -> None:
        await self._mode.halt()


class CtDetector(StandardReadable, Triggerable):
    """The detector: ``trigger()`` acquires one projection at the stage's position; ``read()`` gives it
    (``projection``, one float32 per bin) and the encoder angle it was measured at (``angle``, hinted)."""

    def __init__(self, mode: AnglesMode, name: str = "") -> None:
        self._mode = mode
        with self.add_children_as_readables(Format.HINTED_SIGNAL):
            self.angle, self._set_angle = soft_signal_r_and_setter(float, np.nan, units="deg")
        with self.add_children_as_readables():
            self.projection, self._set_projection = soft_signal_r_and_setter(
                Array1D[np.float32], np.zeros(mode.cfg.size, np.float32))
        super().__init__(name=name)

    @AsyncStatus.wrap
    async def trigger(self) -> None:
        p = await self._mode.measure()
        self._set_projection(np.asarray(p.data, np.float32))
        self._set_angle(p.angle_deg)


class CtStand(Device):
    """A stand's ``rotation`` stage and ``detector`` over one connected driver (messages=protocol.CT); ``config``: the
    stage's limits, exposure and timeouts (the daemon's [angles] section)."""

    def __init__(self, driver: SerialDriver, config: AnglesConfig = AnglesConfig(), name: str = "") -> None:
        mode = AnglesMode(driver, config)  # its device steps only: home, move, measure, halt
        self.rotation = CtStage(mode)  # (`stage` is a bluesky verb)
        self.detector = CtDetector(mode)
        super().__init__(name=name)
