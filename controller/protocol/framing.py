"""Serial framing between the edge and the instrument firmware (docs/protocol.md): COBS + CRC frames,
chunked payloads, and the decoder that never raises.

One frame on the wire is ``COBS(payload) + b"\\x00"`` with
``payload = ver:u8 | type:u8 | seq:u16 | body | crc32:u32`` (little endian, CRC-32 of
ver..body by ``zlib.crc32``). Messages are dataclasses registered by type id in a
:class:`MessageSet`; the messages themselves live in ``common`` (every device), ``mems`` and ``ct``.
A decoder is always given the set it decodes (a device's set names the device it expects).

A message whose payload does not fit one frame (a 64 × 64 float32 detector pattern, 16 KiB) is sent
as :class:`Chunk` frames: ``transfer | offset | total | crc32(type | body)`` + a slice of ``type | body``.
The decoder reassembles one transfer at a time, in order, at most ``max_total`` bytes, and counts
every chunk it cannot use. Used by both sides: the firmware emulators (``firmware_sim``) and the edge
driver. stdlib + ``cobs`` only.
"""
from __future__ import annotations

import functools
import operator
import struct
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self

from cobs import cobs

PROTOCOL_VERSION = 1
MAX_PAYLOAD = 2048  # bytes of ver..crc; longer frames are refused by encode and dropped by decode
SEQ_MOD = 1 << 16
MAX_CHUNKED = 64 * 1024  # the largest reassembled payload (type | body) a decoder accepts by default
CHUNK_TIMEOUT_S = 2.0  # a transfer with no chunk for this long is dropped

_HEADER = struct.Struct("<BBH")  # ver, type, seq
_CRC = struct.Struct("<I")
_MIN_PAYLOAD = _HEADER.size + _CRC.size


class ProtocolError(ValueError):
    """API misuse (unencodable message, bad sequence number, clashing type ids). Never raised for bad wire input."""


class Message:
    """Base of every message. Fixed-size bodies declare ``BODY`` (fields packed in declaration order);
    variable or non-trivial bodies override :meth:`pack_body` / :meth:`unpack_body`."""

    TYPE_ID: ClassVar[int]
    BODY: ClassVar[struct.Struct] = struct.Struct("<")
    IS_DATA: ClassVar[bool] = False  # device → host data (Frame, Projection, Pattern), not a reply to a command

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
    """A registry ``type id -> message class``; sets combine with ``|`` (ids must not clash).
    ``device`` is the ``IdentifyReply.device`` a driver of this set expects (None: any device)."""

    def __init__(self, name: str, classes: Iterable[type[Message]] = (), device: str | None = None) -> None:
        self.name = name
        self.device = device
        self.by_id: dict[int, type[Message]] = {}
        for cls in classes:
            self.register(cls)

    def register(self, cls: type[Message]) -> type[Message]:
        tid = cls.TYPE_ID
        if not 0 <= tid <= 0xFF:
            raise ProtocolError(f"{cls.__name__}: type id {tid} outside u8")
        if tid == Chunk.TYPE_ID or (tid in self.by_id and self.by_id[tid] is not cls):
            other = "Chunk" if tid == Chunk.TYPE_ID else self.by_id[tid].__name__
            raise ProtocolError(f"type id 0x{tid:02x} used by {other} and {cls.__name__}")
        self.by_id[tid] = cls
        return cls

    def __or__(self, other: MessageSet) -> MessageSet:
        if self.device and other.device and self.device != other.device:
            raise ProtocolError(f"cannot combine sets of two devices: {self.device}, {other.device}")
        return MessageSet(f"{self.name}+{other.name}", [*self.by_id.values(), *other.by_id.values()],
                          self.device or other.device)

    def __contains__(self, cls: object) -> bool:
        return isinstance(cls, type) and self.by_id.get(getattr(cls, "TYPE_ID", -1)) is cls


