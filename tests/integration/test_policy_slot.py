"""controller/policy/slot.py + controller/modes/mems/rl_pid.py: validation reasons, swap at a tick boundary,
rollback, non-finite output fallback, run-time containment (errors, overruns, ended calls, quarantine),
safe versions, the validator dying with its parent — on real ONNX files (hil/faults/model_artifacts.py, onnx.helper)."""
from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from controller.config import GainEnvelope, PolicyConfig
from controller.link.auth import Keyring
from controller.policy.manifest import MANIFEST_NAME, MODEL_NAME
from controller.modes.mems.rl_pid import RlPidMode, envelope_arrays, policy_spec
from controller.modes.mems.pid import BASELINE_GAINS, Pid
from controller.policy.slot import (QUARANTINE_FILE, PolicyRejected, PolicySlot, install, read_quarantine, remember_active,
                               remembered_active, validate)
from controller.policy.guard import FailureWindow, RuntimeLimits
from controller.link.edge_push import PushServer
from controller.safety import SafetyGate
from hil.faults.model_artifacts import EXPECTED_REASON, FAULTS, HIGH, LOW, make_artifact
from proc_util import children, running, still_running

BUDGET_S = 0.25 / 120  # a quarter of a 120 Hz tick
SPEC = policy_spec(max_steps=16)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    out = {k: make_artifact(k, root / k) for k in FAULTS}
    out["v1"] = make_artifact("good", root / "v1", version="1", seed=1)
    out["v2"] = make_artifact("good", root / "v2", version="2", seed=2, steps=2)
    for kind in ("error_above_x", "slow_above_x"):
        out[kind] = make_artifact(kind, root / kind, version=kind.replace("_", "-"))
    return out


def test_good_model_validates_with_a_single_threaded_session(artifacts):
    p = validate(artifacts["v1"], SPEC, BUDGET_S)
    assert p.version == "1" and p.steps == 4 and 0 < p.latency_us < BUDGET_S * 1e6
    opts = p.session.get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (1, 1)
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    a = p.run(np.zeros(24, dtype=np.float32))
    assert np.all(a >= LOW) and np.all(a <= HIGH)


@pytest.mark.parametrize("fault", FAULTS)
def test_each_bad_model_is_rejected_with_its_reason(artifacts, fault):
    with pytest.raises(PolicyRejected) as e:
        validate(artifacts[fault], SPEC, BUDGET_S)
    assert e.value.reason == EXPECTED_REASON[fault], str(e.value)


def test_history_longer_than_the_mode_keeps_is_a_wrong_shape(artifacts):
    with pytest.raises(PolicyRejected, match="wrong_shape"):
        validate(artifacts["v1"], policy_spec(max_steps=3), BUDGET_S)


def test_units_other_than_the_task_spec_are_a_wrong_shape(artifacts, tmp_path):
    """The mode's task spec (controller/modes/mems/spec.py) names the units; a manifest in others is refused."""
    m = json.loads((artifacts["v1"] / MANIFEST_NAME).read_text())
    m["inputs"][0]["units"] = ["mm"] * len(m["inputs"][0]["units"])
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(m))
    (tmp_path / MODEL_NAME).write_bytes((artifacts["v1"] / MODEL_NAME).read_bytes())
    with pytest.raises(PolicyRejected, match="wrong_shape: manifest's obs units"):
        validate(tmp_path, SPEC, BUDGET_S)


def test_install_is_atomic_keeps_versions_and_is_idempotent(artifacts, tmp_path):
    files = [(artifacts[v] / MANIFEST_NAME).read_bytes() for v in ("v1", "v2")]
    models = [(artifacts[v] / MODEL_NAME).read_bytes() for v in ("v1", "v2")]
    d1 = install(tmp_path, files[0], models[0])
    d2 = install(tmp_path, files[1], models[1])
    assert d1 != d2 and d1.name.startswith("1-") and d2.name.startswith("2-")
    assert install(tmp_path, files[0], models[0]) == d1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([d1.name, d2.name])  # no temp dirs left
    assert validate(d1, SPEC, BUDGET_S).version == "1"
    with pytest.raises(PolicyRejected, match="bad_manifest"):
        install(tmp_path, b"{not json", models[0])


