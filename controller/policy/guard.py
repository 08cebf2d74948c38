"""Run-time containment of policies: every inference on a decision path runs under a guard.

`InferenceWatchdog.call(fn, *args, budget_s=, deadline_s=)` (in the thread that decides; one call at a time)
runs `fn(*args, run_options=...)`, times it and never raises; what went wrong comes back as a `Failure`:

  runtime_error       the call raised (onnxruntime: an index out of range inside the graph, ...)
  runtime_overrun     its CPU time exceeded the budget (CPU time of the calling thread: onnxruntime runs a
                      one-intra-op-thread session there, and a call the machine preempted is not the model's fault)
  runtime_terminated  its CPU time ran past the deadline (the calling thread's CPU clock, read by the watchdog
                      thread: preemption on a loaded edge never ends a good policy) and the watchdog ended it
                      with onnxruntime's `RunOptions.terminate`

The budget is the configured one the slot was built with — `[policy] max_inference_fraction` of the tick
period (rl-pid), one exposure (angles) — not the latency the validator measured for this model: a measured
latency is noisy (probe inputs, a loaded machine, the validator's own process) and would make the limit vary
from push to push, while the fixed budget is what the loop can afford; the validator refuses a model whose
median probe inference (CPU time as well: `on_cpu_clock`) exceeds that same budget.

`run_with_iobinding` and `run` release the GIL, so the watchdog thread runs while the model does; onnxruntime
checks the flag before each node, and a Loop node in each iteration (onnxruntime 1.32, a 2-core VM: calls of
a 1.2 s Loop with an 8.3 ms deadline ended after 9.0 ms, median of 30, at most 10.4 ms). A single long node is
not interrupted: the call then ends with that node, counted as over budget. The slot (controller/policy/slot.py) turns a failure into the mode's
fallback for that decision, counts it, logs it (`controller.ratelog.RateLimitedLog`), and quarantines the policy after
`RuntimeLimits.max_failures` within `window_s` (`FailureWindow`).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Literal, TypeVar

import onnxruntime as ort

T = TypeVar("T")
Failure = Literal["runtime_error", "runtime_overrun", "runtime_terminated", "non_finite_output"]


def on_cpu_clock(fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    """(fn(*args), CPU seconds the calling thread spent in it): how inference time is judged everywhere (the
    guard's budget, the validators' median), so that a loaded machine does not make a good model too slow."""
    t = time.thread_time()
    out = fn(*args)
    return out, time.thread_time() - t


@dataclass(frozen=True)
class RuntimeLimits:
    """[policy] runtime_*: a policy with `max_failures` failures within `window_s` is quarantined (0: never);
    a call is ended after `terminate_factor` × the slot's budget."""

    max_failures: int = 3
    window_s: float = 10.0
    terminate_factor: float = 4.0


class InferenceWatchdog:
    """Times inference calls and ends one that runs past its deadline (module doc). The watchdog thread starts
    with the first call and sleeps on a condition between calls."""

    def __init__(self) -> None:
        self.run_options = ort.RunOptions()
        self.run_options.log_severity_level = 4  # fatal only: onnxruntime would print every failure to stderr
        # no graph capture (the CPU provider has none); unset, onnxruntime's Python wrapper looks this key up on
        # every run through a C++ exception (≈ 40 µs with onnxruntime 1.32)
        self.run_options.add_run_config_entry("gpu_graph_id", "-1")
        self._cond = threading.Condition(threading.Lock())
        self._calls = threading.Lock()  # one call at a time (angles: an aborted decision may still be running)
        self._deadline: float | None = None  # of the call in flight, on the calling thread's CPU clock
        self._cpu_clock = time.CLOCK_THREAD_CPUTIME_ID
        self._fired = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def call(self, fn: Callable[..., T], *args: Any, budget_s: float,
             deadline_s: float) -> tuple[T | None, Failure | None, str]:
        """(output, None, "") or (None, failure, detail)."""
        with self._calls:
            self._arm(deadline_s)
            t_wall, t_cpu = time.perf_counter(), time.thread_time()
            try:
                out = fn(*args, run_options=self.run_options)
            except Exception as e:  # onnxruntime raises RuntimeError, Fail, ... : any is this call's failure
                fired = self._disarm()
                wall_s = time.perf_counter() - t_wall
                if fired:
                    return None, "runtime_terminated", f"ended after {wall_s * 1e3:.1f} ms (deadline {deadline_s * 1e3:.1f} ms of CPU)"
                return None, "runtime_error", f"{type(e).__name__}: {str(e)[:300]}"
            cpu_s = time.thread_time() - t_cpu
            self._disarm()  # a flag set just after the last node changes nothing: judged by its CPU time
        if cpu_s > budget_s:
            return None, "runtime_overrun", f"{cpu_s * 1e6:.0f} µs of CPU > budget {budget_s * 1e6:.0f} µs"
        return out, None, ""

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _arm(self, deadline_s: float) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="policy-watchdog", daemon=True)
                self._thread.start()
            self.run_options.terminate = False
            self._fired = False
            # CPU time of the calling thread: a call the machine merely preempts is never ended (on a loaded
            # edge a good policy would otherwise be ended and quarantined); one that computes too long is
            self._cpu_clock = time.pthread_getcpuclockid(threading.get_ident())
            self._deadline = time.clock_gettime(self._cpu_clock) + deadline_s
            self._cond.notify()

    def _disarm(self) -> bool:
        """Whether the watchdog ended the call."""
        with self._cond:
            self._deadline = None
            return self._fired

    def _watch(self) -> None:
        with self._cond:
            while not self._closed:
                if self._deadline is None:
                    self._cond.wait()
                elif (left := self._deadline - time.clock_gettime(self._cpu_clock)) > 0:
                    self._cond.wait(left)  # CPU time runs no faster than the wall clock: check again then
                else:
                    self.run_options.terminate = True
                    self._fired, self._deadline = True, None


class FailureWindow:
    """Failure times of one policy: `add` says when `limit` of them fall within `window_s` (limit 0: never)."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self._times: deque[float] = deque()

    def add(self, t_s: float) -> bool:
        self._times.append(t_s)
        while self._times[0] <= t_s - self.window_s:
            self._times.popleft()
        return 0 < self.limit <= len(self._times)
