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
encoder angle each projection was measured at. The loop itself (move → in position → acquire → update off the
loop → decide, abort, the stage's safety gate) is the shared one (controller/modes/acquisition.py); this module
fills in its hooks.

`AngleTrajectory` holds what the decisions read and the reconstruction is made of (the acquired mask, the
golden-ratio fallback, the system matrix, SIRT); the Bluesky adapter (hil/bluesky/agent.py) shares it, so a
policy run in a Bluesky plan sees the same x̂ and picks the same angles as this mode.

The policy's contract (named inputs x̂ and the acquired mask, outputs angle_logits and stop_logit) is
controller/modes/ct/spec.py; the policy runtime (`AnglePolicy`, its slot validator and opener) is
controller/policy/runtime.py. A policy artifact (model.onnx + manifest.json,
learner/ct/export.py) has task `TASK`; `AnglePolicy.from_artifact` loads one.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import numpy as np
import scipy.sparse as sp

from controller.protocol import ct, framing
from controller.modes.ct import tomo
from controller.modes.ct.config import AnglesConfig
from controller.driver import SerialDriver
from controller.modes.acquisition import AcquisitionLoop, AcquisitionResult
from controller.safety import StageGate
from controller.policy.runtime import AnglePolicy

log = logging.getLogger(__name__)
StopReason = Literal["policy", "max_angles", "aborted"]


@dataclass
class ScanResult(AcquisitionResult):
    """reconstruction: (N, N) from all projections (None before the first)."""

    angles_deg: list[float] = field(default_factory=list)  # commanded, in acquisition order
    measured_deg: list[float] = field(default_factory=list)  # encoder angle of each projection
    projections: list[np.ndarray] = field(default_factory=list)  # (N,) float32 each
    stopped_by: StopReason | None = None
    timings: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in
                                                                     ("policy", "move", "acquire", "sirt")})
    policy_versions: list[str | None] = field(default_factory=list)  # per angle: the policy that chose it (None: golden ratio)

    @property
    def sinogram(self) -> np.ndarray:
        return np.stack(self.projections) if self.projections else np.zeros((0, 0), np.float32)


class AngleTrajectory:
    """One scan's angles so far: the acquired grid mask (the policy's second input), the golden-ratio fallback and
    the reconstruction x̂ from the projections at their measured angles (warm-started SIRT)."""

    def __init__(self, config: AnglesConfig) -> None:
        self.cfg = config
        self.grid = tomo.angle_grid(config.n_angles)
        self.golden = tomo.golden_ratio_angles(4 * config.n_angles)  # fallback sequence (its first M: the fixed scan)
        self.acquired = np.zeros(config.n_angles, bool)
        self.blocks: list[sp.csr_matrix] = []

    def reset(self) -> None:
        self.acquired[:] = False
        self.blocks = []

    def empty(self) -> np.ndarray:
        return np.zeros((self.cfg.size, self.cfg.size), np.float32)  # x̂_1 = 0

    def angle(self, decision: tuple[int, bool] | None) -> tuple[float, bool]:
        """The policy's (grid index, stop) as (angle, stop); without a decision the next golden-ratio angle not yet
        acquired."""
        if decision is not None:
            idx, stop = decision
            return float(self.grid[idx]), stop
        n = self.cfg.n_angles
        return float(next(a for a in self.golden if not self.acquired[tomo.to_grid_index(a, n)])), False

    def add(self, target_deg: float, measured_deg: float) -> None:
        """A projection acquired for `target_deg` (grid) at the encoder's `measured_deg`."""
        self.acquired[tomo.to_grid_index(target_deg, self.cfg.n_angles)] = True
        self.blocks.append(tomo.system_matrix(self.cfg.size, [measured_deg]))

    def reconstruction(self, sinogram: np.ndarray, previous: np.ndarray,
                       blocks: list[sp.csr_matrix] | None = None) -> np.ndarray:
        """SIRT on the projections so far (`blocks`: a snapshot of ``self.blocks`` taken with the sinogram)."""
        w = sp.vstack(self.blocks if blocks is None else blocks, format="csr")
        return tomo.sirt(w, sinogram, self.cfg.sirt_iterations, x0=previous if self.cfg.warm_start else None)


