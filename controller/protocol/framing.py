"""The serial wire contract between the edge and the instrument firmware (docs/protocol.md).

One frame on the wire is ``COBS(payload) + b"\\x00"`` with
``payload = ver:u8 | type:u8 | seq:u16 | body | crc32:u32`` (little endian, CRC-32 of
ver..body by ``zlib.crc32``). Messages are dataclasses registered by type id in a
:class:`MessageSet`; the common messages (identify, ack/nak, reset, status, stream on/off)
are shared by every device, each device adds its own set (MEMS: 0x20..0x3F; CT: 0x40..0x5F).

Used by both sides: the firmware emulators (``firmware_sim``) and the edge driver. stdlib only.
"""
from __future__ import annotations

import enum
import functools
import operator
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self

from cobs import cobs

PROTOCOL_VERSION = 1
MAX_PAYLOAD = 2048  # bytes of ver..crc; longer frames are refused by encode and dropped by decode
SEQ_MOD = 1 << 16

_HEADER = struct.Struct("<BBH")  # ver, type, seq
_CRC = struct.Struct("<I")
_MIN_PAYLOAD = _HEADER.size + _CRC.size


class ProtocolError(ValueError):
    """API misuse (unencodable message, bad sequence number, clashing type ids). Never raised for bad wire input."""


class ErrorCode(enum.IntEnum):
    """Reasons carried by :class:`Nak`."""

    OUT_OF_RANGE = 1  # a value outside the device's limits; the device keeps its previous state
    NOT_FINITE = 2  # NaN or inf in a numeric field
    BAD_PARAM = 3  # an unknown enumeration value or inconsistent parameters
    UNSUPPORTED = 4  # a valid message this device does not accept (e.g. a device→host type)
    BUSY = 5  # CT: the stage is moving or an exposure is running; send Halt or wait for in-position
    NOT_HOMED = 6  # CT: motion or acquisition before the stage was homed


class Message:
    """Base of every message. Fixed-size bodies declare ``BODY`` (fields packed in declaration order);
    variable or non-trivial bodies override :meth:`pack_body` / :meth:`unpack_body`."""

    TYPE_ID: ClassVar[int]
    BODY: ClassVar[struct.Struct] = struct.Struct("<")
    IS_DATA: ClassVar[bool] = False  # device → host data (Frame, Projection), not a reply to a command

    def pack_body(self) -> bytes:
        return self.BODY.pack(*_field_values(type(self))(self))

    @classmethod
    def unpack_body(cls, body: bytes) -> Self:
        """Raise ValueError or struct.error when the body does not fit the type."""
        return cls(*cls.BODY.unpack(body))


@functools.cache
def _field_values(cls: type) -> Callable[[Any], tuple]:
    """A fast getter of a dataclass's field values in declaration order (astuple deep-copies: 5x slower)."""
    names = [f.name for f in fields(cls)]
    if len(names) == 1:
        return lambda m: (getattr(m, names[0]),)
    return operator.attrgetter(*names) if names else lambda m: ()


class MessageSet:
    """A registry ``type id -> message class``; sets combine with ``|`` (ids must not clash)."""

    def __init__(self, name: str, classes: Iterable[type[Message]] = ()) -> None:
        self.name = name
        self.by_id: dict[int, type[Message]] = {}
        for cls in classes:
            self.register(cls)

    def register(self, cls: type[Message]) -> type[Message]:
        tid = cls.TYPE_ID
        if not 0 <= tid <= 0xFF:
            raise ProtocolError(f"{cls.__name__}: type id {tid} outside u8")
        if tid in self.by_id and self.by_id[tid] is not cls:
            raise ProtocolError(f"type id 0x{tid:02x} used by {self.by_id[tid].__name__} and {cls.__name__}")
        self.by_id[tid] = cls
        return cls

    def __or__(self, other: MessageSet) -> MessageSet:
        return MessageSet(f"{self.name}+{other.name}", [*self.by_id.values(), *other.by_id.values()])

    def __contains__(self, cls: object) -> bool:
        return isinstance(cls, type) and self.by_id.get(getattr(cls, "TYPE_ID", -1)) is cls


# --- common messages (0x01..0x1F), every device --------------------------------------------------


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


