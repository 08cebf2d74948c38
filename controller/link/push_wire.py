"""Model push wire format "ETP2": one request and one reply per TCP connection, authenticated with the
host-link keyring (controller/link/auth.py).

    request  = preamble | header | header_tag | model
      preamble  magic "ETP2" | key_id u8 | header_len u32 | model_len u32 | seq u64 | timestamp_us u64 | tag[32]
                (little endian, fixed 61 bytes); tag = HMAC-SHA256(key[key_id], preamble without tag)
      header    compact UTF-8 JSON (`PushHeader`): op, manifest text, model_sha256, sample (scan; angles mode)
      header_tag  HMAC-SHA256(key[key_id], "H" | preamble tag | header)
      model     model.onnx bytes (push only; its sha256 is in the header)
    reply    = reply_len u32 | JSON | HMAC-SHA256(key[key_id], "R" | preamble tag | JSON)

Versions: the magic's last byte is the protocol version. A preamble of another version ("ETP" and another
byte) is refused (`bad_version`) and answered with this edge's 4-byte magic alone, no more than it got, from
which the host's client raises `VersionMismatch` naming both versions.

The receiver reads the fixed-size preamble first and authenticates it, and checks its (key_id, seq,
timestamp_us) with a `ReplayGuard`, before it reads anything else: a peer without the key costs it one
preamble. A refused preamble gets no reply. The header tag chains to the preamble tag and the header
carries the model's sha256, so one key binds the whole request; every reply is authenticated (the
one-letter labels keep header and reply tags apart). JSON only: nothing is unpickled or evaluated.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import struct
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.link.auth import TAG_LEN, Keyring

VERSION = 2  # the push protocol's version, the last byte of the magic
MAGIC_PREFIX = b"ETP"
MAGIC = MAGIC_PREFIX + str(VERSION).encode()
PREAMBLE = struct.Struct(f"<4sBIIQQ{TAG_LEN}s")
REPLY_LEN = struct.Struct("<I")
MAX_HEADER = 1024 * 1024  # the manifest rides in the header: a 63-px angle policy's is ≈ 190 kB (per-pixel specs)
MAX_REPLY = 64 * 1024
HEADER_LABEL, REPLY_LABEL = b"H", b"R"

# An op is a name; which ones an edge serves is registered, not fixed here: push, rollback, status, hold and
# resume in every mode (controller/lifecycle.py), the rest by the mode (controller/modes/registry.py, e.g.
# scan and abort in angles mode). The edge refuses one it does not serve as "unsupported_op".
Op = str
OP_PATTERN = r"^[a-z][a-z_]{0,31}$"


class PushRefused(Exception):
    """A request refused before it reached the policy slot; ``reason`` is the counter/reply code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class SampleSpec(BaseModel):
    """The phantom a scan images (firmware_sim.ct.emulator.make_sample); its size is the daemon's."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    kind: Literal["any", "parallelogram", "triangle", "pentagon"] = "any"
    seed: int = Field(0, ge=0, lt=2**32)
    split: Literal["train", "val"] = "val"


class PushHeader(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    op: Op = Field(pattern=OP_PATTERN)
    manifest: str | None = None  # manifest.json text (push)
    model_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")  # of the model bytes that follow (push)
    sample: SampleSpec | None = None  # scan: the phantom to put on the stage first (None: keep the current one)
    signature: str | None = Field(None, max_length=1024)  # push: signature.json text (controller/policy/signature.py)


@dataclass(frozen=True)
class Preamble:
    """An authenticated preamble: what the request that follows may be, and the tag replies chain to."""

    key_id: int
    key: bytes
    header_len: int
    model_len: int
    seq: int
    timestamp_us: int
    tag: bytes


def _mac(key: bytes, *parts: bytes) -> bytes:
    return hmac.digest(key, b"".join(parts), hashlib.sha256)


def encode_request(header: PushHeader, model: bytes, key_id: int, key: bytes, seq: int, timestamp_us: int) -> bytes:
    body = header.model_dump_json(exclude_none=True).encode()
    unsigned = PREAMBLE.pack(MAGIC, key_id, len(body), len(model), seq, timestamp_us, bytes(TAG_LEN))[:-TAG_LEN]
    tag = _mac(key, unsigned)
    return unsigned + tag + body + _mac(key, HEADER_LABEL, tag, body) + model


def request_tag(request: bytes) -> bytes:
    """The preamble tag of an encoded request (replies are authenticated against it)."""
    return request[PREAMBLE.size - TAG_LEN:PREAMBLE.size]


def verify_preamble(keyring: Keyring, data: bytes) -> Preamble:
    """Authenticate a PREAMBLE.size-byte preamble; raises PushRefused (bad_version, bad_magic, unknown_key,
    bad_signature).
    Nothing else is checked here: sizes and freshness are for the caller, once it knows the sender."""
    magic, key_id, header_len, model_len, seq, ts_us, tag = PREAMBLE.unpack(data)
    if magic[:3] == MAGIC_PREFIX and magic != MAGIC:
        raise PushRefused("bad_version", f"push protocol version {magic[3:].decode('ascii', 'replace')!r}, this edge "
                                         f"speaks version {VERSION}")
    if magic != MAGIC:
        raise PushRefused("bad_magic", f"magic {magic!r}, this edge speaks {MAGIC!r}")
    key = keyring.keys.get(key_id)
    if key is None:
        raise PushRefused("unknown_key", f"key id {key_id} is not in the keyring")
    if not hmac.compare_digest(_mac(key, data[:-TAG_LEN]), tag):
        raise PushRefused("bad_signature", "preamble HMAC mismatch (unsigned or signed with another key)")
    return Preamble(key_id, key, header_len, model_len, seq, ts_us, tag)


def check_sizes(pre: Preamble, max_model: int) -> None:
    """Refuse lengths the edge will not read (an authenticated sender is told why)."""
    if not 0 < pre.header_len <= MAX_HEADER:
        raise PushRefused("bad_frame", f"header of {pre.header_len} bytes (max {MAX_HEADER})")
    if pre.model_len > max_model:
        raise PushRefused("too_large", f"model of {pre.model_len} bytes (max {max_model})")


def verify_header(pre: Preamble, body: bytes, tag: bytes) -> PushHeader:
    """Authenticate the header against its preamble and parse it; raises PushRefused (bad_signature, bad_frame)."""
    if not hmac.compare_digest(_mac(pre.key, HEADER_LABEL, pre.tag, body), tag):
        raise PushRefused("bad_signature", "header HMAC mismatch (not the header of this preamble)")
    try:
        return PushHeader.model_validate_json(body)
    except ValidationError as e:
        raise PushRefused("bad_frame", f"header: {e.errors()[0]['msg']}") from None


def encode_reply(reply: dict[str, Any], pre: Preamble) -> bytes:
    body = json.dumps(reply, separators=(",", ":"), allow_nan=False).encode()
    return REPLY_LEN.pack(len(body)) + body + _mac(pre.key, REPLY_LABEL, pre.tag, body)


def decode_reply(body: bytes, tag: bytes, key: bytes, preamble_tag: bytes) -> dict[str, Any]:
    """Authenticate and parse a reply; raises ValueError for one that is not authenticated or not an object."""
    if not hmac.compare_digest(_mac(key, REPLY_LABEL, preamble_tag, body), tag):
        raise ValueError("reply is not authenticated")
    reply = json.loads(body.decode("utf-8"))
    if not isinstance(reply, dict):
        raise ValueError("reply is not a JSON object")
    return reply