async def test_swap_and_rollback_happen_only_at_a_tick_boundary(artifacts):
    slot = PolicySlot(SPEC, BUDGET_S)
    p1, p2 = await slot.load(artifacts["v1"]), await slot.load(artifacts["v2"])
    with pytest.raises(PolicyRejected, match="no_previous"):
        slot.request_rollback()
    done = slot.request_swap(p1)
    await asyncio.sleep(0)
    assert slot.active is None and not done.done()  # nothing changes between ticks
    assert slot.boundary() and slot.active is p1 and done.result()[0] is p1
    assert not slot.boundary()  # nothing pending
    slot.request_swap(p2)
    slot.boundary()
    assert (slot.active, slot.previous) == (p2, p1)
    done = slot.request_rollback()
    assert slot.active is p2
    slot.boundary()
    assert (slot.active, slot.previous) == (p1, p2) and done.result()[0] is p1
    assert slot.counters["accepted"] == 2 and slot.counters["rolled_back"] == 1
    assert slot.counters["rejected:no_previous"] == 1 and slot.counters["attempted"] == 2


async def test_rollback_after_the_first_push_returns_to_the_fallback_and_back(artifacts):
    slot = PolicySlot(SPEC, BUDGET_S)
    p1 = await slot.load(artifacts["v1"])
    slot.request_swap(p1)
    slot.boundary()
    done = slot.request_rollback()
    slot.boundary()
    assert (slot.active, slot.previous) == (None, p1) and done.result()[0] is None  # the mode's fallback runs
    assert slot.infer(np.zeros(SPEC.obs_step * SPEC.max_steps, np.float32)) is None
    slot.request_rollback()
    slot.boundary()
    assert (slot.active, slot.previous) == (p1, None) and slot.counters["rolled_back"] == 2


async def test_restore_brings_back_the_remembered_version_and_nothing_over_a_push(artifacts, tmp_path):
    installed = {v: install(tmp_path, (artifacts[v] / MANIFEST_NAME).read_bytes(), (artifacts[v] / MODEL_NAME).read_bytes())
                 for v in ("v1", "v2")}
    slot, events = PolicySlot(SPEC, BUDGET_S), []
    server = PushServer(PolicyConfig(dir=tmp_path, push_port=0), Keyring({1: bytes(32)}), slot, nominal_period_s=0.1,
                        max_clock_skew_s=1.0, replay_window=8, record=lambda kind, d: events.append(d["action"]))

    async def ticks() -> None:
        while True:
            slot.boundary()
            await asyncio.sleep(0.001)

    ticker = asyncio.create_task(ticks())
    try:
        remember_active(tmp_path, await slot.load(installed["v1"]))
        await server.restore()
        assert slot.active.version == "1" and events == ["restored"]
        remember_active(tmp_path, await slot.load(installed["v2"]))
        await server.restore()  # a policy is already active (as after a push): it stays
        assert slot.active.version == "1" and events == ["restored"]
    finally:
        ticker.cancel()
        slot.close()
    for damaged in (b"\xff\xfe", b"..", b".incoming-x", b"nowhere", b""):
        (tmp_path / "active").write_bytes(damaged)
        assert remembered_active(tmp_path) is None, damaged
    (tmp_path / "active").write_text(installed["v2"].name)
    assert remembered_active(tmp_path) == installed["v2"]


async def test_rejected_load_is_counted_and_leaves_the_active_policy(artifacts):
    slot = PolicySlot(SPEC, BUDGET_S)
    slot.request_swap(await slot.load(artifacts["v1"]))
    slot.boundary()
    active = slot.active
    for fault in FAULTS:
        with pytest.raises(PolicyRejected):
            await slot.load(artifacts[fault])
    assert slot.active is active and not slot.boundary()
    assert {k: v for k, v in slot.counters.items() if k.startswith("rejected:")} == \
        {f"rejected:{EXPECTED_REASON[f]}": 1 for f in FAULTS}


async def test_a_model_that_kills_the_validator_process_is_refused_and_the_daemon_goes_on(artifacts):
    slot = PolicySlot(SPEC, BUDGET_S)
    try:
        with pytest.raises(PolicyRejected, match="corrupt_model: the validator process died"):
            await slot.in_validator(os._exit, 3)  # what a model that crashes onnxruntime does to its process
        assert (await slot.load(artifacts["v1"])).version == "1"  # a fresh validator process
        os.kill(await slot.in_validator(os.getpid), signal.SIGKILL)  # dies while idle (OOM killer, operator)
        await asyncio.sleep(0.5)
        assert (await slot.load(artifacts["v2"])).version == "2"  # not the next model's fault
        assert slot.counters["rejected:corrupt_model"] == 0
    finally:
        slot.close()


