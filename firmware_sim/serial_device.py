"""The firmware side every emulated instrument shares: a real pty, the UART buffer model, the decode
loop, common messages, Ack/Nak, counters, fault hooks and the real-time tick loop.

Behaves like a device, not a forgiving mock: refused commands get a Nak (counted, state unchanged),
every rejected input is counted, and the UART is finite. The pty would buffer ~18 KiB in the kernel
and keep it forever, so the emulator models the two buffers a real link has and never lets more wait
than they hold:
- the edge's UART RX buffer (`rx_buffer`, bytes unread on the slave side, measured with FIONREAD), and
- the device's own TX buffer (`tx_buffer`): a message that does not fit is dropped and counted; its
  sequence numbers are spent, so the edge sees the gap. A message larger than one frame (a `Pattern`)
  goes out as chunk frames, buffered whole or dropped whole.
Physics runs on absolute deadlines at `tick_hz` (device time), `speed` times faster than real time.
Subclasses implement `_reset_physics`, `_tick` and `_handle` (their own messages).
"""
from __future__ import annotations

import abc
import array
import fcntl
import functools
import os
import queue
import random
import select
import termios
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from controller.protocol import common, framing

# per-frame wire faults: lose the frame, cut it in half, flip one bit, lose one byte (each on the next N frames)
WIRE_FAULTS = ("drop", "truncate", "flip", "dropbyte")
Reply = framing.Message | common.ErrorCode | None  # a reply message, a Nak reason, or None for Ack


