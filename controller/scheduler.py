"""The edge loop's pacer: ticks at absolute deadlines on the monotonic clock, inside asyncio.

Deadlines are `t0 + k·period` (never `t_prev + period`, so there is no drift). After a tick that
ran past the next deadline, the missed periods are counted and the deadline moves to the next
future period — the scheduler never bursts to catch up. Every tick carries its true dt and its
lateness (wake time − deadline), which is recorded in a preallocated ring.

Pacing sources:
- `TimerfdTimer` (Linux): a timerfd armed with an absolute CLOCK_MONOTONIC deadline and watched
  with `loop.add_reader`; wakes the loop tens of µs late instead of the ~0.5 ms of `asyncio.sleep`
  (the selector's 1 ms timeout granularity). Python 3.11 has no `os.timerfd_create`, so libc via ctypes.
- `LoopTimer`: `loop.call_at` fallback where timerfd is unavailable.
- `FrameTrigger`: the device's frame stream; the driver calls `notify()` per received frame and
  the mode ticks once per frame (frames that arrive during a tick are coalesced and counted missed).
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import inspect
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterator, Protocol

from controller.latency import LatencyRing

Clock = Callable[[], int]  # ns, monotonic
log = logging.getLogger(__name__)


@contextlib.contextmanager
def realtime(priority: int) -> Iterator[bool]:
    """SCHED_FIFO at `priority` (> 0; 0: no change) for the calling thread while inside; yields whether it
    took effect. Threads and processes it starts begin in the normal class (SCHED_RESET_ON_FORK). Without
    the right (CAP_SYS_NICE, or RLIMIT_RTPRIO ≥ priority: systemd's LimitRTPRIO) nothing changes (logged)."""
    if priority <= 0:
        yield False
        return
    try:
        before = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(priority))
    except (OSError, AttributeError) as e:  # AttributeError: no sched_* outside Linux
        log.warning("real-time priority %d refused (%s): the loop runs at normal priority", priority, e)
        yield False
        return
    try:
        yield True
    finally:
        policy, param = before
        try:  # the flag kept: without CAP_SYS_NICE (RLIMIT_RTPRIO alone) the kernel refuses to clear it
            os.sched_setscheduler(0, policy | os.SCHED_RESET_ON_FORK, param)
        except OSError as e:
            log.error("leaving real-time priority %d refused (%s): this thread stays SCHED_FIFO", priority, e)


class Timer(Protocol):
    async def wait_until(self, deadline_ns: int) -> None: ...
    def wake(self) -> None: ...  # end a pending wait early (used by `Scheduler.stop`)
    def close(self) -> None: ...


class _FutureTimer:
    """A timer whose wait is one future, resolved by the subclass's wake-up source."""

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | None = None

    def _resolve(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def wake(self) -> None:
        self._resolve()

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


# --- timerfd through libc (Linux) -------------------------------------------------------------
_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.timerfd_create  # noqa: B018 — raises AttributeError where the symbol is missing
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def timerfd_available() -> bool:
    return _LIBC is not None


class TimerfdTimer(_FutureTimer):
    """One-shot absolute CLOCK_MONOTONIC timerfd, re-armed per tick, read by the event loop.

    Deadlines are in `time.monotonic_ns()` units (CLOCK_MONOTONIC on Linux)."""

    def __init__(self) -> None:
        super().__init__()
        if _LIBC is None:
            raise OSError("timerfd is not available on this platform")
        fd = _LIBC.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self._fd = fd
        self._spec = _Itimerspec()  # reused every tick: no allocation on the tick path
        self._loop: asyncio.AbstractEventLoop | None = None

    def _on_readable(self) -> None:
        try:
            os.read(self._fd, 8)  # the expiration count; reading clears readiness
        except BlockingIOError:
            return
        self._resolve()

    async def wait_until(self, deadline_ns: int) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._fd, self._on_readable)
        v = self._spec.it_value
        v.tv_sec, v.tv_nsec = divmod(deadline_ns, 1_000_000_000)
        if _LIBC.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")
        await self._wait()

    def close(self) -> None:
        if self._fd < 0:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1


class LoopTimer(_FutureTimer):
    """Portable fallback: `loop.call_at` (≈ 0.5 ms late at the median: selector granularity)."""

    def __init__(self, clock: Clock = time.monotonic_ns) -> None:
        super().__init__()
        self._clock = clock

    async def wait_until(self, deadline_ns: int) -> None:
        loop = asyncio.get_running_loop()
        handle = loop.call_later(max(0, deadline_ns - self._clock()) / 1e9, self._resolve)
        try:
            await self._wait()
        finally:
            handle.cancel()

    def close(self) -> None:
        pass


def default_timer(clock: Clock) -> Timer:
    """timerfd when it shares the clock (the default monotonic clock on Linux), else `LoopTimer`."""
    if clock is time.monotonic_ns and timerfd_available():
        return TimerfdTimer()
    return LoopTimer(clock)


class FrameTrigger(_FutureTimer):
    """Paces ticks by device frames. `notify()` is called (on the loop thread) per received frame.

    With ``fallback_s``, a wait that sees no frame for that long returns anyway (as one tick at the
    current time, counted in ``fallback_ticks``): the loop keeps ticking — and commanding the safe
    value — while the device is away, instead of stopping with its frame stream."""

    def __init__(self, clock: Clock = time.monotonic_ns, fallback_s: float | None = None) -> None:
        super().__init__()
        self._clock = clock
        self._pending = 0
        self._last_ns = 0
        self.fallback_s = fallback_s
        self.fallback_ticks = 0

    def notify(self, t_ns: int | None = None) -> None:
        self._last_ns = self._clock() if t_ns is None else t_ns
        self._pending += 1
        self._resolve()

    async def wait(self) -> tuple[int, int]:
        """(arrival time of the newest frame, frames since the previous wait); (0, 0) if woken."""
        if self._pending == 0:
            try:
                await asyncio.wait_for(self._wait(), self.fallback_s)
            except TimeoutError:
                self.fallback_ticks += 1
                return self._clock(), 1
        n, self._pending = self._pending, 0
        return self._last_ns, n

    def close(self) -> None:
        pass


