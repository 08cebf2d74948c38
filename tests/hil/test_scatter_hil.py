"""The transceiver-mode daemon as a real process against `edgetune sim scatter` (noise-free, a real pty): a tiny
recurrent transceiver policy pushed over the authenticated channel, a scan over the push channel, its design and
data compared with the same ONNX policy run in process on the same scatterer with numpy physics
(learner/scatter/export.py `edge_episode`), with the edge's arm limits narrower than the ring so that the safety
gate refuses some of the policy's angles (the same fallbacks on both sides)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from controller.modes.scatter.policy import TransceiverPolicy
from controller.recorder import read_events
from firmware_sim.scatter.scatterers import scatterer
from hil.stand import SimulatedStand
from learner.scatter.export import edge_episode, export_transceiver_policy
from scatter_policy import TinyTransceiverNet
from stage_device import daemon_with_policy

pytestmark = pytest.mark.hil

N, ORDER = 16, 2
LIMITS = (30.0, 329.0)
SCATTER = {"n": N, "order": ORDER, "iterations": 5, "final_iterations": 5, "min_deg": LIMITS[0],
           "max_deg": LIMITS[1]}


async def test_scan_through_the_daemon_matches_the_policy_in_process(tmp_path: Path) -> None:
    policy_dir = tmp_path / "artifact"
    export_transceiver_policy(TinyTransceiverNet(seed=0), policy_dir, hidden_size=8, training_run="tiny",
                              version="3")
    stand = SimulatedStand(tmp_path / "stand", device="scatter", seed=1, speed=10.0,
                           emulator_args=("--family", "circles", "--split", "report", "--index", "4", "--n", str(N),
                                          "--order", str(ORDER)),
                           config={"loop": {"mode": "transceiver"}, "scatter": SCATTER})
    async with daemon_with_policy(stand, policy_dir, "3") as client:
        res = await asyncio.to_thread(client.scan)
    assert res["accepted"] and res["stopped_by"] == "budget", res
    want = edge_episode(TransceiverPolicy.from_artifact(policy_dir), scatterer("circles", "report", 4, N), ORDER,
                        range(int(LIMITS[0]), int(LIMITS[1]) + 1))
    assert res["angles"] == want.angles and res["frequencies"] == want.frequencies
    assert res["sources"] == [c.source for c in want.choices] and res["reasons"] == [c.reason for c in want.choices]
    assert "policy" in res["sources"] and "fallback" in res["sources"]  # the gate refused some of the policy's angles
    assert res["policy_faults"] == sum(res["refusals"].values()) == res["sources"].count("fallback")
    assert res["policy_versions"] == [("3" if s == "policy" else None) for s in res["sources"]]
    data = np.array(res["data"]["re"]) + 1j * np.array(res["data"]["im"])
    np.testing.assert_allclose(data, want.data(), rtol=0, atol=1e-7 * np.abs(want.data()).max())
    eta = np.load(res["reconstruction"])
    assert eta.shape == (N, N) and np.isfinite(eta).all() and np.abs(eta).max() > 0
    assert res["device"] == {"busy_refused": 0, "cmd_rejected": 0, "naks": 0, "lost_replies": 0}
    assert not res["arm"]["moving"] and res["gate"] == {"clamped": 0, "non_finite": 0}
    scans = [e["details"] for e in read_events(stand.recorder_path) if e["kind"] == "scan"]
    assert len(scans) == 1 and scans[0]["angles"] == res["angles"]
