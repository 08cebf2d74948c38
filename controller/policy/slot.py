"""The policy slot: validated ONNX policies, swapped only at tick boundaries (ARCHITECTURE "Policy swap").

Off the tick path, in a validator process (spawned, nice 10: ``VALIDATOR_NICE``): manifest (controller.policy.manifest) and
sha256 → task and shapes against the mode's `PolicySpec` → onnxruntime session (one intra-op thread,
sequential, so it never competes with the loop) → the graph's I/O names and shapes → probes on fixed
inputs: finite, inside the manifest's action bounds, median inference time under the budget. A process,
not a thread: the probes are Python work that would hold the loop's GIL for milliseconds, and a model
that crashes onnxruntime kills the validator, not the daemon. Only then does a worker thread open (and
warm up) the model in the daemon. A mode may bring its own `validator` and `opener` (angles mode: its
policy's contract and a decision within one exposure). On the tick path: `boundary()`
applies a requested swap or rollback, `infer()` runs the active policy on a preallocated binding. The
previous policy stays loaded, so a rollback is a reference swap. The validator process dies with the
daemon, however the daemon ends (`die_with_parent`).

At run time every decision goes through `guarded()` (controller/policy/guard.py: timed against the budget,
ended by a watchdog thread far past it, never raising) and, when it failed, `settle()`: the mode falls back
for that decision (error, over budget, ended, non-finite output), the failure is counted under its name and
logged (rate-limited), and the `limits.max_failures`-th within `limits.window_s` quarantines the policy:
taken out of the slot at once (the previous policy becomes active, or the mode's fallback runs; it is not
kept as previous), counted, and posted to `on_quarantine` (the push server records it and, in the slot's
worker thread, lists it in `quarantine.json` in the policy directory and rewrites `active`, so that a
restart does not bring it back).
"""
from __future__ import annotations

import asyncio
import errno
import functools
import json
import logging
import multiprocessing
import os
import statistics
import tempfile
import time
from collections import Counter
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal, TypeVar

import numpy as np

from controller.lifeline import die_with_parent, off_loop_priority
from controller.policy.guard import Failure, FailureWindow, InferenceWatchdog, RuntimeLimits, on_cpu_clock
from controller.policy.manifest import MANIFEST_NAME, MODEL_NAME, Manifest, ManifestError, parse_manifest
from controller.policy.runtime import LoadedPolicy, PolicyRejected, check_graph_io, load_for_task, open_session
from controller.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

T = TypeVar("T")
PROBES = 64  # fixed probe inputs per validation
TIMED_RUNS = 21  # single-sample runs timed for the latency check
BOUNDS_RTOL = 1e-5  # float32 slack on the manifest's action bounds


@dataclass(frozen=True)
class PolicySpec:
    """What a mode accepts: its task, observations as k steps of `obs_step` values, `act_dim` actions, and
    (when given: the task's spec module) the units of one step's values and of the actions."""

    task: str
    obs_step: int
    act_dim: int
    max_steps: int  # the longest history (k) the mode keeps
    obs_units: tuple[str, ...] | None = None
    act_units: tuple[str, ...] | None = None


def _probe_inputs(m: Manifest, seed: int = 0) -> np.ndarray:
    """Fixed probes in raw units: the normalisation mean, ±3σ corners and seeded draws within 3σ (no
    normalisation: mean 0, σ 1)."""
    obs = m.observation
    norm = obs.normalisation
    mean = np.broadcast_to(norm.mean if norm else 0.0, (obs.size,))
    std = np.broadcast_to(norm.std if norm else 1.0, (obs.size,))
    z = np.random.default_rng(seed).uniform(-3.0, 3.0, (PROBES, obs.size))
    z[0], z[1], z[2] = 0.0, 3.0, -3.0
    return (mean + z * std).astype(np.float32)