COMMON = MessageSet("common", [Identify, IdentifyReply, Ack, Nak, Reset, StatusRequest, Status, StreamStart, StreamStop])


# --- MEMS stand messages (0x20..0x3F) ------------------------------------------------------------


class Disturbance(enum.IntEnum):
    """Disturbance profiles for :class:`SetDisturbance`; p0 is the program duration [s] (0 < p0 ≤ 600)."""

    NONE = 0  # M1 back to 0 px; p0..p3 ignored
    STEPS = 1  # p1 step [px], p2 hold time [s], p3 limit [px]  (paper Eq. 6)
    WIENER = 2  # p1 diffusion σ [px/√s]  (paper Eq. 7)
    SINE = 3  # p1 amplitude [px], p2..p3 frequency range [Hz], 3 random sinusoids per axis


@dataclass(frozen=True, slots=True)
class SetVoltages(Message):
    """host → device: MEMS mirror command [V] per axis. Out of range or non-finite → Nak, mirror keeps its command."""

    TYPE_ID: ClassVar[int] = 0x20
    BODY: ClassVar[struct.Struct] = struct.Struct("<ff")
    vx: float
    vy: float


@dataclass(frozen=True, slots=True)
class SetDisturbance(Message):
    """host → device: disturbance mirror (M1) program: profile, seed, duration p0 [s], parameters p1..p3.

    Plays from the next frame, restarts on Reset, holds its last value when it ends."""

    TYPE_ID: ClassVar[int] = 0x21
    BODY: ClassVar[struct.Struct] = struct.Struct("<BI4f")
    profile: int
    seed: int = 0
    p0: float = 0.0
    p1: float = 0.0
    p2: float = 0.0
    p3: float = 0.0


@dataclass(frozen=True, slots=True)
class Frame(Message):
    """device → host: one camera frame. ``t_us`` is the device clock; ``lost`` means no spot was found."""

    TYPE_ID: ClassVar[int] = 0x22
    BODY: ClassVar[struct.Struct] = struct.Struct("<IQff?")
    IS_DATA: ClassVar[bool] = True
    frame_index: int
    t_us: int
    x_px: float
    y_px: float
    lost: bool = False


MEMS = COMMON | MessageSet("mems", [SetVoltages, SetDisturbance, Frame])


# --- CT rotation stage + detector messages (0x40..0x5F) ------------------------------------------


class SampleKind(enum.IntEnum):
    """Phantom shapes for :class:`SetSample` (names as ``firmware_sim.ct.phantoms.SHAPES``)."""

    PARALLELOGRAM = 0
    TRIANGLE = 1
    PENTAGON = 2
    ANY = 255  # drawn uniformly from the three


class NoiseModel(enum.IntEnum):
    """Detector noise for :class:`SetNoise`."""

    NONE = 0
    GAUSSIAN = 1  # σ = level × std of the projection (paper §5.3)
    POISSON = 2  # flux [photons/bin/s] × exposure, Beer–Lambert


class Split(enum.IntEnum):
    TRAIN = 0
    VAL = 1


@dataclass(frozen=True, slots=True)
class Home(Message):
    """host → device: drive to the home mark and reference the encoder. Ack when the move starts;
    poll :class:`StageStatus` for ``homed``. Nak BUSY while moving or exposing."""

    TYPE_ID: ClassVar[int] = 0x40


@dataclass(frozen=True, slots=True)
class MoveTo(Message):
    """host → device: move to ``angle_deg`` [deg]. Ack when the move starts. Nak NOT_HOMED, BUSY (moving
    or exposing), OUT_OF_RANGE (beyond the soft limits), NOT_FINITE; a refused move leaves the target."""

    TYPE_ID: ClassVar[int] = 0x41
    BODY: ClassVar[struct.Struct] = struct.Struct("<f")
    angle_deg: float


@dataclass(frozen=True, slots=True)
class Halt(Message):
    """host → device: brake to rest at the acceleration limit and hold there; cancels a running exposure
    (its Projection is never sent) and a homing move. Always Ack."""

    TYPE_ID: ClassVar[int] = 0x42


