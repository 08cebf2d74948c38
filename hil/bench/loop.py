"""Loop benchmark: our stabilize tick path against the floor, in one run (`edgetune bench loop`).

ours:  the asyncio `Scheduler` (timerfd) running the stabilize tick body — frame → StabilizeMode
       (PID + safety gate) → command "written" to the in-process simulated stand, which answers
       with the next frame → recorder ring (SQLite writer thread live) → telemetry sealed on
       decimated ticks — plus the once-a-second metrics update on the same loop, as in the daemon.
floor: a loop that does nothing but `time.sleep` to the same absolute deadlines.

They run in alternating chunks (default 2 s), so both see the same background load. Both are measured as wake-up lateness (wake time − deadline) with the same overrun accounting.
`SimStabilizeTick` is the swap point: any `Callable[[Tick], None]` (e.g. the daemon's tick) fits.
"""
from __future__ import annotations

import asyncio
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from controller.link.auth import Gains, Keyring, Signer, Telemetry
from controller.latency import LatencyRing, summarize_ns
from controller.metrics import Metrics
from controller.modes.mems.stabilize import StabilizeMode
from controller.modes.mems.pid import BASELINE_GAINS, Pid
from controller.recorder import Recorder
from controller.safety import SafetyGate
from controller.scheduler import Scheduler, Tick, next_period, realtime
from firmware_sim.mems.physics import MemsStand

RT_PRIORITY = 50  # SCHED_FIFO priority under --rt (the daemon: [loop] realtime_priority)


class SimStabilizeTick:
    """The stabilize tick against `MemsStand` in process (the stand stands in for driver + firmware).

    Timer-paced: the loop ticks at ``rate_hz`` and uses the latest camera frame; the stand delivers
    frames at its own rate (120 Hz), so its physics costs what the firmware's would, not every tick."""

    def __init__(self, rate_hz: float, recorder: Recorder, seed: int = 0, telemetry_decimation: int = 4) -> None:
        self.stand = MemsStand()
        self.state = self.stand.reset(seed)
        v = self.stand.params.v_limit
        gate = SafetyGate(low=np.array([-v, -v]), high=np.array([v, v]), safe=np.zeros(2))
        self.mode = StabilizeMode(Pid(BASELINE_GAINS, u_min=-v, u_max=v), gate, BASELINE_GAINS, np.zeros(2))
        self.recorder = recorder
        self.frame_dt_s = self.stand.params.dt  # the camera delivers a frame every 1/120 s
        self.next_frame_ns: int | None = None
        self.decimation = telemetry_decimation
        self.signer = Signer(Keyring({1: os.urandom(32)}), 1)
        self.command = np.zeros((1, 2))  # what the driver would write [V]
        self.x = self.y = 0.0
        self.telemetry_bytes = 0

    def __call__(self, tick: Tick) -> None:
        mode, x, y = self.mode, self.x, self.y
        cmd = mode.step(x, y, tick.t_ns * 1e-9)
        self.command[0] = cmd
        if self.next_frame_ns is None:
            self.next_frame_ns = tick.t_ns
        if tick.t_ns >= self.next_frame_ns:  # the stand runs at its own frame rate, as the hardware does
            self.next_frame_ns += round(self.frame_dt_s * 1e9)
            self.state, frame = self.stand.step(self.state, self.command, self.frame_dt_s)
            self.x, self.y = (math.nan, math.nan) if frame.lost[0] else (float(frame.x_px[0]), float(frame.y_px[0]))
        gains = mode.gains
        tx, ty, cx, cy = float(mode.target[0]), float(mode.target[1]), float(cmd[0]), float(cmd[1])
        self.recorder.record_tick(tick.index, tick.t_ns, tick.lateness_ns, x, y, tx, ty, cx, cy,
                                  gains.ravel().tolist(), 0)
        if tick.index % self.decimation == 0:
            t = Telemetry(tick.index, tick.t_ns, x, y, tx, ty, cx, cy, Gains.from_rows(gains))
            self.telemetry_bytes += len(self.signer.seal(t))


