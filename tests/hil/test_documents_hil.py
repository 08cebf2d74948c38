"""Bluesky documents from real runs (controller/documents.py): a short stabilisation session on the MEMS emulator and
CT scans (one complete, one aborted) on the CT emulator, each daemon writing documents live
(``[recorder] documents``); then `edgetune export-docs` on the store. Every document validates with event-model,
the events are the recorded tick rows / scan points, external images resolve to HDF5 frames of the right shape,
and the live and exported runs agree (same uids, same data)."""
from __future__ import annotations

import asyncio
import json
import math
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from controller.link.auth import write_keyfile
from controller.link.host_push import PushClient
from controller.link.push_wire import SampleSpec
from controller.modes.ptycho.config import PtychoConfig
from controller.recorder import read_events, read_ticks
from documents_util import image, runs
from hil.cli import app
from hil.stand import SimulatedStand
from stage_device import wait_ready

SIZE, MAX_ANGLES = 31, 8


def export(store: Path, out: Path) -> None:
    result = CliRunner().invoke(app, ["export-docs", str(store), str(out)])
    assert result.exit_code == 0, result.output


def same(a: list, b: list) -> bool:
    """Equal, NaN equal to NaN."""
    return len(a) == len(b) and all(x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
                                    for x, y in zip(a, b))


async def test_a_stabilisation_session_as_documents(tmp_path) -> None:
    live = tmp_path / "live"
    async with SimulatedStand(tmp_path / "stand", speed=1.0, config={"recorder": {"documents": str(live),
                                                                                  "flush_ms": 50.0}}) as stand:
        await stand.client.set_target(20.0, 0.0)  # type: ignore[union-attr]
        await asyncio.sleep(1.0)
    ticks = read_ticks(stand.recorder_path)
    assert len(ticks) > 50
    export(stand.recorder_path, tmp_path / "out")
    exported, streamed = runs(tmp_path / "out")["ticks"], runs(live)["ticks"]
    for c in (exported, streamed):
        assert c.events == {"primary": len(ticks)}
        assert c.stop_doc["exit_status"] == "success" and c.start_doc["edgetune"]["mode"] == "stabilize"
        assert c.data["primary"]["seq"] == [t["seq"] for t in ticks]
        assert same(c.data["primary"]["x"], [math.nan if t["x"] is None else t["x"] for t in ticks])
        assert c.data["primary"]["target_x"][-1] == 20.0
    assert exported.start_doc == streamed.start_doc  # the same run: uid from the session, same metadata
    assert all(same(exported.data["primary"][k], v) for k, v in streamed.data["primary"].items())


async def ct_scans(tmp_path: Path) -> list[dict]:
    """A complete and an aborted CT scan, documents written live into tmp_path/live and exported into
    tmp_path/out; the recorder's scan events."""
    live = tmp_path / "live"
    stand = SimulatedStand(tmp_path / "stand", device="ct", speed=20.0, seed=3, emulator_args=("--tick-hz", "100"),
                           config={"loop": {"mode": "angles"}, "recorder": {"documents": str(live)},
                                   "angles": {"size": SIZE, "n_angles": 90, "max_angles": MAX_ANGLES,
                                              "sirt_iterations": 10, "poll_s": 0.002}})
    stand.start_emulator()
    stand.workdir.mkdir(exist_ok=True)
    write_keyfile(stand.key_file, (1, 2))
    stand.write_config()
    stand.start_daemon()
    assert stand.keyring is not None
    client, console = PushClient(stand.push_addr, stand.keyring, 1), PushClient(stand.push_addr, stand.keyring, 2)
    try:
        await wait_ready(stand, console)
        done = await asyncio.to_thread(client.scan, SampleSpec(kind="any", seed=7, split="val"))
        assert done["accepted"] and done["n_angles"] == MAX_ANGLES, done
        scan: dict = {}
        worker = threading.Thread(target=lambda: scan.update(client.scan(SampleSpec(kind="pentagon", seed=2))))
        worker.start()
        async with asyncio.timeout(20):
            while (await asyncio.to_thread(console.status)).get("angles_acquired", 0) < 2:
                await asyncio.sleep(0.005)
        assert (await asyncio.to_thread(console.abort))["reason"] == "aborted"
        await asyncio.to_thread(worker.join, 20.0)
        assert scan["stopped_by"] == "aborted" and 2 <= scan["n_angles"] < MAX_ANGLES, scan
    finally:
        await stand.close()
    export(stand.recorder_path, tmp_path / "out")
    return [e["details"] for e in read_events(stand.recorder_path) if e["kind"] == "scan"]


async def test_ct_scans_as_documents_complete_and_aborted(tmp_path) -> None:
    recorded = await ct_scans(tmp_path)
    live = tmp_path / "live"
    exported, streamed = runs(tmp_path / "out"), runs(live)
    assert set(exported) == set(streamed) == {"scan-1", "scan-2"}  # a session mode: no tick run
    for key, details in zip(("scan-1", "scan-2"), recorded):
        n = details["n_angles"]
        for c in (exported[key], streamed[key]):
            assert c.start_doc["uid"] == streamed[key].start_doc["uid"]
            assert c.data["primary"]["angle_deg"] == details["angles_deg"] and c.events["primary"] == n
            assert c.stop_doc["exit_status"] == ("success" if key == "scan-1" else "abort")
            recon = image(c, "reconstruction", "reconstruction", 0)
            assert recon.shape == (SIZE, SIZE) and np.array_equal(recon, np.load(details["reconstruction"]))
        # the projections exist only live: the recorder does not keep them (docs/documents.md)
        assert "projection" not in exported[key].data["primary"]
        frames = [image(streamed[key], "primary", "projection", k) for k in range(n)]
        assert len(frames) == n and all(f.shape == (SIZE,) and f.dtype == np.float32 and f.any() for f in frames)