@dataclass(frozen=True, slots=True)
class StageStatusRequest(Message):
    """host → device. Reply: :class:`StageStatus`."""

    TYPE_ID: ClassVar[int] = 0x43


@dataclass(frozen=True, slots=True)
class StageStatus(Message):
    """device → host: the stage now. ``angle_deg`` is the encoder read-back (NaN until homed), ``t_us``
    device time; ``at_min``/``at_max``: at a soft limit; ``busy_refused``: Home/MoveTo/Acquire refused
    because the stage was moving or exposing (u32, since power-on)."""

    TYPE_ID: ClassVar[int] = 0x44
    BODY: ClassVar[struct.Struct] = struct.Struct("<Qff??????I")
    t_us: int
    angle_deg: float
    target_deg: float
    moving: bool
    in_position: bool
    homed: bool
    exposing: bool
    at_min: bool
    at_max: bool
    busy_refused: int


@dataclass(frozen=True, slots=True)
class Acquire(Message):
    """host → device: expose for ``exposure_s`` (0 < e ≤ 10 s) at the current angle. Ack at once; the
    :class:`Projection` follows when the exposure ends. Nak NOT_HOMED, BUSY (moving or exposing),
    OUT_OF_RANGE, NOT_FINITE."""

    TYPE_ID: ClassVar[int] = 0x45
    BODY: ClassVar[struct.Struct] = struct.Struct("<f")
    exposure_s: float


@dataclass(frozen=True, slots=True)
class Projection(Message):
    """device → host data: one detector line. ``angle_deg`` is the encoder angle during the exposure,
    ``t_us`` device time at its end, ``data`` the n_bins line integrals (float32). Variable length:
    header then ``n_bins × f32`` (at most 505 bins in MAX_PAYLOAD)."""

    TYPE_ID: ClassVar[int] = 0x46
    BODY: ClassVar[struct.Struct] = struct.Struct("<fQfH")  # angle_deg, t_us, exposure_s, n_bins
    IS_DATA: ClassVar[bool] = True
    angle_deg: float
    t_us: int
    exposure_s: float
    data: tuple[float, ...]

    def pack_body(self) -> bytes:
        n = len(self.data)
        return self.BODY.pack(self.angle_deg, self.t_us, self.exposure_s, n) + struct.pack(f"<{n}f", *self.data)

    @classmethod
    def unpack_body(cls, body: bytes) -> Projection:
        angle, t_us, exposure, n = cls.BODY.unpack_from(body)
        return cls(angle, t_us, exposure, struct.unpack(f"<{n}f", body[cls.BODY.size:]))  # size checked here


@dataclass(frozen=True, slots=True)
class SetSample(Message):
    """host → device: put a synthetic phantom on the stage: ``kind`` (:class:`SampleKind`), ``seed``,
    ``split`` (:class:`Split`: rotations of the train or validation bins), ``size`` (odd, 15..505 px = detector
    bins). Ack; Nak BAD_PARAM, BUSY while exposing."""

    TYPE_ID: ClassVar[int] = 0x47
    BODY: ClassVar[struct.Struct] = struct.Struct("<BIBH")
    kind: int
    seed: int
    split: int
    size: int


@dataclass(frozen=True, slots=True)
class SetNoise(Message):
    """host → device: detector noise ``model`` (:class:`NoiseModel`), Gaussian ``level`` (fraction of the
    projection's std, 0..1), Poisson ``flux`` [photons/bin/s] > 0. Ack; Nak BAD_PARAM, OUT_OF_RANGE, NOT_FINITE."""

    TYPE_ID: ClassVar[int] = 0x48
    BODY: ClassVar[struct.Struct] = struct.Struct("<Bff")
    model: int
    level: float = 0.05
    flux: float = 2.0e5


CT = COMMON | MessageSet("ct", [Home, MoveTo, Halt, StageStatusRequest, StageStatus, Acquire, Projection,
                                SetSample, SetNoise])


# --- framing -------------------------------------------------------------------------------------


