"""Property-based fuzzing (hypothesis) of every decoder on the edge's trust boundary
(`edgetune bench fuzz --cases N`; tests/unit/test_fuzz_decoders.py runs the same properties with fewer cases).

The property, per decoder: any input either decodes or raises the decoder's own error type — nothing
else escapes. For chunked serial payloads, also: whatever is reassembled is exactly a payload that was sent. Inputs are random bytes *and* valid encodings damaged (bit flips, cuts, splices), and for
the host link and the push channel, arbitrary bodies (and push preambles) under a valid HMAC tag so
the parsers behind authentication are reached too. The push property parses a request as the edge's
server does: the fixed-size preamble it reads before authentication, then the header.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hyp_seed
from hypothesis import strategies as st

from controller.protocol import common, framing, mems
from controller.config import ConfigError, parse_config
from controller.link.auth import (
    HEADER, MAGIC, TAG_LEN, VERSION, HostLinkError, Keyring, ReplayGuard, decode, encode,
)
from controller.policy.manifest import ManifestError, parse_manifest
from controller.link.push_wire import (
    HEADER_LABEL, MAGIC as PUSH_MAGIC, PREAMBLE, PushHeader, PushRefused, check_sizes, encode_request, verify_header,
    verify_preamble,
)

KEY = bytes(range(32))
RING = Keyring({1: KEY})
NOW_US = 1_700_000_000_000_000

# --- strategies ------------------------------------------------------------------------------


def _damage(data: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """A valid encoding with one bit flipped, cut short, or spliced with random bytes."""

    def flip(t: tuple[bytes, int]) -> bytes:
        b, i = t
        i %= max(len(b) * 8, 1)
        return b[:i // 8] + bytes([b[i // 8] ^ (1 << (i % 8))]) + b[i // 8 + 1:] if b else b

    return st.one_of(
        data,
        st.tuples(data, st.integers(0, 1 << 16)).map(flip),
        st.tuples(data, st.integers(0, 200)).map(lambda t: t[0][:t[1]]),
        st.tuples(data, st.binary(max_size=16), st.integers(0, 200)).map(lambda t: t[0][:t[2]] + t[1] + t[0][t[2]:]),
    )


_FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)
_SERIAL_MSGS = st.one_of(
    st.builds(mems.Frame, st.integers(0, 2**32 - 1), st.integers(0, 2**63 - 1), _FLOATS, _FLOATS, st.booleans()),
    st.builds(mems.SetVoltages, _FLOATS, _FLOATS),
    st.just(common.Identify()), st.just(common.StreamStart()), st.just(common.StatusRequest()),
)
_SERIAL_FRAMES = st.builds(framing.encode, _SERIAL_MSGS, st.integers(0, framing.SEQ_MOD - 1))
SERIAL_STREAM = st.lists(st.one_of(_damage(_SERIAL_FRAMES), st.binary(max_size=64)), max_size=12)


def _pattern(t: tuple[int, int, int]) -> common.Pattern:
    index, h, w = t
    return common.Pattern(index, index, h, w, random.Random(index).randbytes(4 * h * w))


_PATTERNS = st.builds(_pattern, st.tuples(st.integers(0, 2**32 - 1), st.integers(23, 32), st.integers(23, 32)))


def _chunk_frames(t: tuple[list[common.Pattern], int, int]) -> tuple[list[common.Pattern], list[bytes]]:
    patterns, seq, size = t
    return patterns, [f for i, m in enumerate(patterns) for f in framing.encode_frames(m, (seq + 64 * i) % 65536, size)]


def _damage_frames(t: tuple[tuple[list[common.Pattern], list[bytes]], list[tuple[int, int, bytes]]]
                   ) -> tuple[list[common.Pattern], list[bytes]]:
    """Chunk frames with some lost, cut, bit-flipped, duplicated or spliced with random bytes."""
    (patterns, frames), edits = t
    frames = list(frames)
    for op, x, junk in edits:
        i = x % len(frames)
        f, cut = frames[i], x % len(frames[i])
        match op:
            case 0:
                del frames[i]
            case 1:
                frames[i] = f[:cut] + b"\x00"
            case 2:
                frames[i] = f[:cut] + bytes([f[cut] ^ (1 << x % 8)]) + f[cut + 1:]
            case 3:
                frames.insert(i, f)
            case _:
                frames.insert(i, junk)
        if not frames:
            break
    return patterns, frames


CHUNK_STREAMS = st.tuples(
    st.tuples(st.lists(_PATTERNS, min_size=1, max_size=3), st.integers(0, 65535), st.integers(256, framing.CHUNK_DATA))
    .map(_chunk_frames),
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=16)), max_size=6),
).map(_damage_frames)

_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                     max_leaves=12)


def _signed(t: tuple[int, int, int, bytes]) -> bytes:
    """Any body under a valid header and tag: what only a key holder could send."""
    type_id, seq, skew_us, body = t
    head = HEADER.pack(MAGIC, VERSION, type_id, 1, seq, NOW_US + skew_us, len(body))
    return head + body + hmac.digest(KEY, head + body, hashlib.sha256)


_BODIES = st.one_of(st.binary(max_size=160), _JSON.map(lambda v: json.dumps(v).encode()))
_SIGNED = st.tuples(st.integers(0, 255), st.integers(0, 2**64 - 1), st.integers(-10_000_000, 10_000_000),
                    _BODIES).map(_signed)
_VALID_DGRAMS = st.builds(lambda x, y, seq: encode(_set_target(x, y), 1, KEY, seq, NOW_US),
                          st.floats(-1e3, 1e3), st.floats(-1e3, 1e3), st.integers(0, 2**63))
DATAGRAMS = st.one_of(st.binary(max_size=200), _SIGNED, _damage(_VALID_DGRAMS))


def _set_target(x: float, y: float) -> Any:
    from controller.link.auth import SetTarget

    return SetTarget(x, y)


def _signed_push(t: tuple[int | None, int, int, int, bytes]) -> bytes:
    """Any preamble fields and header under valid tags: what only a key holder could send."""
    header_len, model_len, seq, skew_us, body = t
    unsigned = PREAMBLE.pack(PUSH_MAGIC, 1, len(body) if header_len is None else header_len, model_len, seq,
                             NOW_US + skew_us, bytes(TAG_LEN))[:-TAG_LEN]
    tag = hmac.digest(KEY, unsigned, hashlib.sha256)
    return unsigned + tag + body + hmac.digest(KEY, HEADER_LABEL + tag + body, hashlib.sha256)


_U32 = st.integers(0, 2**32 - 1)
_SIGNED_PUSH = st.tuples(st.none() | _U32, _U32, st.integers(0, 2**64 - 1), st.integers(-10_000_000, 10_000_000),
                         _BODIES).map(_signed_push)
_VALID_PUSH = st.builds(lambda op, seq: encode_request(PushHeader(op=op), b"", 1, KEY, seq, NOW_US),
                        st.sampled_from(["status", "rollback", "hold"]), st.integers(0, 2**63))
PUSH_REQUESTS = st.one_of(st.binary(max_size=200), _SIGNED_PUSH, _damage(_VALID_PUSH))


VALID_MANIFEST: dict[str, Any] = {
    "schema_version": 1, "task": "mems-pid-gains", "version": "1",
    "observation": {"name": "obs", "shape": [2], "dtype": "float32", "units": ["px", "px"],
                    "normalisation": {"mean": [0.0, 0.0], "std": [50.0, 50.0]}},
    "action": {"name": "action", "shape": [1], "dtype": "float32", "units": ["V/px"], "low": [5.0], "high": [15.0]},
    "decision_period_s": 0.1, "sha256": "0" * 64, "training_run": "fuzz", "created": "2026-01-01T00:00:00Z",
    "producer": {"edgetune": "0.1.0"}, "opset": 17,
}


def _mutate(doc: dict[str, Any], paths: list[tuple[str, ...]]) -> st.SearchStrategy[dict[str, Any]]:
    """A document with random leaves replaced, keys removed or unknown keys added."""

    def apply(t: tuple[list[tuple[int, Any, int]], Any]) -> dict[str, Any]:
        edits, extra = t
        out = json.loads(json.dumps(doc))
        for i, value, op in edits:
            *parents, leaf = paths[i % len(paths)]
            node = out
            for k in parents:
                node = node.get(k) if isinstance(node, dict) else None
            if isinstance(node, dict):
                if op == 0:
                    node.pop(leaf, None)
                else:
                    node[leaf if op == 1 else f"{leaf}_x"] = value
        if extra is not None:
            out["unknown"] = extra
        return out

    return st.tuples(st.lists(st.tuples(st.integers(0, 10_000), _JSON, st.integers(0, 2)), max_size=4),
                     st.none() | _JSON).map(apply)


def _paths(d: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    return [q for k, v in d.items() for q in ([prefix + (k,)] + (_paths(v, prefix + (k,)) if isinstance(v, dict) else []))]


MANIFESTS = st.one_of(st.binary(max_size=200), _mutate(VALID_MANIFEST, _paths(VALID_MANIFEST)).map(
    lambda d: json.dumps(d).encode()))

_CONFIG_DOC = {"device": {"port": "/dev/x", "baud": 115200, "reconnect_backoff_min_s": 0.1, "read_timeout_s": 0.5,
                          "safe_voltage_v": {"x": 0.0, "y": 0.0},
                          "voltage_limits_v": {"x": {"min": -1.0, "max": 1.0}, "y": {"min": -1.0, "max": 1.0}}},
               "loop": {"rate_hz": 120.0, "pacing": "frames"}, "pid": {"x": {"kp": 1.0, "output_v": {"min": -1, "max": 1}}},
               "hostlink": {"port": 1, "silence_timeout_s": 2.0, "envelope": {"x": {"kp": {"min": 0, "max": 1}}}},
               "recorder": {"batch_rows": 4}, "metrics": {"enabled": True}, "log": {"level": "INFO", "json": False}}
CONFIGS = _mutate(_CONFIG_DOC, _paths(_CONFIG_DOC))

# --- properties: each returns None, or raises what escaped the decoder -------------------------


def serial_frames(chunks: list[bytes]) -> None:
    dec = framing.FrameDecoder(mems.MEMS)
    for c in chunks:
        dec.feed(c)  # never raises on wire input


def chunk_streams(t: tuple[list[common.Pattern], list[bytes]]) -> None:
    """Damaged chunked payloads: never raises, and whatever is delivered is exactly one of the payloads sent."""
    sent, frames = t
    dec = framing.FrameDecoder(mems.MEMS)
    for f in frames:
        for _, msg in dec.feed(f):
            if msg not in sent:
                raise AssertionError(f"a damaged chunk stream delivered a wrong {type(msg).__name__}")


def hostlink_packets(datagram: bytes) -> None:
    guard = ReplayGuard(window=64, max_skew_s=5.0, clock=lambda: NOW_US)
    try:
        decode(datagram, RING, guard, expect="to_edge")
    except HostLinkError:
        pass


def push_requests(data: bytes) -> None:
    """As the push server reads: exactly PREAMBLE.size bytes first (a short read is a closed connection)."""
    if len(data) < PREAMBLE.size:
        return
    guard = ReplayGuard(window=64, max_skew_s=5.0, clock=lambda: NOW_US)
    try:
        pre = verify_preamble(RING, data[:PREAMBLE.size])
        guard.check(pre.key_id, pre.seq, pre.timestamp_us, "push")
        check_sizes(pre, 16 * 1024 * 1024)
        end = PREAMBLE.size + pre.header_len
        if len(data) >= end + TAG_LEN:
            verify_header(pre, data[PREAMBLE.size:end], data[end:end + TAG_LEN])
    except (PushRefused, HostLinkError):
        pass


def manifests(text: bytes) -> None:
    try:
        parse_manifest(text)
    except ManifestError:
        pass


def configs(doc: dict[str, Any]) -> None:
    try:
        parse_config(doc, "fuzz.toml")
    except ConfigError:
        pass


DECODERS: dict[str, tuple[Callable[[Any], None], st.SearchStrategy[Any]]] = {
    "serial": (serial_frames, SERIAL_STREAM), "chunks": (chunk_streams, CHUNK_STREAMS), "hostlink": (hostlink_packets, DATAGRAMS),
    "push": (push_requests, PUSH_REQUESTS),
    "manifest": (manifests, MANIFESTS), "config": (configs, CONFIGS),
}


def fuzz(name: str, cases: int, seed: int = 0) -> dict[str, Any]:
    """Run one decoder's property for ``cases`` examples; the status names the first escape, if any."""
    prop, strategy = DECODERS[name]
    count = 0

    def counted(x: Any) -> None:
        nonlocal count
        count += 1
        prop(x)

    test = hyp_seed(seed)(settings(max_examples=cases, database=None, deadline=None, derandomize=False,
                                   suppress_health_check=list(HealthCheck))(given(strategy)(counted)))
    t0 = time.perf_counter()
    try:
        test()
        status = "ok"
    except Exception as e:  # the property failed: report what escaped
        status = f"FAIL: {type(e).__name__}: {e}"[:300]
    return {"cases": count, "seconds": round(time.perf_counter() - t0, 2), "status": status}


def run_all(cases: int, seed: int = 0) -> dict[str, Any]:
    res = {name: fuzz(name, cases, seed) for name in DECODERS}
    return {"cases_per_decoder": cases, "seed": seed, "decoders": res,
            "passed": all(r["status"] == "ok" for r in res.values())}