class EmulatedDevice(abc.ABC):
    DEVICE: ClassVar[str]
    FW_VERSION: ClassVar[str]
    MESSAGES: ClassVar[framing.MessageSet]

    def __init__(self, *, seed: int, speed: float, tick_hz: float, tx_buffer: int, rx_buffer: int) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        if not tick_hz > 0:
            raise ValueError(f"tick_hz must be > 0, got {tick_hz}")
        if tx_buffer < 64 or rx_buffer < 1:
            raise ValueError(f"tx_buffer must be ≥ 64 B and rx_buffer ≥ 1 B (got {tx_buffer}, {rx_buffer})")
        self.seed, self.speed, self.tick_hz = seed, speed, tick_hz
        self.tx_cap, self.rx_cap = tx_buffer, rx_buffer
        self.master = self.slave = -1
        self.path = ""
        self.link: Path | None = None  # stable symlink to the current pty (survives unplug/replug)
        self._wire_faults = dict.fromkeys(WIRE_FAULTS, 0)  # faults pending on the next frames sent
        self._fault_rng = random.Random(seed)  # where bits flip and bytes vanish: seeded, reproducible
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._boot()

    # --- device specifics ------------------------------------------------------------------------

    @abc.abstractmethod
    def _reset_physics(self, seed: int) -> None:
        """Power-on / Reset state of the instrument."""

    @abc.abstractmethod
    def _tick(self) -> None:
        """Advance the physics by one period (1 / tick_hz of device time)."""

    def _handle(self, msg: framing.Message) -> Reply:
        """A device-specific message; the default refuses it (e.g. a device → host type)."""
        return common.ErrorCode.UNSUPPORTED

    # --- lifecycle -------------------------------------------------------------------------------

    def _boot(self) -> None:
        """Power-on state: physics re-seeded, stream off, counters and sequence number zeroed."""
        self.decoder = framing.FrameDecoder(self.MESSAGES)
        self.tx = bytearray()
        self.seq = 0
        self.streaming = False
        self.frames_sent = self.frames_dropped = self.cmd_rejected = self.overruns = self.patterns_sent = 0
        self.t_boot = time.monotonic()
        self._reset_physics(self.seed)

    def open(self) -> str:
        """Create the pty pair (slave in raw mode, master non-blocking); return the slave's path."""
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no line editing: a byte pipe like a UART
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)  # the slave stays open here so the master never sees EIO
        if self.link is not None:
            self._point_link()
        return self.path

    def _point_link(self) -> None:
        """Atomically re-point ``link`` at the current pty (a new symlink renamed over the old one)."""
        assert self.link is not None
        tmp = self.link.with_name(self.link.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.path)
        os.replace(tmp, self.link)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            if fd >= 0:
                os.close(fd)
        self.master = self.slave = -1

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set: commands as they arrive, one physics tick per period."""
        if self.master < 0:
            self.open()
        wall_period = 1.0 / (self.tick_hz * self.speed)
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
        """Power-cycle: the TX buffer is lost and everything restarts from power-on state."""
        self._calls.put(self._boot)

    def wire_fault(self, kind: str, n: int) -> None:
        """Damage the next ``n`` frames on the wire (``WIRE_FAULTS``): ``drop`` loses them (their sequence
        numbers are spent: a gap), ``truncate`` cuts them to half their bytes, ``flip`` flips one random bit,
        ``dropbyte`` loses one random byte (the delimiter always survives)."""
        if kind not in WIRE_FAULTS:
            raise ValueError(f"unknown wire fault {kind!r}; known: {', '.join(WIRE_FAULTS)}")
        self._calls.put(lambda: self._wire_faults.update({kind: self._wire_faults[kind] + n}))

    def drop_frames(self, n: int) -> None:
        self.wire_fault("drop", n)

    def truncate_frames(self, n: int) -> None:
        self.wire_fault("truncate", n)

    def send_pattern(self, data: bytes, height: int, width: int) -> None:
        """Send one ``height × width`` float32 :class:`~controller.protocol.common.Pattern` (``data``
        little endian, row major): the detector's 2-D frame, chunked on the wire."""
        self._calls.put(lambda: self._send(common.Pattern(self.patterns_sent & 0xFFFFFFFF, self._uptime_us(),
                                                          height, width, data)))

    def unplug(self, seconds: float) -> None:
        """Pull the cable: the pty (and ``link``) vanish for ``seconds``; then a new pty appears (``link``
        re-pointed at it) and the device powers on again."""
        self._calls.put(lambda: self._unplug(seconds))

    def _unplug(self, seconds: float) -> None:
        self.close()
        if self.link is not None:
            self.link.unlink(missing_ok=True)
        time.sleep(seconds)
        self.open()
        self._boot()

    CONTROL_HELP: ClassVar[str] = "garbage N | stall S | reboot | unplug S | drop N | truncate N | flip N | dropbyte N"

    def control(self, line: str) -> None:
        """One fault command in the line protocol (``CONTROL_HELP``); ValueError on a bad line."""
        verb, *args = line.split() or [""]
        hooks: dict[str, tuple[Callable[..., None], type]] = {
            "garbage": (lambda n: self.inject(os.urandom(n)), int), "stall": (self.stall, float),
            "unplug": (self.unplug, float),
            **{kind: (functools.partial(self.wire_fault, kind), int) for kind in WIRE_FAULTS}}
        if verb == "reboot" and not args:
            self.reboot()
            return
        if verb not in hooks or len(args) != 1:
            raise ValueError(f"bad control line {line.strip()!r}; expected {self.CONTROL_HELP}")
        fn, kind = hooks[verb]
        value = kind(args[0])  # ValueError on a bad number
        if not 0 <= value <= 1e6:
            raise ValueError(f"{verb}: {value} out of range 0..1e6")
        fn(value)

    # --- wire ------------------------------------------------------------------------------------

    def _send(self, msg: framing.Message) -> None:
        """Queue ``msg`` (one frame, or its chunk frames) in the TX buffer, whole or not at all."""
        frames = framing.encode_frames(msg, self.seq)
        self.seq = (self.seq + len(frames)) % framing.SEQ_MOD
        if len(self.tx) + sum(map(len, frames)) > self.tx_cap:
            self.frames_dropped += len(frames)
            return
        for frame in frames:
            frame = self._damage(frame)
            if frame:
                self.tx += frame
                self.frames_sent += 1
        if isinstance(msg, common.Pattern):
            self.patterns_sent += 1

    def _damage(self, frame: bytes) -> bytes:
        """``frame`` with the first pending wire fault applied (b"" when it is lost)."""
        kind = next((k for k in WIRE_FAULTS if self._wire_faults[k]), None)
        if kind is None:
            return frame
        self._wire_faults[kind] -= 1
        body, rng = bytearray(frame[:-1]), self._fault_rng
        match kind:
            case "drop":
                return b""
            case "truncate":
                del body[len(body) // 2:]
            case "flip":
                i = rng.randrange(len(body) * 8)
                body[i // 8] ^= 1 << (i % 8)
            case "dropbyte":
                del body[rng.randrange(len(body))]
        return bytes(body) + b"\x00"

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

    def _execute(self, seq: int, msg: framing.Message) -> None:
        """Every command gets exactly one reply: its reply message, an Ack, or a Nak (counted)."""
        reply: Reply = None
        match msg:
            case common.Identify():
                reply = common.IdentifyReply(self.DEVICE, self.FW_VERSION)
            case common.StatusRequest():
                reply = self.status()
            case common.StreamStart():
                self.streaming = True
            case common.StreamStop():
                self.streaming = False
            case common.Reset(seed=seed):
                self._reset_physics(seed)
            case _:
                reply = self._handle(msg)
        if reply is None:
            self._send(common.Ack(seq))
        elif isinstance(reply, framing.Message):
            self._send(reply)
        else:
            self.cmd_rejected += 1
            self._send(common.Nak(seq, reply))

    def _uptime_us(self) -> int:
        return int((time.monotonic() - self.t_boot) * self.speed * 1e6)

    def status(self) -> common.Status:
        d = self.decoder
        return common.Status(self.streaming, self._uptime_us(), *(c & 0xFFFFFFFF for c in (
            self.frames_sent, self.frames_dropped, d.ok, d.garbage, d.bad_crc, d.truncated, d.bad_version,
            d.unknown_type, d.bad_length, d.seq_gaps, self.cmd_rejected, self.overruns)))
