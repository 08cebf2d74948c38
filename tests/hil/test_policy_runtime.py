"""Run-time containment on the real daemon (rl-pid mode, emulator on a pty, pushes over the authenticated
channel): signed models that pass validation but, once the host moves the target past x = 200 px, raise in
onnxruntime or run for seconds per call (hil/faults/model_artifacts.py). The daemon keeps ticking, falls back, ends
the long calls, quarantines the model, and a restart (SIGKILL) does not bring it back."""
from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from controller.policy.slot import read_quarantine, remembered_active
from controller.link.host_push import PushClient
from controller.recorder import read_events, read_ticks
from hil.faults.model_artifacts import make_artifact
from hil.stand import SimulatedStand
from proc_util import children, still_running

pytestmark = pytest.mark.hil


@pytest.fixture
async def rl_stand(tmp_path):
    async with SimulatedStand(tmp_path / "stand", config={"loop": {"mode": "rl-pid"}}) as stand:
        yield stand


async def wait_status(stand: SimulatedStand, pusher: PushClient, ok: Callable[[dict[str, Any]], bool],
                      timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        assert stand.daemon is not None and stand.daemon.poll() is None, \
            f"the daemon exited: {(stand.workdir / 'daemon.log').read_text()[-1500:]}"
        try:
            status = await asyncio.to_thread(pusher.status)
        except OSError:  # refused: the daemon is gone (reported above) or not up yet
            status = {}
        if ok(status) or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.1)


async def push_pair(stand: SimulatedStand, tmp_path: Path, bad_kind: str) -> tuple[PushClient, Path]:
    """A good policy "1", then the bad one ("bad-1"), both accepted (x stays near 0 px: they pass)."""
    pusher = PushClient(stand.push_addr, stand.keyring, stand.keyring.newest, timeout_s=10)
    bad = make_artifact(bad_kind, tmp_path / "bad", version="bad-1", bias=0.5, decision_period_s=0.1)
    for art in (make_artifact("good", tmp_path / "v1", version="1", bias=0.5, decision_period_s=0.1), bad):
        r = await asyncio.to_thread(pusher.push, art)
        assert r["accepted"] and r["reason"] == "swapped", r
    return pusher, bad


async def test_a_model_raising_at_run_time_is_quarantined_and_not_restored(rl_stand, tmp_path):
    stand = rl_stand
    pusher, bad = await push_pair(stand, tmp_path, "error_above_x")
    await stand.client.set_target(280.0, 0.0)
    status = await wait_status(stand, pusher, lambda s: bool(s.get("quarantined")), 10.0)
    assert (status["active"], status["previous"]) == ("1", None), status  # rolled back to the previous one
    assert [q["version"] for q in status["quarantined"]] == ["bad-1"] and "runtime_error" in status["quarantined"][0]["reason"]
    assert status["counters"]["runtime_error"] == 3 and status["counters"]["quarantined"] == 1

    policies = Path(stand.edge_config["policy"]["dir"])

    def persisted() -> bool:
        """The quarantine and the rollback on disk (the slot's worker thread), and in the recorder (its flush)."""
        active = remembered_active(policies)
        return ([q.version for q in read_quarantine(policies)] == ["bad-1"] and active is not None
                and active.name.startswith("1-") and "quarantined" in
                [e["details"]["action"] for e in read_events(stand.recorder_path, 1) if e["kind"] == "policy"])

    deadline = time.monotonic() + 5.0
    while not persisted():
        assert time.monotonic() < deadline, "the quarantine was not written to disk and the recorder"
        await asyncio.sleep(0.05)
    kids = children(stand.daemon.pid)  # the validator process and multiprocessing's resource tracker
    assert len(kids) == 2, kids
    assert stand.terminate_daemon(signal.SIGKILL) == -signal.SIGKILL
    assert not await asyncio.to_thread(still_running, kids), "the daemon's children outlived it"

    stand.start_daemon()  # target back at the configured 0 px
    await stand.client.close()
    await stand.connect()
    status = await wait_status(stand, pusher, lambda s: s["active"] is not None, 20.0)
    assert status["active"] == "1" and [q["version"] for q in status["quarantined"]] == ["bad-1"], status
    r = await asyncio.to_thread(pusher.push, bad)  # the operator's explicit decision: the quarantine is lifted
    assert r["accepted"] and r["version"] == "bad-1", r
    status = await asyncio.to_thread(pusher.status)
    assert status["active"] == "bad-1" and status["quarantined"] == []
    assert stand.terminate_daemon() == 0
    actions = [[e["details"]["action"] for e in read_events(stand.recorder_path, session) if e["kind"] == "policy"]
               for session in (1, 2)]
    assert actions == [["swapped", "swapped", "quarantined"], ["restored", "quarantine_lifted", "swapped"]]
    assert "Traceback" not in (stand.workdir / "daemon.log").read_text()


async def test_a_model_whose_run_time_explodes_is_ended_and_the_loop_keeps_its_rate(rl_stand, tmp_path):
    stand = rl_stand
    pusher, _ = await push_pair(stand, tmp_path, "slow_above_x")  # ≈ 40 ms per call and px above 200 px
    quiet = (time.monotonic_ns(), None)
    await asyncio.sleep(1.5)
    quiet = (quiet[0], time.monotonic_ns())
    await stand.client.set_target(280.0, 0.0)
    moved_ns = time.monotonic_ns()
    status = await wait_status(stand, pusher, lambda s: bool(s.get("quarantined")), 5.0)
    await asyncio.sleep(max(0.0, 1.5 - (time.monotonic_ns() - moved_ns) / 1e9))
    moved = (moved_ns, time.monotonic_ns())
    assert stand.terminate_daemon() == 0
    t = np.array([row["t_ns"] for row in read_ticks(stand.recorder_path, 1)])

    def rate(window: tuple[int, int]) -> tuple[float, float]:
        """Ticks per second and the longest pause [s] in the window."""
        w = t[(t >= window[0]) & (t <= window[1])]
        return w.size / ((window[1] - window[0]) / 1e9), float(np.diff(w).max()) / 1e9

    (quiet_hz, quiet_gap), (moved_hz, moved_gap) = rate(quiet), rate(moved)
    # each ended call holds the tick for its deadline (4 budgets: 8.3 ms); uncontained, one call takes seconds
    assert moved_hz >= 0.7 * quiet_hz and moved_gap < max(0.15, 2 * quiet_gap), \
        f"quiet {quiet_hz:.0f} ticks/s (longest pause {quiet_gap * 1e3:.0f} ms), model failing {moved_hz:.0f} " \
        f"ticks/s (longest pause {moved_gap * 1e3:.0f} ms)"
    assert status["active"] == "1" and [q["version"] for q in status["quarantined"]] == ["bad-1"], status
    c = status["counters"]
    assert c["runtime_terminated"] >= 1 and c["runtime_terminated"] + c.get("runtime_overrun", 0) == 3, c
