"""The pusher's end of the model-push channel (controller/link/push_wire.py): plain blocking sockets, no torch.

    client = PushClient(("edge", 9751), load_keyring("hostlink.keys"), key_id=1)
    reply = client.push("runs/ddpg/policy")   # {"accepted", "reason", "swap_latency_ms", "version", ...}
    client.rollback(); client.status(); client.hold(); client.resume()
    client.scan(SampleSpec(seed=7)); client.abort()   # angles mode (controller/modes/ct/session.py)

Every reply is an authenticated dict; ``accepted`` False carries ``reason`` (and ``detail``). Network
failures raise OSError; a request the edge refused before authentication (it gives no reply then)
raises ``Unanswered``, a reply that fails authentication ValueError.
"""
from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from controller.link.auth import TAG_LEN, Keyring, KeyringError, VersionMismatch, wall_us
from controller.policy.manifest import MANIFEST_NAME, MODEL_NAME, file_sha256
from controller.policy.signature import SIGNATURE_NAME
from controller.link.push_wire import (
    MAGIC_PREFIX, MAX_REPLY, REPLY_LEN, VERSION, Op, PushHeader, SampleSpec, decode_reply, encode_request, request_tag,
)


class Unanswered(ConnectionError):
    """The edge closed the connection without a reply: it refused the request before authentication."""


class PushClient:
    def __init__(self, edge_addr: tuple[str, int], keyring: Keyring, key_id: int, timeout_s: float = 30.0) -> None:
        if key_id not in keyring.keys:
            raise KeyringError(f"key id {key_id} is not in the keyring (have {sorted(keyring.keys)})")
        self.edge_addr, self.key_id, self.key, self.timeout_s = edge_addr, key_id, keyring.keys[key_id], timeout_s
        self._seq = 0

    def push(self, out_dir: str | Path) -> dict[str, Any]:
        """Send `out_dir`'s model.onnx + manifest.json (as exported by learner/export.py)."""
        return self.send(self.push_frame(out_dir))

    def rollback(self) -> dict[str, Any]:
        return self.send(self.frame("rollback"))

    def status(self) -> dict[str, Any]:
        return self.send(self.frame("status"))

    def scan(self, sample: SampleSpec | None = None) -> dict[str, Any]:
        """Run one scan (after putting `sample` on the stage); the reply is its summary. The client's
        timeout_s must cover a whole scan."""
        return self.send(self.frame("scan", sample=sample))

    def abort(self) -> dict[str, Any]:
        """Halt the scan in flight; replies once the stage rests (reason "aborted", or "idle")."""
        return self.send(self.frame("abort"))

    def hold(self) -> dict[str, Any]:
        """Operator hold: the actuators go to the mode's safe command and stay there until ``resume``."""
        return self.send(self.frame("hold"))

    def resume(self) -> dict[str, Any]:
        return self.send(self.frame("resume"))

    def push_frame(self, out_dir: str | Path) -> bytes:
        d = Path(out_dir)
        signature = d / SIGNATURE_NAME
        return self.frame("push", (d / MODEL_NAME).read_bytes(), manifest=(d / MANIFEST_NAME).read_text("utf-8"),
                          model_sha256=file_sha256(d / MODEL_NAME),
                          signature=signature.read_text("utf-8") if signature.exists() else None)

    def frame(self, op: Op, model: bytes = b"", **fields: Any) -> bytes:
        """One signed request, fresh seq and timestamp (``send`` it; public for fault injection)."""
        now = wall_us()
        self._seq = max(self._seq + 1, now)  # strictly increasing: the edge's replay guard
        return encode_request(PushHeader(op=op, **fields), model, self.key_id, self.key, self._seq, now)

    def send(self, frame: bytes) -> dict[str, Any]:
        """Send one encoded request and read the reply (public for fault injection)."""
        with socket.create_connection(self.edge_addr, timeout=self.timeout_s) as s:
            try:
                s.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before the model was read: the reply (if any) says why
            try:
                first = s.recv(REPLY_LEN.size)
            except ConnectionResetError:
                first = b""
            if not first:
                raise Unanswered(f"{self.edge_addr[0]}:{self.edge_addr[1]} closed the connection without a reply: "
                                 "refused before authentication (unknown key id, wrong key, clock skew beyond "
                                 "the edge's max_clock_skew_s, or a replayed request; its push_refused counters "
                                 "say which)")
            head = first + _recv_exactly(s, REPLY_LEN.size - len(first))
            if head[:3] == MAGIC_PREFIX:  # the edge's version notice (controller/link/push_wire.py)
                raise VersionMismatch(f"push protocol version mismatch: this host speaks version {VERSION}, the edge at "
                                      f"{self.edge_addr[0]}:{self.edge_addr[1]} speaks version "
                                      f"{head[3:].decode('ascii', 'replace')}")
            (n,) = REPLY_LEN.unpack(head)
            if n > MAX_REPLY:
                raise ValueError(f"reply of {n} bytes (max {MAX_REPLY})")
            body = _recv_exactly(s, n)
            tag = _recv_exactly(s, TAG_LEN)
        return decode_reply(body, tag, self.key, request_tag(frame))


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)
