"""Serial driver: the instrument firmware behind pyserial, integrated with asyncio.

The port's file descriptor is registered with ``loop.add_reader``: bytes are read and decoded
only when the kernel has them, so nothing on the loop ever blocks on the device. Writes are
non-blocking (``write_timeout=0``); a write the UART cannot take is dropped and counted.
If the port goes away (unplugged, emulator restarted) the driver closes it, tells its owner,
and reopens it with exponential backoff; while it waits, it watches the port's path (a stat every
``PORT_POLL_S``) and retries at once when the path comes back (absent → present: replugged, emulator
restarted), however long the backoff has grown, and starts the backoff over. While the path exists
(a fixed /dev/ttyS*, a persistent symlink to a device that fails to open or answer, a port another
process holds) nothing would signal its return, so the wait is capped at ``backoff_present_max_s``
(``PRESENT_BACKOFF_MAX_S``), and the warning for each failed attempt is rate-limited. A streaming device that
sends no data message for ``silence_timeout_s`` (rebooted mid-stream, firmware hung) is treated the
same way: dropped and reconnected (off by default: a request-driven device such as the CT stage is
silent between acquisitions).
On connect the driver asks the device who it is: a device other than the one its message set names
(``MessageSet.device``: a MEMS daemon on a CT emulator, e.g. when a pty number was reused) is a failed
connect (:class:`WrongDevice`, logged "expected X, got Y", counted, retried with back-off).
``keep_connected`` is that reconnect loop (``start`` runs it as a task; the daemons supervise it).
``tty_problem`` tells at start-up whether a port path that exists cannot be a serial device.
"""
from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import serial

from controller.protocol.common import Ack, Identify, IdentifyReply, Nak, Status, StatusRequest, StreamStart, StreamStop
from controller.protocol.framing import FrameDecoder, Message, MessageSet, encode
from controller.protocol.mems import SetVoltages
from controller.ratelog import RateLimitedLog

log = logging.getLogger(__name__)
PORT_POLL_S = 0.05  # how often the backoff looks whether the port path came back
PRESENT_BACKOFF_MAX_S = 0.5  # the longest wait between attempts while the port path exists
RETRY_LOG_INTERVAL_S = 10.0  # at most one warning this often for failed attempts on a path that exists
TTY_DRIVERS = "/proc/tty/drivers"  # Linux: major number and minor range of every tty driver
QUERY_TRIES = 3  # a query whose reply is lost on the wire is asked this many times in all


def _tty_ranges() -> list[tuple[int, int, int]] | None:
    """(major, first minor, last minor) of every tty driver, or None where the kernel does not list them."""
    try:
        lines = Path(TTY_DRIVERS).read_text(encoding="ascii").splitlines()
    except OSError:
        return None
    out = []
    for line in lines:  # name  node  major  minor[-minor]  type
        fields = line.split()
        if len(fields) >= 4 and fields[-3].isdigit():
            lo, _, hi = fields[-2].partition("-")
            out.append((int(fields[-3]), int(lo), int(hi or lo)))
    return out


def tty_problem(path: str) -> str | None:
    """Why an existing ``path`` cannot be a serial port (a regular file, a directory, a character device
    that is no tty such as /dev/null), or None: a tty, or nothing there yet (a device may be plugged in
    later). Nothing is opened: opening some serial ports resets the device behind them."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISCHR(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a regular file" if stat.S_ISREG(st.st_mode) else \
            "not a character device"
        return f"{path} is {kind}, not a serial port"
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    ranges = _tty_ranges()
    if ranges is not None and not any(m == major and lo <= minor <= hi for m, lo, hi in ranges):
        return f"{path} is a character device ({major}:{minor}) that is not a tty"
    return None


class WrongDevice(ConnectionError):
    """The device on the port is not the one the driver's message set expects."""


@dataclass
class DriverStats:
    connects: int = 0
    disconnects: int = 0
    write_dropped: int = 0  # writes the port could not take at once
    naks: int = 0  # commands the device refused
    last_nak: str = ""
    wrong_device: int = 0  # connects refused because another device answered
    lost_replies: int = 0  # replies lost on the wire and asked for again (`query`, and callers that retry)