async def test_a_validation_that_hangs_is_refused_and_its_process_killed(artifacts):
    slot = PolicySlot(SPEC, BUDGET_S, validate_timeout_s=1.0)
    try:
        pid = await slot.in_validator(os.getpid)
        with pytest.raises(PolicyRejected, match="too_slow: validation did not finish within 1.0 s"):
            await slot.in_validator(time.sleep, 60.0)  # what onnxruntime stuck on a model looks like
        deadline = time.monotonic() + 5.0
        with pytest.raises(ProcessLookupError):  # killed and reaped
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                await asyncio.sleep(0.05)
        assert (await slot.load(artifacts["v1"])).version == "1"
    finally:
        slot.close()


def _tick(mode: RlPidMode, x: float, y: float, t_s: float) -> None:
    """What the daemon's tick does: update, the gate, then tell the mode what was written."""
    mode.commanded(mode.gate(mode.update(np.array([x, y]), t_s)), t_s)


def _mode(slot: PolicySlot, every_n: int = 3) -> RlPidMode:
    gate = SafetyGate(low=np.full(2, -2e4), high=np.full(2, 2e4), safe=np.zeros(2))
    pid = Pid(BASELINE_GAINS, u_min=-2e4, u_max=2e4)
    return RlPidMode(pid, gate, BASELINE_GAINS, np.zeros(2), slot, every_n, envelope_arrays(GainEnvelope()))


async def test_rl_pid_sets_p_and_i_from_the_last_k_observations_and_falls_back_on_nan(artifacts):
    slot = PolicySlot(SPEC, BUDGET_S)
    mode = _mode(slot)
    for i in range(6):  # no policy: baseline gains
        _tick(mode, 1.0, -1.0, i / 120)
    np.testing.assert_array_equal(mode.gains, BASELINE_GAINS)
    policy = await slot.load(artifacts["v1"])
    slot.request_swap(policy)
    slot.boundary()
    t = 6
    for x in (3.0, 2.0, 1.0):  # three ticks: one decision on the last 4 observations
        _tick(mode, x, 0.5, t / 120)
        t += 1
    obs = mode._hist[mode._next + mode._h - 4:mode._next + mode._h]
    np.testing.assert_array_equal(obs[-3:, 0], [3.0, 2.0, 1.0])  # oldest first, newest last
    want = validate(artifacts["v1"], SPEC, BUDGET_S).run(obs.reshape(-1)).astype(np.float64)
    g = mode.gains
    np.testing.assert_allclose([g[0, 0], g[0, 1], g[1, 0], g[1, 1]], want, rtol=1e-6)
    np.testing.assert_array_equal(g[:, 2], BASELINE_GAINS[:, 2])  # D stays at the baseline
    assert mode.decisions == 1
    # a lost spot (NaN reading) in the window: NaN action → baseline gains for that decision, counted
    for x in (math.nan, 0.0, 0.0):
        _tick(mode, x, 0.0, t / 120)
        t += 1
    np.testing.assert_array_equal(mode.gains, BASELINE_GAINS)
    assert slot.counters["non_finite_output"] == 1 and mode.decisions == 2
    _, n, period = mode.take_period()
    assert n == 1 and period == pytest.approx(3 / 120)


def test_nonfinite_infer_returns_none_and_counts(artifacts):
    slot = PolicySlot(SPEC, BUDGET_S, active=validate(artifacts["v1"], SPEC, BUDGET_S))
    assert slot.infer(np.zeros(24, dtype=np.float32)) is not None
    assert slot.infer(np.full(24, np.inf, dtype=np.float32)) is None
    assert slot.counters["non_finite_output"] == 1


# --- run-time containment -------------------------------------------------------------------------------

def _obs(x_px: float) -> np.ndarray:
    """Four observation steps with every x reading at `x_px` (the *_above_x models' threshold: 200 px)."""
    obs = np.zeros(24, np.float32)
    obs[::6] = x_px
    return obs


async def _slot_running(artifacts, kind: str, limits: RuntimeLimits = RuntimeLimits(), **kw) -> PolicySlot:
    """A slot with v1 swapped in, then `kind` (so v1 is the previous policy)."""
    slot = PolicySlot(SPEC, BUDGET_S, limits=limits, **kw)
    for name in ("v1", kind):
        slot.request_swap(await slot.load(artifacts[name]))
        slot.boundary()
    return slot


