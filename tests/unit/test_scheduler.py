"""Scheduler: exact absolute deadlines, overrun accounting without bursts, real-timer lateness."""
from __future__ import annotations

import asyncio
import functools
import os
import random
import multiprocessing
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

from controller.latency import LatencyRing, summarize_ns
from controller.lifeline import off_loop_priority
from controller.policy.slot import VALIDATOR_NICE, _validator_init
from controller.scheduler import FrameTrigger, LoopTimer, Scheduler, Tick, TimerfdTimer, realtime, timerfd_available


class FakeClock:
    def __init__(self, t0: int = 1_000_000_000) -> None:
        self.now = t0

    def __call__(self) -> int:
        return self.now


class FakeTimer:
    """Jumps the fake clock to the deadline plus a seeded jitter (the wake-up lateness)."""

    def __init__(self, clock: FakeClock, max_late_ns: int = 0, seed: int = 0) -> None:
        self.clock, self.max_late_ns, self.rng = clock, max_late_ns, random.Random(seed)
        self.deadlines: list[int] = []

    async def wait_until(self, deadline_ns: int) -> None:
        self.deadlines.append(deadline_ns)
        self.clock.now = max(self.clock.now, deadline_ns) + self.rng.randrange(self.max_late_ns + 1)

    def wake(self) -> None:
        pass

    def close(self) -> None:
        pass


async def test_no_drift_over_10k_ticks_on_fake_clock() -> None:
    clock = FakeClock()
    t0 = clock.now
    period_ns = 1_000_000
    timer = FakeTimer(clock, max_late_ns=300_000, seed=1)
    sched = Scheduler(1e-3, clock=clock, timer=timer, freeze_gc=False)
    seen: list[tuple[int, int, int]] = []

    def tick(t: Tick) -> None:
        seen.append((t.index, t.deadline_ns, t.lateness_ns))
        clock.now += 200_000  # work: lateness + work stays under one period
        if t.index == 10_000:
            sched.stop()

    await sched.run(tick)
    idx = np.array([s[0] for s in seen])
    deadlines = np.array([s[1] for s in seen])
    assert sched.stats.ticks == 10_000 and sched.stats.overruns == 0
    np.testing.assert_array_equal(idx, np.arange(1, 10_001))
    np.testing.assert_array_equal(deadlines, t0 + idx * period_ns)  # exact: t0 + k·period, no accumulation
    lat = np.array([s[2] for s in seen])
    assert 0 <= lat.min() and lat.max() <= 300_000
    np.testing.assert_array_equal(sched.stats.lateness.values(), lat)


async def test_overrun_counts_missed_periods_and_never_bursts() -> None:
    clock = FakeClock()
    t0 = clock.now
    period_ns = 1_000_000
    timer = FakeTimer(clock)
    sched = Scheduler(1e-3, clock=clock, timer=timer, freeze_gc=False)
    ticks: list[tuple[int, int, float, int]] = []

    def tick(t: Tick) -> None:
        ticks.append((t.index, t.t_ns, t.dt_s, t.missed))
        clock.now += 3_500_000 if t.index == 5 else 100_000  # tick 5 runs 3.5 periods
        if len(ticks) == 10:
            sched.stop()

    await sched.run(tick)
    idx = [t[0] for t in ticks]
    assert idx == [1, 2, 3, 4, 5, 9, 10, 11, 12, 13]  # 6, 7, 8 skipped, no catch-up burst
    assert sched.stats.overruns == 1 and sched.stats.missed_periods == 3
    assert ticks[5][3] == 3 and all(t[3] == 0 for i, t in enumerate(ticks) if i != 5)
    wakes = np.array([t[1] for t in ticks])
    assert np.all(np.diff(wakes) >= period_ns)  # never two ticks within one period
    assert ticks[5][2] == pytest.approx(4e-3)  # the true dt across the overrun
    assert timer.deadlines[5] == t0 + 9 * period_ns
    assert sched.stats.max_work_ns == 3_500_000


async def test_async_tick_fn_and_stop_wakes_a_pending_wait() -> None:
    sched = Scheduler(10.0, freeze_gc=False)  # a 10 s period: only stop() can end the first wait
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, sched.stop)
    t = time.monotonic()
    await sched.run(lambda tick: None)
    assert time.monotonic() - t < 1.0 and sched.stats.ticks == 0


def test_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="period_s"):
        Scheduler(0.0)


async def _run_real(timer_cls: type, n: int, period_s: float) -> Scheduler:
    sched = Scheduler(period_s, timer=timer_cls(), freeze_gc=False)

    async def tick(t: Tick) -> None:
        if sched.stats.ticks >= n:
            sched.stop()

    await asyncio.wait_for(sched.run(tick), timeout=10 * n * period_s + 5)
    return sched


@pytest.mark.skipif(not timerfd_available(), reason="timerfd is Linux-only")
async def test_timerfd_1khz_smoke() -> None:
    sched = await _run_real(TimerfdTimer, 200, 1e-3)
    s = sched.stats.lateness.summary()
    assert sched.stats.ticks == 200
    assert s["p50_us"] < 300, s  # loose: shared CI machine
    assert sched.stats.lateness.values().min() >= 0  # a timerfd never fires before its deadline


