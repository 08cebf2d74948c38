"""Loop benchmark: the daemon's own stabilize tick against the floor, in one run (`edgetune bench loop`).

ours:  the asyncio `Scheduler` (timerfd) running the daemon's own tick (`controller.daemon.Daemon.tick`,
       built from the deployed defaults at the bench's rate: hil/bench/production.py) — host commands →
       StabilizeMode (PID + safety gate) → command written to the driver, here `SimDriver` (the MEMS
       physics in process, delivering camera frames at 120 Hz) → recorder ring (SQLite writer thread
       live) → telemetry sealed and sent over the bound host link on decimated ticks — plus the
       once-a-second metrics update on the same loop, as in the daemon.
floor: a loop that does nothing but `time.sleep` to the same absolute deadlines.

They run in alternating chunks (default 2 s), so both see the same background load; each chunk of ours
follows 0.1 s of unmeasured ticks (`WARM_UP_S`). Both are measured as wake-up lateness (wake time − deadline) with the same overrun accounting.

cpus (`--cpus 0`): the benchmark pinned to those CPUs (`pin`), e.g. one core as a proxy for a
Raspberry-Pi-class edge; the report's `cpus` is the affinity read back from every thread at the end
(bench swap: also from the validator and pusher processes), pinned or not.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from controller.latency import LatencyRing, summarize_ns
from controller.metrics import Metrics
from controller.scheduler import Scheduler, Tick, next_period, realtime
from hil.bench.production import production_daemon

RT_PRIORITY = 50  # SCHED_FIFO priority under --rt (the daemon: [loop] realtime_priority)


def pin(cpus: set[int]) -> None:
    """Every thread of this process to `cpus` (os.sched_setaffinity(0, …) moves only the calling thread);
    threads and processes started later inherit the affinity."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(tid), cpus)


def affinity() -> list[int]:
    """The CPUs that any thread of this process may run on."""
    cpus: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):
            cpus |= os.sched_getaffinity(int(tid))
    return sorted(cpus)


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


WARM_UP_S = 0.1  # of the daemon's tick before each measured chunk


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


async def _alternate(rate_hz: float, seconds: float, tick: Callable[[Tick], None], gains: Callable[[], Any],
                     chunk_s: float) -> dict[str, Any]:
    """Ours and the floor in alternating chunks, so both see the same background load."""
    lat: dict[str, list[np.ndarray]] = {"ours": [], "floor": []}
    over = {"ours": 0, "floor": 0}
    ticks, warm_up_ticks, left = 0, 0, seconds
    while left > 1e-9:
        span = min(chunk_s, left)
        # not measured: the first ticks after a floor chunk catch up with what piled up while the floor held the
        # event loop for a whole chunk (a daemon's loop is never held), one overrun per chunk otherwise
        warm_up_ticks += (await run_ours(rate_hz, WARM_UP_S, tick, gains)).stats.ticks
        sched = await run_ours(rate_hz, span, tick, gains)
        lat["ours"].append(sched.stats.lateness.values())
        over["ours"] += sched.stats.overruns
        ticks += sched.stats.ticks
        floor_lat, floor_over = run_floor(rate_hz, span)
        lat["floor"].append(floor_lat)
        over["floor"] += floor_over
        left -= span
    res = {k: _result(np.concatenate(lat[k]), over[k]) for k in lat}
    ratio = res["ours"]["p99_us"] / res["floor"]["p99_us"] if res["floor"]["p99_us"] > 0 else math.inf
    return {"rate_hz": rate_hz, "ticks": ticks, "warm_up_ticks": warm_up_ticks, **res, "p99_ratio": round(ratio, 3)}


def bench(rate_hz: float, seconds: float, chunk_s: float = 2.0, rt: bool = False,
          cpus: set[int] | None = None) -> dict[str, Any]:
    """`seconds` of ours and `seconds` of the floor (alternating `chunk_s` chunks); the report dict.

    rt: run both loops under SCHED_FIFO (controller.scheduler.realtime; the recorder's writer
    thread, started before, stays in the normal class). cpus: pin the benchmark to them first."""
    if not (rate_hz > 0 and seconds > 0 and chunk_s > 0):
        raise ValueError(f"rate, seconds and chunk must be positive, got {rate_hz} Hz, {seconds} s, {chunk_s} s")
    if cpus:
        pin(cpus)

    async def run(workdir: Path) -> dict[str, Any]:
        async with production_daemon(workdir, rate_hz) as (daemon, tick):
            with realtime(RT_PRIORITY if rt else 0) as fifo:
                report = await _alternate(rate_hz, seconds, tick, lambda: daemon.mode.gains, chunk_s)
            report["sched"] = "fifo" if fifo else "other"
            report["cpus"] = {"bench": affinity()}
        recorder = daemon.recorder
        report["recorder"] = {"written": recorder.written, "dropped": recorder.dropped}
        report["driver_writes"] = daemon.driver.writes
        report["telemetry_sent"] = daemon.hostlink.counters["tx_ok"]
        return report

    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(run(Path(tmp)))