def next_period(k: int, now_ns: int, t0_ns: int, period_ns: int) -> int:
    """The period after k whose deadline t0 + n·period is still in the future at now_ns (n > k):
    k + 1 on time, later after an overrun (the skipped ones are missed, never run in a burst)."""
    return max(k + 1, (now_ns - t0_ns) // period_ns + 1)


# --- the scheduler ----------------------------------------------------------------------------
@dataclass(slots=True)
class Tick:
    """What a tick knows about itself. One instance is reused: do not keep it past the tick."""

    index: int = 0  # period number k (deadline = t0 + k·period), or frame count when frame-paced
    deadline_ns: int = 0
    t_ns: int = 0  # wake time
    lateness_ns: int = 0  # t_ns − deadline_ns
    dt_s: float = 0.0  # true time since the previous tick's wake (the nominal period on tick 1)
    missed: int = 0  # periods (frames) skipped just before this tick


@dataclass
class SchedulerStats:
    ticks: int = 0
    overruns: int = 0  # ticks after which at least one period (frame) had to be skipped
    missed_periods: int = 0
    last_tick_ns: int = 0  # wake time of the latest tick (0 before the first)
    max_work_ns: int = 0  # longest tick body
    lateness: LatencyRing = field(default_factory=LatencyRing)


TickFn = Callable[[Tick], None] | Callable[[Tick], Awaitable[None]]


class Scheduler:
    """`await Scheduler(period_s).run(tick_fn)` until `stop()`; `stats` is live.

    `trigger` paces by device frames instead of the timer (period_s is then the nominal frame
    period, used for the first tick's dt). `tick_fn` may be sync or async; its exceptions end `run`.
    `run` tunes the process for the loop: `gc.freeze()` after start-up and a short GIL switch
    interval (both process-wide; pass freeze_gc=False / switch_interval_s=None to leave them).
    """

    def __init__(self, period_s: float, clock: Clock = time.monotonic_ns, timer: Timer | None = None,
                 trigger: FrameTrigger | None = None, lateness_capacity: int = 1 << 16,
                 freeze_gc: bool = True, switch_interval_s: float | None = 1e-4) -> None:
        if not period_s > 0:
            raise ValueError(f"period_s must be positive, got {period_s}")
        self.period_ns = round(period_s * 1e9)
        self.clock = clock
        self.timer = trigger if trigger is not None else (timer or default_timer(clock))
        self.trigger = trigger
        self.freeze_gc = freeze_gc
        self.switch_interval_s = switch_interval_s
        self.stats = SchedulerStats(lateness=LatencyRing(lateness_capacity))
        self._running = False

    def stop(self) -> None:
        self._running = False
        self.timer.wake()

    async def run(self, tick_fn: TickFn) -> None:
        is_async = inspect.iscoroutinefunction(tick_fn)
        if self.freeze_gc:  # start-up garbage is done: keep the collector's old generations off the tick path
            gc.collect()
            gc.freeze()
        if self.switch_interval_s is not None:
            # a helper thread (recorder writer, metrics server) holding the GIL when the timer fires
            # delays the tick until the interpreter forces a switch: 5 ms by default
            sys.setswitchinterval(self.switch_interval_s)
        self._running = True
        try:
            if self.trigger is None:
                await self._run_timer(tick_fn, is_async)
            else:
                await self._run_frames(tick_fn, is_async)
        finally:
            self._running = False
            self.timer.close()

    async def _tick(self, tick: Tick, tick_fn: TickFn, is_async: bool, now: int) -> int:
        """Account for and run one tick woken at `now`; returns the clock at its end."""
        st = self.stats
        tick.dt_s = (now - st.last_tick_ns) / 1e9 if st.ticks else self.period_ns / 1e9
        tick.t_ns = now
        tick.lateness_ns = now - tick.deadline_ns
        st.lateness.add(tick.lateness_ns)
        st.ticks += 1
        st.last_tick_ns = now
        if is_async:
            await tick_fn(tick)
        else:
            tick_fn(tick)
        end = self.clock()
        st.max_work_ns = max(st.max_work_ns, end - now)
        return end

    async def _run_timer(self, tick_fn: TickFn, is_async: bool) -> None:
        st, period, clock = self.stats, self.period_ns, self.clock
        t0 = clock()
        tick = Tick()
        k = 1
        while self._running:
            deadline = t0 + k * period
            await self.timer.wait_until(deadline)
            if not self._running:
                break
            tick.index, tick.deadline_ns = k, deadline
            end = await self._tick(tick, tick_fn, is_async, clock())
            nxt = next_period(k, end, t0, period)
            tick.missed = nxt - k - 1
            if tick.missed:
                st.overruns += 1
                st.missed_periods += tick.missed
            k = nxt

    async def _run_frames(self, tick_fn: TickFn, is_async: bool) -> None:
        st, trigger = self.stats, self.trigger
        assert trigger is not None
        tick = Tick()
        while self._running:
            t_frame, n = await trigger.wait()
            if not self._running or n == 0:
                continue
            tick.missed = n - 1
            if tick.missed:
                st.overruns += 1
                st.missed_periods += tick.missed
            tick.index += n
            tick.deadline_ns = t_frame
            await self._tick(tick, tick_fn, is_async, self.clock())
