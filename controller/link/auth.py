"""Host-link datagram codec (docs/hostlink.md): versioned, sequence-numbered, HMAC-SHA256-tagged.

Datagram = header | body | tag

    header  magic "ET" | version u8 | type u8 | key_id u8 | seq u64 | timestamp_us u64 | body_len u16
            (little endian, 23 bytes; timestamp_us = sender's wall clock, µs since the Unix epoch)
    body    compact UTF-8 JSON object (commands, replies) or a fixed struct (Telemetry), ≤ MAX_BODY
    tag     HMAC-SHA256(key[key_id], header | body), all 32 bytes

Versions: a datagram of another version is dropped and counted (`bad_version`); the edge answers it with a
version notice, magic "ET" | its version u8 (3 bytes, at most one a second: never more than it got), from
which the host's client raises `VersionMismatch` naming both versions.

Type ids with the high bit set travel edge → host, the others host → edge. JSON bodies are parsed
with ``json.loads`` and validated by pydantic (strict types, finite numbers, no extra keys); nothing
is unpickled or evaluated. ``decode`` raises only ``HostLinkError`` subclasses whose ``kind`` names a
drop counter. Pure: no I/O except ``load_keyring`` and ``ReplayGuard.load/save``.
"""
from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import stat
import struct
import tempfile
import time
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

from pydantic import ConfigDict, StrictBool, StrictFloat, StrictInt, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as wire_dataclass

MAGIC = b"ET"
VERSION = 1
NOTICE = struct.Struct("<2sB")  # a version notice (module doc)
HEADER = struct.Struct("<2sBBBQQH")
TAG_LEN = 32
MAX_BODY = 1024
MIN_KEY_LEN = 16  # bytes: HMAC-SHA256 keys shorter than 128 bits are refused
TO_HOST = 0x80  # type-id bit: set on edge → host messages

Direction = Literal["to_edge", "to_host"]


def wall_us() -> int:
    """The wall clock in µs since the Unix epoch (the timestamp every datagram carries)."""
    return time.time_ns() // 1000


# --- errors -----------------------------------------------------------------------------------


class HostLinkError(Exception):
    """A datagram that was dropped (never answered); ``kind`` names the counter it is counted under."""

    kind: ClassVar[str] = "error"


class Malformed(HostLinkError):
    kind = "malformed"


class BadVersion(HostLinkError):
    kind = "bad_version"


class VersionMismatch(ConnectionError):
    """The other end speaks another protocol version (host link or push channel); the message names both."""


def version_notice() -> bytes:
    """What the edge answers to a datagram of another version: magic | its version."""
    return NOTICE.pack(MAGIC, VERSION)


def notice_version(datagram: bytes) -> int | None:
    """The version in the other end's version notice, or None when `datagram` is not one."""
    if len(datagram) != NOTICE.size:
        return None
    magic, version = NOTICE.unpack(datagram)
    return version if magic == MAGIC and version != VERSION else None


class UnknownType(HostLinkError):
    kind = "unknown_type"


class BadTag(HostLinkError):
    kind = "bad_tag"


class UnknownKey(HostLinkError):
    kind = "unknown_key"


class Replayed(HostLinkError):
    kind = "replayed"


class Stale(HostLinkError):
    kind = "stale"


DROP_KINDS = tuple(c.kind for c in (Malformed, BadVersion, UnknownType, BadTag, UnknownKey, Replayed, Stale))


# --- messages ---------------------------------------------------------------------------------

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


@wire_dataclass(frozen=True, config=_STRICT)
class AxisGains:
    kp: StrictFloat  # V/px
    ki: StrictFloat  # V/(px·s)
    kd: StrictFloat  # V·s/px


