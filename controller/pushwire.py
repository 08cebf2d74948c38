"""Model push wire format: one request and one reply per TCP connection, authenticated with the
host-link keyring (controller/hostlink_wire.py).

    request = head | header | model
      head    magic "ETP1" | key_id u8 | header_len u32 | model_len u32 | tag[32]   (little endian, 45 bytes)
      header  compact UTF-8 JSON (`PushHeader`): op, seq, timestamp_us, manifest text, model_sha256,
              sample (scan; angles mode)
      model   model.onnx bytes (push only)
      tag     HMAC-SHA256(key[key_id], head without tag | header)
    reply   = reply_len u32 | JSON | tag[32]
      tag     HMAC-SHA256(key[key_id], request tag | JSON), or 32 zero bytes when the request was not
              authenticated (such a reply can only refuse)

The header carries the manifest and the model's sha256, so the tag binds the model too; the
receiver verifies the tag before it reads the model and checks (key_id, seq, timestamp) with a
`ReplayGuard`. JSON only: nothing is unpickled or evaluated.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import struct
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.hostlink_wire import TAG_LEN, Keyring

MAGIC = b"ETP1"
HEAD = struct.Struct("<4sBII32s")
REPLY_LEN = struct.Struct("<I")
MAX_HEADER = 1024 * 1024  # the manifest rides in the header: a 63-px angle policy's is ≈ 190 kB (per-pixel specs)
MAX_REPLY = 64 * 1024
NO_TAG = bytes(TAG_LEN)

# scan, abort: angles mode (controller/ct_daemon.py); hold, resume: the operator hold (controller/lifecycle.py)
Op = Literal["push", "rollback", "status", "scan", "abort", "hold", "resume"]


class PushRefused(Exception):
    """A request refused before it reached the policy slot; ``reason`` is the counter/reply code."""

    def __init__(self, reason: str, detail: str, key_id: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.key_id = reason, detail, key_id


class SampleSpec(BaseModel):
    """The phantom a scan images (firmware_sim.ct_emulator.make_sample); its size is the daemon's."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    kind: Literal["any", "parallelogram", "triangle", "pentagon"] = "any"
    seed: int = Field(0, ge=0, lt=2**32)
    split: Literal["train", "val"] = "val"


class PushHeader(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    op: Op
    seq: int = Field(ge=0)
    timestamp_us: int = Field(ge=0)
    manifest: str | None = None  # manifest.json text (push)
    model_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")  # of the model bytes that follow (push)
    sample: SampleSpec | None = None  # scan: the phantom to put on the stage first (None: keep the current one)


def _mac(key: bytes, *parts: bytes) -> bytes:
    return hmac.digest(key, b"".join(parts), hashlib.sha256)


def encode_request(header: PushHeader, model: bytes, key_id: int, key: bytes) -> bytes:
    body = header.model_dump_json(exclude_none=True).encode()
    unsigned = HEAD.pack(MAGIC, key_id, len(body), len(model), NO_TAG)[:-TAG_LEN]
    return unsigned + _mac(key, unsigned, body) + body + model


def parse_head(head: bytes, max_model: int) -> tuple[int, int, int, bytes]:
    """(key_id, header_len, model_len, tag) from the 45-byte head; sizes are checked."""
    magic, key_id, header_len, model_len, tag = HEAD.unpack(head)
    if magic != MAGIC:
        raise PushRefused("bad_frame", f"bad magic {magic!r}")
    if not 0 < header_len <= MAX_HEADER:
        raise PushRefused("bad_frame", f"header of {header_len} bytes (max {MAX_HEADER})")
    if model_len > max_model:
        raise PushRefused("too_large", f"model of {model_len} bytes (max {max_model})")
    return key_id, header_len, model_len, tag


def verify_header(keyring: Keyring, head: bytes, body: bytes) -> PushHeader:
    """Authenticate and parse the header; raises PushRefused (unknown_key, bad_signature, bad_frame)."""
    key_id, tag = head[4], head[-TAG_LEN:]
    key = keyring.keys.get(key_id)
    if key is None:
        raise PushRefused("unknown_key", f"key id {key_id} is not in the keyring")
    if not hmac.compare_digest(_mac(key, head[:-TAG_LEN], body), tag):
        raise PushRefused("bad_signature", "HMAC mismatch (unsigned or signed with another key)")
    try:
        return PushHeader.model_validate_json(body)
    except ValidationError as e:
        raise PushRefused("bad_frame", f"header: {e.errors()[0]['msg']}", key_id) from None


def encode_reply(reply: dict[str, Any], key: bytes | None, request_tag: bytes) -> bytes:
    body = json.dumps(reply, separators=(",", ":"), allow_nan=False).encode()
    tag = NO_TAG if key is None else _mac(key, request_tag, body)
    return REPLY_LEN.pack(len(body)) + body + tag


def decode_reply(body: bytes, tag: bytes, key: bytes, request_tag: bytes) -> dict[str, Any]:
    """Parse a reply; an unauthenticated one is believed only when it refuses."""
    reply = json.loads(body.decode("utf-8"))
    if not isinstance(reply, dict):
        raise ValueError("reply is not a JSON object")
    if not hmac.compare_digest(_mac(key, request_tag, body), tag) and reply.get("accepted") is not False:
        raise ValueError("reply is not authenticated")
    return reply
