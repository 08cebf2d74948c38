"""controller/policy.py + controller/modes/rl_pid.py: validation reasons, swap at a tick boundary,
rollback, non-finite output fallback — on real ONNX files (hil/model_faults.py, onnx.helper)."""
from __future__ import annotations

import asyncio
import math
import os
import signal
import time

import numpy as np
import onnxruntime as ort
import pytest

from controller.config import GainEnvelope, PolicyConfig
from controller.hostlink_wire import Keyring
from controller.manifest import MANIFEST_NAME, MODEL_NAME
from controller.modes.rl_pid import RlPidMode, envelope_arrays, policy_spec
from controller.pid import BASELINE_GAINS, Pid
from controller.policy import PolicyRejected, PolicySlot, install, remember_active, remembered_active, validate
from controller.push import PushServer
from controller.safety import SafetyGate
from hil.model_faults import EXPECTED_REASON, FAULTS, HIGH, LOW, make_artifact

BUDGET_S = 0.25 / 120  # a quarter of a 120 Hz tick
SPEC = policy_spec(max_steps=16)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    out = {k: make_artifact(k, root / k) for k in FAULTS}
    out["v1"] = make_artifact("good", root / "v1", version="1", seed=1)
    out["v2"] = make_artifact("good", root / "v2", version="2", seed=2, steps=2)
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


def _mode(slot: PolicySlot, every_n: int = 3) -> RlPidMode:
    gate = SafetyGate(low=np.full(2, -2e4), high=np.full(2, 2e4), safe=np.zeros(2))
    pid = Pid(BASELINE_GAINS, u_min=-2e4, u_max=2e4)
    return RlPidMode(pid, gate, BASELINE_GAINS, np.zeros(2), slot, every_n, envelope_arrays(GainEnvelope()))


async def test_rl_pid_sets_p_and_i_from_the_last_k_observations_and_falls_back_on_nan(artifacts):
    slot = PolicySlot(SPEC, BUDGET_S)
    mode = _mode(slot)
    for i in range(6):  # no policy: baseline gains
        mode.step(1.0, -1.0, i / 120)
    np.testing.assert_array_equal(mode.gains, BASELINE_GAINS)
    policy = await slot.load(artifacts["v1"])
    slot.request_swap(policy)
    slot.boundary()
    t = 6
    for x in (3.0, 2.0, 1.0):  # three ticks: one decision on the last 4 observations
        mode.step(x, 0.5, t / 120)
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
        mode.step(x, 0.0, t / 120)
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
