"""Bluesky plans through the ophyd-async device (hil/bluesky/device.py) against a real daemon and MEMS emulator with
its Channel Access PVs on (controller/epics): loopback, a free non-default port, the CA client in its own process
(tests/bluesky_epics_client.py: libca reads the EPICS environment once, when its context is made), the environment
of both confined to 127.0.0.1 and free ports."""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("caproto")  # the daemon's PV server (the epics extra)
pytest.importorskip("ophyd_async")  # the client (the bluesky extra)
from hil.stand import SimulatedStand, free_udp_port  # noqa: E402

CLIENT = Path(__file__).parents[1] / "bluesky_epics_client.py"
ROOT = Path(__file__).parents[2]
SETTLE_TIMEOUT_S = 1.5


ANGLES = {"size": 63, "n_angles": 180, "max_angles": 12, "sirt_iterations": 5, "poll_s": 0.002}
STANDS = {  # kind -> SimulatedStand arguments
    "mems": dict(config={}),
    "scan": dict(device="ct", speed=10.0, seed=3, emulator_args=("--tick-hz", "100"),
                 config={"loop": {"mode": "angles"}, "angles": ANGLES}),
}


def run_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> dict:
    """A daemon + emulator with [epics] on a free port, and the client process's JSON. The EPICS environment (the
    daemon's server and the client's libca alike) is confined to 127.0.0.1 and free ports."""
    port = free_udp_port()
    for k, v in {"EPICS_CA_ADDR_LIST": "127.0.0.1", "EPICS_CA_AUTO_ADDR_LIST": "NO", "EPICS_CA_SERVER_PORT": str(port),
                 "EPICS_CA_REPEATER_PORT": str(free_udp_port()), "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
                 "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1", "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO"}.items():
        monkeypatch.setenv(k, v)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = dict(STANDS[kind])
    epics = {"enabled": True, "prefix": "BS", "port": port, "writes": True, "write_hosts": [socket.gethostname()],
             "settle_timeout_s": SETTLE_TIMEOUT_S}
    stand = SimulatedStand(tmp_path, config={**args.pop("config"), "epics": epics}, **args)
    try:
        stand.start_emulator()
        stand.write_config()
        stand.start_daemon()
        client = subprocess.Popen([sys.executable, str(CLIENT), "BS", kind], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 90
        while client.poll() is None and stand.daemon.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if client.poll() is None:  # the daemon died or the client hangs: stop it, show why
            client.kill()
        stdout, stderr = client.communicate(timeout=10)
    finally:
        stand.terminate_daemon()
        if stand.emulator is not None:
            stand.emulator.terminate()
            stand.emulator.wait(5)
    assert client.returncode == 0, stderr[-3000:] + (tmp_path / "daemon.log").read_text()[-2000:]
    return json.loads(stdout)


@pytest.mark.timeout(120)
def test_mv_scan_count_and_gains_against_the_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = run_client(tmp_path, monkeypatch, "mems")
    assert out["configuration"]["edge-mode"] == "stabilize" and out["configuration"]["edge-policy_version"] == ""
    count = out["count"]
    assert count["edge-tick_rate"] > 60 and math.isfinite(count["edge-x"]) and count["edge-held"] == "No"
    # bps.mv: the put-callback came when the loop had settled on the new target
    after = out["after_mv"]
    assert after["edge-target_x"] == 12.0 and abs(after["edge-x"] - 12.0) < 2.0 and out["mv_s"] > 0.05
    # bp.scan over target_y: each point's spot at its settled target
    assert [e["edge-target_y"] for e in out["scan"]] == [-6.0, 0.0, 6.0] and out["scan_exit"] == "success"
    assert all(abs(e["edge-y"] - e["edge-target_y"]) < 2.0 for e in out["scan"])
    # gains: put through the host link's validation, applied, read back
    assert out["gains_read"] == pytest.approx(out["gains_put"])
    # a target the spot cannot reach fails the move after the daemon's settle timeout
    assert out["far_move"].startswith("failed: PutFailed")
    assert SETTLE_TIMEOUT_S <= out["far_move_s"] < SETTLE_TIMEOUT_S + 5


@pytest.mark.timeout(120)
def test_count_and_fly_ct_scans_against_the_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = run_client(tmp_path, monkeypatch, "scan")
    assert out["mode"] == "angles"
    (event,) = out["count"]  # bp.count: one scan, ended Done, its summary
    assert event["scanner-state"] == "Done" and event["scanner-points"] == 12 and event["scanner-progress"] == 1.0
    assert json.loads(event["scanner-summary"])["stopped_by"] in ("policy", "max_angles")
    done, aborted = out["fly"]
    assert done["state"] == "Running" and done["end"] == "Done" and done["kickoff_s"] < done["complete_s"]
    assert aborted["state"] == "Running" and out["aborted_is_scan_failed"] and "Aborted" in out["aborted_fly"]
