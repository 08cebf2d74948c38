"""MEMS stand firmware emulator: serves a `MemsStand` over a real pty with the binary protocol.

The pty, UART buffer model, decode loop, Ack/Nak, counters and fault hooks are the shared
`firmware_sim.serial_device.EmulatedDevice`; this file is the MEMS device itself: out-of-range
commands are refused (Nak, counted, the mirror keeps its last command), one physics tick per
camera frame, `Frame` streamed while the stream is on.
"""
from __future__ import annotations

import numpy as np

from controller.protocol import common, framing, mems
from firmware_sim.mems import disturbance as dist
from firmware_sim.mems.physics import MemsStand
from firmware_sim.serial_device import EmulatedDevice, Reply

MAX_DISTURBANCE_S = 600.0  # longest disturbance program the device accepts [s]


class MemsEmulator(EmulatedDevice):
    DEVICE = mems.MEMS.device or ""
    FW_VERSION = "0.1.0"
    MESSAGES = mems.MEMS

    def __init__(self, stand: MemsStand | None = None, *, seed: int = 0, speed: float = 1.0,
                 tx_buffer: int = 4096, rx_buffer: int = 4095, disturbance_px: np.ndarray | None = None) -> None:
        """``disturbance_px``: an optional (1, T, 2) or (T, 2) M1 program played from power-on (e.g.
        ``disturbance.from_csv``); a SetDisturbance command replaces it."""
        self.stand = stand or MemsStand()
        self.frame_rate, self.v_limit = self.stand.params.frame_rate_hz, self.stand.params.v_limit
        self._program = np.zeros((1, 2)) if disturbance_px is None else np.asarray(disturbance_px).reshape(-1, 2)
        super().__init__(seed=seed, speed=speed, tick_hz=self.frame_rate, tx_buffer=tx_buffer, rx_buffer=rx_buffer)

    def _reset_physics(self, seed: int) -> None:
        self.state = self.stand.reset(seed, batch=1)
        self.command = np.zeros((1, 2))
        self.frame_index = 0
        self.program_pos = 0  # frame within the disturbance program, which restarts here

    def _handle(self, msg: framing.Message) -> Reply:
        match msg:
            case mems.SetVoltages(vx=vx, vy=vy):
                return self._set_voltages(vx, vy)
            case mems.SetDisturbance():
                return self._set_disturbance(msg)
        return super()._handle(msg)

    def _set_voltages(self, vx: float, vy: float) -> common.ErrorCode | None:
        if not (np.isfinite(vx) and np.isfinite(vy)):
            return common.ErrorCode.NOT_FINITE
        if abs(vx) > self.v_limit or abs(vy) > self.v_limit:
            return common.ErrorCode.OUT_OF_RANGE
        self.command[0] = (vx, vy)
        return None

    def _set_disturbance(self, msg: mems.SetDisturbance) -> common.ErrorCode | None:
        """Compute the M1 program (docs/protocol.md: p0 duration [s], p1.. per profile); it plays from
        the next frame, restarts on Reset and holds its last value when it ends."""
        duration, a, b, c = msg.p0, msg.p1, msg.p2, msg.p3
        if not np.all(np.isfinite([duration, a, b, c])):
            return common.ErrorCode.NOT_FINITE
        if msg.profile == mems.Disturbance.NONE:
            self._program, self.program_pos = np.zeros((1, 2)), 0
            return None
        if not 0 < duration <= MAX_DISTURBANCE_S:
            return common.ErrorCode.OUT_OF_RANGE
        n, fr = int(round(duration * self.frame_rate)) or 1, self.frame_rate
        try:
            match msg.profile:
                case mems.Disturbance.STEPS:
                    trace = dist.steps(1, n, msg.seed, step_px=a, hold_frames=int(round(b * fr)), limit_px=c)
                case mems.Disturbance.WIENER:
                    trace = dist.wiener(1, n, msg.seed, sigma_px_sqrt_s=a, frame_rate=fr)
                case mems.Disturbance.SINE if 0 < b <= c:
                    trace = dist.sinusoids(1, n, msg.seed, amplitude_px=a, f_range_hz=(b, c), frame_rate=fr)
                case _:
                    return common.ErrorCode.BAD_PARAM
        except ValueError:
            return common.ErrorCode.BAD_PARAM
        self._program, self.program_pos = trace[0], 0
        return None

    def _tick(self) -> None:
        m1 = self._program[min(self.program_pos, len(self._program) - 1)]
        self.program_pos += 1
        self.state, frame = self.stand.step(self.state, self.command, 1.0 / self.frame_rate, m1[None])
        if self.streaming:
            self._send(mems.Frame(self.frame_index & 0xFFFFFFFF, int(round(float(frame.t_s[0]) * 1e6)),
                               float(frame.x_px[0]), float(frame.y_px[0]), bool(frame.lost[0])))
        self.frame_index += 1
