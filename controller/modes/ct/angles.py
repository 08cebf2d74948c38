"""Angles mode: adaptive CT angle selection with optimal stopping on the edge
(paper: ct-angle-selection-optimal-stopping, §4.2, Eq. 7: π_sec(d, x̂', θ | x̂)).

One step k: the policy sees the reconstruction x̂_k (x̂_1 = 0) and picks θ_k (greedy over the angle
grid, already acquired angles masked, as in the paper's [33]) and the stop decision d_k
(sigmoid(stop_logit) > ½); the stage moves to θ_k, the mode waits until the stage reports
in-position (it never commands a moving stage), acquires the projection, and SIRT updates x̂_{k+1}
off the loop (asyncio.to_thread, warm-started from x̂_k). The angle chosen with d_k = 1 is still
acquired (the trajectory ends with (d_T, θ_T, x̂_{T+1})); d_M ≡ 1 at `max_angles`.
Without a policy the mode scans `max_angles` golden-ratio angles, moving to the next angle while the
previous reconstruction runs. A decision whose call fails (raises, runs over budget or is ended by the slot's
watchdog: controller/policy/guard.py) or whose outputs are not finite takes the next golden-ratio angle; with
the daemon's `slot` set, the slot counts it and quarantines the policy after too many (controller/policy/slot.py).
`abort()` cancels the step in flight, halts the stage and waits until it rests. The reconstruction uses the
encoder angle each projection was measured at.

The policy's contract (named inputs x̂ and the acquired mask, outputs angle_logits and stop_logit) is
controller/modes/ct/spec.py; the policy runtime (`AnglePolicy`, its slot validator and opener) is
controller/policy/runtime.py, re-exported here. A policy artifact (model.onnx + manifest.json,
learner/ct/export.py) has task `TASK`; `AnglePolicy.from_artifact` loads one.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np
import scipy.sparse as sp
from pydantic import ConfigDict

from controller.protocol import framing as p
from controller.modes.ct import tomo
from controller.driver import SerialDriver
from controller.modes.ct.spec import TASK
from controller.policy.runtime import AnglePolicy, PolicyError, open_validated_policy, validated_decision_us
from controller.policy.slot import PolicySlot

log = logging.getLogger(__name__)
T = TypeVar("T")
StopReason = Literal["policy", "max_angles", "aborted"]


@dataclass(frozen=True)
class AnglesConfig:
    """Also the daemon config's [angles] section (controller/config.py): unknown keys and inf/nan are errors."""

    __pydantic_config__ = ConfigDict(extra="forbid", allow_inf_nan=False)
    size: int = 63  # reconstruction N = detector bins (odd)
    n_angles: int = 180  # candidate grid over [0°, 180°) (tomo.angle_grid)
    max_angles: int = 20  # M
    exposure_s: float = 0.08  # per projection (paper: 80 ms)
    sirt_iterations: int = 30  # per update (warm: ≈ a cold 150-iteration SIRT, see docs/design.md)
    warm_start: bool = True  # start each SIRT from the previous reconstruction
    min_deg: float = 0.0  # the edge's own limits on commanded angles [deg]
    max_deg: float = 180.0
    poll_s: float = 0.005  # StageStatus polling period while waiting [s, wall]
    move_timeout_s: float = 30.0  # [s, wall]
    request_timeout_s: float = 0.5  # per command / reply [s, wall]

    def __post_init__(self) -> None:
        if self.size < 3 or self.size % 2 == 0 or not 1 <= self.max_angles <= self.n_angles:
            raise ValueError(f"need an odd size ≥ 3 and 1 ≤ max_angles ≤ n_angles: {self}")
        if not 0.0 < self.exposure_s <= 10.0 or self.min_deg > self.max_deg:
            raise ValueError(f"bad exposure or angle limits: {self}")
        if self.sirt_iterations < 1 or min(self.poll_s, self.move_timeout_s, self.request_timeout_s) <= 0.0:
            raise ValueError(f"need sirt_iterations ≥ 1 and positive poll_s and timeouts: {self}")


@dataclass
class ScanResult:
    angles_deg: list[float] = field(default_factory=list)  # commanded, in acquisition order
    measured_deg: list[float] = field(default_factory=list)  # encoder angle of each projection
    projections: list[np.ndarray] = field(default_factory=list)  # (N,) float32 each
    reconstruction: np.ndarray | None = None  # (N, N) from all projections (None before the first)
    stopped_by: StopReason | None = None
    timings: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in
                                                                     ("policy", "move", "acquire", "sirt")})
    total_s: float = 0.0
    policy_faults: int = 0  # steps where the policy failed (golden-ratio angle used): non-finite output, error, overrun
    policy_versions: list[str | None] = field(default_factory=list)  # per angle: the policy that chose it (None: golden ratio)

    @property
    def sinogram(self) -> np.ndarray:
        return np.stack(self.projections) if self.projections else np.zeros((0, 0), np.float32)


