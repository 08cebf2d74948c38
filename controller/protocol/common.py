"""Messages every device shares (type ids 0x01..0x1F, docs/protocol.md): identify, ack/nak, reset, status,
stream on/off, and :class:`Pattern`, a 2-D float32 detector frame (too large for one frame: sent as chunks).
Each device's set (``mems.MEMS``, ``ct.CT``) is ``COMMON | its own``. Type id 0x0A is ``framing.Chunk``."""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar

from controller.protocol.framing import PROTOCOL_VERSION, Message, MessageSet, ProtocolError


class ErrorCode(enum.IntEnum):
    """Reasons carried by :class:`Nak`."""

    OUT_OF_RANGE = 1  # a value outside the device's limits; the device keeps its previous state
    NOT_FINITE = 2  # NaN or inf in a numeric field
    BAD_PARAM = 3  # an unknown enumeration value or inconsistent parameters
    UNSUPPORTED = 4  # a valid message this device does not accept (e.g. a device→host type)
    BUSY = 5  # CT: the stage is moving or an exposure is running; send Halt or wait for in-position
    NOT_HOMED = 6  # CT: motion or acquisition before the stage was homed


@dataclass(frozen=True, slots=True)
class Identify(Message):
    """host → device: who are you? Reply: :class:`IdentifyReply`."""

    TYPE_ID: ClassVar[int] = 0x01


@dataclass(frozen=True, slots=True)
class IdentifyReply(Message):
    """device → host. ``device`` and ``fw_version`` are ASCII, at most 16 bytes each (NUL padded on the wire)."""

    TYPE_ID: ClassVar[int] = 0x02
    BODY: ClassVar[struct.Struct] = struct.Struct("<B16s16s")
    device: str
    fw_version: str
    protocol_version: int = PROTOCOL_VERSION

    def pack_body(self) -> bytes:
        try:
            dev, fw = self.device.encode("ascii"), self.fw_version.encode("ascii")
        except UnicodeEncodeError as e:
            raise ProtocolError(f"IdentifyReply strings must be ASCII: {e}") from None
        if len(dev) > 16 or len(fw) > 16:
            raise ProtocolError("IdentifyReply strings are at most 16 bytes")
        return self.BODY.pack(self.protocol_version, dev, fw)

    @classmethod
    def unpack_body(cls, body: bytes) -> IdentifyReply:
        ver, dev, fw = cls.BODY.unpack(body)
        return cls(dev.rstrip(b"\0").decode("ascii"), fw.rstrip(b"\0").decode("ascii"), ver)


@dataclass(frozen=True, slots=True)
class Ack(Message):
    """device → host: the command with sequence number ``seq_acked`` was executed."""

    TYPE_ID: ClassVar[int] = 0x03
    BODY: ClassVar[struct.Struct] = struct.Struct("<H")
    seq_acked: int


@dataclass(frozen=True, slots=True)
class Nak(Message):
    """device → host: the command ``seq_acked`` was refused for ``error`` (an :class:`ErrorCode`); state unchanged."""

    TYPE_ID: ClassVar[int] = 0x04
    BODY: ClassVar[struct.Struct] = struct.Struct("<HB")
    seq_acked: int
    error: int

    @classmethod
    def unpack_body(cls, body: bytes) -> Nak:
        seq, err = cls.BODY.unpack(body)
        return cls(seq, ErrorCode(err))  # an unknown code is a ValueError → counted as bad_length


@dataclass(frozen=True, slots=True)
class Reset(Message):
    """host → device: re-seed the physics (mirror to 0 V, frame index to 0). Stream state and counters are kept."""

    TYPE_ID: ClassVar[int] = 0x05
    BODY: ClassVar[struct.Struct] = struct.Struct("<I")
    seed: int


@dataclass(frozen=True, slots=True)
class StatusRequest(Message):
    """host → device. Reply: :class:`Status`."""

    TYPE_ID: ClassVar[int] = 0x06


@dataclass(frozen=True, slots=True)
class Status(Message):
    """device → host: state and fault counters since power-on (u32, wrapping; uptime u64 µs of device time)."""

    TYPE_ID: ClassVar[int] = 0x07
    BODY: ClassVar[struct.Struct] = struct.Struct("<?Q12I")
    streaming: bool
    uptime_us: int
    frames_sent: int  # frames handed to the UART
    frames_dropped: int  # frames lost because the UART TX buffer was full (edge not reading)
    rx_ok: int  # valid frames received
    rx_garbage: int  # undecodable / over-long frames received
    rx_bad_crc: int
    rx_truncated: int
    rx_bad_version: int
    rx_unknown_type: int
    rx_bad_length: int
    rx_seq_gaps: int  # host frames missing by sequence number
    cmd_rejected: int  # commands answered with Nak
    overruns: int  # physics ticks that started late by a whole period or more


@dataclass(frozen=True, slots=True)
class StreamStart(Message):
    """host → device: start streaming the device's data messages (MEMS: :class:`Frame` at the camera rate)."""

    TYPE_ID: ClassVar[int] = 0x08


@dataclass(frozen=True, slots=True)
class StreamStop(Message):
    """host → device: stop the stream."""

    TYPE_ID: ClassVar[int] = 0x09


@dataclass(frozen=True, slots=True)
class Pattern(Message):
    """device → host data: one 2-D detector frame (e.g. a 64 × 64 diffraction pattern). ``data`` is
    ``height × width`` float32 little endian, row major (``numpy.frombuffer(data, "<f4")``); at 16 KiB it
    crosses the wire as :class:`~controller.protocol.framing.Chunk` frames."""

    TYPE_ID: ClassVar[int] = 0x0B
    BODY: ClassVar[struct.Struct] = struct.Struct("<IQHH")  # index, t_us, height, width
    IS_DATA: ClassVar[bool] = True
    index: int
    t_us: int
    height: int
    width: int
    data: bytes

    def pack_body(self) -> bytes:
        if len(self.data) != 4 * self.height * self.width:
            raise ProtocolError(f"Pattern: {len(self.data)} B of data for {self.height} × {self.width} float32")
        return self.BODY.pack(self.index, self.t_us, self.height, self.width) + self.data

    @classmethod
    def unpack_body(cls, body: bytes) -> Pattern:
        index, t_us, h, w = cls.BODY.unpack_from(body)
        data = body[cls.BODY.size:]
        if len(data) != 4 * h * w:
            raise ValueError(f"Pattern: {len(data)} B of data for {h} × {w} float32")
        return cls(index, t_us, h, w, data)


COMMON = MessageSet("common", [Identify, IdentifyReply, Ack, Nak, Reset, StatusRequest, Status, StreamStart, StreamStop,
                               Pattern])