class AnglesMode(AcquisitionLoop[ScanResult]):
    """Drives a CT device (SerialDriver with messages=protocol.CT) with the shared acquisition loop
    (controller/modes/acquisition.py): decide = the angle policy (or golden ratio), update = SIRT. Takes over
    the driver's data hook (``driver.on_frame``) to receive projections. One scan at a time: ``await run()``;
    ``await abort()`` from another task stops it cleanly."""

    def __init__(self, driver: SerialDriver, config: AnglesConfig = AnglesConfig(),
                 policy: AnglePolicy | None = None) -> None:
        if ct.Projection not in driver.messages:
            raise ValueError("the driver must decode protocol.CT messages")
        super().__init__()
        self.driver, self.cfg, self.policy = driver, config, policy
        self.max_steps = config.max_angles
        self.result = ScanResult()  # the scan in progress (or the last one)
        self.trajectory = AngleTrajectory(config)
        # the stage's safety gate: every MoveTo target passes it (the daemon's faults command_clamped/_non_finite)
        self.gate = StageGate(config.min_deg, config.max_deg, config.max_step_deg, config.max_rate_deg_s)
        driver.on_frame = self._on_data
        self._projection: asyncio.Future[ct.Projection] | None = None
        self._policy: AnglePolicy | None = None  # this step's
        self._version: str | None = None  # the version that chose this step's angle (None: golden ratio)
        self.unexpected_data = 0  # data messages that arrived with no acquisition waiting

    async def home(self) -> ct.StageStatus:
        """Home the stage unless it already is; returns its status once in position at home."""
        st = await self._stage_status()
        if not (st.homed and not st.moving):
            await self.driver.command(ct.Home(), self.cfg.request_timeout_s)
            st = await self._wait_in_position(lambda s: s.homed)
        self.position = st.target_deg
        return st

    # --- the acquisition loop's hooks ------------------------------------------------------------

    def new_result(self) -> ScanResult:
        self.trajectory.reset()
        if self.policy is not None:  # a recurrent policy starts each scan from its initial state
            self.policy.reset()
        return ScanResult()

    async def prepare(self) -> None:
        await self.home()

    def new_reconstruction(self) -> np.ndarray:
        return self.trajectory.empty()

    def begin_step(self) -> bool:
        self._policy = self.policy  # a swap (the daemon's slot) takes effect at the next decision
        return self._policy is not None

    async def decide(self, step: int, reconstruction: np.ndarray, res: ScanResult) -> tuple[float, bool]:
        policy, decision = self._policy, None
        if policy is not None:
            t = time.perf_counter()
            decision = await self._decide(policy, reconstruction, self.trajectory.acquired)
            res.timings["policy"].append(time.perf_counter() - t)
            if decision is None:
                res.policy_faults += 1
        self._version = policy.version if policy is not None and decision is not None else None
        return self.trajectory.angle(decision)  # no policy, or its decision failed: the next golden-ratio angle

    def record(self, res: ScanResult, target: float, measurement: ct.Projection) -> None:
        cfg = self.cfg
        data = np.asarray(measurement.data, np.float32)
        if data.shape != (cfg.size,):
            raise ValueError(f"detector sent {data.size} bins, the mode reconstructs {cfg.size}")
        self.trajectory.add(target, measurement.angle_deg)
        res.angles_deg.append(target)
        res.policy_versions.append(self._version)
        res.measured_deg.append(measurement.angle_deg)
        res.projections.append(data)

    def update(self, res: ScanResult, reconstruction: np.ndarray) -> Callable[[], np.ndarray]:
        return partial(self._reconstruct, self.trajectory.blocks.copy(), res.sinogram, reconstruction,
                       res.timings["sirt"])

    def stop_reason(self, stopped: bool) -> str:
        return "policy" if stopped else "max_angles"

    def finish(self) -> None:
        self._projection = None

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
        x = self.trajectory.reconstruction(sinogram, previous, blocks)
        timings.append(time.perf_counter() - t)
        return x

    # --- device steps ----------------------------------------------------------------------------

    async def _stage_status(self) -> ct.StageStatus:
        return await self.driver.request(ct.StageStatusRequest(), ct.StageStatus,  # type: ignore[return-value]
                                         self.cfg.request_timeout_s)

    async def _wait_in_position(self, ok: Callable[[ct.StageStatus], bool]) -> ct.StageStatus:
        deadline = time.monotonic() + self.cfg.move_timeout_s
        while True:
            st = await self._stage_status()
            if st.in_position and ok(st):
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"stage not in position within {self.cfg.move_timeout_s} s: {st}")
            await asyncio.sleep(self.cfg.poll_s)

    async def move(self, target: float) -> None:
        """MoveTo only a resting stage (the previous step ended in position), then wait for in-position."""
        await self.driver.command(ct.MoveTo(target), self.cfg.request_timeout_s)
        want = np.float32(target)
        await self._wait_in_position(lambda s: np.float32(s.target_deg) == want)
        self.position = target

    async def measure(self) -> ct.Projection:
        self._projection = asyncio.get_running_loop().create_future()
        await self.driver.command(ct.Acquire(self.cfg.exposure_s), self.cfg.request_timeout_s)
        async with asyncio.timeout(self.cfg.exposure_s + self.cfg.move_timeout_s):
            return await self._projection

    def _on_data(self, msg: framing.Message, t_ns: int) -> None:
        fut = self._projection
        if isinstance(msg, ct.Projection) and fut is not None and not fut.done():
            fut.set_result(msg)
        else:
            self.unexpected_data += 1

    async def halt(self) -> None:
        """Brake, hold, and wait until the stage rests (best effort: a lost link is logged, not raised)."""
        try:
            await self.driver.command(ct.Halt(), self.cfg.request_timeout_s)
            deadline = time.monotonic() + self.cfg.move_timeout_s
            while (await self._stage_status()).moving and time.monotonic() < deadline:
                await asyncio.sleep(self.cfg.poll_s)
        except (TimeoutError, ValueError) as e:
            log.warning("halt after the scan failed: %s", e)