def _open(directory: Path, spec: PolicySpec) -> LoadedPolicy:
    """The artifact's session, with manifest, shapes and graph I/O checked against `spec`; raises PolicyRejected."""
    manifest, model = load_for_task(directory, spec.task)
    try:
        obs, act = manifest.observation, manifest.action
    except ManifestError as e:
        raise PolicyRejected("wrong_shape", str(e)) from None
    (obs_dim,), (act_dim,) = (obs.shape, act.shape) if len(obs.shape) == len(act.shape) == 1 else ((0,), (0,))
    if obs_dim % spec.obs_step or not 1 <= obs_dim // spec.obs_step <= spec.max_steps or act_dim != spec.act_dim:
        raise PolicyRejected("wrong_shape", f"manifest says obs {obs.shape} action {act.shape}; this mode takes "
                                            f"obs (k·{spec.obs_step},) with 1 ≤ k ≤ {spec.max_steps}, action ({spec.act_dim},)")
    k = obs_dim // spec.obs_step
    for what, units, want in (("obs", obs.units, spec.obs_units and spec.obs_units * k),
                              ("action", act.units, spec.act_units)):
        if want is not None and tuple(units) * (len(want) // len(units)) != tuple(want):
            raise PolicyRejected("wrong_shape", f"manifest's {what} units {units[:12]} are not this mode's {want[:12]}")
    session = open_session(model)
    check_graph_io(session, {obs.name: obs.shape} | {s.name: s.shape for s in manifest.state},
                   {act.name: act.shape} | {s.next: s.shape for s in manifest.state})
    policy = LoadedPolicy(manifest, directory, session)
    policy.steps = k
    return policy


def validate(directory: Path, spec: PolicySpec, budget_s: float) -> LoadedPolicy:
    """Check an installed artifact and build its session; raises PolicyRejected (blocking: call off the loop)."""
    policy = _open(directory, spec)
    probes = _probe_inputs(policy.manifest)
    policy.latency_us = _median_latency_us(policy, probes[0], budget_s)  # first: a slow model is refused quickly
    _probe(policy, policy.manifest, probes)
    return policy


def validated_latency_us(directory: Path, spec: PolicySpec, budget_s: float) -> float:
    """`validate` for the validator process: what comes back is the inference time (sessions do not pickle)."""
    return validate(directory, spec, budget_s).latency_us


def open_validated(directory: Path, latency_us: float, spec: PolicySpec) -> LoadedPolicy:
    """Open an artifact the validator process accepted (installs are immutable; manifest and sha256 re-checked),
    warmed up here so that its first-run allocations do not land on a tick."""
    policy = _open(directory, spec)
    _run_probe(policy, _probe_inputs(policy.manifest)[0])
    policy.reset()
    policy.latency_us = latency_us
    return policy


def _run_probe(policy: LoadedPolicy, obs: np.ndarray) -> np.ndarray:
    try:
        return policy.run(obs)
    except Exception as e:  # a graph that fails at run time (inconsistent shapes inside, ...)
        raise PolicyRejected("corrupt_model", f"inference failed on a probe: {str(e)[:300]}") from None


def _probe(policy: LoadedPolicy, m: Manifest, probes: np.ndarray) -> None:
    low, high = np.asarray(m.action.low), np.asarray(m.action.high)
    slack = BOUNDS_RTOL * np.maximum(np.abs(low), np.abs(high)) + 1e-6
    for obs in probes:
        a = _run_probe(policy, obs).astype(np.float64)
        if not np.all(np.isfinite(a)):
            raise PolicyRejected("non_finite", f"output {a.tolist()} on probe input {obs.tolist()[:6]}…")
        if np.any(a < low - slack) or np.any(a > high + slack):
            raise PolicyRejected("out_of_bounds", f"output {a.tolist()} outside the manifest's bounds [{m.action.low}, {m.action.high}]")


def _median_latency_us(policy: LoadedPolicy, obs: np.ndarray, budget_s: float) -> float:
    """Median single-sample inference time (CPU time: guard.on_cpu_clock); gives up early on a model that is clearly too slow."""
    _run_probe(policy, obs)  # warm-up (first-run allocations)
    times: list[float] = []
    for _ in range(TIMED_RUNS):
        times.append(on_cpu_clock(policy.run, obs)[1])
        if len(times) >= 3 and min(times) > budget_s:
            break
    median = statistics.median(times)
    if median > budget_s:
        raise PolicyRejected("too_slow", f"median inference {median * 1e6:.0f} µs > budget {budget_s * 1e6:.0f} µs")
    return median * 1e6


def install(directory: Path, manifest_bytes: bytes, model_bytes: bytes) -> Path:
    """Write an artifact atomically into `directory/<version>-<sha12>/` (temp dir, fsync, rename);
    existing versions are kept, and an identical one already there is reused. Raises PolicyRejected."""
    try:
        m = parse_manifest(manifest_bytes)
    except ManifestError as e:
        raise PolicyRejected("bad_manifest", str(e)) from None
    dest = directory / f"{m.version}-{m.sha256[:12]}"  # the manifest allows only a safe version (controller.policy.manifest)
    if dest.is_dir():
        return dest
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=directory, prefix=".incoming-"))
        for fname, data in ((MODEL_NAME, model_bytes), (MANIFEST_NAME, manifest_bytes)):
            _write_synced(tmp / fname, data)
        try:
            os.rename(tmp, dest)
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):  # else: a concurrent install won the race
                raise
        _fsync_dir(directory)
    except OSError as e:
        raise PolicyRejected("install_failed", f"cannot install into {directory}: {e}") from None
    return dest