@dataclass
class SerialDriver:
    """One device on one serial port. ``on_frame(msg, t_ns)`` runs for every data message received
    (``msg.IS_DATA``: MEMS ``Frame``, CT ``Projection``, ``Pattern``); everything else is a reply to a command.
    ``messages`` (keyword, required) is the device's message set (``mems.MEMS``, ``ct.CT``)."""

    port: str
    baud: int = 115200
    messages: MessageSet = field(kw_only=True)
    backoff_min_s: float = 0.1
    backoff_max_s: float = 5.0
    backoff_present_max_s: float = PRESENT_BACKOFF_MAX_S  # the wait's cap while the port path exists
    silence_timeout_s: float | None = None  # no data message for this long while connected: reconnect
    on_frame: Callable[[Message, int], None] | None = None
    on_link: Callable[[bool, str], None] | None = None  # (connected, reason)
    stats: DriverStats = field(default_factory=DriverStats)
    decoder: FrameDecoder = field(init=False)
    _serial: serial.Serial | None = field(default=None, init=False, repr=False)
    _seq: int = field(default=0, init=False)
    _replies: asyncio.Queue[Message] = field(default_factory=lambda: asyncio.Queue(maxsize=64), init=False, repr=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _closing: bool = field(default=False, init=False)
    _last_rx_ns: int = field(default=0, init=False)
    identity: IdentifyReply | None = field(default=None, init=False)
    _identified: bool = field(default=False, init=False)  # the open port's device answered Identify as expected
    _present_log: RateLimitedLog = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.decoder = FrameDecoder(self.messages)
        self._present_log = RateLimitedLog(log, RETRY_LOG_INTERVAL_S)

    @property
    def connected(self) -> bool:
        """The port is open and the device on it identified itself as the one expected (before that, nothing
        but the identify request is written to it)."""
        return self._serial is not None and self._identified

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, connect_timeout_s: float | None = None) -> None:
        """Start the connect/reconnect task; with a timeout, wait until the device streams."""
        self._task = asyncio.get_running_loop().create_task(self.keep_connected(), name="serial-driver")
        if connect_timeout_s is not None:
            deadline = time.monotonic() + connect_timeout_s
            while not self.connected:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"device on {self.port} did not answer within {connect_timeout_s} s")
                await asyncio.sleep(0.01)

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._serial is not None:
            self.send(StreamStop())
        self._drop("closed")

    async def keep_connected(self) -> None:
        """Connect, and reconnect whenever the device goes away, until ``close()``."""
        backoff = self.backoff_min_s
        while not self._closing:
            if self._serial is None:
                try:
                    await self._connect()
                    backoff = self.backoff_min_s
                except (OSError, serial.SerialException, TimeoutError, ValueError) as e:  # ValueError: Nak
                    self._drop(f"connect failed: {e}")
                    if os.path.exists(self.port):  # retried every backoff_present_max_s at most: rate-limited
                        self._present_log.warning("device %s: %s; retrying in %.2f s", self.port, e,
                                                  min(backoff, self.backoff_present_max_s))
                    else:
                        log.warning("device %s: %s; retrying in %.2f s", self.port, e, backoff)
                    back = await self._backoff(backoff)  # the port came back: retry now, the backoff starts over
                    backoff = self.backoff_min_s if back else min(backoff * 2, self.backoff_max_s)
                    continue
            elif (self.silence_timeout_s is not None
                  and time.monotonic_ns() - self._last_rx_ns > self.silence_timeout_s * 1e9):
                self._drop(f"silent for {self.silence_timeout_s:g} s")
                continue
            await asyncio.sleep(0.05)

    async def _backoff(self, seconds: float) -> bool:
        """Wait ``seconds`` while the port's path is absent, at most ``backoff_present_max_s`` while it exists;
        return True as soon as the path appears after having been absent."""
        start = time.monotonic()
        absent = not os.path.exists(self.port)
        while (left := (seconds if absent else min(seconds, self.backoff_present_max_s))
               - (time.monotonic() - start)) > 0:
            await asyncio.sleep(min(PORT_POLL_S, left))
            present = os.path.exists(self.port)
            if absent and present:
                log.info("device %s: the port is back, reconnecting now", self.port)
                return True
            absent = not present
        return False

    async def _connect(self) -> None:
        ser = serial.Serial(self.port, self.baud, timeout=0, write_timeout=0, exclusive=True)
        ser.reset_input_buffer()
        self._serial = ser
        self._last_rx_ns = time.monotonic_ns()
        self.decoder.reset_sequence()
        asyncio.get_running_loop().add_reader(ser.fileno(), self._on_readable)
        reply = await self.request(Identify(), IdentifyReply, timeout_s=1.0)
        expected = self.messages.device
        if expected is not None and reply.device != expected:
            self.stats.wrong_device += 1
            raise WrongDevice(f"wrong device: expected {expected}, got {reply.device} (fw {reply.fw_version})")
        self.identity, self._identified = reply, True
        self.send(StreamStart())
        self.stats.connects += 1
        log.info("device %s: %s fw %s (protocol %d)", self.port, reply.device, reply.fw_version, reply.protocol_version)
        if self.on_link:
            self.on_link(True, f"connected to {reply.device}")

    def _drop(self, reason: str) -> None:
        ser, self._serial, self._identified = self._serial, None, False
        if ser is None:
            return
        try:
            asyncio.get_running_loop().remove_reader(ser.fileno())
        except (RuntimeError, ValueError, OSError):
            pass
        try:
            ser.close()
        except (OSError, serial.SerialException):
            pass
        self.stats.disconnects += 1
        if self._closing:  # shutdown, not a fault
            log.info("device %s closed", self.port)
        else:
            log.warning("device %s lost: %s", self.port, reason)
        if self.on_link:
            self.on_link(False, reason)

    # -- I/O -----------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        ser = self._serial
        if ser is None:
            return
        try:
            data = ser.read(ser.in_waiting or 1)
        except (OSError, serial.SerialException) as e:
            self._drop(f"read failed: {e}")
            return
        if not data:  # readable but empty: the other end has gone (pty closed, cable pulled)
            self._drop("end of stream")
            return
        now = time.monotonic_ns()
        for _, msg in self.decoder.feed(data):
            if msg.IS_DATA:
                self._last_rx_ns = now
                if self.on_frame:
                    self.on_frame(msg, now)
            else:
                if isinstance(msg, Nak):
                    self.stats.naks += 1
                    self.stats.last_nak = msg.error.name
                if not self._replies.full():
                    self._replies.put_nowait(msg)

    def send(self, msg: Message) -> bool:
        """Write one message without blocking; False (and counted) when it could not be written."""
        ser = self._serial
        if ser is None:
            self.stats.write_dropped += 1
            return False
        self._seq = (self._seq + 1) & 0xFFFF
        try:
            ser.write(encode(msg, self._seq))
        except serial.SerialTimeoutException:
            self.stats.write_dropped += 1
            return False
        except (OSError, serial.SerialException) as e:
            self._drop(f"write failed: {e}")
            return False
        return True

    def write_voltages(self, vx: float, vy: float) -> bool:
        return self.send(SetVoltages(vx, vy))

    async def request(self, msg: Message, reply_type: type[Message], timeout_s: float = 0.5) -> Message:
        """Send ``msg`` and wait (off the tick path) for the first reply of ``reply_type``."""
        while not self._replies.empty():
            self._replies.get_nowait()
        seq = (self._seq + 1) & 0xFFFF  # the number send() will use
        if not self.send(msg):
            raise TimeoutError(f"could not send {type(msg).__name__}")
        async with asyncio.timeout(timeout_s):
            while True:
                reply = await self._replies.get()
                if getattr(reply, "seq_acked", seq) != seq:  # a late Ack/Nak of an earlier command
                    continue
                if isinstance(reply, reply_type):
                    return reply
                if isinstance(reply, Nak):
                    raise ValueError(f"device refused {type(msg).__name__}: {reply.error.name}")

    async def query(self, msg: Message, reply_type: type[Message], timeout_s: float = 0.5,
                    tries: int = QUERY_TRIES) -> Message:
        """A request without side effects (a status): a reply lost on the wire (noise, a dropped chunk) is asked
        for again, ``tries`` times in all (each loss counted in ``stats.lost_replies``)."""
        for attempt in range(tries):
            try:
                return await self.request(msg, reply_type, timeout_s)
            except TimeoutError:
                if attempt == tries - 1:
                    raise
                self.stats.lost_replies += 1
        raise AssertionError("unreachable")

    async def status(self) -> Status:
        return await self.query(StatusRequest(), Status)  # type: ignore[return-value]

    async def command(self, msg: Message, timeout_s: float = 0.5) -> None:
        """Send a command and wait for its Ack (a Nak raises ValueError)."""
        await self.request(msg, Ack, timeout_s)
