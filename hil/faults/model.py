"""Model faults (``model.*``): pushes over the authenticated push channel (controller/link/host_push.py) of
the artifacts hil/faults/model_artifacts.py builds, badly signed requests, and rollbacks. Each asks the edge for its
status before and after, and records the reply, so checks can tell a refusal from a silent swap.

    model.good            a good policy (params: bias, steps, seed, decision_period_s, version)
    model.nan_runtime     passes validation, outputs NaN once x > params.x_threshold_px (default 200 px)
    model.error_runtime   passes validation, raises in onnxruntime (index out of range) once x > the threshold
    model.hang_runtime    passes validation, its run time grows with x − the threshold (≈ 40 ms per px)
    model.corrupt | wrong_shape | other_task | nan | inf | slow | sha256_mismatch    bad artifacts
    model.unsigned        a good artifact, preamble tag zeroed (refused before authentication: no reply)
    model.bad_signature   a good artifact, signed with a key the edge does not have (right key id; no reply)
    model.rollback        back to the previous policy
"""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from controller.link.auth import TAG_LEN, Keyring
from controller.link.host_push import PushClient, Unanswered
from controller.link.push_wire import PREAMBLE
from hil.faults.model_artifacts import EXPECTED_REASON, make_artifact
from hil.scenario.model import Fault, RunContext, fault

# kind -> the artifact pushed (None: no artifact)
ARTIFACT: dict[str, str | None] = {
    "good": "good", "nan_runtime": "nan_above_x", "error_runtime": "error_above_x", "hang_runtime": "slow_above_x",
    "corrupt": "corrupt", "wrong_shape": "wrong_shape",
    "other_task": "other_task", "nan": "nan", "inf": "inf", "slow": "slow", "sha256_mismatch": "sha256_mismatch",
    "unsigned": "good", "bad_signature": "good", "rollback": None,
}
# kind -> the refusal reason the edge must give (kinds not here must be accepted)
EXPECTED: dict[str, str] = {**{k: EXPECTED_REASON[a] for k, a in ARTIFACT.items() if a in EXPECTED_REASON},
                            "unsigned": "unanswered", "bad_signature": "unanswered"}
BAD_KINDS = tuple(EXPECTED)
PARAMS = frozenset({"bias", "steps", "seed", "decision_period_s", "x_threshold_px", "version"})


def attempt(client: PushClient, kind: str, workdir: Path, version: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """One model request of ``kind`` (blocking); returns the reply plus the edge's status before and after."""
    params = dict(params or {})
    if kind not in ARTIFACT:
        raise ValueError(f"unknown model fault {kind!r}; known: {', '.join(ARTIFACT)}")
    if unknown := set(params) - PARAMS:
        raise ValueError(f"model.{kind}: unknown params {sorted(unknown)}; known: {sorted(PARAMS)}")
    version = str(params.pop("version", version))
    before = client.status()
    if (artifact := ARTIFACT[kind]) is None:
        reply = client.rollback()
    else:
        art = make_artifact(artifact, workdir / version, version=version, **params)  # type: ignore[arg-type]
        if kind == "unsigned":
            frame = bytearray(client.push_frame(art))
            frame[PREAMBLE.size - TAG_LEN:PREAMBLE.size] = bytes(TAG_LEN)
            reply = _unanswered(client.send, bytes(frame))
        elif kind == "bad_signature":
            reply = _unanswered(PushClient(client.edge_addr, Keyring({client.key_id: os.urandom(32)}), client.key_id,
                                           client.timeout_s).push, art)
        else:
            reply = client.push(art)
    done_ns = time.monotonic_ns()
    after = client.status()
    return {"model": kind, "version": None if artifact is None else version, "params": params,
            "accepted": bool(reply.get("accepted")), "reason": reply.get("reason"), "expect": EXPECTED.get(kind),
            "detail": str(reply.get("detail", ""))[:200], "done_ns": done_ns,
            "active_before": before.get("active"), "previous_before": before.get("previous"),
            "active_after": after.get("active"), "previous_after": after.get("previous"),
            "quarantined_during": sorted(_quarantined(after) - _quarantined(before))}


def _quarantined(status: dict[str, Any]) -> set[str]:
    return {str(q.get("version")) for q in status.get("quarantined", [])}


def _unanswered(send: Any, *args: Any) -> dict[str, Any]:
    """A request the edge refuses before authentication: it closes the connection without a reply."""
    try:
        return send(*args)
    except Unanswered as e:
        return {"accepted": False, "reason": "unanswered", "detail": str(e)}


def handled(rec: dict[str, Any]) -> str:
    """Why a recorded attempt went wrong ('' when the edge did what it must).

    A policy the edge quarantined for its own run-time failures while the request was served (e.g. over its CPU
    budget on a loaded host) changes the active policy without the request's doing: the reply is still checked,
    the before/after status is not (the quarantine is the edge doing what it must, and is recorded as such)."""
    quarantine = bool(rec.get("quarantined_during"))
    if rec["expect"] is not None:  # a bad request: refused with its reason, the active policy kept
        if rec["accepted"] or rec["reason"] != rec["expect"]:
            return f"{rec['model']}: {'accepted' if rec['accepted'] else 'refused'} ({rec['reason']}), expected {rec['expect']}"
        if rec["active_after"] != rec["active_before"] and not quarantine:
            return f"{rec['model']}: active policy changed {rec['active_before']} → {rec['active_after']}"
        return ""
    if quarantine:  # a good push must still be accepted; a rollback may find nothing left to roll back to
        return "" if rec["accepted"] or rec["model"] == "rollback" else f"{rec['model']}: {rec['reason']}"
    if rec["model"] == "rollback":
        ok = rec["accepted"] and rec["active_after"] == rec["previous_before"] and rec["previous_after"] == rec["active_before"]
        return "" if ok else (f"rollback: {rec['reason']}, active/previous {rec['active_before']}/{rec['previous_before']}"
                              f" → {rec['active_after']}/{rec['previous_after']}")
    ok = rec["accepted"] and rec["active_after"] == rec["version"]
    return "" if ok else f"{rec['model']} {rec['version']}: {rec['reason']} {rec['detail']}, active {rec['active_after']}"


def _model_fault(kind: str):
    async def inject(ctx: RunContext, f: Fault) -> dict[str, Any]:
        stand = ctx.stand
        assert stand.keyring is not None
        client = PushClient(stand.push_addr, stand.keyring, stand.keyring.newest, timeout_s=10.0)
        version = f"{len(ctx.fault_log)}-{kind}"
        return await asyncio.to_thread(attempt, client, kind, stand.workdir / "models", version, f.params)

    return inject


for _kind in ARTIFACT:
    fault(f"model.{_kind}")(_model_fault(_kind))
