"""The forge-mode daemon as a real process against `edgetune sim forge` (a real pty, lockstep): a feedback-table
policy exported to ONNX (learner/bal/export.py) pushed over the authenticated channel, one episode started with
the `episode` push op, and its positions, θ̂ and commands compared with the same policy + filter + firmware seed
run in process (learner/bal/export.py `edge_episode`)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from controller.modes.bal.config import ForgeConfig
from controller.modes.bal.forge import ForgePolicy
from controller.modes.bal.problem import PROBLEMS, load_problem
from controller.recorder import read_events
from forge_policy import goal_table
from hil.stand import SimulatedStand
from learner.bal.export import edge_episode, export_table
from stage_device import daemon_with_policy

pytestmark = pytest.mark.hil

# decision_budget_s: these tests check parity and refusals, not the budget: at the 2 ms default one decision in a
# quiet fresh-clone run took 4.9 ms of CPU (a one-off on the 2-core VM) and counted as failed
FORGE = {"particles": 300, "filter_seed": 4, "decision_budget_s": 0.05}
SEED = 7


async def test_an_edge_episode_matches_the_in_process_run(tmp_path: Path) -> None:
    problem = load_problem("forge")
    policy_dir = tmp_path / "artifact"
    export_table(goal_table(problem), policy_dir, version="2")
    stand = SimulatedStand(tmp_path / "stand", device="forge", seed=SEED,
                           config={"loop": {"mode": "forge", "pacing": "timer", "rate_hz": 100.0}, "forge": FORGE})
    async with daemon_with_policy(stand, policy_dir, "2") as client:
        res = await asyncio.to_thread(client.send, client.frame("episode"))
        busy_after = await asyncio.to_thread(client.status)
    assert res["accepted"] and res["stopped_by"] == "steps" and res["policy_version"] == "2", res
    assert res["steps"] == problem.steps and set(res["sources"]) == {"policy"} and res["fallbacks"] == {}
    assert busy_after["mode"] == "forge"
    want = edge_episode(problem, ForgeConfig(**FORGE), ForgePolicy.from_artifact(policy_dir, 2), seed=SEED).last
    np.testing.assert_allclose(res["positions"], want.positions, rtol=0, atol=1e-9)
    np.testing.assert_allclose(res["theta_hat"], want.theta_hat, rtol=0, atol=1e-9)
    np.testing.assert_allclose(res["commands"], want.commands, rtol=0, atol=1e-6)
    assert res["gate"] == {"clamped": 0, "non_finite": 0, "outside": 0}
    assert res["filter_us"]["p50"] > 0  # measured on the edge's tick
    episodes = [e["details"] for e in read_events(stand.recorder_path) if e["kind"] == "episode"]
    assert len(episodes) == 1 and episodes[0]["commands"] == res["commands"]


async def test_an_episode_on_a_device_with_other_dynamics_is_refused(tmp_path: Path) -> None:
    problem = load_problem("forge")
    other = tmp_path / "forge_dt.toml"  # the edge believes Δt = 0.05; the device steps 0.04
    other.write_text((PROBLEMS / "forge.toml").read_text().replace("dt = 0.04", "dt = 0.05"))
    policy_dir = tmp_path / "artifact"
    export_table(goal_table(problem), policy_dir, version="2")
    stand = SimulatedStand(tmp_path / "stand", device="forge", seed=SEED,
                           config={"loop": {"mode": "forge", "pacing": "timer", "rate_hz": 100.0},
                                   "forge": {**FORGE, "problem": str(other)}})
    async with daemon_with_policy(stand, policy_dir, "2") as client:
        res = await asyncio.to_thread(client.send, client.frame("episode"))
    assert not res["accepted"] and res["reason"] == "device_mismatch" and "dt" in res["detail"], res
    refused = [e for e in read_events(stand.recorder_path) if e["kind"] == "forge_device_refused"]
    assert len(refused) == 1 and not [e for e in read_events(stand.recorder_path) if e["kind"] == "episode"]
