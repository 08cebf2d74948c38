"""Artifact signatures: Ed25519 over manifest + model, made on the build host, verified on the edge.

`edgetune sign keygen --key signing.key [--key-id N]` writes the private key (`id:hex` of the 32-byte seed,
mode 600) and `signing.key.pub` (`id:hex` of the public key); `edgetune sign ARTIFACT_DIR --key signing.key
[--key-id N]` writes `ARTIFACT_DIR/signature.json` {key_id, algorithm "ed25519", signature (base64)} over
`message(manifest, model)`: a domain label and the sha256 of each file. The push carries it in its header.
The edge holds only public keys (`[policy] trusted_keys`, a file of `id:hex` lines): a compromised edge cannot
forge a model, and the host-link key can rotate without re-signing. `TrustedKeys.verify` runs beside the
request's HMAC, before install and validation; refusals: `unsigned_artifact` (when signatures are required),
`unknown_signing_key`, `bad_signature_artifact`.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from controller.link.auth import KeyringError, load_keyring, parse_id_hex
from controller.policy.manifest import MANIFEST_NAME, MODEL_NAME

SIGNATURE_NAME = "signature.json"
ALGORITHM = "ed25519"
LABEL = b"edgetune-artifact-signature-v1\0"
RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


class SignatureRefused(Exception):
    """``reason``: the push refusal code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def message(manifest: bytes, model: bytes) -> bytes:
    """What is signed: a label and the two files' sha256 (neither can be swapped for another)."""
    return LABEL + hashlib.sha256(manifest).digest() + hashlib.sha256(model).digest()


def keygen(private_path: Path, key_id: int = 1) -> Path:
    """Write a new private key (mode 600, never overwritten) and its public key beside it (`.pub`)."""
    if not 0 <= key_id <= 255:
        raise KeyringError(f"key id must be 0..255, got {key_id}")
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"# edgetune artifact signing key: id:hex (keep mode 600, on the build host only)\n{key_id}:{seed.hex()}\n")
    public = Path(f"{private_path}.pub")
    public.write_text(f"# edgetune artifact signing public key: id:hex ([policy] trusted_keys)\n"
                      f"{key_id}:{key.public_key().public_bytes(*RAW).hex()}\n")
    return public


def sign_artifact(directory: Path, private_path: Path, key_id: int | None = None) -> Path:
    """Sign `directory`'s manifest.json + model.onnx with the key file's key (`key_id`: which one, default the
    newest); writes and returns signature.json."""
    ring = load_keyring(private_path)
    kid = ring.newest if key_id is None else key_id
    if kid not in ring.keys:
        raise KeyringError(f"{private_path}: no key {kid} (has {sorted(ring.keys)})")
    key = Ed25519PrivateKey.from_private_bytes(ring.keys[kid])
    sig = key.sign(message((directory / MANIFEST_NAME).read_bytes(), (directory / MODEL_NAME).read_bytes()))
    out = directory / SIGNATURE_NAME
    out.write_text(json.dumps({"key_id": kid, "algorithm": ALGORITHM, "signature": base64.b64encode(sig).decode()}))
    return out


@dataclass(frozen=True)
class TrustedKeys:
    """The edge's public keys; `required`: an unsigned artifact is refused."""

    keys: dict[int, Ed25519PublicKey]
    required: bool

    @classmethod
    def load(cls, path: Path | None, allow_unsigned: bool | None) -> TrustedKeys:
        """`[policy] trusted_keys` and `allow_unsigned` (None: unsigned allowed only without trusted keys)."""
        keys: dict[int, Ed25519PublicKey] = {}
        if path is not None:
            try:
                raw = parse_id_hex(path, path.read_text(encoding="ascii"))
                keys = {kid: Ed25519PublicKey.from_public_bytes(k) for kid, k in raw.items()}
            except (OSError, UnicodeDecodeError, ValueError) as e:
                raise KeyringError(f"{path}: cannot read trusted keys: {e}") from None
        return cls(keys, path is not None if allow_unsigned is None else not allow_unsigned)

    def verify(self, manifest: bytes, model: bytes, signature: str | None) -> int | None:
        """The key id that signed the artifact (None: unsigned, allowed); raises SignatureRefused."""
        if signature is None:
            if self.required:
                raise SignatureRefused("unsigned_artifact", "this edge requires signed artifacts "
                                                            "(`edgetune sign`; [policy] allow_unsigned)")
            return None
        try:
            doc = json.loads(signature)
            kid, algorithm, sig = int(doc["key_id"]), doc["algorithm"], base64.b64decode(doc["signature"], validate=True)
        except (ValueError, TypeError, KeyError, binascii.Error) as e:
            raise SignatureRefused("bad_signature_artifact", f"malformed signature: {str(e)[:200]}") from None
        if algorithm != ALGORITHM:
            raise SignatureRefused("bad_signature_artifact", f"algorithm {str(algorithm)[:40]!r}, this edge verifies {ALGORITHM!r}")
        if (key := self.keys.get(kid)) is None:
            raise SignatureRefused("unknown_signing_key", f"signed with key {kid}, this edge trusts {sorted(self.keys)}")
        try:
            key.verify(sig, message(manifest, model))
        except InvalidSignature:
            raise SignatureRefused("bad_signature_artifact", f"the signature (key {kid}) does not match manifest + model") from None
        return kid
