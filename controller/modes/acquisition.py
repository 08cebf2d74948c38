"""What every session mode (controller/modes/base.py) shares: the acquisition loop and the push ops.

``AcquisitionLoop``: one acquisition, step by step:
  prepare (home) → [the latest reconstruction, when the decision needs it] → decide (policy: next target,
  stop?) → the safety gate → move and wait in position (a moving axis is never commanded) → acquire →
  record the step → update the reconstruction off the loop (a worker thread; the previous update is awaited
  first, so updates stay in order and overlap the next move) → next step, until the decision stops or
  ``max_steps``; then the last update. ``abort()`` from another task cancels the step in flight, halts the
  actuators and returns once they rest; a device error halts them too and propagates. The policy is read at
  each decision, so a swap applies at the next decision boundary. An application fills in the hooks
  (controller/modes/ct/angles.py: decide = the angle policy, update = SIRT).

``AcquisitionSession``: the push ops ``scan`` (one acquisition per request, its summary as the reply) and
``abort`` (halt the one in flight, reply once the actuators rest), refusals (busy, held, device down, device
error), and the abort/hold path that must not hang on a request stuck outside its acquisition. A subclass
supplies ``acquire(header)`` (prepare the sample, run the acquisition, summarise it), ``running`` and
``stop()``, and its timing knobs.
"""
from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from controller.link.push_wire import PushHeader, SampleSpec
from controller.modes.base import ModeHost, PushOp, SessionMode
from controller.protocol.framing import Message

if TYPE_CHECKING:
    from controller.policy.runtime import RecurrentPolicy
    from controller.policy.slot import PolicySlot

log = logging.getLogger("edgetune.daemon")

T = TypeVar("T")
ABORT_TIMEOUT_S = 60.0  # an abort waits this long for the halted step to end (each of its requests has its own)
DECISION_DRAIN_S = 5.0  # an abandoned decision's thread is waited for this long before its state is restored
R = TypeVar("R", bound="AcquisitionResult")


