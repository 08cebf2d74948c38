"""The angles-mode daemon as a real process against `edgetune sim ct` (a real pty): policy push over the
authenticated channel, an adaptive scan compared with the same policy run in-process, refusals, abort.

The in-process reference is not learner/ct/eval.py's environment: that draws phantoms and noise from its own
RNG stream and reconstructs with torch SIRT (cold, 150 iterations), so it cannot see the emulator's noise.
It runs the same ONNX policy with the edge's own warm-started SIRT (controller.modes.ct.tomo, as AnglesMode) on the
emulator's phantom, with the emulator's detector and noise stream (np.random.default_rng(seed), untouched until
the first projection). It measures at the commanded grid angle and reconstructs with it, where the device
measures at the stage's actual angle (within its 0.01° in-position window) and the edge reconstructs at the
encoder reading (2^17 counts/rev): hence equal angles and a PSNR within PSNR_TOL dB, not bit equality.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from controller.protocol import ct
from controller.modes.ct import tomo
from controller.link.auth import write_keyfile
from controller.policy.runtime import AnglePolicy
from controller.modes.mems.rl_pid import TASK as MEMS_TASK
from controller.link.host_push import PushClient
from controller.link.push_wire import SampleSpec
from controller.recorder import read_events
from firmware_sim.ct.physics import Detector, DetectorParams
from firmware_sim.ct.emulator import make_sample
from hil.cli import app
from hil.stand import SimulatedStand
from stage_device import wait_ready

pytestmark = pytest.mark.hil

POLICIES = Path(__file__).parents[2] / "learner" / "ct" / "policies"
SIZE, A, MAX_ANGLES, SIRT_ITERATIONS, EMU_SEED = 63, 180, 20, 30, 3
SAMPLE = SampleSpec(kind="any", seed=7, split="val")
PSNR_TOL = 0.01  # dB; sub-0.01° angle differences (module doc) moved it by 1.4e-4 dB here
ANGLES = {"size": SIZE, "n_angles": A, "max_angles": MAX_ANGLES, "sirt_iterations": SIRT_ITERATIONS,
          "poll_s": 0.002}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    """The bundled ct_63 policy exported for the edge, and a MEMS artifact (the wrong task)."""
    from learner.ct.export import export_ct
    from learner.algos.ddpg import Actor
    from learner.export import export_policy

    out = tmp_path_factory.mktemp("artifacts")
    export_ct(POLICIES / "ct_63", out / "ct")
    export_ct(POLICIES / "ct_63", out / "ct2", version="2")
    export_policy(Actor(12, 4, (16,)), out / "mems", task=MEMS_TASK, obs_mean=[0.0] * 12, obs_std=[1.0] * 12,
                  obs_units=["px"] * 12, low=[0.0] * 4, high=[1.0] * 4, act_units=["1"] * 4, decision_period_s=0.1)
    return {"ct": out / "ct", "ct2": out / "ct2", "mems": out / "mems"}


def reference_scan(policy: AnglePolicy, spec: SampleSpec, seed: int) -> tuple[list[float], np.ndarray, str]:
    """The scan AnglesMode makes, in-process (module doc): commanded angles, final reconstruction, stop reason."""
    phantom = make_sample(ct.SetSample(ct.SampleKind[spec.kind.upper()], spec.seed, ct.Split[spec.split.upper()], SIZE))
    detector, rng, grid = Detector(DetectorParams()), np.random.default_rng(seed), tomo.angle_grid(A)
    image, acquired = np.zeros((SIZE, SIZE), np.float32), np.zeros(A, bool)
    angles: list[float] = []
    projections: list[np.ndarray] = []
    for k in range(MAX_ANGLES):
        decision = policy.decide(image, acquired)
        assert decision is not None
        idx, stop = decision
        acquired[idx] = True
        angles.append(float(grid[idx]))
        projections.append(detector.acquire(phantom, np.array([grid[idx]]), rng)[0])
        image = tomo.sirt(tomo.system_matrix(SIZE, angles), np.stack(projections), SIRT_ITERATIONS, x0=image)
        if stop:
            return angles, image, "policy"
    return angles, image, "max_angles"




def start_angles_stand(tmp_path: Path, speed: float) -> tuple[SimulatedStand, PushClient, PushClient]:
    """Emulator and angles-mode daemon; a scanning client (key 1) and a console (key 2: it aborts and pushes
    mid-scan; replay windows are per key)."""
    stand = SimulatedStand(tmp_path, device="ct", speed=speed, seed=EMU_SEED, emulator_args=("--tick-hz", "100"),
                           config={"loop": {"mode": "angles"}, "angles": ANGLES})
    stand.start_emulator()
    tmp_path.mkdir(exist_ok=True)
    write_keyfile(stand.key_file, (1, 2))
    stand.write_config()
    stand.start_daemon()
    assert stand.keyring is not None
    return stand, PushClient(stand.push_addr, stand.keyring, 1), PushClient(stand.push_addr, stand.keyring, 2)


async def test_adaptive_scan_on_the_emulator_matches_the_policy_in_process(artifacts, tmp_path) -> None:
    stand, client, console = start_angles_stand(tmp_path, speed=20.0)
    try:
        status = await wait_ready(stand, console)
        assert status["active"] is None and not status["scanning"]

        pushed = await asyncio.to_thread(client.push, artifacts["ct"])
        assert pushed["accepted"] and pushed["reason"] == "swapped", pushed
        refused = await asyncio.to_thread(client.push, artifacts["mems"])
        assert not refused["accepted"] and refused["reason"] == "wrong_task" and "ct-angles" in refused["detail"]
        status = await asyncio.to_thread(client.status)
        assert status["active"] == pushed["version"] and status["counters"]["rejected:wrong_task"] == 1

        res = await asyncio.to_thread(client.scan, SAMPLE)
        assert res["accepted"] and res["policy"] == pushed["version"] and res["policy_faults"] == 0, res
        policy = AnglePolicy.from_artifact(artifacts["ct"], SIZE)
        angles, image, stopped_by = reference_scan(policy, SAMPLE, EMU_SEED)
        assert res["angles_deg"] == angles and res["stopped_by"] == stopped_by
        assert res["policy_versions"] == [pushed["version"]] * len(angles)
        assert res["n_angles"] == len(angles) <= MAX_ANGLES
        # never commanded while moving or exposing, never refused, every angle within the edge's limits
        assert res["device"] == {"busy_refused": 0, "cmd_rejected": 0, "naks": 0, "lost_replies": 0}
        assert np.allclose(res["measured_deg"], angles, atol=0.011) and not res["stage"]["moving"]
        assert all(0.0 <= a <= 180.0 for a in res["measured_deg"])
        assert not (res["stage"]["at_min"] or res["stage"]["at_max"])
        truth = make_sample(ct.SetSample(ct.SampleKind.ANY, SAMPLE.seed, ct.Split.VAL, SIZE)).images[0]
        recon = np.load(res["reconstruction"])
        assert recon.shape == (SIZE, SIZE)
        assert tomo.psnr(recon, truth) == pytest.approx(tomo.psnr(image, truth), abs=PSNR_TOL)

        # abort mid-scan: the reply comes once the stage rests; the daemon scans again afterwards
        scan: dict = {}
        worker = threading.Thread(target=lambda: scan.update(client.scan(SampleSpec(kind="pentagon", seed=2))))
        worker.start()
        while not (await asyncio.to_thread(console.status))["scanning"]:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        aborted = await asyncio.to_thread(console.abort)
        await asyncio.to_thread(worker.join, 10.0)
        assert aborted == {"accepted": True, "reason": "aborted"}
        assert scan["accepted"] and scan["stopped_by"] == "aborted" and scan["n_angles"] < MAX_ANGLES, scan
        assert not scan["stage"]["moving"] and scan["device"]["naks"] == 0

        link = ["link", "scan", "--to", "%s:%d" % stand.push_addr, "--key-file", str(stand.key_file)]
        bad = await asyncio.to_thread(CliRunner().invoke, app, [*link, "--sample", "cube"])
        assert bad.exit_code == 2 and "kind" in bad.output
        cli = await asyncio.to_thread(CliRunner().invoke, app, [*link, "--sample", "triangle", "--sample-seed", "1"])
        assert cli.exit_code == 0, cli.output
        assert json.loads(cli.output)["stopped_by"] in ("policy", "max_angles")
    finally:
        await stand.close()
    events = [e for e in read_events(stand.recorder_path) if e["kind"] in ("scan", "abort", "policy")]
    scans = [e["details"] for e in events if e["kind"] == "scan"]
    assert [s["stopped_by"] for s in scans] == [stopped_by, "aborted", json.loads(cli.output)["stopped_by"]]
    assert scans[0]["angles_deg"] == angles and len(scans[0]["timings"]["sirt"]) == len(angles)
    assert [e["details"]["action"] for e in events if e["kind"] == "policy"] == ["swapped", "rejected"]


async def test_a_push_during_a_scan_applies_at_the_scans_next_decision(artifacts, tmp_path) -> None:
    """Version 1 chose the first angles, version 2 the rest. The emulator runs at twice real time (a scan takes
    seconds), so that the push, validated in a process at nice 10, lands mid-scan even on a loaded machine."""
    stand, client, console = start_angles_stand(tmp_path, speed=2.0)
    try:
        await wait_ready(stand, console)
        assert (await asyncio.to_thread(client.push, artifacts["ct"]))["version"] == "1"
        scan: dict = {}
        worker = threading.Thread(target=lambda: scan.update(client.scan()))
        worker.start()
        deadline = time.monotonic() + 10.0
        while (await asyncio.to_thread(console.status))["angles_acquired"] < 1:
            assert time.monotonic() < deadline, "the scan did not start"
            await asyncio.sleep(0.005)
        swapped = await asyncio.to_thread(console.push, artifacts["ct2"])
        assert swapped["accepted"] and swapped["version"] == "2", swapped
        assert (await asyncio.to_thread(console.status))["scanning"], "the scan ended before the push was applied"
        await asyncio.to_thread(worker.join, 60.0)
        assert not worker.is_alive(), "the scan did not end within 60 s"
        versions = scan["policy_versions"]
        assert scan["accepted"] and scan["stopped_by"] in ("policy", "max_angles")
        assert versions[0] == "1" and "2" in versions and versions == sorted(versions), versions  # 1s, then 2s
        assert scan["device"] == {"busy_refused": 0, "cmd_rejected": 0, "naks": 0, "lost_replies": 0}
        status = await asyncio.to_thread(console.status)
        assert (status["active"], status["previous"], status["scanning"]) == ("2", "1", False)
    finally:
        await stand.close()
    policy_events = [e["details"] for e in read_events(stand.recorder_path) if e["kind"] == "policy"]
    assert [(e["action"], e["version"]) for e in policy_events] == [("swapped", "1"), ("swapped", "2")]


async def test_abort_gives_up_waiting_for_a_scan_request_stuck_outside_its_scan(tmp_path, caplog) -> None:
    """A scan request that holds the scan lock but never reaches (or leaves) its scan — e.g. saving its
    reconstruction to storage that does not answer — must not hang `abort` (nor `hold`) forever: it gives up
    after move_timeout_s, logged."""
    from controller.config import parse_config
    from controller.daemon import Daemon

    write_keyfile(tmp_path / "keys")
    daemon = Daemon(parse_config({
        "device": {"port": str(tmp_path / "no-device")},
        "loop": {"mode": "angles"},
        "angles": {"move_timeout_s": 0.3},
        "hostlink": {"key_file": str(tmp_path / "keys"), "state_file": str(tmp_path / "state.json")},
        "recorder": {"path": str(tmp_path / "run.sqlite")},
        "policy": {"dir": str(tmp_path / "policies")},
    }))
    try:
        async with daemon.mode._scan_lock:  # the stuck request
            t0 = time.monotonic()
            async with asyncio.timeout(5):
                assert await daemon.mode.abort("abort") is False
            assert time.monotonic() - t0 < 2.0
        assert any("did not reach or leave its scan within 0.3 s" in r.getMessage() for r in caplog.records)
    finally:
        daemon.slot.close()
