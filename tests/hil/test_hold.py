"""Operator hold (`edgetune link hold|resume`, authenticated over the push channel) on real daemons: the MEMS
loop commands the safe value while held and keeps ticking and recording, host targets are taken but act only
after the resume; the angles daemon aborts the scan in flight and refuses scans until the resume."""
from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request

import numpy as np
import pytest
from typer.testing import CliRunner

from controller.link.auth import write_keyfile
from controller.link.host_push import PushClient
from controller.recorder import read_events, read_ticks
from hil.cli import app
from hil.stand import SimulatedStand
from hil.telemetry import collect

pytestmark = pytest.mark.hil
CMD = slice(5, 7)  # telemetry columns cmd_x_v, cmd_y_v


async def _until_hold_gauge(stand: SimulatedStand, value: float, timeout_s: float = 5.0) -> None:
    """Poll the metrics until ``edgetune_hold`` reads ``value`` (the daemon exports once a second)."""
    url = f"http://127.0.0.1:{stand.edge_config['metrics']['port']}/metrics"

    def gauge() -> float:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        return next(float(line.split()[1]) for line in text.splitlines() if line.startswith("edgetune_hold "))

    seen = None
    try:
        async with asyncio.timeout(timeout_s):
            while (seen := await asyncio.to_thread(gauge)) != value:
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"edgetune_hold reads {seen}, expected {value}") from None


async def _cli(stand: SimulatedStand, command: str) -> dict:
    args = ["link", command, "--to", "%s:%d" % stand.push_addr, "--key-file", str(stand.key_file)]
    res = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


async def test_mems_hold_commands_the_safe_value_until_resume(mems_stand: SimulatedStand) -> None:
    stand, client = mems_stand, mems_stand.client
    pusher = PushClient(stand.push_addr, stand.keyring, stand.keyring.newest, timeout_s=10)
    status = await asyncio.to_thread(pusher.status)  # served in stabilize mode too
    assert status["accepted"] and (status["mode"], status["held"], status["active"]) == ("stabilize", False, None)
    await client.set_target(60.0, 0.0)
    tel = await collect(client, 1.0)
    assert abs(tel[-1, 1] - 60.0) < 3.0 and np.all(np.abs(tel[-10:, CMD]).max(axis=1) > 1.0)  # held there by the PID

    held = await _cli(stand, "hold")
    t_held = time.monotonic_ns() * 1e-9
    assert held == {"accepted": True, "reason": "held", "held": True, "changed": True}
    await client.set_target(-40.0, 0.0)  # taken while held, acts from the resume on
    tel = await collect(client, 1.0)
    after = tel[tel[:, 0] > t_held]
    assert len(after) > 80 and np.all(after[:, CMD] == 0.0)  # the safe value, every tick (the loop ticks on)
    assert after[-1, 3] == -40.0 and abs(after[-1, 1]) < 3.0  # the spot drifts back to the rest position
    status = await asyncio.to_thread(pusher.status)
    assert status["held"]
    await _until_hold_gauge(stand, 1.0)
    assert (await _cli(stand, "hold"))["changed"] is False

    resumed = await _cli(stand, "resume")
    t_resumed = time.monotonic_ns() * 1e-9
    assert resumed["reason"] == "resumed" and not resumed["held"]
    tel = await collect(client, 1.0)
    after = tel[tel[:, 0] > t_resumed]
    assert np.all(np.abs(after[5:, CMD]).max(axis=1) > 0.0) and abs(after[-1, 1] + 40.0) < 3.0  # the PID again
    await _until_hold_gauge(stand, 0.0)

    assert stand.terminate_daemon() == 0
    flags = np.array([r["flags"] for r in read_ticks(stand.recorder_path)])
    assert 80 < np.count_nonzero(flags & 2) < len(flags)  # the held ticks are recorded and flagged
    assert [e["details"] for e in read_events(stand.recorder_path) if e["kind"] == "hold"] == [
        {"held": True}, {"held": False}]


async def test_ct_hold_aborts_the_scan_in_flight_and_refuses_scans_until_resume(tmp_path) -> None:
    angles = {"size": 31, "max_angles": 12, "sirt_iterations": 5, "poll_s": 0.002}
    stand = SimulatedStand(tmp_path, device="ct", speed=5.0, emulator_args=("--size", "31"),
                           config={"loop": {"mode": "angles"}, "angles": angles})
    stand.start_emulator()
    write_keyfile(stand.key_file, (1, 2))  # key 2: the operator's console (replay windows are per key)
    stand.write_config()
    stand.start_daemon()
    assert stand.keyring is not None
    client, console = (PushClient(stand.push_addr, stand.keyring, k, timeout_s=30) for k in (1, 2))
    try:
        await _ct_ready(stand, console)
        scan: dict = {}
        worker = threading.Thread(target=lambda: scan.update(client.scan()))
        worker.start()
        deadline = time.monotonic() + 10
        while (await asyncio.to_thread(console.status))["angles_acquired"] < 1:
            assert time.monotonic() < deadline, "the scan did not start"
            await asyncio.sleep(0.005)
        held = await asyncio.to_thread(console.hold)
        await asyncio.to_thread(worker.join, 10.0)
        assert held == {"accepted": True, "reason": "held", "held": True, "changed": True}
        assert scan["accepted"] and scan["stopped_by"] == "aborted" and scan["n_angles"] < 12, scan
        assert not scan["stage"]["moving"]  # halted: the stage's safe state
        refused = await asyncio.to_thread(client.scan)
        assert (refused["accepted"], refused["reason"]) == (False, "held")
        status = await asyncio.to_thread(console.status)
        assert (status["mode"], status["held"], status["scanning"]) == ("angles", True, False)
        assert (await asyncio.to_thread(console.resume))["reason"] == "resumed"
        again = await asyncio.to_thread(client.scan)
        assert again["accepted"] and again["stopped_by"] == "max_angles", again
    finally:
        await stand.close()
    events = read_events(stand.recorder_path)
    assert [e["details"] for e in events if e["kind"] in ("hold", "abort")] == [
        {"held": True}, {"scan": 1, "by": "hold"}, {"held": False}]


async def _ct_ready(stand: SimulatedStand, client: PushClient) -> None:
    deadline = time.monotonic() + 20
    while True:
        assert stand.daemon is not None and stand.daemon.poll() is None, (stand.workdir / "daemon.log").read_text()
        try:
            if (await asyncio.to_thread(client.status))["device_up"]:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "the angles daemon did not come up"
        await asyncio.sleep(0.1)