class _Aborted(Exception):
    pass


class AnglesMode:
    """Drives a CT device (SerialDriver with messages=protocol.CT). Takes over the driver's data hook
    (``driver.on_frame``) to receive projections. One scan at a time: ``await run()``; ``await abort()``
    from another task stops it cleanly."""

    def __init__(self, driver: SerialDriver, config: AnglesConfig = AnglesConfig(),
                 policy: AnglePolicy | None = None) -> None:
        if p.Projection not in driver.messages:
            raise ValueError("the driver must decode protocol.CT messages")
        self.driver, self.cfg, self.policy = driver, config, policy
        self.slot: PolicySlot | None = None  # the daemon's: guards, counts and quarantines the policy's decisions
        self.result = ScanResult()  # the scan in progress (or the last one)
        self.grid = tomo.angle_grid(config.n_angles)
        driver.on_frame = self._on_data
        self._projection: asyncio.Future[p.Projection] | None = None
        self._abort = asyncio.Event()
        self._done: asyncio.Event | None = None
        self.unexpected_data = 0  # data messages that arrived with no acquisition waiting

    @property
    def running(self) -> bool:
        return self._done is not None and not self._done.is_set()

    # --- public API ------------------------------------------------------------------------------

    async def run(self) -> ScanResult:
        """One scan (module doc). Device errors (Nak, timeouts) halt the stage and propagate."""
        if self.running:
            raise RuntimeError("a scan is already running")
        self._abort.clear()
        self._done = asyncio.Event()
        res = self.result = ScanResult()
        t0 = time.perf_counter()
        try:
            await self._guard(self.home())
            await self._scan(res)
        except _Aborted:
            res.stopped_by = "aborted"
            await self._halt()
        except BaseException:
            await asyncio.shield(self._halt())
            raise
        finally:
            res.total_s = time.perf_counter() - t0
            self._projection = None
            self._done.set()
        return res

    async def abort(self) -> None:
        """Stop the scan in flight: the pending step is cancelled, the stage halted and held; returns when
        the stage rests and no command is outstanding. A no-op when no scan runs."""
        if self.running:
            self._abort.set()
            await self._done.wait()  # type: ignore[union-attr]

    async def home(self) -> p.StageStatus:
        """Home the stage unless it already is; returns its status once in position at home."""
        st = await self._stage_status()
        if st.homed and not st.moving:
            return st
        await self.driver.command(p.Home(), self.cfg.request_timeout_s)
        return await self._wait_in_position(lambda s: s.homed)

    # --- the scan --------------------------------------------------------------------------------

    async def _scan(self, res: ScanResult) -> None:
        cfg = self.cfg
        acquired = np.zeros(cfg.n_angles, bool)
        golden = tomo.golden_ratio_angles(4 * cfg.n_angles)  # fallback sequence (its first M: the fixed scan)
        blocks: list[sp.csr_matrix] = []
        image = np.zeros((cfg.size, cfg.size), np.float32)  # x̂_1 = 0
        update: asyncio.Future[np.ndarray] | None = None
        for k in range(cfg.max_angles):
            stop = k + 1 == cfg.max_angles  # d_M ≡ 1
            decision = None
            policy = self.policy  # a swap (ct_daemon) takes effect at the next decision
            if policy is not None:
                if update is not None:
                    image, update = await self._guard(update), None
                t = time.perf_counter()
                decision = await self._guard(self._decide(policy, image, acquired))
                res.timings["policy"].append(time.perf_counter() - t)
                if decision is None:
                    res.policy_faults += 1
            if decision is not None:
                idx, d = decision
                angle, stop = float(self.grid[idx]), stop or d
            else:  # no policy, or its output was not finite: the next golden-ratio angle not yet acquired
                angle = float(next(a for a in golden if not acquired[tomo.to_grid_index(a, cfg.n_angles)]))
            if not cfg.min_deg <= angle <= cfg.max_deg:
                raise ValueError(f"angle {angle}° outside the configured limits [{cfg.min_deg}, {cfg.max_deg}]")
            t = time.perf_counter()
            await self._guard(self._move(angle))
            res.timings["move"].append(time.perf_counter() - t)
            t = time.perf_counter()
            proj = await self._guard(self._acquire())
            res.timings["acquire"].append(time.perf_counter() - t)
            data = np.asarray(proj.data, np.float32)
            if data.shape != (cfg.size,):
                raise ValueError(f"detector sent {data.size} bins, the mode reconstructs {cfg.size}")
            acquired[tomo.to_grid_index(angle, cfg.n_angles)] = True
            res.angles_deg.append(angle)
            res.policy_versions.append(policy.version if decision is not None else None)
            res.measured_deg.append(proj.angle_deg)
            res.projections.append(data)
            blocks.append(tomo.system_matrix(cfg.size, [proj.angle_deg]))
            if update is not None:  # the previous update ran while the stage moved
                image = await self._guard(update)
            update = asyncio.ensure_future(asyncio.to_thread(self._reconstruct, blocks.copy(), res.sinogram,
                                                             image, res.timings["sirt"]))
            res.reconstruction = image  # the latest finished reconstruction, until the update lands
            if stop:
                res.stopped_by = "policy" if k + 1 < cfg.max_angles else "max_angles"
                break
        if update is not None:
            res.reconstruction = await self._guard(update)

    async def _decide(self, policy: AnglePolicy, image: np.ndarray, acquired: np.ndarray) -> tuple[int, bool] | None:
        """The policy's decision (in a worker thread), or None when it failed (module doc). Never raises."""
        slot = self.slot
        if slot is None:
            try:
                return await asyncio.to_thread(policy.decide, image, acquired)
            except Exception as e:  # onnxruntime's run-time errors
                log.warning("angle policy %s failed, golden-ratio angle instead: %r", policy.version, e)
                return None
        decision, failure, detail = await asyncio.to_thread(slot.guarded, policy.decide, image, acquired)
        if failure is None and decision is None:
            failure, detail = "non_finite_output", "angle or stop logits not finite"
        if failure is not None:
            slot.settle(policy, failure, detail)
        return decision

    def _reconstruct(self, blocks: list[sp.csr_matrix], sinogram: np.ndarray, previous: np.ndarray,
                     timings: list[float]) -> np.ndarray:
        """SIRT on all projections so far (worker thread)."""
        t = time.perf_counter()
        w = sp.vstack(blocks, format="csr")
        x = tomo.sirt(w, sinogram, self.cfg.sirt_iterations, x0=previous if self.cfg.warm_start else None)
        timings.append(time.perf_counter() - t)
        return x

    # --- device steps ----------------------------------------------------------------------------

    async def _guard(self, aw: Awaitable[T]) -> T:
        """Await ``aw`` unless abort() fires first; then cancel it and raise _Aborted."""
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
        raise _Aborted

    async def _stage_status(self) -> p.StageStatus:
        return await self.driver.request(p.StageStatusRequest(), p.StageStatus,  # type: ignore[return-value]
                                         self.cfg.request_timeout_s)

    async def _wait_in_position(self, ok: Callable[[p.StageStatus], bool]) -> p.StageStatus:
        deadline = time.monotonic() + self.cfg.move_timeout_s
        while True:
            st = await self._stage_status()
            if st.in_position and ok(st):
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"stage not in position within {self.cfg.move_timeout_s} s: {st}")
            await asyncio.sleep(self.cfg.poll_s)

    async def _move(self, angle: float) -> p.StageStatus:
        """MoveTo only a resting stage (the previous step ended in position), then wait for in-position."""
        await self.driver.command(p.MoveTo(angle), self.cfg.request_timeout_s)
        target = np.float32(angle)
        return await self._wait_in_position(lambda s: np.float32(s.target_deg) == target)

    async def _acquire(self) -> p.Projection:
        self._projection = asyncio.get_running_loop().create_future()
        await self.driver.command(p.Acquire(self.cfg.exposure_s), self.cfg.request_timeout_s)
        async with asyncio.timeout(self.cfg.exposure_s + self.cfg.move_timeout_s):
            return await self._projection

    def _on_data(self, msg: p.Message, t_ns: int) -> None:
        fut = self._projection
        if isinstance(msg, p.Projection) and fut is not None and not fut.done():
            fut.set_result(msg)
        else:
            self.unexpected_data += 1

    async def _halt(self) -> None:
        """Brake, hold, and wait until the stage rests (best effort: a lost link is logged, not raised)."""
        try:
            await self.driver.command(p.Halt(), self.cfg.request_timeout_s)
            deadline = time.monotonic() + self.cfg.move_timeout_s
            while (await self._stage_status()).moving and time.monotonic() < deadline:
                await asyncio.sleep(self.cfg.poll_s)
        except (TimeoutError, ValueError) as e:
            log.warning("halt after the scan failed: %s", e)