async def test_a_run_time_error_falls_back_and_the_third_in_the_window_quarantines(artifacts):
    events = []
    slot = await _slot_running(artifacts, "error_above_x", on_quarantine=events.append)
    v1, bad = slot.previous, slot.active
    try:
        assert slot.infer(_obs(150.0)) is not None  # below the threshold: the policy decides
        for n in (1, 2):
            assert slot.infer(_obs(280.0)) is None  # onnxruntime raised: the fallback for this decision
            assert slot.counters["runtime_error"] == n and slot.active is bad and not slot.boundary()
        assert slot.infer(_obs(280.0)) is None
        assert (slot.active, slot.previous) == (v1, None)  # rolled back; not kept as previous
        assert slot.counters["quarantined"] == 1 and slot.boundary() and not slot.boundary()
        (q,) = events
        assert slot.quarantined == [q] and q.version == "error-above-x" and q.name == artifacts["error_above_x"].name
        assert "3 run-time failures within 10 s" in q.reason and "runtime_error" in q.reason and "Gather" in q.reason
        assert slot.infer(_obs(280.0)) is not None  # v1 decides again
        assert slot.counters["runtime_error"] == 3
    finally:
        slot.close()


async def test_failures_spread_over_more_than_the_window_do_not_quarantine(artifacts):
    window = FailureWindow(3, 10.0)
    assert [window.add(t) for t in (0.0, 6.0, 11.0, 17.0, 23.0, 26.9, 27.0)] == [False] * 5 + [True, True]
    slot = await _slot_running(artifacts, "error_above_x", RuntimeLimits(max_failures=3, window_s=0.5))
    try:
        for _ in range(3):  # at 0, 0.3, 0.6 s: never three within 0.5 s
            assert slot.infer(_obs(280.0)) is None
            time.sleep(0.3)
        assert slot.counters["runtime_error"] == 3 and slot.active.version == "error-above-x"
        slot.infer(_obs(280.0))  # 0.9 s: with 0.6 s, two within the window
        assert slot.active.version == "error-above-x"
        slot.infer(_obs(280.0))
        assert slot.active.version == "1" and slot.counters["quarantined"] == 1
    finally:
        slot.close()


async def test_no_quarantine_when_max_failures_is_zero(artifacts):
    slot = await _slot_running(artifacts, "error_above_x", RuntimeLimits(max_failures=0))
    try:
        for _ in range(10):
            assert slot.infer(_obs(280.0)) is None
        assert slot.counters["runtime_error"] == 10 and slot.counters["quarantined"] == 0
    finally:
        slot.close()


async def test_a_call_over_budget_counts_as_an_overrun_and_falls_back(artifacts):
    # 201 px: 25 000 Loop iterations, ≈ 40 ms of CPU, clearly over the 2.1 ms budget; the watchdog's deadline far
    # beyond (1000 budgets: 2.1 s), so the call ends by itself
    slot = await _slot_running(artifacts, "slow_above_x", RuntimeLimits(terminate_factor=1000.0))
    try:
        assert slot.infer(_obs(150.0)) is not None
        assert slot.infer(_obs(201.0)) is None
        assert slot.counters["runtime_overrun"] == 1 and slot.counters["runtime_terminated"] == 0
    finally:
        slot.close()


async def test_a_call_far_past_its_budget_is_ended_by_the_watchdog(artifacts):
    slot = await _slot_running(artifacts, "slow_above_x")  # ended after 4 budgets: 8.3 ms
    try:
        t = time.perf_counter()
        validate(artifacts["slow_above_x"], SPEC, BUDGET_S).run(_obs(210.0))
        unguarded_s = time.perf_counter() - t  # 250 000 Loop iterations: ≈ 0.4 s
        t = time.perf_counter()
        assert slot.infer(_obs(210.0)) is None
        guarded_s = time.perf_counter() - t
        assert slot.counters["runtime_terminated"] == 1 and slot.counters["runtime_error"] == 0
        assert guarded_s < unguarded_s / 2, (guarded_s, unguarded_s)  # not ended: both the same ≈ 0.4 s
        assert slot.infer(_obs(150.0)) is not None  # the session runs again after an ended call
    finally:
        slot.close()


