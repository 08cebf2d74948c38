"""End to end: emulator on a pty + daemon process + host over UDP, baseline gains."""
from __future__ import annotations

import numpy as np

from controller.recorder import read_events, read_ticks
from controller.scheduler import realtime
from hil.stand import SimulatedStand
from hil.telemetry import collect, settling_time_s


async def test_target_step_settles_within_2px_in_under_1s(mems_stand):
    client = mems_stand.client
    await collect(client, 0.5)  # settle at the origin first
    await client.set_target(100.0, 0.0)
    tel = await collect(client, 2.0)
    assert len(tel) > 150  # ~120 Hz telemetry (decimation 1)
    t_settle = settling_time_s(tel, band_px=2.0)
    assert t_settle < 1.0, f"100 px step settled in {t_settle:.3f} s"
    # the mirror command stayed inside the configured limits
    assert np.all(np.abs(tel[:, 5:7]) <= 20000.0)


async def test_sigterm_flushes_recorder_and_leaves_actuators_safe(mems_stand):
    await collect(mems_stand.client, 1.0)
    assert mems_stand.terminate_daemon() == 0
    ticks = read_ticks(mems_stand.recorder_path)
    kinds = [e["kind"] for e in read_events(mems_stand.recorder_path)]
    assert len(ticks) >= 100
    idx = [r["idx"] for r in ticks]
    assert idx == sorted(idx) and len(set(idx)) == len(idx)
    assert "stop" in kinds  # the last event, written after the final flush began


async def test_realtime_priority_puts_the_loop_under_sched_fifo_where_allowed(tmp_path):
    with realtime(20) as allowed:  # this user's right, which the daemon (same user) shares
        pass
    async with SimulatedStand(tmp_path / "stand", config={"loop": {"realtime_priority": 20}}) as stand:
        await collect(stand.client, 0.5)
        assert stand.terminate_daemon() == 0
    loop = [e["details"] for e in read_events(stand.recorder_path) if e["kind"] == "loop"]
    assert loop == [{"sched": "fifo", "priority": 20} if allowed else {"sched": "other", "priority": 0}]
    assert len(read_ticks(stand.recorder_path)) >= 30