PTYCHO = {"positions": 40, "subsequences": 4, "iterations": 2}
SCATTER = {"n": 16, "order": 2, "iterations": 5, "final_iterations": 5, "min_deg": 30.0, "max_deg": 329.0}
MODES = {  # device, emulator args, config, the push op that runs one run, its details' step count
    "ptycho": ("ptycho", ("--key", "3"), {"loop": {"mode": "ptycho"}, "ptycho": PTYCHO}, "scan", "n_positions"),
    "transceiver": ("scatter", ("--family", "circles", "--split", "report", "--index", "4", "--n", "16", "--order", "2"),
                    {"loop": {"mode": "transceiver"}, "scatter": SCATTER}, "scan", None),
    "forge": ("forge", (), {"loop": {"mode": "forge", "pacing": "timer", "rate_hz": 100.0},
                            "forge": {"particles": 300, "filter_seed": 4}}, "episode", "steps"),
}


@pytest.mark.parametrize("mode", sorted(MODES))
async def test_ptycho_transceiver_and_forge_runs_as_documents(tmp_path, mode) -> None:
    """Without a policy (Halton positions, the uniform design, zero force): one scan or episode each, live and
    exported; ptycho's diffraction patterns live in HDF5; the forge is also a tick session (θ̂ in its columns)."""
    device, args, config, op, count = MODES[mode]
    live = tmp_path / "live"
    stand = SimulatedStand(tmp_path / "stand", device=device, seed=1, speed=10.0 if device == "scatter" else 1.0,
                           emulator_args=args, config={**config, "recorder": {"documents": str(live)}})
    stand.start_emulator()
    stand.write_config()
    stand.start_daemon()
    assert stand.keyring is not None
    client = PushClient(stand.push_addr, stand.keyring, stand.keyring.newest)
    try:
        await wait_ready(stand, client)
        res = await asyncio.to_thread(client.send, client.frame(op))
        assert res["accepted"], res
    finally:
        await stand.close()
    details = next(e["details"] for e in read_events(stand.recorder_path) if e["kind"] in ("scan", "episode"))
    n = details[count] if count else len(details["angles"])
    export(stand.recorder_path, tmp_path / "out")
    exported, streamed = runs(tmp_path / "out"), runs(live)
    key = f"{op}-{details.get('scan', details.get('episode'))}"
    assert set(exported) == set(streamed) == ({key, "ticks"} if mode == "forge" else {key})
    for c in (exported[key], streamed[key]):
        assert c.start_doc["uid"] == streamed[key].start_doc["uid"] and c.events["primary"] == n > 0
        assert c.stop_doc["exit_status"] == "success"
    run = streamed[key]
    if mode == "ptycho":
        window = PtychoConfig(**PTYCHO).optics.window
        frames = [image(run, "primary", "diffraction", k) for k in range(n)]
        assert len(frames) == n and all(f.shape == (window, window) and f.dtype == np.uint32 for f in frames)
        assert run.data["primary"]["row"] == [p[0] for p in details["positions"]]
    if mode == "transceiver":
        assert run.data["primary"]["data_re"] == details["data"]["re"]
        assert image(run, "reconstruction", "reconstruction", 0).shape == (16, 16)
    if mode == "forge":
        ticks = read_ticks(stand.recorder_path)
        assert exported["ticks"].events == streamed["ticks"].events == {"primary": len(ticks)}
        assert same(streamed["ticks"].data["primary"]["theta_hat_0"], [t["kp_x"] for t in ticks])
        assert run.data["primary"]["force"] == details["commands"] and "reconstruction" not in run.data


DATABROKER_PYTHON = Path(__file__).parents[2] / ".venv-databroker" / "bin" / "python"


@pytest.mark.slow
async def test_the_runs_load_into_a_databroker_catalog_on_tiled(tmp_path) -> None:
    """Unchanged into a user's catalog: databroker 2 over an in-process Tiled (its own venv: `make databroker-env`,
    tests/databroker_load.py) reads every run back, images through its AD_HDF5 handler."""
    assert DATABROKER_PYTHON.exists(), f"{DATABROKER_PYTHON} is missing: run `make databroker-env` first"
    recorded = await ct_scans(tmp_path)
    for where in ("live", "out"):
        loaded = json.loads(subprocess.run([str(DATABROKER_PYTHON), str(Path(__file__).parents[1] / "databroker_load.py"),
                                            str(tmp_path / where)], capture_output=True, text=True, check=True,
                                           timeout=300).stdout)
        assert len(loaded) == len(recorded) == 2
        for details in recorded:
            run = next(r for r in loaded.values() if r["streams"]["primary"]["angle_deg"]["values"] ==
                       details["angles_deg"])
            n, primary = details["n_angles"], run["streams"]["primary"]
            assert run["plan_name"] == "edgetune_angles_scan" and primary["angle_deg"]["shape"] == [n]
            assert run["exit_status"] == ("abort" if details["stopped_by"] == "aborted" else "success")
            recon = run["streams"]["reconstruction"]["reconstruction"]
            assert recon["shape"] == [1, 1, SIZE, SIZE]
            assert np.allclose(recon["values"], np.load(details["reconstruction"]).ravel()[:64])
            if where == "live":
                assert primary["projection"]["shape"] == [n, 1, SIZE]