async def drained_thread(fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> T:
    """``fn(*args)`` in a worker thread, awaited within ``timeout_s``; when the wait ends without its result (an
    abort's cancellation, the timeout) the thread is waited for (up to DECISION_DRAIN_S) before the exception goes
    on, so that it cannot touch a policy's state after its scan has moved on."""
    thread = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        async with asyncio.timeout(timeout_s):
            return await asyncio.shield(thread)
    except BaseException:
        await asyncio.wait({thread}, timeout=DECISION_DRAIN_S)
        raise


@dataclass
class AcquisitionResult:
    """What every acquisition reports; an application's result adds its per-step records."""

    reconstruction: Any = None  # the latest finished reconstruction (None before the first)
    stopped_by: str | None = None  # "policy", "max_steps" (the application may name it) or "aborted"
    timings: dict[str, list[float]] = field(default_factory=dict)  # per step [s]: decide, move, acquire, …
    total_s: float = 0.0
    policy_faults: int = 0  # decisions where the policy failed and the application's fallback was used


class Aborted(Exception):
    """``abort()`` fired while a step was in flight."""


class AcquisitionLoop(ABC, Generic[R]):
    """The shared loop (module doc). ``await run()`` (one at a time); ``await abort()`` from another task."""

    max_steps: int
    gate: Any  # controller.safety.StageGate: every move target passes it
    position: float = 0.0  # where the actuators rest (after prepare, after each move)
    slot: PolicySlot | None = None  # the daemon's policy slot (AcquisitionSession sets it): decisions run under its guard

    def __init__(self) -> None:
        self._abort = asyncio.Event()
        self._done: asyncio.Event | None = None

    @property
    def running(self) -> bool:
        return self._done is not None and not self._done.is_set()

    # -- the hooks -------------------------------------------------------------------------------

    @abstractmethod
    def new_result(self) -> R: ...

    @abstractmethod
    async def prepare(self) -> None:
        """Bring the actuators to their start (home) and set ``position``."""

    @abstractmethod
    def begin_step(self) -> bool:
        """Fix the policy for this step's decision (a swap applies from the next); True when the decision
        reads the latest reconstruction (else the update overlaps the move)."""

    @abstractmethod
    async def decide(self, step: int, reconstruction: Any, res: R) -> tuple[float, bool]:
        """(next target, stop after it); never raises for a policy failure (it falls back)."""

    @abstractmethod
    async def move(self, target: float) -> None:
        """Command a resting axis to ``target`` and return once it is in position there."""

    @abstractmethod
    async def measure(self) -> Any:
        """Acquire one measurement at the current position."""

    @abstractmethod
    def record(self, res: R, target: float, measurement: Any) -> None:
        """The step's records (raise ValueError for a measurement that does not fit)."""

    @abstractmethod
    def update(self, res: R, reconstruction: Any) -> Callable[[], Any]:
        """A function (run in a worker thread) that returns the reconstruction updated with every step so far."""

    @abstractmethod
    async def halt(self) -> None:
        """Stop the actuators and wait until they rest (best effort: never raises)."""

    def stop_reason(self, stopped: bool) -> str:
        return "policy" if stopped else "max_steps"

    def finish(self) -> None:
        """After every acquisition (aborted or failed too): drop what waits for the device."""

    # -- the loop --------------------------------------------------------------------------------

    async def run(self) -> R:
        """One acquisition (module doc). Device errors (Nak, timeouts) halt the actuators and propagate."""
        if self.running:
            raise RuntimeError("an acquisition is already running")
        self._abort.clear()
        self._done = asyncio.Event()
        res = self.result = self.new_result()
        t0 = time.perf_counter()
        try:
            await self.guard(self.prepare())
            await self._steps(res)
        except Aborted:
            res.stopped_by = "aborted"
            await self.halt()
        except BaseException:
            await asyncio.shield(self.halt())
            raise
        finally:
            res.total_s = time.perf_counter() - t0
            self.finish()
            self._done.set()
        return res

    async def abort(self, timeout_s: float = ABORT_TIMEOUT_S) -> None:
        """Stop the acquisition in flight: the pending step is cancelled, the actuators halted; returns when
        they rest and no command is outstanding (or after ``timeout_s``, logged). A no-op when none runs."""
        if self.running:
            self._abort.set()
            try:
                await asyncio.wait_for(self._done.wait(), timeout_s)  # type: ignore[union-attr]
            except TimeoutError:
                log.error("abort: the acquisition did not come to rest within %g s", timeout_s)

    async def _steps(self, res: R) -> None:
        image: Any = self.new_reconstruction()
        pending: asyncio.Future[Any] | None = None
        for k in range(self.max_steps):
            if self.begin_step() and pending is not None:
                image, pending = await self.guard(pending), None
            target, stop = await self.guard(self.decide(k, image, res))
            stop = stop or k + 1 == self.max_steps  # the last step always stops
            target = self.gate(target, self.position, time.monotonic())
            await self._timed(res, "move", self.move(target))
            measurement = await self._timed(res, "acquire", self.measure())
            self.record(res, target, measurement)
            if pending is not None:  # the previous update ran while the axis moved
                image = await self.guard(pending)
            pending = asyncio.ensure_future(asyncio.to_thread(self.update(res, image)))
            res.reconstruction = image  # the latest finished reconstruction, until the update lands
            if stop:
                res.stopped_by = self.stop_reason(k + 1 < self.max_steps)
                break
        if pending is not None:
            res.reconstruction = await self.guard(pending)

    def new_reconstruction(self) -> Any:
        """The reconstruction before the first measurement (x̂_1)."""
        return None

    async def decision(self, policy: RecurrentPolicy, decide: Callable[..., T | None], args: tuple, budget_s: float,
                       what: str) -> T | None:
        """``policy``'s ``decide(*args)`` in a worker thread — under the slot's run-time guard when the mode has a
        slot, else within ``budget_s`` — or None when it failed (an error, over its budget, non-finite: logged;
        through the slot, counted and settled there). The policy keeps the recurrent state it had before a failed
        or abandoned decision. Never raises but CancelledError (abort), and then only once the
        decision's thread has ended: no decision outlives its scan or touches the next one's state."""
        before = policy.state()
        slot = self.slot
        call = (slot.guarded, decide) if slot is not None else (decide,)
        try:
            out = await drained_thread(*call, *args, timeout_s=None if slot is not None else budget_s)
        except (Exception, asyncio.CancelledError) as e:  # the budget (no slot), onnxruntime's errors, an abort
            policy.restore(before)
            if isinstance(e, asyncio.CancelledError):
                raise
            log.warning("%s policy %s failed: %r", what, policy.version, e)
            return None
        if slot is None:
            return out
        value, failure, detail = out
        if failure is None and value is None:
            failure, detail = "non_finite_output", f"{what} outputs not finite"
        if failure is not None:
            policy.restore(before)  # e.g. over its budget: the fallback decides, the state stays as it was
            slot.settle(policy, failure, detail)
            return None
        return value

    async def _timed(self, res: R, what: str, aw: Awaitable[T]) -> T:
        t = time.perf_counter()
        out = await self.guard(aw)
        res.timings.setdefault(what, []).append(time.perf_counter() - t)
        return out

    async def guard(self, aw: Awaitable[T]) -> T:
        """Await ``aw`` unless abort() fires first; then cancel it and raise Aborted."""
        task = asyncio.ensure_future(aw)
        aborted = asyncio.ensure_future(self._abort.wait())
        try:
            await asyncio.wait({task, aborted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            aborted.cancel()
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise Aborted


HELD = {"accepted": False, "reason": "held", "detail": "operator hold: scans resume after `edgetune link resume`"}


class Held(Exception):
    """The operator held the daemon while the acquisition was being prepared."""


class AcquisitionSession(SessionMode):
    """The push ops of an acquiring mode (module doc) around its acquisition loop ``mode``.

    An application supplies the loop, the device's stage-status messages (``STAGE_STATUS``: request, reply
    type), ``sample_message`` (the device command that puts a requested sample on the stage) and ``details``
    (its own fields of the scan's reply)."""

    OPS = ("scan", "abort")
    STAGE_STATUS: tuple[type, type]

    def __init__(self, host: ModeHost, mode: AcquisitionLoop, poll_s: float, abort_timeout_s: float,
                 request_timeout_s: float) -> None:
        self.host, self.poll_s, self.abort_timeout_s = host, poll_s, abort_timeout_s
        self.request_timeout_s = request_timeout_s
        self.mode = mode
        self.mode.slot = host.slot  # decisions run under the slot's run-time guard
        self.gate = mode.gate
        self.scans_dir = Path(host.cfg.recorder.path).parent / "scans"
        self.scans = 0
        self.outcome = "idle"  # how the last scan ended: "done", "aborted" or "failed" (EPICS ScanState-RB)
        self.last_summary: dict[str, Any] = {}  # the last scan's reply ({"error": …} when it failed)
        self._scan_lock = asyncio.Lock()  # held from a scan request to its reply

    @property
    def running(self) -> bool:
        """An acquisition is in flight."""
        return self.mode.running

    async def stop(self) -> None:
        """Abort the acquisition in flight; returns when the actuators rest."""
        await self.mode.abort()

    def boundary(self) -> None:
        """Apply a requested swap or rollback (the next decision uses the new policy)."""
        slot = self.host.slot
        if slot is not None and slot.boundary():
            self.mode.policy = slot.active

    @abstractmethod
    def progress(self) -> tuple[str, int]:
        """The status' count of the running scan's steps: (its key, the count so far)."""
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        key, done = self.progress()
        return {"scanning": self._scan_lock.locked(), key: done if self.mode.running else 0, "scans": self.scans,
                "device_up": self.host.driver.connected}

    @abstractmethod
    def sample_message(self, sample: SampleSpec) -> Message:
        """The device command that puts the requested sample on the stage."""

    @abstractmethod
    def details(self, res: Any, stage: Any) -> dict[str, Any]:
        """The application's fields of a scan's reply (result ``res``, the stage's status after it)."""

    async def acquire(self, header: PushHeader) -> dict[str, Any]:
        """Put the requested sample on, run one acquisition (Held when held before it starts), save the final
        reconstruction as <recorder dir>/scans/scan-<session>-<n>.npy, record and reply with its summary."""
        driver = self.host.driver
        if header.sample is not None:
            await driver.command(self.sample_message(header.sample), self.request_timeout_s)
        self.held_check()  # held while the sample was put on the stage; nothing awaits from here to the scan
        res = await self.mode.run()
        self.scans += 1
        path = await asyncio.to_thread(self._save, res)  # saved before anything else can fail
        stage = await driver.query(self.STAGE_STATUS[0](), self.STAGE_STATUS[1], self.request_timeout_s)
        status = await driver.status()
        summary = {"scan": self.scans, **self.details(res, stage), "stopped_by": res.stopped_by,
                   "reconstruction": path, "policy_faults": res.policy_faults, "total_s": round(res.total_s, 4),
                   "timings_s": {k: round(sum(v), 4) for k, v in res.timings.items()},
                   "device": {"busy_refused": stage.busy_refused, "cmd_rejected": status.cmd_rejected,
                              "naks": driver.stats.naks, "lost_replies": driver.stats.lost_replies}}
        self.host.record("scan", {**summary, "timings": res.timings},
                         images=self.images(res) if self.host.wants_images else None)
        log.info("scan %d: stopped by %s after %.2f s", self.scans, res.stopped_by, res.total_s)
        return summary

    def images(self, res: Any) -> dict[str, np.ndarray]:
        """The scan's images for the live documents (controller/documents.py), which the recorder does not keep:
        the final reconstruction; an application adds its detector's per-step images."""
        return {} if res.reconstruction is None else {"reconstruction": res.reconstruction}

    def _save(self, res: AcquisitionResult) -> str | None:
        if res.reconstruction is None:
            return None
        self.scans_dir.mkdir(parents=True, exist_ok=True)
        path = self.scans_dir / f"scan-{self.host.session}-{self.scans:04d}.npy"
        np.save(path, res.reconstruction)
        return str(path)

    def ops(self) -> dict[str, PushOp]:
        return {"scan": self._scan_op, "abort": self._abort_op}

    def held_check(self) -> None:
        if self.host.held:
            raise Held

    async def _scan_op(self, header: PushHeader) -> dict[str, Any]:
        if self._scan_lock.locked():
            return {"accepted": False, "reason": "busy", "detail": "a scan is running"}
        async with self._scan_lock:
            if self.host.held:
                return HELD
            if not self.host.driver.connected:
                return {"accepted": False, "reason": "device_down", "detail": f"no device on {self.host.cfg.device.port}"}
            try:
                summary = await self.acquire(header)
            except Held:
                return HELD
            except (TimeoutError, ValueError) as e:  # Nak, lost device, a command the gate refused
                detail = str(e) or type(e).__name__  # a bare timeout says nothing else
                log.warning("scan failed: %s", detail, exc_info=not str(e))
                self.host.record("scan", {"error": detail})
                self.outcome, self.last_summary = "failed", {"error": detail}
                return {"accepted": False, "reason": "device_error", "detail": detail}
            self.outcome = "aborted" if summary["stopped_by"] == "aborted" else "done"
            self.last_summary = summary
            return {"accepted": True, "reason": "scanned", **summary}

    async def _abort_op(self, header: PushHeader) -> dict[str, Any]:
        return {"accepted": True, "reason": "aborted" if await self.abort("abort") else "idle"}

    async def abort(self, by: str) -> bool:
        """Halt the scan in flight (if any) and wait until the stage rests; True when one was running."""
        deadline = time.monotonic() + self.abort_timeout_s
        while self._scan_lock.locked() and not self.running:  # a scan op before or after its scan (ms)
            if time.monotonic() > deadline:  # e.g. saving a reconstruction to storage that does not answer
                log.error("%s: the scan request did not reach or leave its scan within %g s (move_timeout_s); "
                          "aborting what runs now", by, self.abort_timeout_s)
                break
            await asyncio.sleep(self.poll_s)
        running, scan = self.running, self.scans + 1  # the number of the scan in flight
        await self.stop()
        if running:
            self.host.record("abort", {"scan": scan, "by": by})
        return running

    async def actuators_safe(self) -> None:
        await self.stop()  # the stage rests before anything goes down

    def stop_details(self) -> dict[str, Any]:
        return {"scans": self.scans}
