"""The angles mode against the CT emulator on a real pty: golden-ratio scans, abort, ONNX policies."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from controller.protocol import ct
from controller.modes.ct import tomo
from controller.modes.ct.angles import AnglesMode
from controller.modes.ct.config import AnglesConfig
from controller.modes.ct.spec import TASK
from controller.policy.runtime import AnglePolicy, PolicyError
from controller.policy.slot import PolicySlot, PolicySpec
from controller.policy.guard import RuntimeLimits
from firmware_sim.ct.emulator import CtEmulator, make_sample
from stage_device import served

SIZE = 31
SAMPLE = ct.SetSample(ct.SampleKind.ANY, 11, ct.Split.VAL, SIZE)
FAST = dict(poll_s=0.002, exposure_s=0.04)


@pytest.fixture
async def stand() -> AsyncIterator:
    """An emulator (20× real time) serving on a pty and a connected CT driver."""
    emu = CtEmulator(sample=SAMPLE, seed=0, speed=20.0, tick_hz=100.0)
    async with served(emu, ct.CT) as driver:
        yield emu, driver


def policy_model(path: Path, preferred: list[int], stop_after: int | None, nan: bool = False,
                 fail: bool = False) -> Path:
    """A tiny actor: constant angle logits ranking `preferred` first; stop_logit = #acquired − (n − 1.5),
    i.e. stop once n − 1 angles are in (the n-th is still acquired); without n: obs-only, always stop.
    `fail` (with n): every decision raises in onnxruntime (a Gather index out of range)."""
    logits = np.full((1, 180), -5.0, np.float32)
    logits[0, preferred] = np.arange(len(preferred), 0, -1)
    if nan:
        logits[0, 0] = np.nan
    obs = helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, 1, SIZE, SIZE])
    acq = helper.make_tensor_value_info("acquired", TensorProto.FLOAT, [1, 180])
    outs = [helper.make_tensor_value_info("angle_logits", TensorProto.FLOAT, [1, 180]),
            helper.make_tensor_value_info("stop_logit", TensorProto.FLOAT, [1, 1])]
    nodes = [helper.make_node("Constant", [], ["angle_logits"], value=helper.make_tensor(
        "l", TensorProto.FLOAT, [1, 180], logits.ravel().tolist()))]
    if stop_after is None:
        inputs = [obs]
        nodes.append(helper.make_node("Constant", [], ["stop_logit"],
                                      value=helper.make_tensor("s", TensorProto.FLOAT, [1, 1], [1.0])))
    else:
        inputs = [obs, acq]
        nodes += [helper.make_node("Constant", [], ["axes"], value=helper.make_tensor("a", TensorProto.INT64, [1], [1])),
                  helper.make_node("ReduceSum", ["acquired", "axes"], ["count"], keepdims=1),
                  helper.make_node("Constant", [], ["n"], value=helper.make_tensor(
                      "n", TensorProto.FLOAT, [1, 1], [stop_after - 1.5])),
                  helper.make_node("Sub", ["count", "n"], ["stop_logit" if not fail else "stop_ok"])]
        if fail:  # the index depends on the input, so it is not folded away when the session is built
            const = lambda name, kind, dims, vals: helper.make_node(  # noqa: E731
                "Constant", [], [name], value=helper.make_tensor(name, kind, dims, vals))
            nodes += [const("zero", TensorProto.FLOAT, [], [0.0]), const("far", TensorProto.FLOAT, [], [1000.0]),
                      const("table", TensorProto.FLOAT, [2], [0.0, 0.0]),
                      helper.make_node("Mul", ["count", "zero"], ["nil"]), helper.make_node("Add", ["nil", "far"], ["idx_f"]),
                      helper.make_node("Cast", ["idx_f"], ["idx"], to=TensorProto.INT64),
                      helper.make_node("Gather", ["table", "idx"], ["bad"]),
                      helper.make_node("Add", ["stop_ok", "bad"], ["stop_logit"])]
    model = helper.make_model(helper.make_graph(nodes, "fixed_actor", inputs, outs),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


async def test_golden_ratio_scan_acquires_in_order_never_commands_a_moving_stage(stand) -> None:
    emu, driver = stand
    mode = AnglesMode(driver, AnglesConfig(size=SIZE, max_angles=12, **FAST))
    res = await mode.run()
    assert res.stopped_by == "max_angles"
    assert res.angles_deg == pytest.approx(tomo.golden_ratio_angles(12).tolist(), abs=1e-9)
    assert np.allclose(res.measured_deg, res.angles_deg, atol=0.003)  # encoder of each projection, in order
    assert emu.busy_refused == 0 and emu.cmd_rejected == 0  # never a command to a moving/exposing stage
    assert mode.unexpected_data == 0 and res.sinogram.shape == (12, SIZE)
    truth = make_sample(SAMPLE).images[0]
    assert tomo.psnr(res.reconstruction, truth) > 22.0
    # 12 warm-started 30-iteration updates come within 2 dB of a cold 150-iteration SIRT on the same data
    cold = tomo.sirt(tomo.system_matrix(SIZE, res.measured_deg), res.sinogram)
    assert tomo.psnr(res.reconstruction, truth) > tomo.psnr(cold, truth) - 2.0
    assert len(res.timings["move"]) == len(res.timings["acquire"]) == len(res.timings["sirt"]) == 12
    assert res.timings["policy"] == [] and res.total_s > sum(res.timings["move"])


async def test_abort_mid_scan_halts_and_holds_the_stage(stand) -> None:
    emu, driver = stand
    mode = AnglesMode(driver, AnglesConfig(size=SIZE, max_angles=30, **FAST))
    scan = asyncio.create_task(mode.run())
    while len(mode.result.angles_deg) < 3:
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.01)  # into the next move
    await mode.abort()
    res = await asyncio.wait_for(scan, 1.0)
    assert res.stopped_by == "aborted" and 3 <= len(res.angles_deg) < 30 and not mode.running
    st = await driver.request(ct.StageStatusRequest(), ct.StageStatus)
    assert not st.moving and not st.exposing and st.homed
    await asyncio.sleep(0.1)
    later = await driver.request(ct.StageStatusRequest(), ct.StageStatus)
    assert later.angle_deg == st.angle_deg and emu.busy_refused == 0  # held, nothing pending
    again = await AnglesMode(driver, AnglesConfig(size=SIZE, max_angles=2, **FAST)).run()  # usable again
    assert again.stopped_by == "max_angles" and len(again.projections) == 2


async def test_onnx_policy_is_followed_and_its_stopping_angle_acquired(stand, tmp_path) -> None:
    emu, driver = stand
    prefs = [50, 10, 120, 90, 170, 30]
    policy = AnglePolicy(policy_model(tmp_path / "p.onnx", prefs, stop_after=4), SIZE)
    res = await AnglesMode(driver, AnglesConfig(size=SIZE, max_angles=10, **FAST), policy).run()
    assert res.angles_deg == [50.0, 10.0, 120.0, 90.0] and res.stopped_by == "policy"
    assert len(res.timings["policy"]) == 4 and emu.busy_refused == 0
    capped = await AnglesMode(driver, AnglesConfig(size=SIZE, max_angles=3, **FAST), policy).run()
    assert capped.angles_deg == [50.0, 10.0, 120.0] and capped.stopped_by == "max_angles"  # d_M ≡ 1
    obs_only = AnglePolicy(policy_model(tmp_path / "q.onnx", prefs, stop_after=None), SIZE)
    one = await AnglesMode(driver, AnglesConfig(size=SIZE, **FAST), obs_only).run()
    assert one.angles_deg == [50.0] and one.stopped_by == "policy"


async def test_non_finite_policy_output_falls_back_to_golden_ratio(stand, tmp_path) -> None:
    _, driver = stand
    policy = AnglePolicy(policy_model(tmp_path / "nan.onnx", [50], stop_after=2, nan=True), SIZE)
    res = await AnglesMode(driver, AnglesConfig(size=SIZE, max_angles=2, **FAST), policy).run()
    assert res.policy_faults == 2 and policy.faults == 2
    assert res.angles_deg == pytest.approx(tomo.golden_ratio_angles(2).tolist())


async def test_a_policy_that_fails_at_run_time_falls_back_and_is_quarantined(stand, tmp_path) -> None:
    _, driver = stand
    policy = AnglePolicy(policy_model(tmp_path / "fail.onnx", [50], stop_after=3, fail=True), SIZE)
    alone = await AnglesMode(driver, AnglesConfig(size=SIZE, max_angles=2, **FAST), policy).run()  # no slot
    assert alone.policy_faults == 2 and alone.angles_deg == pytest.approx(tomo.golden_ratio_angles(2).tolist())
    cfg = AnglesConfig(size=SIZE, max_angles=4, **FAST)
    mode = AnglesMode(driver, cfg, policy)
    slot = PolicySlot(PolicySpec(TASK, SIZE * SIZE + 180, 181, 1), budget_s=cfg.exposure_s, active=policy,
                      limits=RuntimeLimits(max_failures=2), on_request=lambda: setattr(mode, "policy", slot.active))
    mode.slot = slot  # as the daemon (controller/modes/ct/session.py)
    try:
        res = await mode.run()
    finally:
        slot.close()
    assert res.angles_deg == pytest.approx(tomo.golden_ratio_angles(4).tolist()) and res.stopped_by == "max_angles"
    assert res.policy_faults == 2 and res.policy_versions == [None] * 4  # two failed, then no policy
    assert slot.counters["runtime_error"] == 2 and slot.counters["quarantined"] == 1
    assert slot.active is None and mode.policy is None and slot.quarantined[0].version == "unversioned"


def test_policy_contract_is_checked(tmp_path) -> None:
    path = policy_model(tmp_path / "p.onnx", [1], stop_after=2)
    with pytest.raises(PolicyError, match="shape"):
        AnglePolicy(path, SIZE + 2)
    model = onnx.load(path)
    model.graph.output[1].name = "stop"
    model.graph.node[-1].output[0] = "stop"
    onnx.save(model, tmp_path / "bad.onnx")
    with pytest.raises(PolicyError, match="stop_logit"):
        AnglePolicy(tmp_path / "bad.onnx", SIZE)
    with pytest.raises(PolicyError, match="cannot load"):
        AnglePolicy(b"not a model", SIZE)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        AnglesConfig(size=32)
    with pytest.raises(ValueError):
        AnglesConfig(max_angles=0)
