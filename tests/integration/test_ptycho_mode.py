"""The ptycho mode (controller/modes/ptycho/scan.py) against the ptychography emulator on a real pty: the
positions an exported recurrent policy chooses match an in-process run of the same ONNX policy on the same
keyed counts, the reconstruction equals the numpy one; abort, the safety gate, a NaN policy, a hot swap and
frames lost on the wire."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import torch

from controller.modes.ptycho.config import PtychoConfig
from controller.modes.ptycho.scan import PtychoScan
from controller.modes.ptycho import spec
from controller.modes.ptycho.policy import ScanPolicy
from controller.protocol import ptycho
from firmware_sim.ptycho.emulator import PtychoEmulator
from learner.ptycho.export import export_scan_policy
from ptycho_policy import KEY, TinyScanNet, reference, sample
from stage_device import served

SMALL = dict(positions=40, subsequences=4, iterations=2, request_timeout_s=2.0)  # replies can lag on a loaded 2-core host
CFG = PtychoConfig(**SMALL)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("ptycho")
    for version, seed in (("1", 0), ("2", 1)):
        export_scan_policy(TinyScanNet(seed=seed), out / version, field=CFG.optics.grid, hidden_size=8,
                           training_run="tiny", version=version)
    export_scan_policy(TinyScanNet(bias=30.0), out / "edge", field=CFG.optics.grid, hidden_size=8,
                       training_run="tiny", version="edge")
    nan = TinyScanNet()
    with torch.no_grad():
        nan.head.bias[0] = float("nan")
    inputs = (torch.zeros(1, 1, 100, 100), torch.zeros(1, spec.M_MAX, 2), torch.zeros(1, 1), torch.zeros(1, spec.M_MAX, 2),
              torch.zeros(1, 2, 8))
    torch.onnx.export(nan, inputs, str(out / "nan.onnx"), dynamo=False, input_names=[*spec.inputs(100), spec.HIDDEN],
                      output_names=[spec.MEANS, spec.HIDDEN_NEXT])
    return {"1": out / "1", "2": out / "2", "edge": out / "edge", "nan": out / "nan.onnx"}


@pytest.fixture
async def stand() -> AsyncIterator:
    emu = PtychoEmulator(sample(), KEY, seed=0)
    async with served(emu, ptycho.PTYCHO) as driver:
        yield emu, driver


async def test_policy_scan_matches_the_policy_in_process_and_orders_a_shorter_path(stand, artifacts) -> None:
    emu, driver = stand
    mode = PtychoScan(driver, CFG, ScanPolicy.from_artifact(artifacts["1"], 100))
    async with asyncio.timeout(30):
        res = await mode.run()
    chosen, image = reference(ScanPolicy.from_artifact(artifacts["1"], 100), CFG)
    assert [s["positions"] for s in res.subsequences] == chosen
    assert [s["source"] for s in res.subsequences] == ["halton"] + ["policy"] * 3 and res.policy_faults == 0
    assert sorted(map(tuple, sum(chosen, []))) == sorted(res.positions) and len(set(res.positions)) == 40
    np.testing.assert_allclose(res.reconstruction, image, rtol=0, atol=1e-9)
    assert res.stopped_by == "max_steps" and emu.busy_refused == 0 and emu.cmd_rejected == 0
    assert mode.gate.clamped == mode.gate.non_finite == 0 and res.reacquired == 0
    for s in res.subsequences:  # the acquisition order is the shortest of the three
        assert s["paths"]["ordered"]["move_s"] <= min(s["paths"]["policy"]["move_s"], s["paths"]["raster"]["move_s"])
    assert len(res.timings["policy"]) == 3 and len(res.timings["recon"]) == 4 and len(res.timings["move"]) == 40
    assert res.frames == []  # kept only for the live documents (keep_frames)


async def test_frames_lost_on_the_wire_are_acquired_again(stand, artifacts) -> None:
    emu, driver = stand
    cfg = PtychoConfig(**SMALL, exposure_us=20_000)  # 20 ms: the fault is queued while the detector exposes
    mode = PtychoScan(driver, cfg, ScanPolicy.from_artifact(artifacts["1"], 100), keep_frames=True)
    command, sent = driver.command, []

    async def faulty(msg, *args):
        out = await command(msg, *args)
        if isinstance(msg, ptycho.Acquire):
            sent.append(msg)
            if len(sent) == 5:
                emu.inject(b"\x55" * 200)  # merges with the frame's first chunk
            elif len(sent) == 25:
                emu.wire_fault("drop", 1)
        return out

    driver.command = faulty  # type: ignore[method-assign]
    async with asyncio.timeout(60):
        res = await mode.run()
    chosen, image = reference(ScanPolicy.from_artifact(artifacts["1"], 100), cfg)
    # both faults cost a frame each (a loaded host may lose one more to a late reply: counted the same way)
    assert res.reacquired >= 2 and len(sent) == 40 + res.reacquired and res.stopped_by == "max_steps"
    assert len(res.frames) == 40 and res.frames[0].shape == (cfg.optics.window,) * 2  # one per position kept
    assert [s["positions"] for s in res.subsequences] == chosen
    np.testing.assert_allclose(res.reconstruction, image, rtol=0, atol=1e-9)


async def test_abort_mid_scan_rests_the_stage(stand) -> None:
    emu, driver = stand
    mode = PtychoScan(driver, PtychoConfig(positions=200, subsequences=2, iterations=1, request_timeout_s=2.0))
    scan = asyncio.create_task(mode.run())
    async with asyncio.timeout(20):
        while len(mode.result.positions) < 5:
            await asyncio.sleep(0.002)
        await mode.abort()
        res = await scan
    assert res.stopped_by == "aborted" and 5 <= len(res.positions) < 200 and not mode.running
    st = await driver.request(ptycho.StageStatusRequest(), ptycho.StageStatus)
    await asyncio.sleep(0.05)
    later = await driver.request(ptycho.StageStatusRequest(), ptycho.StageStatus)
    assert not (st.moving or st.exposing or later.moving) and (later.target_x_A, later.target_y_A) == (
        st.target_x_A, st.target_y_A) and emu.busy_refused == 0


async def test_positions_stay_within_the_stage_limits_and_a_gate_change_is_refused(stand, artifacts) -> None:
    emu, driver = stand
    cfg = PtychoConfig(positions=20, subsequences=2, iterations=1, max_A=10.0, request_timeout_s=2.0)  # grid ≤ 50
    mode = PtychoScan(driver, cfg, ScanPolicy.from_artifact(artifacts["edge"], 100))
    async with asyncio.timeout(30):
        res = await mode.run()
    policy_part = np.array(res.subsequences[1]["positions"])
    assert policy_part.max() == 50  # the policy asked for the far corner: planned at the nearest allowed points
    assert len(set(res.positions)) == 20 and max(max(p) for p in res.positions) <= 50  # never twice, never beyond
    assert mode.gate.clamped == 0 and emu.cmd_rejected == 0 and max(max(r) for r in res.readback_A) < 10.1
    slow = PtychoScan(driver, PtychoConfig(positions=20, subsequences=2, iterations=1, max_step_A=0.5,
                                           request_timeout_s=2.0))
    with pytest.raises(ValueError, match="gate changed"):  # a step limit would take the pattern elsewhere
        async with asyncio.timeout(30):
            await slow.run()
    assert slow.gate.clamped == 1 and not (await driver.request(ptycho.StageStatusRequest(), ptycho.StageStatus)).moving


async def test_a_nan_policy_falls_back_to_the_halton_continuation(stand, artifacts) -> None:
    _, driver = stand
    policy = ScanPolicy(artifacts["nan"], 100)
    res = await PtychoScan(driver, CFG, policy).run()
    assert res.policy_faults == 3 == policy.faults and res.stopped_by == "max_steps"
    assert [s["source"] for s in res.subsequences] == ["halton"] + ["fallback"] * 3
    assert [s["positions"] for s in res.subsequences] == reference(None, CFG)[0]
    assert np.all(np.isfinite(res.reconstruction))


async def test_a_policy_swapped_mid_scan_chooses_from_the_next_subsequence(stand, artifacts) -> None:
    _, driver = stand
    one, two = (ScanPolicy.from_artifact(artifacts[v], 100) for v in "12")
    mode = PtychoScan(driver, CFG, one)
    scan = asyncio.create_task(mode.run())
    async with asyncio.timeout(30):
        while len(mode.result.positions) < 15:  # inside sub-sequence 1 (positions 10 … 19)
            await asyncio.sleep(0.001)
        two.reset()
        mode.policy = two
        res = await scan
    assert [s["policy"] for s in res.subsequences] == [None, "1", "2", "2"]


def test_config_is_validated() -> None:
    for bad in (dict(positions=0), dict(subsequences=300, positions=250), dict(positions=250, subsequences=1),
                dict(iterations=0), dict(min_A=5.0, max_A=1.0), dict(poll_s=0.0)):
        with pytest.raises(ValueError):
            PtychoConfig(**bad)


async def test_frames_at_the_wrong_dose_exposure_or_position_are_refused(stand) -> None:
    _, driver = stand
    mode = PtychoScan(driver, CFG)
    await mode.prepare()  # the instrument's Info: dose 2.1e5 at 1000 µs
    empty = np.zeros((64, 64), np.uint32)
    good = dict(x_A=0.2, y_A=0.4, dose=CFG.dose, exposure_us=1000)
    mode.record(mode.new_result(), (0.2, 0.4), ptycho.Frame.of(0, 0, counts=empty, **good))
    for bad, why in ((dict(dose=1.05e5), "dose"), (dict(dose=float("nan")), "dose"), (dict(exposure_us=500), "µs"),
                     (dict(x_A=float("nan")), "read-back"), (dict(y_A=0.7), "read-back")):
        with pytest.raises(ValueError, match=why):
            mode.record(mode.new_result(), (0.2, 0.4), ptycho.Frame.of(0, 0, counts=empty, **{**good, **bad}))


@pytest.mark.parametrize("max_A", [10.2, 1.4, 19.8])
def test_stage_limits_allow_exactly_the_grid_positions_the_scan_commands_within_them(max_A: float) -> None:
    cfg = PtychoConfig(positions=4, subsequences=2, max_A=max_A)
    commanded = np.flatnonzero(cfg.allowed) * cfg.optics.pixel_A
    # no commanded position beyond the limit (the gate would change it and the scan refuse it); a position whose
    # index · pixel rounds above the limit (51 · 0.2 = 10.200000000000001) is left out, never more than that one
    assert commanded.max() <= max_A and commanded.max() > max_A - 2 * cfg.optics.pixel_A
    with pytest.raises(ValueError, match="hold"):
        PtychoConfig(min_A=-10.0, max_A=-5.0)  # no grid position at all