ACTIVE_FILE = "active"  # in the policy directory: the installed version that is active, for a restart


def remember_active(directory: Path, policy: LoadedPolicy | None) -> None:
    """Record atomically which installed version is active (none: the file goes), so that a restarted
    daemon brings it back (`remembered_active`)."""
    path = directory / ACTIVE_FILE
    if policy is None:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(".active.tmp")
    _write_synced(tmp, policy.path.name.encode())
    os.replace(tmp, path)
    _fsync_dir(directory)


def remembered_active(directory: Path) -> Path | None:
    """The installed artifact that was active when the daemon last ran, if it is still there (a damaged
    record, or one that names anything but a version folder in `directory`, is ignored)."""
    try:
        name = (directory / ACTIVE_FILE).read_text("utf-8").strip()
    except (OSError, ValueError):
        return None
    ok = name and not name.startswith(".") and Path(name).name == name and (directory / name).is_dir()
    return directory / name if ok else None


QUARANTINE_FILE = "quarantine.json"  # in the policy directory: installed versions a restart must not bring back


@dataclass(frozen=True)
class Quarantine:
    """A policy taken out of service for its run-time failures; `name` (its install folder, version-sha12)
    is the key, so another artifact of the same version is not affected."""

    version: str
    name: str
    reason: str
    at: str  # UTC, ISO 8601

    def public(self) -> dict[str, str]:
        return {"version": self.version, "reason": self.reason, "at": self.at}


def write_quarantine(directory: Path, entries: list[Quarantine]) -> None:
    """Record the quarantined versions atomically (none: the file goes)."""
    path = directory / QUARANTINE_FILE
    if not entries:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(".quarantine.tmp")
    _write_synced(tmp, json.dumps({"quarantined": [asdict(q) for q in entries]}, indent=1).encode())
    os.replace(tmp, path)
    _fsync_dir(directory)


def read_quarantine(directory: Path) -> list[Quarantine]:
    """The quarantined versions recorded in `directory` (a missing file: none; a damaged one is logged)."""
    try:
        data = json.loads((directory / QUARANTINE_FILE).read_bytes())
        return [Quarantine(**{k: str(e[k]) for k in ("version", "name", "reason", "at")}) for e in data["quarantined"]]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError, KeyError) as e:
        log.warning("cannot read %s (%r): no version is treated as quarantined", directory / QUARANTINE_FILE, e)
        return []


def remember(directory: Path, active: LoadedPolicy | None, quarantined: list[Quarantine]) -> None:
    """What a restart needs: the quarantined versions first, then the active one (a crash in between leaves
    at worst a quarantined version named active, which `PushServer.restore` refuses)."""
    write_quarantine(directory, quarantined)
    remember_active(directory, active)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(directory: Path) -> None:
    """Make a rename inside `directory` durable."""
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