@dataclass(frozen=True, slots=True)
class Chunk(Message):
    """One slice of a payload too large for a frame (framing level: every decoder knows it, no set holds it).
    ``data`` is ``payload[offset:offset + len(data)]`` of ``payload = type:u8 | body`` (``total`` bytes,
    CRC-32 ``crc``); ``transfer`` is the sequence number of the transfer's first chunk frame."""

    TYPE_ID: ClassVar[int] = 0x0A
    BODY: ClassVar[struct.Struct] = struct.Struct("<HIII")  # transfer, offset, total, crc
    transfer: int
    offset: int
    total: int
    crc: int
    data: bytes

    def pack_body(self) -> bytes:
        return self.BODY.pack(self.transfer, self.offset, self.total, self.crc) + self.data

    @classmethod
    def unpack_body(cls, body: bytes) -> Chunk:
        return cls(*cls.BODY.unpack_from(body), body[cls.BODY.size:])


CHUNK_DATA = MAX_PAYLOAD - _MIN_PAYLOAD - Chunk.BODY.size  # the most payload bytes one chunk frame carries


def _pack(msg: Message) -> bytes:
    if not isinstance(msg, Message):
        raise ProtocolError(f"not a Message: {msg!r}")
    try:
        return msg.pack_body()
    except struct.error as e:
        raise ProtocolError(f"{type(msg).__name__}: {e}") from None


def _frame(tid: int, seq: int, body: bytes, name: str) -> bytes:
    if not 0 <= seq < SEQ_MOD:
        raise ProtocolError(f"seq {seq} outside u16")
    head = _HEADER.pack(PROTOCOL_VERSION, tid, seq) + body
    if len(head) + _CRC.size > MAX_PAYLOAD:
        raise ProtocolError(f"{name}: payload {len(head) + _CRC.size} B > {MAX_PAYLOAD} B")
    return cobs.encode(head + _CRC.pack(zlib.crc32(head))) + b"\x00"


def encode(msg: Message, seq: int) -> bytes:
    """One wire frame (COBS + trailing 0x00) for ``msg`` with sequence number ``seq`` (0..65535)."""
    body = _pack(msg)
    return _frame(msg.TYPE_ID, seq, body, type(msg).__name__)


def encode_frames(msg: Message, seq: int, chunk_data: int = CHUNK_DATA) -> list[bytes]:
    """``msg`` as wire frames numbered ``seq, seq + 1, …`` (mod 65536): one frame when it fits, else
    :class:`Chunk` frames carrying at most ``chunk_data`` bytes each. The sender spends one number per frame."""
    body = _pack(msg)
    if len(body) + _MIN_PAYLOAD <= MAX_PAYLOAD:
        return [_frame(msg.TYPE_ID, seq, body, type(msg).__name__)]
    if not 0 < chunk_data <= CHUNK_DATA:
        raise ProtocolError(f"chunk_data {chunk_data} outside 1..{CHUNK_DATA}")
    payload = bytes([msg.TYPE_ID]) + body
    if len(payload) >= 1 << 32:
        raise ProtocolError(f"{type(msg).__name__}: {len(payload)} B is too large to chunk")
    crc, total = zlib.crc32(payload), len(payload)
    return [encode(Chunk(seq, off, total, crc, payload[off:off + chunk_data]), (seq + i) % SEQ_MOD)
            for i, off in enumerate(range(0, total, chunk_data))]