async def test_quarantine_is_recorded_on_disk_reported_and_not_restored(artifacts, tmp_path):
    dirs = {k: install(tmp_path, (artifacts[k] / MANIFEST_NAME).read_bytes(), (artifacts[k] / MODEL_NAME).read_bytes())
            for k in ("v1", "error_above_x")}
    events: list[dict] = []

    def server(slot: PolicySlot) -> PushServer:
        return PushServer(PolicyConfig(dir=tmp_path, push_port=0), Keyring({1: bytes(32)}), slot, nominal_period_s=0.1,
                          max_clock_skew_s=1.0, replay_window=8, record=lambda kind, d: events.append(d))

    slot = PolicySlot(SPEC, BUDGET_S)
    push = server(slot)
    try:
        for k in ("v1", "error_above_x"):
            slot.request_swap(await slot.load(dirs[k]))
            slot.boundary()
        remember_active(tmp_path, slot.active)
        for _ in range(3):
            slot.infer(_obs(280.0))
        assert slot.active.version == "1"
        for _ in range(100):  # the worker thread writes the quarantine list, then `active`
            await asyncio.sleep(0.01)
            if (tmp_path / QUARANTINE_FILE).exists() and remembered_active(tmp_path) == dirs["v1"]:
                break
        assert [q.name for q in read_quarantine(tmp_path)] == [dirs["error_above_x"].name]
        assert remembered_active(tmp_path) == dirs["v1"]
        status = push.status()
        assert status["counters"]["quarantined"] == 1 and status["counters"]["runtime_error"] == 3
        (entry,) = status["quarantined"]
        assert entry["version"] == "error-above-x" and "runtime_error" in entry["reason"] and entry["at"]
        assert [e["action"] for e in events] == ["quarantined"] and events[0]["version"] == "error-above-x"
    finally:
        slot.close()

    # a restart whose `active` still names it (a crash between the two writes): refused, listed
    (tmp_path / "active").write_text(dirs["error_above_x"].name)
    slot = PolicySlot(SPEC, BUDGET_S)
    push = server(slot)
    try:
        await push.restore()
        assert slot.active is None and slot.counters["attempted"] == 0
        assert events[-1]["action"] == "restore_failed" and events[-1]["reason"] == "quarantined"
        assert [q["version"] for q in push.status()["quarantined"]] == ["error-above-x"]
    finally:
        slot.close()
    (tmp_path / QUARANTINE_FILE).write_text("{damaged")
    assert read_quarantine(tmp_path) == []


# --- versions ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [".hidden", "..", "-x", "_x", "a/b", "a b", "ü", "x" * 65, "", "a\n", "a:b"])
def test_an_unsafe_version_is_refused_with_bad_manifest(artifacts, tmp_path, version):
    manifest = json.loads((artifacts["v1"] / MANIFEST_NAME).read_bytes())
    with pytest.raises(PolicyRejected) as e:
        install(tmp_path, json.dumps({**manifest, "version": version}).encode(), (artifacts["v1"] / MODEL_NAME).read_bytes())
    assert e.value.reason == "bad_manifest" and "version" in e.value.detail and "A-Z a-z 0-9 . _ + -" in e.value.detail
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("version", ["1", "v1.0+rc-2_b", "Z", "9" * 64, "a..b", "a-.-_+"])
def test_every_accepted_version_is_restored(artifacts, tmp_path, version):
    manifest = json.loads((artifacts["v1"] / MANIFEST_NAME).read_bytes())
    d = install(tmp_path, json.dumps({**manifest, "version": version}).encode(), (artifacts["v1"] / MODEL_NAME).read_bytes())
    p = validate(d, SPEC, BUDGET_S)
    remember_active(tmp_path, p)
    assert remembered_active(tmp_path) == d and p.version == version


# --- the validator process dies with the daemon ---------------------------------------------------------------

_VALIDATOR_PARENT = """
import asyncio
from controller.modes.mems.rl_pid import policy_spec
from controller.policy.slot import PolicySlot

async def main() -> None:
    slot = PolicySlot(policy_spec(4), 0.002)
    await slot.in_validator(int)  # the validator process is up (and the resource tracker)
    print("ready", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_the_validator_and_the_resource_tracker_die_with_the_daemon_killed():
    parent = subprocess.Popen([sys.executable, "-c", _VALIDATOR_PARENT], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    kids: list[int] = []
    try:
        assert parent.stdout.readline().strip() == "ready"
        kids = children(parent.pid)
        cmdlines = [Path(f"/proc/{k}/cmdline").read_bytes() for k in kids]
        assert len(kids) == 2 and any(b"spawn_main" in c for c in cmdlines) and any(b"resource_tracker" in c for c in cmdlines)
        parent.kill()
        parent.wait(10)
        assert not still_running(kids), "orphans left running"
    finally:
        parent.kill()
        parent.wait(10)
        for k in kids:
            if running(k):
                os.kill(k, signal.SIGKILL)