VALIDATOR_START_S = 60.0  # a fresh validator process's start-up and imports (slow on a loaded edge)
# The validator process's niceness. Not 19: there, two CPU-bound processes at nice 0 on a 2-core edge starved a
# validation past validate_timeout_s (pushes refused as too_slow); at 10 it finished. A process of its own: it
# shares no GIL with the tick.
VALIDATOR_NICE = 10
# The worker thread's niceness: the loop's own. It shares the loop's GIL: at a higher niceness, other load can keep
# it off the CPU while it holds the GIL, and the loop waits for it (priority inversion). Not shown by measurement:
# the soak beside two CPU-bound processes gave 43 725 ticks of 60 000 at nice 19, 47 437 and 42 406 at 0 (noise as
# large as the difference). Never a real-time class.
WORKER_NICE = 0


def _validator_ready() -> None:
    """The validator's first call: unpickling it imports this module (onnxruntime, numpy), so that a model's
    validation deadline starts once the process is ready."""


def _validator_init(parent_pid: int) -> None:
    """The validator process's initializer."""
    die_with_parent(parent_pid)
    off_loop_priority(VALIDATOR_NICE)


@dataclass
class _Request:
    kind: Literal["swap", "rollback"]
    policy: LoadedPolicy | None
    done: asyncio.Future[tuple[LoadedPolicy | None, int]]