def encode(msg: Message, seq: int) -> bytes:
    """One wire frame (COBS + trailing 0x00) for ``msg`` with sequence number ``seq`` (0..65535)."""
    if not isinstance(msg, Message):
        raise ProtocolError(f"not a Message: {msg!r}")
    if not 0 <= seq < SEQ_MOD:
        raise ProtocolError(f"seq {seq} outside u16")
    try:
        body = msg.pack_body()
    except struct.error as e:
        raise ProtocolError(f"{type(msg).__name__}: {e}") from None
    head = _HEADER.pack(PROTOCOL_VERSION, msg.TYPE_ID, seq) + body
    if len(head) + _CRC.size > MAX_PAYLOAD:
        raise ProtocolError(f"{type(msg).__name__}: payload {len(head) + _CRC.size} B > {MAX_PAYLOAD} B")
    return cobs.encode(head + _CRC.pack(zlib.crc32(head))) + b"\x00"


class FrameDecoder:
    """Stream → messages. Never raises on wire input: every rejected frame is counted and skipped,
    and the next 0x00 delimiter resynchronises the stream."""

    COUNTERS = ("ok", "garbage", "bad_crc", "truncated", "bad_version", "unknown_type", "bad_length",
                "seq_gaps", "seq_reorder")

    def __init__(self, messages: MessageSet = MEMS, max_payload: int = MAX_PAYLOAD) -> None:
        self.messages = messages
        self.max_payload = max_payload
        self._max_encoded = max_payload + max_payload // 254 + 1
        self._buf = bytearray()
        self._expect: int | None = None  # next expected sequence number
        self.ok = self.garbage = self.bad_crc = self.truncated = self.bad_version = 0
        self.unknown_type = self.bad_length = self.seq_gaps = self.seq_reorder = 0

    def counters(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.COUNTERS}

    @property
    def rejected(self) -> int:
        return self.garbage + self.bad_crc + self.truncated + self.bad_version + self.unknown_type + self.bad_length

    def reset_sequence(self) -> None:
        """Forget the expected sequence number (e.g. after the peer rebooted or the port was reopened)."""
        self._expect = None

    def feed(self, data: bytes) -> list[tuple[int, Message]]:
        """Decode every complete frame in ``data`` (plus what earlier calls left); returns ``[(seq, msg)]``."""
        buf = self._buf
        buf += data
        if b"\x00" not in data:
            if len(buf) > self._max_encoded:  # no delimiter in sight: drop it, resync at the next 0x00
                self.garbage += 1
                buf.clear()
            return []
        *chunks, rest = bytes(buf).split(b"\x00")
        buf[:] = rest
        out: list[tuple[int, Message]] = []
        for chunk in chunks:
            if chunk:  # an empty chunk (0x00 0x00) is an idle/flush delimiter, not an error
                item = self._decode(chunk)
                if item is not None:
                    out.append(item)
        if len(buf) > self._max_encoded:
            self.garbage += 1
            buf.clear()
        return out

    def _decode(self, chunk: bytes) -> tuple[int, Message] | None:
        if len(chunk) > self._max_encoded:
            self.garbage += 1
            return None
        try:
            payload = cobs.decode(chunk)
        except cobs.DecodeError:
            self.garbage += 1
            return None
        if len(payload) < _MIN_PAYLOAD:
            self.truncated += 1
            return None
        head = payload[:-4]
        if zlib.crc32(head) != _CRC.unpack_from(payload, len(head))[0]:
            # A frame cut short by a lost byte mostly lands here too: the CRC cannot tell the two apart.
            self.bad_crc += 1
            return None
        ver, tid, seq = _HEADER.unpack_from(head)
        if ver != PROTOCOL_VERSION:
            self.bad_version += 1
            return None
        cls = self.messages.by_id.get(tid)
        if cls is None:
            self.unknown_type += 1
            return None
        try:
            msg = cls.unpack_body(head[_HEADER.size:])
        except (struct.error, ValueError):
            self.bad_length += 1
            return None
        self._track(seq)
        self.ok += 1
        return seq, msg

    def _track(self, seq: int) -> None:
        if self._expect is not None:
            gap = (seq - self._expect) % SEQ_MOD
            if gap >= SEQ_MOD // 2:  # behind the expected number: duplicate or reordered
                self.seq_reorder += 1
                return
            self.seq_gaps += gap
        self._expect = (seq + 1) % SEQ_MOD

