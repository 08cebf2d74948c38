"""MEMS stand firmware emulator: serves a `MemsStand` over a real pty with the binary protocol.

Behaves like the device, not a forgiving mock: out-of-range commands are refused (Nak, counted, the
mirror keeps its last command); every rejected input is counted; the UART is finite. The pty would
buffer ~18 KiB in the kernel and keep it forever, so the emulator models the two buffers a real link
has and never lets more wait than they hold:
- the edge's UART RX buffer (`rx_buffer`, bytes unread on the slave side, measured with FIONREAD), and
- the device's own TX buffer (`tx_buffer`): a message that does not fit is dropped and counted; its
  sequence number is spent, so the edge sees the gap.
Physics runs on absolute deadlines at `frame_rate`, `speed` times faster than real time.
"""
from __future__ import annotations

import array
import fcntl
import os
import queue
import select
import termios
import threading
import time
import tty
from collections.abc import Callable

import numpy as np

from controller import protocol as p
from firmware_sim import disturbance as dist
from firmware_sim.mems import MemsStand

MAX_DISTURBANCE_S = 600.0  # longest disturbance program the device accepts [s]


class MemsEmulator:
    DEVICE = "edgetune-mems"
    FW_VERSION = "0.1.0"

    def __init__(self, stand: MemsStand | None = None, *, seed: int = 0, speed: float = 1.0,
                 tx_buffer: int = 4096, rx_buffer: int = 4095, disturbance_px: np.ndarray | None = None) -> None:
        """``disturbance_px``: an optional (1, T, 2) or (T, 2) M1 program played from power-on (e.g.
        ``disturbance.from_csv``); a SetDisturbance command replaces it."""
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        if tx_buffer < 64 or rx_buffer < 1:
            raise ValueError(f"tx_buffer must be ≥ 64 B and rx_buffer ≥ 1 B (got {tx_buffer}, {rx_buffer})")
        self.stand = stand or MemsStand()
        self.seed, self.speed = seed, speed
        self.frame_rate, self.v_limit = self.stand.params.frame_rate_hz, self.stand.params.v_limit
        self.tx_cap, self.rx_cap = tx_buffer, rx_buffer
        self._program = np.zeros((1, 2)) if disturbance_px is None else np.asarray(disturbance_px).reshape(-1, 2)
        self.master = self.slave = -1
        self.path = ""
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._boot()

    # --- lifecycle -------------------------------------------------------------------------------

    def _boot(self) -> None:
        """Power-on state: physics re-seeded, stream off, counters and sequence number zeroed."""
        self.decoder = p.FrameDecoder(p.MEMS)
        self.tx = bytearray()
        self.seq = 0
        self.streaming = False
        self.frames_sent = self.frames_dropped = self.cmd_rejected = self.overruns = 0
        self.t_boot = time.monotonic()
        self._reset_physics(self.seed)

    def _reset_physics(self, seed: int) -> None:
        self.state = self.stand.reset(seed, batch=1)
        self.command = np.zeros((1, 2))
        self.frame_index = 0
        self.program_pos = 0  # frame within the disturbance program, which restarts here

    def open(self) -> str:
        """Create the pty pair (slave in raw mode, master non-blocking); return the slave's path."""
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no line editing: a byte pipe like a UART
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)  # the slave stays open here so the master never sees EIO
        return self.path

    def close(self) -> None:
        for fd in (self.master, self.slave):
            if fd >= 0:
                os.close(fd)
        self.master = self.slave = -1

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set: commands as they arrive, one physics tick per period."""
        if self.master < 0:
            self.open()
        wall_period = 1.0 / (self.frame_rate * self.speed)
        deadline = time.monotonic() + wall_period
        while not stop.is_set():
            while not self._calls.empty():
                self._calls.get()()
            now = time.monotonic()
            ready, _, _ = select.select([self.master], [], [], min(max(deadline - now, 0.0), 0.05))
            if ready:
                self._receive()
            now = time.monotonic()
            if now >= deadline:
                self._tick()
                deadline += wall_period
                if now >= deadline:  # late by whole periods: count them, never burst to catch up
                    missed = int((now - deadline) // wall_period) + 1
                    self.overruns += missed
                    deadline += missed * wall_period
            self._flush()

    # --- fault hooks (thread-safe: run by the loop between events) -------------------------------

    def inject(self, data: bytes) -> None:
        """Put raw bytes (garbage, a torn frame) on the wire as if the device sent them."""
        self._calls.put(lambda: self.tx.extend(data))

    def stall(self, seconds: float) -> None:
        """Freeze the firmware (no ticks, no replies) for ``seconds`` of wall time."""
        self._calls.put(lambda: time.sleep(seconds))

    def reboot(self) -> None:
        """Power-cycle mid-stream: the TX buffer is lost and everything restarts from power-on state."""
        self._calls.put(self._boot)

    # --- wire ------------------------------------------------------------------------------------

    def _send(self, msg: p.Message) -> None:
        frame = p.encode(msg, self.seq)
        self.seq = (self.seq + 1) % p.SEQ_MOD
        if len(self.tx) + len(frame) > self.tx_cap:
            self.frames_dropped += 1
            return
        self.tx += frame
        self.frames_sent += 1

    def _flush(self) -> None:
        """Move TX bytes into the pty, but never more than the edge's RX buffer has room for."""
        if not self.tx:
            return
        unread = array.array("i", [0])
        fcntl.ioctl(self.slave, termios.FIONREAD, unread)
        room = self.rx_cap - unread[0]
        if room <= 0:
            return
        try:
            n = os.write(self.master, self.tx[:room])
        except BlockingIOError:
            return
        del self.tx[:n]

    def _receive(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except BlockingIOError:
            return
        for seq, msg in self.decoder.feed(data):
            self._execute(seq, msg)

    # --- device behaviour ------------------------------------------------------------------------

    def _execute(self, seq: int, msg: p.Message) -> None:
        error: p.ErrorCode | None = None
        match msg:
            case p.Identify():
                self._send(p.IdentifyReply(self.DEVICE, self.FW_VERSION))
                return
            case p.StatusRequest():
                self._send(self.status())
                return
            case p.SetVoltages(vx=vx, vy=vy):
                error = self._set_voltages(vx, vy)
            case p.StreamStart():
                self.streaming = True
            case p.StreamStop():
                self.streaming = False
            case p.Reset(seed=seed):
                self._reset_physics(seed)
            case p.SetDisturbance():
                error = self._set_disturbance(msg)
            case _:  # a device → host message sent to the device
                error = p.ErrorCode.UNSUPPORTED
        if error is None:
            self._send(p.Ack(seq))
        else:
            self.cmd_rejected += 1
            self._send(p.Nak(seq, error))

    def _set_voltages(self, vx: float, vy: float) -> p.ErrorCode | None:
        if not (np.isfinite(vx) and np.isfinite(vy)):
            return p.ErrorCode.NOT_FINITE
        if abs(vx) > self.v_limit or abs(vy) > self.v_limit:
            return p.ErrorCode.OUT_OF_RANGE
        self.command[0] = (vx, vy)
        return None

    def _set_disturbance(self, msg: p.SetDisturbance) -> p.ErrorCode | None:
        """Compute the M1 program (docs/protocol.md: p0 duration [s], p1.. per profile); it plays from
        the next frame, restarts on Reset and holds its last value when it ends."""
        duration, a, b, c = msg.p0, msg.p1, msg.p2, msg.p3
        if not np.all(np.isfinite([duration, a, b, c])):
            return p.ErrorCode.NOT_FINITE
        if msg.profile == p.Disturbance.NONE:
            self._program, self.program_pos = np.zeros((1, 2)), 0
            return None
        if not 0 < duration <= MAX_DISTURBANCE_S:
            return p.ErrorCode.OUT_OF_RANGE
        n, fr = int(round(duration * self.frame_rate)) or 1, self.frame_rate
        try:
            match msg.profile:
                case p.Disturbance.STEPS:
                    trace = dist.steps(1, n, msg.seed, step_px=a, hold_frames=int(round(b * fr)), limit_px=c)
                case p.Disturbance.WIENER:
                    trace = dist.wiener(1, n, msg.seed, sigma_px_sqrt_s=a, frame_rate=fr)
                case p.Disturbance.SINE if 0 < b <= c:
                    trace = dist.sinusoids(1, n, msg.seed, amplitude_px=a, f_range_hz=(b, c), frame_rate=fr)
                case _:
                    return p.ErrorCode.BAD_PARAM
        except ValueError:
            return p.ErrorCode.BAD_PARAM
        self._program, self.program_pos = trace[0], 0
        return None

    def _tick(self) -> None:
        m1 = self._program[min(self.program_pos, len(self._program) - 1)]
        self.program_pos += 1
        self.state, frame = self.stand.step(self.state, self.command, 1.0 / self.frame_rate, m1[None])
        if self.streaming:
            self._send(p.Frame(self.frame_index & 0xFFFFFFFF, int(round(float(frame.t_s[0]) * 1e6)),
                               float(frame.x_px[0]), float(frame.y_px[0]), bool(frame.lost[0])))
        self.frame_index += 1

    def status(self) -> p.Status:
        d = self.decoder
        uptime_us = int((time.monotonic() - self.t_boot) * self.speed * 1e6)
        return p.Status(self.streaming, uptime_us, *(c & 0xFFFFFFFF for c in (
            self.frames_sent, self.frames_dropped, d.ok, d.garbage, d.bad_crc, d.truncated, d.bad_version,
            d.unknown_type, d.bad_length, d.seq_gaps, self.cmd_rejected, self.overruns)))
