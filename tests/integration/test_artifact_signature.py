"""Ed25519 artifact signatures (controller/policy/signature.py, `edgetune sign`): the push carries the
artifact's signature.json, the edge verifies it against its public keys beside the request's HMAC, before
install and validation — signed accepted; tampered, unknown key and unsigned (when required) refused and
counted; unsigned allowed by default without trusted keys, or with `allow_unsigned = true`."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from controller.config import PolicyConfig
from controller.link.auth import Keyring
from controller.link.edge_push import PushServer
from controller.link.host_push import PushClient
from controller.modes.mems.rl_pid import policy_spec
from controller.policy.manifest import MANIFEST_NAME
from controller.policy.signature import SIGNATURE_NAME, keygen
from controller.policy.slot import PolicySlot
from controller.supervisor import Supervisor
from hil.cli import app
from hil.faults.model_artifacts import make_artifact
from typer.testing import CliRunner

RING = Keyring({1: bytes(range(32))})


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("keys")
    res = CliRunner().invoke(app, ["sign", "keygen", "--key", str(root / "signing.key"), "--key-id", "3"])
    assert res.exit_code == 0, res.output
    keygen(root / "other.key", key_id=7)  # a key the edge does not trust
    assert os.stat(root / "signing.key").st_mode & 0o777 == 0o600
    return {"private": root / "signing.key", "public": root / "signing.key.pub", "other": root / "other.key"}


def artifact(tmp_path: Path, name: str, key: Path | None = None, **kw) -> Path:  # noqa: ANN003
    out = make_artifact("good", tmp_path / name, version=name, **kw)
    if key is not None:
        res = CliRunner().invoke(app, ["sign", str(out), "--key", str(key)])
        assert res.exit_code == 0, res.output
    return out


async def push_all(tmp_path: Path, cfg: dict, artifacts: list[Path]) -> tuple[list[dict], PushServer]:
    """Push each artifact in turn to a real PushServer (a ticker applies swaps); the replies."""
    slot = PolicySlot(policy_spec(max_steps=16), 0.25 / 120)
    server = PushServer(PolicyConfig(dir=tmp_path / "edge", push_port=0, **cfg), RING, slot, nominal_period_s=0.1,
                        max_clock_skew_s=5.0, replay_window=64, record=lambda k, d: None)
    tasks = Supervisor()

    async def ticks() -> None:
        while True:
            slot.boundary()
            await asyncio.sleep(0.005)

    await server.start()
    tasks.spawn("push", server.serve_forever)
    tasks.spawn("ticks", ticks)
    client = PushClient(server.address, RING, 1, timeout_s=20)
    try:
        async with asyncio.timeout(60):
            return [await asyncio.to_thread(client.push, a) for a in artifacts], server
    finally:
        await tasks.close()
        await server.close()
        slot.close()


async def test_signed_accepted_tampered_unknown_and_unsigned_refused(tmp_path: Path, keys) -> None:
    signed = artifact(tmp_path, "signed", keys["private"])
    tampered = artifact(tmp_path, "tampered", keys["private"], seed=1)
    m = json.loads((tampered / MANIFEST_NAME).read_text())
    (tampered / MANIFEST_NAME).write_text(json.dumps({**m, "decision_period_s": 0.05}))  # still a valid manifest
    unknown = artifact(tmp_path, "unknown", keys["other"])
    unsigned = artifact(tmp_path, "unsigned")
    replies, server = await push_all(tmp_path, {"trusted_keys": keys["public"]}, [signed, tampered, unknown, unsigned])
    assert [r["reason"] for r in replies] == ["swapped", "bad_signature_artifact", "unknown_signing_key",
                                              "unsigned_artifact"], replies
    assert "key 7" in replies[2]["detail"] and "[3]" in replies[2]["detail"]
    assert {k: v for k, v in server.counters.items() if k.startswith("rejected:")} == {
        "rejected:bad_signature_artifact": 1, "rejected:unknown_signing_key": 1, "rejected:unsigned_artifact": 1}
    assert [d.name.split("-")[0] for d in (tmp_path / "edge").iterdir() if d.is_dir()] == ["signed"]  # none installed


async def test_unsigned_allowed_without_trusted_keys_or_when_configured(tmp_path: Path, keys) -> None:
    unsigned = artifact(tmp_path, "unsigned")
    (replies, _), (allowed, _) = [await push_all(tmp_path / str(i), cfg, [unsigned]) for i, cfg in
                                  enumerate([{}, {"trusted_keys": keys["public"], "allow_unsigned": True}])]
    assert replies[0]["reason"] == allowed[0]["reason"] == "swapped"


def test_a_signature_over_another_model_or_malformed_is_refused(tmp_path: Path, keys) -> None:
    from controller.policy.signature import SignatureRefused, TrustedKeys

    a, b = artifact(tmp_path, "a", keys["private"]), artifact(tmp_path, "b", seed=2)
    trusted = TrustedKeys.load(keys["public"], None)
    manifest, model = (a / MANIFEST_NAME).read_bytes(), (a / "model.onnx").read_bytes()
    assert trusted.required and trusted.verify(manifest, model, (a / SIGNATURE_NAME).read_text()) == 3
    shutil.copy(a / SIGNATURE_NAME, b / SIGNATURE_NAME)
    for sig in ((b / SIGNATURE_NAME).read_text(), "{", '{"key_id": 3, "algorithm": "rsa", "signature": ""}'):
        with pytest.raises(SignatureRefused, match="bad_signature_artifact"):
            trusted.verify((b / MANIFEST_NAME).read_bytes(), (b / "model.onnx").read_bytes(), sig)