class FrameDecoder:
    """Stream → messages. Never raises on wire input: every rejected frame is counted and skipped,
    and the next 0x00 delimiter resynchronises the stream. Chunked payloads are reassembled (see
    :meth:`_chunk`); every chunk that cannot be used is counted in one ``chunk_*`` counter."""

    COUNTERS = ("ok", "garbage", "bad_crc", "truncated", "bad_version", "unknown_type", "bad_length",
                "seq_gaps", "seq_reorder", "chunked_ok", "chunk_bad_crc", "chunk_mismatch", "chunk_missing",
                "chunk_superseded", "chunk_timeout", "chunk_too_large")

    def __init__(self, messages: MessageSet, max_payload: int = MAX_PAYLOAD, max_chunked: int = MAX_CHUNKED,
                 chunk_timeout_s: float = CHUNK_TIMEOUT_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.messages = messages
        self.max_payload = max_payload
        self.max_chunked, self.chunk_timeout_s, self._clock = max_chunked, chunk_timeout_s, clock
        self._max_encoded = max_payload + max_payload // 254 + 1
        self._buf = bytearray()
        self._expect: int | None = None  # next expected sequence number
        self._transfer: Chunk | None = None  # the first chunk of the transfer in flight
        self._parts = bytearray()  # its payload so far (never more than max_chunked bytes)
        self._last_chunk = 0.0
        for k in self.COUNTERS:
            setattr(self, k, 0)

    def counters(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.COUNTERS}

    @property
    def rejected(self) -> int:
        return self.garbage + self.bad_crc + self.truncated + self.bad_version + self.unknown_type + self.bad_length

    @property
    def chunk_rejected(self) -> int:
        """Chunks (and transfers) dropped: none of their bytes was delivered."""
        return (self.chunk_bad_crc + self.chunk_mismatch + self.chunk_missing + self.chunk_superseded
                + self.chunk_timeout + self.chunk_too_large)

    def reset_sequence(self) -> None:
        """Forget the expected sequence number and any transfer in flight (the peer rebooted, the port reopened)."""
        self._expect = None
        self._drop_transfer()

    def feed(self, data: bytes) -> list[tuple[int, Message]]:
        """Decode every complete frame in ``data`` (plus what earlier calls left); returns ``[(seq, msg)]``
        (a chunked message carries the sequence number of its last chunk)."""
        buf = self._buf
        buf += data
        if b"\x00" not in data:
            if len(buf) > self._max_encoded:  # no delimiter in sight: drop it, resync at the next 0x00
                self.garbage += 1
                buf.clear()
            return []
        *frames, rest = bytes(buf).split(b"\x00")
        buf[:] = rest
        out: list[tuple[int, Message]] = []
        for frame in frames:
            if frame:  # an empty frame (0x00 0x00) is an idle/flush delimiter, not an error
                item = self._decode(frame)
                if item is not None:
                    out.append(item)
        if len(buf) > self._max_encoded:
            self.garbage += 1
            buf.clear()
        return out

    def _decode(self, frame: bytes) -> tuple[int, Message] | None:
        if len(frame) > self._max_encoded:
            self.garbage += 1
            return None
        try:
            payload = cobs.decode(frame)
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
        cls = Chunk if tid == Chunk.TYPE_ID else self.messages.by_id.get(tid)
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
        if isinstance(msg, Chunk):
            whole = self._chunk(msg)
            return None if whole is None else (seq, whole)
        return seq, msg

    def _track(self, seq: int) -> None:
        if self._expect is not None:
            gap = (seq - self._expect) % SEQ_MOD
            if gap >= SEQ_MOD // 2:  # behind the expected number: duplicate or reordered
                self.seq_reorder += 1
                return
            self.seq_gaps += gap
        self._expect = (seq + 1) % SEQ_MOD

    # --- chunk reassembly --------------------------------------------------------------------------

    def _drop_transfer(self) -> None:
        self._transfer = None
        self._parts = bytearray()

    def _chunk(self, c: Chunk) -> Message | None:
        """Add one chunk in order to the transfer in flight; the whole message when it completes.
        A chunk of another transfer (or a new start) supersedes the one in flight; a chunk after a gap
        (an earlier chunk lost) drops its transfer, and later chunks of it count as missing too."""
        now, cur = self._clock(), self._transfer
        if cur is not None and now - self._last_chunk > self.chunk_timeout_s:
            self.chunk_timeout += 1
            self._drop_transfer()
            cur = None
        if cur is not None and (c.offset == 0 or c.transfer != cur.transfer):  # another transfer began
            self.chunk_superseded += 1
            self._drop_transfer()
            cur = None
        if c.total > self.max_chunked:
            self.chunk_too_large += 1
            self._drop_transfer()
            return None
        inconsistent = cur is not None and (c.total, c.crc) != (cur.total, cur.crc)
        if not c.data or c.offset + len(c.data) > c.total or inconsistent:
            self.chunk_mismatch += 1
            self._drop_transfer()
            return None
        if c.offset != len(self._parts):  # the transfer's start, or a chunk in between, was lost
            self.chunk_missing += 1
            self._drop_transfer()
            return None
        self._transfer, self._last_chunk = cur or c, now
        self._parts += c.data
        if len(self._parts) < c.total:
            return None
        payload = bytes(self._parts)
        self._drop_transfer()
        if zlib.crc32(payload) != c.crc:
            self.chunk_bad_crc += 1
            return None
        cls = self.messages.by_id.get(payload[0])
        if cls is None:
            self.unknown_type += 1
            return None
        try:
            msg = cls.unpack_body(payload[1:])
        except (struct.error, ValueError):
            self.bad_length += 1
            return None
        self.chunked_ok += 1
        return msg