@dataclass
class PolicySlot:
    """Active + previous policy for one mode; requests are applied by `boundary()` at the next tick."""

    spec: PolicySpec
    budget_s: float  # the inference-time budget (a fraction of the tick period)
    active: LoadedPolicy | None = None
    previous: LoadedPolicy | None = None
    # checks an installed artifact in the validator process (picklable, module level; raises PolicyRejected) and
    # returns its inference time [µs]; then `opener` builds the policy in the worker thread from (directory, µs).
    # Default: `validated_latency_us` and `open_validated` against `spec` and `budget_s`.
    validator: Callable[[Path], float] | None = None
    opener: Callable[[Path, float], Any] | None = None
    # called (soon, on the loop) when a swap or rollback is requested, and at once when a policy is quarantined:
    # a mode without ticks applies it from here
    on_request: Callable[[], None] | None = None
    validate_timeout_s: float = 10.0  # a validation that hangs (onnxruntime stuck on a model) is refused after this
    limits: RuntimeLimits = field(default_factory=RuntimeLimits)  # run-time failures → quarantine (module doc)
    # called on the loop (in rl-pid: on the tick) with each quarantine: no disk work there (the push server's hook
    # does it in the worker thread)
    on_quarantine: Callable[[Quarantine], None] | None = None
    quarantined: list[Quarantine] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)
    _request: _Request | None = None
    _changed: bool = False  # a quarantine changed the active policy since the last boundary()
    _worker: ThreadPoolExecutor | None = None
    _validator: ProcessPoolExecutor | None = None
    _ready: Future[None] | None = None  # the validator's start-up call
    _watchdog: InferenceWatchdog = field(default_factory=InferenceWatchdog)
    _failing: Any = None  # the policy `_failures` counts for
    _failures: FailureWindow | None = None
    _failure_log: RateLimitedLog = field(default_factory=lambda: RateLimitedLog(log))

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking work (install, opening a model) in the slot's worker thread (normal class, WORKER_NICE)."""
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, "policy-worker",
                                              initializer=functools.partial(off_loop_priority, WORKER_NICE))
        return await asyncio.get_running_loop().run_in_executor(self._worker, functools.partial(fn, *args))

    def start_validator(self) -> ProcessPoolExecutor:
        """The validator process, started now if need be (the daemon: at start-up, not on the first push)."""
        if self._validator is None:
            self._validator = ProcessPoolExecutor(1, multiprocessing.get_context("spawn"), _validator_init,
                                                  (os.getpid(),))
            self._ready = self._validator.submit(_validator_ready)  # spawns the process; it imports in its own time
        return self._validator

    async def in_validator(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` (picklable, module level) in the validator process; a crash there is a corrupt model.
        `validate_timeout_s` counts from a started validator: a fresh process's start-up and imports (slow on a
        loaded edge) have their own deadline, `VALIDATOR_START_S`."""
        loop, call = asyncio.get_running_loop(), functools.partial(fn, *args)
        pool = await self._started_validator()
        try:
            future = loop.run_in_executor(pool, call)
        except BrokenProcessPool:  # it had died while idle (killed, out of memory): not this model's doing
            self._drop_validator(pool)
            pool = await self._started_validator()
            future = loop.run_in_executor(pool, call)
        try:
            return await asyncio.wait_for(future, self.validate_timeout_s)
        except BrokenProcessPool:
            self._drop_validator(pool)
            raise PolicyRejected("corrupt_model", "the validator process died on this model") from None
        except TimeoutError:
            self._kill_validator(pool)
            raise PolicyRejected("too_slow", f"validation did not finish within {self.validate_timeout_s} s "
                                             "(the validator process was killed)") from None

    async def _started_validator(self) -> ProcessPoolExecutor:
        """The validator process once it has started and imported what validation needs."""
        pool = self.start_validator()
        try:
            await asyncio.wait_for(asyncio.wrap_future(self._ready), VALIDATOR_START_S)  # type: ignore[arg-type]
        except BrokenProcessPool:  # it died while idle: a fresh one (its start-up error, if any, surfaces next)
            self._drop_validator(pool)
            pool = self.start_validator()
        except TimeoutError:
            self._kill_validator(pool)
            raise PolicyRejected("too_slow", f"the validator process did not start within {VALIDATOR_START_S} s "
                                             "(killed)") from None
        return pool

    def _kill_validator(self, pool: ProcessPoolExecutor) -> None:
        for process in list(getattr(pool, "_processes", {}).values()):  # no public terminate before Python 3.14
            process.kill()
        self._drop_validator(pool)

    def _drop_validator(self, pool: ProcessPoolExecutor) -> None:
        pool.shutdown(wait=False, cancel_futures=True)
        if self._validator is pool:
            self._validator = None  # the next model gets a fresh process

    async def load(self, directory: Path) -> LoadedPolicy:
        """Validate an installed artifact off the loop; counts attempts and rejections."""
        self.counters["attempted"] += 1
        try:
            validator = self.validator or functools.partial(validated_latency_us, spec=self.spec,
                                                            budget_s=self.budget_s)
            opener = self.opener or functools.partial(open_validated, spec=self.spec)
            latency_us = await self.in_validator(validator, directory)
            return await self.off_loop(opener, directory, latency_us)
        except PolicyRejected as e:
            self.reject(e)
            raise

    def close(self) -> None:
        """Stop the worker thread, the validator process and the watchdog thread (daemon shutdown)."""
        for executor in (self._worker, self._validator):
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
        self._worker = self._validator = None
        self._watchdog.close()

    def reject(self, e: PolicyRejected) -> None:
        self.counters[f"rejected:{e.reason}"] += 1
        log.warning("policy rejected (%s): %s", e.reason, e.detail)

    def request_swap(self, policy: LoadedPolicy) -> asyncio.Future[tuple[LoadedPolicy | None, int]]:
        """The next `boundary()` makes `policy` active; the future resolves to (it, monotonic ns) then."""
        return self._post("swap", policy)

    def request_rollback(self) -> asyncio.Future[tuple[LoadedPolicy | None, int]]:
        """The next `boundary()` swaps active and previous. After the first push the previous one is None,
        the mode's fallback (baseline gains, golden-ratio angles), and a second rollback restores the push.
        Raises PolicyRejected when neither is loaded (nothing pushed since start-up, or rolled back to the
        fallback before a restart)."""
        if self.previous is None and self.active is None:
            e = PolicyRejected("no_previous", "no policy is active or kept as previous (a restart keeps only the "
                                              "active one): the mode's fallback is already running")
            self.reject(e)
            raise e
        return self._post("rollback", None)

    def _post(self, kind: Literal["swap", "rollback"],
              policy: LoadedPolicy | None) -> asyncio.Future[tuple[LoadedPolicy | None, int]]:
        if self._request is not None:  # superseded before a tick applied it
            self._request.done.cancel()
        loop = asyncio.get_running_loop()
        self._request = _Request(kind, policy, loop.create_future())
        if self.on_request is not None:
            loop.call_soon(self.on_request)
        return self._request.done

    def boundary(self) -> bool:
        """At a tick boundary: apply a pending swap/rollback. True when the active policy changed (a quarantine
        since the last boundary included)."""
        changed, self._changed = self._changed, False
        req = self._request
        if req is None:
            return changed
        self._request = None
        if req.done.cancelled():
            return changed
        if req.kind == "swap":
            self.previous, self.active = self.active, req.policy
            self.counters["accepted"] += 1
        else:
            self.active, self.previous = self.previous, self.active
            self.counters["rolled_back"] += 1
        if self.active is not None:
            self.active.reset()  # a policy that becomes active starts its recurrent state afresh
        req.done.set_result((self.active, time.monotonic_ns()))
        return True

    def infer(self, obs: np.ndarray) -> np.ndarray | None:
        """The active policy's action for raw `obs`, or None: no policy, or the call failed (`settle`). Never raises."""
        p = self.active
        if p is None:
            return None
        out, failure, detail = self.guarded(p.run, obs)
        if failure is None and not np.isfinite(out).all():  # type: ignore[union-attr]
            failure, detail = "non_finite_output", f"output {out.tolist()}"  # type: ignore[union-attr]
        if failure is None:
            return out
        self.settle(p, failure, detail)
        return None

    def guarded(self, fn: Callable[..., T], *args: Any) -> tuple[T | None, Failure | None, str]:
        """`fn(*args, run_options=...)`, one inference, under the watchdog (controller/policy/guard.py): timed
        against `budget_s`, ended past `limits.terminate_factor` × it. Any thread, one call at a time; never raises."""
        return self._watchdog.call(fn, *args, budget_s=self.budget_s,
                                   deadline_s=self.limits.terminate_factor * self.budget_s)

    def settle(self, policy: Any, failure: Failure, detail: str) -> None:
        """On the loop (in rl-pid: on the tick): a decision of `policy` failed and the mode fell back. Counted,
        logged (rate-limited); the `limits.max_failures`-th within `limits.window_s` quarantines it."""
        self.counters[failure] += 1
        self._failure_log.warning("policy %s: %s: %s", policy.version, failure, detail)
        if self._failing is not policy:
            self._failing, self._failures = policy, FailureWindow(self.limits.max_failures, self.limits.window_s)
        assert self._failures is not None
        if self._failures.add(time.monotonic()):
            self.quarantine(policy, f"{self.limits.max_failures} run-time failures within {self.limits.window_s:g} s, "
                                    f"the last {failure}: {detail}")

    def quarantine(self, policy: Any, reason: str) -> None:
        """Take `policy` out of the slot now: the previous policy becomes active (or the mode's fallback runs),
        and it is not kept as previous. Posted to `on_quarantine` and `on_request`; `boundary()` reports it."""
        if policy is self.active:
            self.active, self.previous = self.previous, None
            if self.active is not None:
                self.active.reset()
        elif policy is self.previous:
            self.previous = None
        else:
            return
        self._failing = self._failures = None
        name = policy.path.name if policy.path is not None else policy.version
        q = Quarantine(policy.version, name, reason[:500], datetime.now(timezone.utc).isoformat(timespec="seconds"))
        self.quarantined = [e for e in self.quarantined if e.name != name] + [q]
        self.counters["quarantined"] += 1
        self._changed = True
        log.warning("policy %s quarantined (%s); now active: %s", q.version, reason,
                    self.active.version if self.active is not None else "the mode's fallback")
        if self.on_quarantine is not None:
            self.on_quarantine(q)
        if self.on_request is not None:
            self.on_request()

    def lift_quarantine(self, name: str) -> Quarantine | None:
        """Forget the quarantine of the install folder `name` (the operator pushed that artifact again)."""
        lifted = next((q for q in self.quarantined if q.name == name), None)
        self.quarantined = [q for q in self.quarantined if q.name != name]
        return lifted
