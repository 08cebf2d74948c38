"""End to end: emulator on a pty + daemon process + host over UDP, baseline gains."""
from __future__ import annotations

import numpy as np

from controller.recorder import read_events, read_ticks
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
