"""Inverse-scattering instrument firmware emulator: the rotating source `Arm` + the ring's receivers with a
scatterer η in the domain, served over a real pty with the binary protocol (docs/protocol.md, scattering section).

The device refuses what the hardware would: a target outside the arm's limits or a frequency index outside the
set (OUT_OF_RANGE), MoveArm while the arm moves and Acquire unless it is in position (BUSY; also counted in
`busy_refused`), a receiver list that is empty, too long or repeats an angle (BAD_PARAM). An acquisition fires
the source at the arm's ACTUAL angle rounded to the nearest degree (the ring's stations are whole degrees; an arm
at rest within half a degree of its integer target fires exactly there) and answers with its `Data` at once (the
field is computed in a few ms for n = 32). Device time is the wall time since power-on × ``speed``; the arm's
motion is analytic, so there is no physics to tick.
"""
from __future__ import annotations

import math
import time

import numpy as np

from controller.protocol import common, framing, scatter
from firmware_sim.scatter.arm import Arm, ArmParams
from firmware_sim.scatter.receiver import ReceiverParams, acquire
from firmware_sim.serial_device import EmulatedDevice, Reply

E = common.ErrorCode
ORDER_CODES = {1: 1, 2: 2, 3: 3, "exact": 0}  # Info.order on the wire


class ScatterEmulator(EmulatedDevice):
    DEVICE = scatter.SCATTER.device or ""
    FW_VERSION = "0.1.0"
    MESSAGES = scatter.SCATTER

    def __init__(self, eta: np.ndarray, key: int, *, arm: ArmParams = ArmParams(),
                 receiver: ReceiverParams = ReceiverParams(), seed: int = 0, speed: float = 1.0,
                 tick_hz: float = 100.0, tx_buffer: int = 4096, rx_buffer: int = 4095) -> None:
        """``eta``: the n × n contrast map in the domain; ``key`` (u32) keys the receiver noise. ValueError on bad
        settings."""
        eta = np.asarray(eta, np.float64)
        if eta.ndim != 2 or eta.shape[0] != eta.shape[1] or eta.shape[0] < 2 or not np.isfinite(eta).all():
            raise ValueError(f"the scatterer must be a finite square n × n map, got shape {eta.shape}")
        if not 0 <= key < 1 << 32:
            raise ValueError(f"sample key must be a u32, got {key}")
        self.eta, self.key, self.arm_params, self.receiver = eta, key, arm, receiver
        super().__init__(seed=seed, speed=speed, tick_hz=tick_hz, tx_buffer=tx_buffer, rx_buffer=rx_buffer)

    def _reset_physics(self, seed: int) -> None:
        """Arm at rest at power-up, RNGs re-seeded, frequency 0, acquisition index 0; sample kept."""
        self.arm = Arm(self.arm_params, seed, self.now_s())
        self.frequency = 0
        self.busy_refused = self.acquisitions = 0

    def now_s(self) -> float:
        """Device time since power-on [s]."""
        return (time.monotonic() - self.t_boot) * self.speed

    def _handle(self, msg: framing.Message) -> Reply:
        now = self.now_s()
        match msg:
            case scatter.ArmStatusRequest():
                return scatter.ArmStatus(int(round(now * 1e6)), self.arm.readback_deg(now), self.arm.target_deg,
                                         self.arm.moving(now), self.arm.in_position(now), self.frequency,
                                         self.busy_refused & 0xFFFFFFFF)
            case scatter.InfoRequest():
                lo, hi = self.arm_params.limits_deg
                return scatter.Info(self.key, self.eta.shape[0], ORDER_CODES[self.receiver.order],
                                    self.receiver.snr_db, lo, hi)
            case scatter.Halt():
                self.arm.halt(now)
                return None
            case scatter.MoveArm(angle_deg=angle):
                return self._move(now, angle)
            case scatter.SetFrequency(index=f):
                if not 0 <= f < scatter.N_FREQUENCIES:
                    return E.OUT_OF_RANGE
                self.frequency = f
                return None
            case scatter.Acquire(receivers=r):
                return self._acquire(now, r)
        return super()._handle(msg)

    def _busy(self, blocked: bool) -> E | None:
        if blocked:
            self.busy_refused += 1
            return E.BUSY
        return None

    def _move(self, now: float, angle: float) -> Reply:
        if not math.isfinite(angle):
            return E.NOT_FINITE
        if err := self._busy(self.arm.moving(now)):
            return err
        if not self.arm_params.in_range(angle):
            return E.OUT_OF_RANGE
        self.arm.command(now, angle)
        return None

    def _acquire(self, now: float, receivers: tuple[int, ...]) -> Reply:
        if not 0 < len(receivers) <= scatter.MAX_RECEIVERS or len(set(receivers)) != len(receivers):
            return E.BAD_PARAM
        if max(receivers) >= 360:
            return E.OUT_OF_RANGE
        if err := self._busy(not self.arm.in_position(now)):
            return err
        source = int(round(self.arm.angle_deg(now))) % 360
        field = acquire(self.eta, source, self.frequency, np.asarray(receivers), self.receiver, self.key,
                        self.acquisitions)
        reply = scatter.Data.of(self.acquisitions & 0xFFFFFFFF, int(round(now * 1e6)), source, self.frequency, field)
        self.acquisitions += 1
        return reply

    def _tick(self) -> None:
        """Nothing to advance: the arm's motion is analytic in device time."""
