"""CT instrument firmware emulator: a `RotationStage` + `Detector` with a phantom on the stage, served
over a real pty with the binary protocol (docs/protocol.md, CT section).

The device refuses what the hardware would: motion or acquisition before homing (NOT_HOMED), a
target beyond the soft limits (OUT_OF_RANGE), Home/MoveTo while the stage moves or an exposure runs,
and Acquire unless the stage is in position (BUSY; these are also counted in `busy_refused`). An
exposure takes `exposure_s` of device time at the stage's actual angle; its `Projection` is sent
when it ends. `Halt` brakes the stage, holds it and cancels a running exposure.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from controller.protocol import common, ct, framing
from firmware_sim.ct.physics import Detector, DetectorParams, RotationStage, StageState
from firmware_sim.ct.phantoms import SHAPES, Phantoms, make_phantoms
from firmware_sim.serial_device import EmulatedDevice, Reply

MAX_EXPOSURE_S = 10.0
MAX_BINS = (framing.MAX_PAYLOAD - 8 - ct.Projection.BODY.size) // 4  # 505 float32 bins fit in one frame
NOISE_NAMES = {ct.NoiseModel.NONE: "none", ct.NoiseModel.GAUSSIAN: "gaussian", ct.NoiseModel.POISSON: "poisson"}
DEFAULT_SAMPLE = ct.SetSample(ct.SampleKind.ANY, 0, ct.Split.TRAIN, 63)


def make_sample(msg: ct.SetSample) -> Phantoms:
    """The phantom a SetSample describes (one of `firmware_sim.ct.phantoms`); ValueError when it is invalid."""
    if msg.kind not in tuple(ct.SampleKind) or msg.split not in (ct.Split.TRAIN, ct.Split.VAL):
        raise ValueError(f"unknown sample kind {msg.kind} or split {msg.split}")
    if not 15 <= msg.size <= MAX_BINS:
        raise ValueError(f"sample size must be 15..{MAX_BINS}, got {msg.size}")
    shapes = SHAPES if msg.kind == ct.SampleKind.ANY else (SHAPES[msg.kind],)
    return make_phantoms(1, msg.size, msg.seed, ct.Split(msg.split).name.lower(), shapes)


class CtEmulator(EmulatedDevice):
    DEVICE = ct.CT.device or ""
    FW_VERSION = "0.1.0"
    MESSAGES = ct.CT

    def __init__(self, stage: RotationStage | None = None, detector: DetectorParams | None = None, *,
                 sample: ct.SetSample = DEFAULT_SAMPLE, seed: int = 0, speed: float = 1.0, tick_hz: float = 200.0,
                 tx_buffer: int = 4096, rx_buffer: int = 4095) -> None:
        """``tick_hz``: stage physics rate in device time (the wall rate is tick_hz × speed)."""
        self.stage = stage or RotationStage()
        self.detector = detector or DetectorParams()
        Detector(self.detector)  # validates the noise model
        self.sample = make_sample(sample)
        super().__init__(seed=seed, speed=speed, tick_hz=tick_hz, tx_buffer=tx_buffer, rx_buffer=rx_buffer)

    def _reset_physics(self, seed: int) -> None:
        """Stage powered up un-homed at an unknown angle, noise RNG re-seeded; sample and noise kept."""
        self.state: StageState = self.stage.reset(seed, batch=1)
        self.rng = np.random.default_rng(seed)
        self.exposure: tuple[float, float] | None = None  # (end time [s], exposure [s]) of a running exposure
        self.busy_refused = 0

    # --- state -----------------------------------------------------------------------------------

    @property
    def homed(self) -> bool:
        return bool(self.state.homed[0] and not self.state.homing[0])

    @property
    def moving(self) -> bool:
        """Not at rest on the target (so true from the moment a move is accepted)."""
        s = self.state
        return bool(abs(s.target_deg[0] - s.angle_deg[0]) > self.stage.p.tolerance_deg or s.velocity_dps[0] != 0.0)

    @property
    def in_position(self) -> bool:
        return not self.moving and not self.state.homing[0] and self.state.settled_s[0] >= self.stage.p.settle_s

    def stage_status(self) -> ct.StageStatus:
        s, lim = self.state, self.stage.p
        angle = float(self.stage.encoder(s)[0])
        return ct.StageStatus(int(round(s.t_s * 1e6)), angle, float(s.target_deg[0]), self.moving, self.in_position,
                             self.homed, self.exposure is not None,
                             self.homed and angle <= lim.soft_min_deg + lim.tolerance_deg,
                             self.homed and angle >= lim.soft_max_deg - lim.tolerance_deg,
                             self.busy_refused & 0xFFFFFFFF)

    # --- commands --------------------------------------------------------------------------------

    def _handle(self, msg: framing.Message) -> Reply:
        match msg:
            case ct.StageStatusRequest():
                return self.stage_status()
            case ct.Halt():
                self.state, self.exposure = self.stage.halt(self.state), None
                return None
            case ct.Home():
                return self._busy(self.moving) or self._home()
            case ct.MoveTo(angle_deg=a):
                return self._move(a)
            case ct.Acquire(exposure_s=e):
                return self._acquire(e)
            case ct.SetSample():
                return self._set_sample(msg)
            case ct.SetNoise():
                return self._set_noise(msg)
        return super()._handle(msg)

    def _busy(self, moving: bool) -> common.ErrorCode | None:
        if moving or self.exposure is not None:
            self.busy_refused += 1
            return common.ErrorCode.BUSY
        return None

    def _home(self) -> None:
        self.state = self.stage.home(self.state)

    def _move(self, angle: float) -> common.ErrorCode | None:
        if not math.isfinite(angle):
            return common.ErrorCode.NOT_FINITE
        if not self.homed:
            return common.ErrorCode.NOT_HOMED
        if err := self._busy(self.moving):
            return err
        if not self.stage.p.soft_min_deg <= angle <= self.stage.p.soft_max_deg:
            return common.ErrorCode.OUT_OF_RANGE
        self.state = self.stage.command(self.state, np.array([angle]))
        return None

    def _acquire(self, exposure_s: float) -> common.ErrorCode | None:
        if not math.isfinite(exposure_s):
            return common.ErrorCode.NOT_FINITE
        if not self.homed:
            return common.ErrorCode.NOT_HOMED
        if err := self._busy(not self.in_position):
            return err
        if not 0.0 < exposure_s <= MAX_EXPOSURE_S:
            return common.ErrorCode.OUT_OF_RANGE
        self.exposure = (self.state.t_s + exposure_s, exposure_s)
        return None

    def _set_sample(self, msg: ct.SetSample) -> common.ErrorCode | None:
        if self.exposure is not None:
            self.busy_refused += 1
            return common.ErrorCode.BUSY
        try:
            self.sample = make_sample(msg)
        except ValueError:
            return common.ErrorCode.BAD_PARAM
        return None

    def _set_noise(self, msg: ct.SetNoise) -> common.ErrorCode | None:
        if msg.model not in NOISE_NAMES:
            return common.ErrorCode.BAD_PARAM
        if not (math.isfinite(msg.level) and math.isfinite(msg.flux)):
            return common.ErrorCode.NOT_FINITE
        if not (0.0 <= msg.level <= 1.0 and msg.flux > 0.0):
            return common.ErrorCode.OUT_OF_RANGE
        self.detector = replace(self.detector, noise=NOISE_NAMES[ct.NoiseModel(msg.model)], noise_frac=msg.level,
                                flux_per_s=msg.flux)
        return None

    # --- physics ---------------------------------------------------------------------------------

    def _tick(self) -> None:
        self.state, _ = self.stage.step(self.state, None, 1.0 / self.tick_hz)
        if self.exposure is not None and self.state.t_s >= self.exposure[0] - 1e-9:
            exposure_s = self.exposure[1]
            self.exposure = None
            det = Detector(replace(self.detector, exposure_s=exposure_s))
            data = det.acquire(self.sample, self.state.angle_deg, self.rng)[0]  # at the actual angle
            self._send(ct.Projection(float(self.stage.encoder(self.state)[0]), int(round(self.state.t_s * 1e6)),
                                    exposure_s, tuple(data.tolist())))