async def test_loop_timer_fallback_ticks() -> None:
    sched = await _run_real(LoopTimer, 50, 2e-3)
    assert sched.stats.ticks == 50
    assert sched.stats.lateness.summary()["p50_us"] < 5_000


async def test_frame_trigger_ticks_per_frame_and_counts_coalesced_frames() -> None:
    trig = FrameTrigger()
    sched = Scheduler(1 / 120, trigger=trig, freeze_gc=False)
    seen: list[tuple[int, int]] = []

    def tick(t: Tick) -> None:
        seen.append((t.index, t.missed))
        if t.index == 3:
            trig.notify()  # two frames arrive while tick 3 runs: one of them is missed
            trig.notify()
        if t.index >= 7:
            sched.stop()

    async def frames() -> None:
        for _ in range(7):
            await asyncio.sleep(0.002)
            trig.notify()

    await asyncio.gather(sched.run(tick), frames())
    assert seen[:4] == [(1, 0), (2, 0), (3, 0), (5, 1)]
    assert sched.stats.overruns == 1 and sched.stats.missed_periods == 1
    assert sched.stats.lateness.values().min() >= 0


def test_latency_ring_wraps_and_reports_lost_samples() -> None:
    ring = LatencyRing(4)
    for v in range(10):
        ring.add(v * 1000)
    np.testing.assert_array_equal(ring.values(), [6000, 7000, 8000, 9000])
    new, lost = ring.since(3)
    assert lost == 3 and list(new) == [6000, 7000, 8000, 9000]
    new, lost = ring.since(8)
    assert lost == 0 and list(new) == [8000, 9000]
    s = summarize_ns(np.arange(1, 1001) * 1000)
    assert s["max_us"] == 1000 and s["p50_us"] == pytest.approx(500.5) and s["n"] == 1000
    assert summarize_ns(np.array([]))["p99_us"] == 0.0


def _sched() -> tuple[int, int]:
    return os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK, os.sched_getparam(0).sched_priority


def test_realtime_is_for_the_loop_thread_and_threads_it_starts_leave_it() -> None:
    before = _sched()
    with realtime(10) as fifo:
        if fifo:
            assert _sched() == (os.SCHED_FIFO, 10)
            with ThreadPoolExecutor(1) as plain:  # SCHED_RESET_ON_FORK: a new thread starts in the normal class
                assert plain.submit(_sched).result() == (os.SCHED_OTHER, 0)
        else:  # no CAP_SYS_NICE / RLIMIT_RTPRIO here: refused, logged, nothing changed
            assert _sched() == before
    assert _sched() == before
    with realtime(0) as fifo:
        assert not fifo and _sched() == before


def test_leaving_realtime_keeps_reset_on_fork_as_a_user_without_cap_sys_nice_must(monkeypatch) -> None:
    """With RLIMIT_RTPRIO alone (the systemd unit's LimitRTPRIO) the kernel refuses to clear SCHED_RESET_ON_FORK
    (EPERM): leaving must keep it. Simulated, as this rule needs a user who has no CAP_SYS_NICE."""
    state = {"policy": os.SCHED_OTHER}

    def setscheduler(pid: int, policy: int, param: os.sched_param) -> None:
        if state["policy"] & os.SCHED_RESET_ON_FORK and not policy & os.SCHED_RESET_ON_FORK:
            raise PermissionError(1, "Operation not permitted")
        state["policy"] = policy

    monkeypatch.setattr(os, "sched_getscheduler", lambda pid: state["policy"])
    monkeypatch.setattr(os, "sched_getparam", lambda pid: os.sched_param(0))
    monkeypatch.setattr(os, "sched_setscheduler", setscheduler)
    with realtime(20) as fifo:
        assert fifo and state["policy"] & ~os.SCHED_RESET_ON_FORK == os.SCHED_FIFO
    assert state["policy"] & ~os.SCHED_RESET_ON_FORK == os.SCHED_OTHER


def test_off_loop_priority_is_the_normal_class_at_its_niceness() -> None:
    with ThreadPoolExecutor(1, initializer=functools.partial(off_loop_priority, 19)) as worker:
        assert worker.submit(_sched).result() == (os.SCHED_OTHER, 0)
        assert os.getpriority(os.PRIO_PROCESS, worker.submit(threading.get_native_id).result()) == 19


def test_the_validator_process_runs_in_the_normal_class_at_its_own_niceness() -> None:
    """Nice 10, not 19 (VALIDATOR_NICE): at 19 other CPU-bound work on the edge starved validations."""
    with ProcessPoolExecutor(1, multiprocessing.get_context("spawn"), _validator_init, (os.getpid(),)) as validator:
        assert validator.submit(os.sched_getscheduler, 0).result(timeout=60) & ~os.SCHED_RESET_ON_FORK == os.SCHED_OTHER
        nice = validator.submit(os.getpriority, os.PRIO_PROCESS, 0).result(timeout=60)
    assert nice == max(VALIDATOR_NICE, os.getpriority(os.PRIO_PROCESS, 0))  # a nicer parent: never less nice