def _result(lateness_ns: np.ndarray, overruns: int) -> dict[str, Any]:
    s = summarize_ns(lateness_ns)
    return {"p50_us": round(s["p50_us"], 1), "p99_us": round(s["p99_us"], 1), "p999_us": round(s["p999_us"], 1),
            "max_us": round(s["max_us"], 1), "overruns": overruns}


async def run_ours(rate_hz: float, seconds: float, tick_fn: Callable[[Tick], None],
                   metrics_gains: Callable[[], Any] | None = None) -> Scheduler:
    """Tick `tick_fn` for `seconds` on the scheduler, with the daemon's 1 s metrics update beside it."""
    last = round(rate_hz * seconds)
    sched = Scheduler(1.0 / rate_hz, lateness_capacity=last)
    metrics = Metrics(sched.stats)

    def tick(t: Tick) -> None:
        tick_fn(t)
        if t.index >= last:
            sched.stop()

    async def housekeeping() -> None:
        while True:
            await asyncio.sleep(1.0)
            metrics.update(link_up=False, gains=None if metrics_gains is None else metrics_gains())

    hk = asyncio.get_running_loop().create_task(housekeeping())
    try:
        await sched.run(tick)
    finally:
        hk.cancel()
    return sched


def run_floor(rate_hz: float, seconds: float) -> tuple[np.ndarray, int]:
    """`time.sleep` to absolute deadlines, nothing else: (lateness samples [ns], overruns)."""
    period = round(1e9 / rate_hz)
    last = round(rate_hz * seconds)
    ring = LatencyRing(last)
    overruns, k = 0, 1
    t0 = time.monotonic_ns()
    while k <= last:
        deadline = t0 + k * period
        delay = deadline - time.monotonic_ns()
        if delay > 0:
            time.sleep(delay / 1e9)
        now = time.monotonic_ns()
        ring.add(now - deadline)
        nxt = next_period(k, now, t0, period)
        overruns += nxt > k + 1
        k = nxt
    return ring.values(), overruns


async def _alternate(rate_hz: float, seconds: float, tick: SimStabilizeTick, chunk_s: float) -> dict[str, Any]:
    """Ours and the floor in alternating chunks, so both see the same background load."""
    lat: dict[str, list[np.ndarray]] = {"ours": [], "floor": []}
    over = {"ours": 0, "floor": 0}
    ticks, left = 0, seconds
    while left > 1e-9:
        span = min(chunk_s, left)
        sched = await run_ours(rate_hz, span, tick, lambda: tick.mode.gains)
        lat["ours"].append(sched.stats.lateness.values())
        over["ours"] += sched.stats.overruns
        ticks += sched.stats.ticks
        floor_lat, floor_over = run_floor(rate_hz, span)
        lat["floor"].append(floor_lat)
        over["floor"] += floor_over
        left -= span
    res = {k: _result(np.concatenate(lat[k]), over[k]) for k in lat}
    ratio = res["ours"]["p99_us"] / res["floor"]["p99_us"] if res["floor"]["p99_us"] > 0 else math.inf
    return {"rate_hz": rate_hz, "ticks": ticks, **res, "p99_ratio": round(ratio, 3)}


def bench(rate_hz: float, seconds: float, chunk_s: float = 2.0, rt: bool = False) -> dict[str, Any]:
    """`seconds` of ours and `seconds` of the floor (alternating `chunk_s` chunks); the report dict.

    rt: run both loops under SCHED_FIFO (controller.scheduler.realtime; the recorder's writer
    thread, started before, stays in the normal class)."""
    if not (rate_hz > 0 and seconds > 0 and chunk_s > 0):
        raise ValueError(f"rate, seconds and chunk must be positive, got {rate_hz} Hz, {seconds} s, {chunk_s} s")
    with tempfile.TemporaryDirectory() as tmp:
        recorder = Recorder.open(Path(tmp) / "bench.sqlite")
        try:
            with realtime(RT_PRIORITY if rt else 0) as fifo:
                report = asyncio.run(_alternate(rate_hz, seconds, SimStabilizeTick(rate_hz, recorder), chunk_s))
        finally:
            recorder.close()
    report["sched"] = "fifo" if fifo else "other"
    report["recorder"] = {"written": recorder.written, "dropped": recorder.dropped}
    return report