@wire_dataclass(frozen=True, config=_STRICT)
class Gains:
    x: AxisGains
    y: AxisGains

    def rows(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """[axis][P, I, D], the layout controller.modes.mems.pid.Pid takes (``np.asarray(g.rows())``)."""
        return (astuple(self.x), astuple(self.y))

    @classmethod
    def from_rows(cls, rows: Any) -> Gains:
        (px, ix, dx), (py, iy, dy) = rows
        return cls(AxisGains(float(px), float(ix), float(dx)), AxisGains(float(py), float(iy), float(dy)))


@dataclass(frozen=True)
class MessageSpec:
    type_id: int
    cls: type
    pack: Callable[[Any], bytes]
    unpack: Callable[[bytes], Any]

    @property
    def direction(self) -> Direction:
        return "to_host" if self.type_id & TO_HOST else "to_edge"


_BY_ID: dict[int, MessageSpec] = {}
_BY_CLS: dict[type, MessageSpec] = {}


def register(type_id: int, pack: Callable[[Any], bytes] | None = None, unpack: Callable[[bytes], Any] | None = None):
    """Class decorator adding a message type; JSON body codec unless ``pack``/``unpack`` are given."""

    def deco(cls: type) -> type:
        if not 0 < type_id < 256 or type_id in _BY_ID:
            raise ValueError(f"type id {type_id:#x} invalid or taken")
        if pack is None or unpack is None:
            adapter = TypeAdapter(cls)
            spec = MessageSpec(
                type_id, cls,
                lambda m: json.dumps(adapter.dump_python(m), separators=(",", ":"), allow_nan=False).encode(),
                lambda b: adapter.validate_python(json.loads(b.decode("utf-8"))),
            )
        else:
            spec = MessageSpec(type_id, cls, pack, unpack)
        _BY_ID[type_id] = _BY_CLS[cls] = spec
        return cls

    return deco


# host → edge (0x04 PolicyReady, 0x05 Rollback, 0x06 SetMode are reserved for the policy slot)
@register(0x01)
@wire_dataclass(frozen=True, config=_STRICT)
class SetGains:
    gains: Gains


@register(0x02)
@wire_dataclass(frozen=True, config=_STRICT)
class SetTarget:
    x_px: StrictFloat
    y_px: StrictFloat


@register(0x03)
@wire_dataclass(frozen=True, config=_STRICT)
class Ping:
    nonce: StrictInt


@register(0x07)
@wire_dataclass(frozen=True, config=_STRICT)
class SetDisturbance:
    """Test stands only (as in the paper's stand, where the host drives M1): forwarded to the device's
    SetDisturbance (controller.protocol.mems.Disturbance: 0 none, 1 steps, 2 wiener, 3 sine; p = p0..p3)."""

    profile: StrictInt
    seed: StrictInt = 0
    p: tuple[StrictFloat, StrictFloat, StrictFloat, StrictFloat] = (0.0, 0.0, 0.0, 0.0)


# edge → host (0x84 retired: it was Err, a reply to refused datagrams; the edge answers none now)
@register(0x82)
@wire_dataclass(frozen=True, config=_STRICT)
class Pong:
    nonce: StrictInt


@register(0x83)
@wire_dataclass(frozen=True, config=_STRICT)
class Ack:
    ack_seq: StrictInt  # seq of the command acknowledged
    gains: Gains | None = None  # the gains applied (after clamping), for SetGains
    clamped: StrictBool = False  # True when the envelope changed the requested gains


_TELEMETRY = struct.Struct("<Qq6d6d")  # tick, t_ns, x, y, target x/y, command x/y, gains [axis][P,I,D]


@dataclass(frozen=True)
class Telemetry:
    """One decimated tick: a fixed 112-byte struct body (sent often, so no JSON)."""

    tick: int
    t_ns: int  # edge monotonic clock
    x_px: float
    y_px: float
    target_x_px: float
    target_y_px: float
    cmd_x_v: float
    cmd_y_v: float
    gains: Gains


def _pack_telemetry(t: Telemetry) -> bytes:
    g = t.gains.rows()
    return _TELEMETRY.pack(t.tick, t.t_ns, t.x_px, t.y_px, t.target_x_px, t.target_y_px,
                           t.cmd_x_v, t.cmd_y_v, *g[0], *g[1])


def _unpack_telemetry(body: bytes) -> Telemetry:
    if len(body) != _TELEMETRY.size:
        raise ValueError(f"telemetry body is {len(body)} bytes, expected {_TELEMETRY.size}")
    tick, t_ns, x, y, tx, ty, cx, cy, *g = _TELEMETRY.unpack(body)
    gains = Gains(AxisGains(*g[:3]), AxisGains(*g[3:]))  # NaN gains are refused here
    return Telemetry(tick, t_ns, x, y, tx, ty, cx, cy, gains)


register(0x81, _pack_telemetry, _unpack_telemetry)(Telemetry)


# --- keys -------------------------------------------------------------------------------------


class KeyringError(ValueError):
    """The key file is missing, unsafe or malformed."""


@dataclass(frozen=True)
class Keyring:
    keys: dict[int, bytes]

    def __post_init__(self) -> None:
        for kid, key in self.keys.items():
            if not 0 <= kid <= 255 or len(key) < MIN_KEY_LEN:
                raise KeyringError(f"key {kid}: id must be 0..255 and the key at least {MIN_KEY_LEN} bytes")
        if not self.keys:
            raise KeyringError("keyring is empty")

    @property
    def newest(self) -> int:
        """The highest key id: the one to sign with after a rotation."""
        return max(self.keys)


def load_keyring(path: str | os.PathLike) -> Keyring:
    """Read ``id:hex`` lines (``#`` comments). Refused if group- or world-accessible (chmod 600)."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
        text = p.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise KeyringError(f"{p}: cannot read key file: {e}") from e
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyringError(f"{p}: key file is accessible by group/others (mode {stat.filemode(mode)}); "
                           f"run `chmod 600 {p}`")
    keys = parse_id_hex(p, text)
    try:
        return Keyring(keys)
    except KeyringError as e:
        raise KeyringError(f"{p}: {e}") from None


def parse_id_hex(path: Path, text: str) -> dict[int, bytes]:
    """``id:hex`` lines (``#`` comments) → {id: bytes}; raises KeyringError naming the line."""
    keys: dict[int, bytes] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            kid_s, hex_s = line.split(":", 1)
            kid = int(kid_s)
            if kid in keys:
                raise ValueError(f"duplicate key id {kid}")
            keys[kid] = bytes.fromhex(hex_s.strip())
        except ValueError as e:
            raise KeyringError(f"{path}:{n}: expected `id:hexkey`: {e}") from None
    return keys


def write_keyfile(path: str | os.PathLike, key_ids: tuple[int, ...] = (1,)) -> Keyring:
    """Create a new key file (mode 600) with a fresh random 32-byte key per id."""
    ring = Keyring({kid: os.urandom(32) for kid in key_ids})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# edgetune host-link keys: id:hex (keep mode 600)\n")
        f.writelines(f"{kid}:{key.hex()}\n" for kid, key in ring.keys.items())
    return ring


# --- replay protection ------------------------------------------------------------------------


class ReplayGuard:
    """Sliding-window anti-replay (RFC 4303 §3.4.3 style) per (peer, key_id), plus timestamp skew.

    A datagram is accepted once: its seq must be above ``highest − window`` and not yet seen, and its
    timestamp within ``max_skew_s`` of the local wall clock and not before the guard was created (so
    anything stamped before a restart is stale). The highest seq per link is persisted with
    ``save`` (atomic replace); after ``load`` everything at or below it counts as seen.
    """

    def __init__(self, window: int = 128, max_skew_s: float = 5.0, clock: Callable[[], int] = wall_us) -> None:
        if window < 1:
            raise ValueError("replay window must be >= 1")
        self.window, self.max_skew_us, self.clock = window, int(max_skew_s * 1e6), clock
        self.not_before_us = clock()  # restart barrier: nothing stamped earlier is accepted
        self._links: dict[tuple[str, int], list[int]] = {}  # -> [highest seq, bitmap (bit i: highest-i seen)]
        self.dirty = False

    def check(self, key_id: int, seq: int, timestamp_us: int, peer: str = "") -> None:
        """Raise ``Stale`` / ``Replayed``, or record the datagram as seen."""
        now = self.clock()
        if abs(timestamp_us - now) > self.max_skew_us or timestamp_us < self.not_before_us:
            raise Stale(f"timestamp {timestamp_us} µs is {(timestamp_us - now) / 1e6:+.3f} s from local time")
        link = self._links.get((peer, key_id))
        if link is None:
            self._links[(peer, key_id)] = [seq, 1]
        elif seq > link[0]:
            shift = seq - link[0]
            link[0] = seq
            link[1] = ((link[1] << shift) | 1) & ((1 << self.window) - 1) if shift < self.window else 1
        else:
            off = link[0] - seq
            if off >= self.window:
                raise Replayed(f"seq {seq} is {off} behind the newest {link[0]} (window {self.window})")
            if (link[1] >> off) & 1:
                raise Replayed(f"seq {seq} already seen")
            link[1] |= 1 << off
        self.dirty = True

    def snapshot(self) -> dict[str, Any]:
        """The persistent state (highest seq per link) as JSON-able data; clears ``dirty``."""
        self.dirty = False
        return {"version": 1, "saved_us": self.clock(),
                "links": [{"peer": peer, "key_id": kid, "seq": link[0]} for (peer, kid), link in self._links.items()]}

    def save(self, path: str | os.PathLike) -> None:
        write_state(path, self.snapshot())

    def load(self, path: str | os.PathLike) -> None:
        """Restore persisted links (a missing file is a first start); a corrupt file is an error."""
        p = Path(path)
        if not p.exists():
            return
        try:
            state = json.loads(p.read_text())
            for link in state["links"]:
                key = (str(link["peer"]), int(link["key_id"]))
                self._links[key] = [int(link["seq"]), (1 << self.window) - 1]  # all ≤ seq count as seen
            self.not_before_us = max(self.not_before_us, int(state["saved_us"]))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{p}: corrupt host-link replay state ({e}); delete it only if you know why") from e


def write_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write JSON atomically: temp file in the same directory, fsync, rename."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=p.name + ".")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- codec ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """A decoded, authenticated datagram."""

    msg: Any
    key_id: int
    seq: int
    timestamp_us: int


def encode(msg: Any, key_id: int, key: bytes, seq: int, timestamp_us: int) -> bytes:
    spec = _BY_CLS.get(type(msg))
    if spec is None:
        raise TypeError(f"{type(msg).__name__} is not a registered host-link message")
    body = spec.pack(msg)
    if len(body) > MAX_BODY:
        raise ValueError(f"{type(msg).__name__} body is {len(body)} bytes (max {MAX_BODY})")
    head = HEADER.pack(MAGIC, VERSION, spec.type_id, key_id, seq, timestamp_us, len(body))
    return head + body + hmac.digest(key, head + body, hashlib.sha256)


def decode(datagram: bytes, keyring: Keyring, guard: ReplayGuard | None = None, *,
           expect: Direction | None = None, peer: str = "") -> Envelope:
    """Authenticate and parse one datagram; raises only ``HostLinkError`` subclasses.

    ``expect`` drops messages travelling the other way (reflection) as ``unknown_type``; ``guard``
    enforces freshness and is updated only for datagrams that are valid in every other respect (so a
    reflected datagram, whose seq is the other end's, never moves this end's window). A caller answers
    only what this returns: every check, freshness included, comes before any reply.
    """
    n = len(datagram)
    if n < HEADER.size + TAG_LEN or n > HEADER.size + MAX_BODY + TAG_LEN:
        raise Malformed(f"datagram of {n} bytes")
    magic, version, type_id, key_id, seq, ts_us, body_len = HEADER.unpack_from(datagram)
    if magic != MAGIC:
        raise Malformed("bad magic")
    if version != VERSION:
        raise BadVersion(f"version {version}, this end speaks {VERSION}")
    if n != HEADER.size + body_len + TAG_LEN:
        raise Malformed(f"body length {body_len} does not match a {n}-byte datagram")
    key = keyring.keys.get(key_id)
    if key is None:
        raise UnknownKey(f"key id {key_id}")
    signed, tag = datagram[:-TAG_LEN], datagram[-TAG_LEN:]
    if not hmac.compare_digest(hmac.digest(key, signed, hashlib.sha256), tag):
        raise BadTag("HMAC mismatch")
    spec = _BY_ID.get(type_id)
    if spec is None or (expect is not None and spec.direction != expect):
        raise UnknownType(f"type {type_id:#04x}")
    try:
        msg = spec.unpack(bytes(datagram[HEADER.size:-TAG_LEN]))
    except (ValueError, ValidationError, RecursionError, struct.error) as e:  # JSON/UTF-8/schema/struct
        raise Malformed(f"{spec.cls.__name__} body: {e}") from None
    if guard is not None:
        guard.check(key_id, seq, ts_us, peer)
    return Envelope(msg, key_id, seq, ts_us)


class Signer:
    """Seals messages with one key; seqs start at the wall clock in µs so a restart never reuses one."""

    def __init__(self, keyring: Keyring, key_id: int, clock: Callable[[], int] = wall_us) -> None:
        if key_id not in keyring.keys:
            raise KeyringError(f"key id {key_id} is not in the keyring (have {sorted(keyring.keys)})")
        self.key_id, self._key, self.clock = key_id, keyring.keys[key_id], clock
        self._seq = itertools.count(clock())
        self.last_seq = -1

    def seal(self, msg: Any) -> bytes:
        self.last_seq = next(self._seq)
        return encode(msg, self.key_id, self._key, self.last_seq, self.clock())
