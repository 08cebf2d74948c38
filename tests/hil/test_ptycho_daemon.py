"""The ptycho-mode daemon as a real process against `edgetune sim ptycho` (a real pty): a recurrent scan policy
pushed over the authenticated channel, an adaptive scan over the push channel, its positions and saved
reconstruction compared with the same ONNX policy run in process on the same keyed counts
(tests/ptycho_policy.py `reference`), and a refused push of the wrong task."""
from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from controller.link.host_push import PushClient
from controller.modes.ptycho.config import PtychoConfig
from controller.modes.ptycho.policy import ScanPolicy
from controller.recorder import read_events
from hil.stand import SimulatedStand
from learner.ptycho.export import export_scan_policy
from ptycho_policy import KEY, TinyScanNet, reference, sample
from stage_device import daemon_with_policy

pytestmark = pytest.mark.hil

PTYCHO = {"positions": 40, "subsequences": 4, "iterations": 2}




async def test_adaptive_scan_through_the_daemon_matches_the_policy_in_process(tmp_path: Path) -> None:
    policy_dir = tmp_path / "artifact"
    export_scan_policy(TinyScanNet(), policy_dir, field=100, hidden_size=8, training_run="tiny", version="7")
    np.save(tmp_path / "phase.npy", sample())
    stand = SimulatedStand(tmp_path / "stand", device="ptycho", seed=1, serial_faults=True,
                           emulator_args=("--phase-npy", str(tmp_path / "phase.npy"), "--key", str(KEY)),
                           config={"loop": {"mode": "ptycho"}, "ptycho": PTYCHO})
    async with daemon_with_policy(stand, policy_dir, "7") as client:
        res = await asyncio.to_thread(client.scan)
        assert res["accepted"] and res["stopped_by"] == "max_steps" and res["policy_faults"] == 0, res
        chosen, image = reference(ScanPolicy.from_artifact(policy_dir, 100), PtychoConfig(**PTYCHO))
        assert [s["positions"] for s in res["subsequences"]] == chosen
        assert [s["policy"] for s in res["subsequences"]] == [None, "7", "7", "7"]
        np.testing.assert_allclose(np.load(res["reconstruction"]), image, rtol=0, atol=1e-9)
        assert res["device"] == {"busy_refused": 0, "cmd_rejected": 0, "naks": 0, "lost_replies": 0}
        assert not res["stage"]["moving"]
        assert res["gate"] == {"clamped": 0, "non_finite": 0} and res["n_positions"] == 40
        paths = res["paths"]
        assert paths["ordered"]["move_s"] <= min(paths["policy"]["move_s"], paths["raster"]["move_s"])
        faulty = await scan_with_serial_faults(stand, client)
        assert faulty["accepted"], faulty
        assert faulty["reacquired"] + faulty["device"]["lost_replies"] >= 1, faulty  # the faults hit frames or replies
        assert [s["positions"] for s in faulty["subsequences"]] == chosen  # keyed counts: the same scan
        np.testing.assert_allclose(np.load(faulty["reconstruction"]), image, rtol=0, atol=1e-9)
    scans = [e["details"] for e in read_events(stand.recorder_path) if e["kind"] == "scan"]
    assert len(scans) == 2 and scans[0]["positions"] == res["positions"]


async def scan_with_serial_faults(stand: SimulatedStand, client: PushClient) -> dict:
    """A scan while the emulator damages one frame on the wire (dropped, a flipped bit, a lost byte, garbage)
    every 0.6 s (longer than a request's timeout, so no reply is lost twice over): detector frames are acquired
    again, lost replies asked again (SerialDriver.query)."""
    scan = asyncio.create_task(asyncio.to_thread(client.scan))
    for fault in ("drop 1", "flip 1", "dropbyte 1", "garbage 40"):
        await asyncio.sleep(0.05)
        stand.emulator_control(fault)
        await asyncio.sleep(0.55)
    async with asyncio.timeout(60):
        return await scan
