"""Ptychography instrument firmware emulator: a `ScanStage` + the pixel detector with a phase object on the
stage, served over a real pty with the binary protocol (docs/protocol.md, ptychography section).

The sample is a phase map φ = σV (Optics.object_px² px) with its key, given to the constructor; ``sampler``
(key → phase map) lets `SetSample` draw another one (`edgetune sim ptycho` passes the MoS₂ generator). The
device refuses what the hardware would: a target outside the stage's range (OUT_OF_RANGE), MoveTo while the
stage moves or an exposure runs, Acquire unless the stage is in position (BUSY; also counted in
`busy_refused`). An exposure takes its time in device time at the stage's actual position, snapped to the
nearest object pixel (`detector.snap`), and its `Frame` — `detector.counts` for that position, the sample's
key and the exposure's dose — is sent, in chunks, when it ends. `Halt` brakes the stage and cancels a running
exposure. Device time is the wall time since power-on × ``speed``; the stage's motion is analytic, so the
physics tick only ends exposures.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from controller.modes.ptycho.optics import Optics, probe
from controller.protocol import common, framing, ptycho
from firmware_sim.ptycho.detector import MAX_EXPOSURE_US, DetectorParams, counts, snap
from firmware_sim.ptycho.stage import ScanStage, StageParams
from firmware_sim.serial_device import EmulatedDevice, Reply

E = common.ErrorCode


def frame_bytes(optics: Optics) -> int:
    """Wire bytes of one chunked Frame (its chunk frames after COBS, delimiters included)."""
    empty = np.zeros((optics.window, optics.window), np.uint32)
    return sum(map(len, framing.encode_frames(ptycho.Frame.of(0, 0, 0.0, 0.0, 1.0, 1, empty), 0)))


class PtychoEmulator(EmulatedDevice):
    DEVICE = ptycho.PTYCHO.device or ""
    FW_VERSION = "0.1.0"
    MESSAGES = ptycho.PTYCHO

    def __init__(self, phase: np.ndarray, key: int, *, optics: Optics = Optics(), stage: StageParams | None = None,
                 detector: DetectorParams = DetectorParams(), sampler: Callable[[int], np.ndarray] | None = None,
                 seed: int = 0, speed: float = 1.0, tick_hz: float = 1000.0, tx_buffer: int = 64 * 1024,
                 rx_buffer: int = 4095) -> None:
        """``tick_hz``: how often (device time) a running exposure is checked for its end. ``tx_buffer`` must
        hold a whole frame (a 64 × 64 frame is ≈ 16.7 kB on the wire). ValueError on bad settings."""
        self.optics = optics
        self.stage_params = stage or StageParams.for_optics(optics)
        span = (optics.grid - 1) * optics.pixel_A
        lo, hi = self.stage_params.range_A
        if lo < 0.0 or hi > span:
            raise ValueError(f"stage range {self.stage_params.range_A} Å beyond the scan grid's 0 … {span:g} Å")
        if tx_buffer < frame_bytes(optics):
            raise ValueError(f"tx_buffer {tx_buffer} B cannot hold one frame ({frame_bytes(optics)} B)")
        self.detector = detector
        self.probe = probe(optics)
        self.sampler = sampler
        self.key, self.phase = self._checked(key, phase)
        super().__init__(seed=seed, speed=speed, tick_hz=tick_hz, tx_buffer=tx_buffer, rx_buffer=rx_buffer)

    def _checked(self, key: int, phase: np.ndarray) -> tuple[int, np.ndarray]:
        n = self.optics.object_px
        phase = np.asarray(phase, np.float64)
        if phase.shape != (n, n) or not np.isfinite(phase).all():
            raise ValueError(f"the sample must be a finite {n} × {n} phase map, got shape {phase.shape}")
        if not 0 <= key < 1 << 32:
            raise ValueError(f"sample key must be a u32, got {key}")
        return key, phase

    def _reset_physics(self, seed: int) -> None:
        """Stage at rest in the middle of its range, RNGs re-seeded, no exposure; sample and dose kept."""
        self.stage = ScanStage(self.stage_params, seed, self.now_s())
        self.exposure: tuple[float, int] | None = None  # (end time [s], exposure [µs]) of a running exposure
        self.busy_refused = self.frames = 0

    def now_s(self) -> float:
        """Device time since power-on [s]."""
        return (time.monotonic() - self.t_boot) * self.speed

    # --- commands --------------------------------------------------------------------------------

    def _handle(self, msg: framing.Message) -> Reply:
        now = self.now_s()
        match msg:
            case ptycho.StageStatusRequest():
                return self.stage_status(now)
            case ptycho.InfoRequest():
                o, (lo, hi) = self.optics, self.stage_params.range_A
                return ptycho.Info(self.key, self.detector.dose, self.detector.exposure_us, o.energy_eV,
                                   o.aperture_mrad, o.defocus_A, o.pixel_A, o.window, o.grid, lo, hi)
            case ptycho.Halt():
                self.stage.halt(now)
                self.exposure = None
                return None
            case ptycho.MoveTo(x_A=x, y_A=y):
                return self._move(now, x, y)
            case ptycho.Acquire(exposure_us=e):
                return self._busy(not self.stage.in_position(now)) or self._acquire(now, e)
            case ptycho.SetSample(key=key):
                return self._busy(False) or self._set_sample(key)
            case ptycho.SetDose(dose=dose):
                return self._busy(False) or self._set_dose(dose)
        return super()._handle(msg)

    def stage_status(self, now: float) -> ptycho.StageStatus:
        x, y = self.stage.readback_A(now)
        tx, ty = self.stage.target_A
        return ptycho.StageStatus(int(round(now * 1e6)), x, y, tx, ty, self.stage.moving(now),
                                  self.stage.in_position(now), self.exposure is not None,
                                  self.busy_refused & 0xFFFFFFFF)

    def _busy(self, blocked: bool) -> E | None:
        """BUSY (counted) while ``blocked`` or an exposure runs."""
        if blocked or self.exposure is not None:
            self.busy_refused += 1
            return E.BUSY
        return None

    def _move(self, now: float, x: float, y: float) -> E | None:
        if not (math.isfinite(x) and math.isfinite(y)):
            return E.NOT_FINITE
        if err := self._busy(self.stage.moving(now)):
            return err
        if not self.stage_params.in_range(x, y):
            return E.OUT_OF_RANGE
        self.stage.command(now, x, y)
        return None

    def _acquire(self, now: float, exposure_us: int) -> E | None:
        if not 0 < exposure_us <= MAX_EXPOSURE_US:
            return E.OUT_OF_RANGE
        self.exposure = (now + exposure_us * 1e-6, exposure_us)
        return None

    def _set_sample(self, key: int) -> E | None:
        if self.sampler is None:
            return E.UNSUPPORTED
        try:
            self.key, self.phase = self._checked(key, self.sampler(key))
        except ValueError:
            return E.BAD_PARAM
        return None

    def _set_dose(self, dose: float) -> E | None:
        if not math.isfinite(dose):
            return E.NOT_FINITE
        try:
            self.detector = replace(self.detector, dose=dose)
        except ValueError:
            return E.OUT_OF_RANGE
        return None

    # --- physics ---------------------------------------------------------------------------------

    def _tick(self) -> None:
        if self.exposure is None or self.now_s() < self.exposure[0]:
            return
        end, exposure_us = self.exposure
        self.exposure = None
        dose = self.detector.dose_for(exposure_us)
        data = counts(self.probe, self.phase, snap(self.stage.position_A(end), self.optics), dose, self.key)
        x, y = self.stage.readback_A(end)
        self._send(ptycho.Frame.of(self.frames & 0xFFFFFFFF, int(round(end * 1e6)), x, y, dose, exposure_us, data))
        self.frames += 1
