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

The ONNX contract (docs/design.md, "Angle policy"): input "obs" (1, 1, N, N) float32, optional input
"acquired" (1, A) float32 (1 = acquired); outputs "angle_logits" (1, A) and "stop_logit" (1, 1).
Acquired angles are masked here, whatever the graph does. A policy artifact (model.onnx + manifest.json,
learner/ct/export.py) has task `TASK`; its manifest's flat specs are observation = obs.ravel() ‖ acquired
(N·N + A values) and action = angle_logits ‖ stop_logit (A + 1 values). `AnglePolicy.from_artifact` loads one.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
import scipy.sparse as sp
from pydantic import ConfigDict

from controller.protocol import ct, framing
from controller.modes.ct import tomo
from controller.driver import SerialDriver
from controller.modes.acquisition import AcquisitionLoop, AcquisitionResult
from controller.policy.manifest import Manifest
from controller.policy.slot import PolicyRejected, PolicySlot, load_for_task, session_options
from controller.safety import StageGate

log = logging.getLogger(__name__)
StopReason = Literal["policy", "max_angles", "aborted"]
TASK = "ct-angles"  # the manifest task of angle policies


class PolicyError(PolicyRejected, ValueError):
    """An ONNX model that does not fit the angle-policy contract (``reason``: the policy slot's refusal code)."""


class AnglePolicy:
    """An ONNX actor with an angle head and a stopping head, run greedily (1 intra-op thread)."""

    def __init__(self, model: str | Path | bytes, size: int, n_angles: int = 180) -> None:
        model_arg = model if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(model_arg, session_options(), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for corrupt models
            raise PolicyError("corrupt_model", f"cannot load the angle policy: {str(e)[:300]}") from None
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        want_in = {"obs": [1, 1, size, size], "acquired": [1, n_angles]}
        want_out = {"angle_logits": [1, n_angles], "stop_logit": [1, 1]}
        if "obs" not in inputs or not set(inputs) <= set(want_in) or not set(want_out) <= set(outputs):
            raise PolicyError("wrong_shape", f"angle policy I/O must be obs[, acquired] -> angle_logits, stop_logit; "
                              f"got {sorted(inputs)} -> {sorted(outputs)}")
        for name, shape in [*inputs.items(), *((n, outputs[n]) for n in want_out)]:
            want = {**want_in, **want_out}[name]
            if len(shape) != len(want) or any(isinstance(d, int) and d != w for d, w in zip(shape, want)):
                raise PolicyError("wrong_shape", f"angle policy {name!r} has shape {shape}, expected {want}")
        self.n_angles = n_angles
        self._obs = np.zeros(want_in["obs"], np.float32)
        self._acquired = np.zeros(want_in["acquired"], np.float32)
        self._feeds = {"obs": self._obs} | ({"acquired": self._acquired} if "acquired" in inputs else {})
        self.faults = 0  # decisions whose outputs were not finite
        self.manifest: Manifest | None = None  # set by from_artifact
        self.path: Path | None = None
        self.latency_us = 0.0  # median decision time on the probes (from_artifact)

    @property
    def version(self) -> str:
        return self.manifest.version if self.manifest is not None else "unversioned"

    @classmethod
    def from_artifact(cls, directory: str | Path, size: int, n_angles: int = 180) -> AnglePolicy:
        """Load an artifact directory: manifest and sha256, task, the manifest's shapes, the graph's I/O, and
        finite outputs on probes at the observation's bounds (x̂_1 = 0 with nothing acquired; all ones, half acquired)."""
        try:
            manifest, model = load_for_task(Path(directory), TASK)
        except PolicyRejected as e:
            raise PolicyError(e.reason, e.detail) from None
        shapes = manifest.observation.shape, manifest.action.shape
        if shapes != ((size * size + n_angles,), (n_angles + 1,)):
            raise PolicyError("wrong_shape", f"manifest says obs {shapes[0]} action {shapes[1]}; this mode takes obs "
                              f"({size}·{size} + {n_angles},) action ({n_angles} + 1,)")
        policy = cls(model, size, n_angles)
        policy.manifest, policy.path = manifest, Path(directory)
        probes = [(np.zeros((size, size), np.float32), np.zeros(n_angles, bool)),
                  (np.ones((size, size), np.float32), np.arange(n_angles) % 2 == 0)]
        times = []
        for image, acquired in probes:
            t = time.perf_counter()
            if policy.decide(image, acquired) is None:
                raise PolicyError("non_finite", "angle policy outputs are not finite on the probe inputs")
            times.append(time.perf_counter() - t)
        policy.latency_us = 1e6 * float(np.median(times))
        return policy

    def decide(self, image: np.ndarray, acquired: np.ndarray,
               run_options: ort.RunOptions | None = None) -> tuple[int, bool] | None:
        """Greedy (grid index, stop) for the reconstruction (N, N) and the acquired mask (A,) bool;
        None (counted) when the outputs are not finite."""
        self._obs[0, 0] = image
        self._acquired[0] = acquired
        logits, stop = self.session.run(["angle_logits", "stop_logit"], self._feeds, run_options)
        logits, stop = np.asarray(logits, np.float64).reshape(-1), float(np.asarray(stop).reshape(-1)[0])
        if not (np.all(np.isfinite(logits)) and np.isfinite(stop)):
            self.faults += 1
            return None
        return int(np.argmax(np.where(acquired, -np.inf, logits))), stop > 0.0


def validated_decision_us(directory: Path, size: int, n_angles: int, budget_s: float) -> float:
    """The policy slot's validator (in its validator process): the angle-policy contract and a median decision
    within `budget_s` (one exposure); returns the decision time [µs]."""
    policy = AnglePolicy.from_artifact(directory, size, n_angles)
    if policy.latency_us > budget_s * 1e6:
        raise PolicyRejected("too_slow", f"median decision {policy.latency_us:.0f} µs > one exposure "
                                         f"({budget_s * 1e6:.0f} µs)")
    return policy.latency_us


def open_validated_policy(directory: Path, latency_us: float, size: int, n_angles: int) -> AnglePolicy:
    """The policy slot's opener (worker thread): the artifact the validator accepted, loaded in the daemon. As
    `controller.policy.slot.open_validated`: the cheap checks run again, and the two probe decisions warm it up."""
    policy = AnglePolicy.from_artifact(directory, size, n_angles)
    policy.latency_us = latency_us
    return policy


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
    max_step_deg: float = 180.0  # largest move per command [deg]
    max_rate_deg_s: float = 1e5  # largest move per second since the previous command [deg/s]
    poll_s: float = 0.005  # StageStatus polling period while waiting [s, wall]
    move_timeout_s: float = 30.0  # [s, wall]
    request_timeout_s: float = 0.5  # per command / reply [s, wall]

    def __post_init__(self) -> None:
        if self.size < 3 or self.size % 2 == 0 or not 1 <= self.max_angles <= self.n_angles:
            raise ValueError(f"need an odd size ≥ 3 and 1 ≤ max_angles ≤ n_angles: {self}")
        if not 0.0 < self.exposure_s <= 10.0 or self.min_deg > self.max_deg or min(self.max_step_deg,
                                                                                    self.max_rate_deg_s) <= 0.0:
            raise ValueError(f"bad exposure or angle limits: {self}")
        if self.sirt_iterations < 1 or min(self.poll_s, self.move_timeout_s, self.request_timeout_s) <= 0.0:
            raise ValueError(f"need sirt_iterations ≥ 1 and positive poll_s and timeouts: {self}")


@dataclass
class ScanResult(AcquisitionResult):
    """reconstruction: (N, N) from all projections (None before the first)."""

    angles_deg: list[float] = field(default_factory=list)  # commanded, in acquisition order
    measured_deg: list[float] = field(default_factory=list)  # encoder angle of each projection
    projections: list[np.ndarray] = field(default_factory=list)  # (N,) float32 each
    stopped_by: StopReason | None = None
    timings: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in
                                                                     ("policy", "move", "acquire", "sirt")})
    policy_faults: int = 0  # steps where the policy failed (golden-ratio angle used): non-finite output, error, overrun
    policy_versions: list[str | None] = field(default_factory=list)  # per angle: the policy that chose it (None: golden ratio)

    @property
    def sinogram(self) -> np.ndarray:
        return np.stack(self.projections) if self.projections else np.zeros((0, 0), np.float32)


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
        self.slot: PolicySlot | None = None  # the daemon's: guards, counts and quarantines the policy's decisions
        self.result = ScanResult()  # the scan in progress (or the last one)
        self.grid = tomo.angle_grid(config.n_angles)
        self.golden = tomo.golden_ratio_angles(4 * config.n_angles)  # fallback sequence (its first M: the fixed scan)
        # the stage's safety gate: every MoveTo target passes it (the daemon's faults command_clamped/_non_finite)
        self.gate = StageGate(config.min_deg, config.max_deg, config.max_step_deg, config.max_rate_deg_s)
        driver.on_frame = self._on_data
        self._projection: asyncio.Future[ct.Projection] | None = None
        self._acquired = np.zeros(config.n_angles, bool)
        self._blocks: list[sp.csr_matrix] = []
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
        self._acquired[:] = False
        self._blocks = []
        return ScanResult()

    async def prepare(self) -> None:
        await self.home()

    def new_reconstruction(self) -> np.ndarray:
        return np.zeros((self.cfg.size, self.cfg.size), np.float32)  # x̂_1 = 0

    def begin_step(self) -> bool:
        self._policy = self.policy  # a swap (the daemon's slot) takes effect at the next decision
        return self._policy is not None

    async def decide(self, step: int, reconstruction: np.ndarray, res: ScanResult) -> tuple[float, bool]:
        policy, decision = self._policy, None
        if policy is not None:
            t = time.perf_counter()
            decision = await self._decide(policy, reconstruction, self._acquired)
            res.timings["policy"].append(time.perf_counter() - t)
            if decision is None:
                res.policy_faults += 1
        self._version = policy.version if policy is not None and decision is not None else None
        if decision is not None:
            idx, stop = decision
            return float(self.grid[idx]), stop
        # no policy, or its decision failed: the next golden-ratio angle not yet acquired
        n = self.cfg.n_angles
        return float(next(a for a in self.golden if not self._acquired[tomo.to_grid_index(a, n)])), False

    def record(self, res: ScanResult, target: float, measurement: ct.Projection) -> None:
        cfg = self.cfg
        data = np.asarray(measurement.data, np.float32)
        if data.shape != (cfg.size,):
            raise ValueError(f"detector sent {data.size} bins, the mode reconstructs {cfg.size}")
        self._acquired[tomo.to_grid_index(target, cfg.n_angles)] = True
        res.angles_deg.append(target)
        res.policy_versions.append(self._version)
        res.measured_deg.append(measurement.angle_deg)
        res.projections.append(data)
        self._blocks.append(tomo.system_matrix(cfg.size, [measurement.angle_deg]))

    def update(self, res: ScanResult, reconstruction: np.ndarray) -> Callable[[], np.ndarray]:
        return partial(self._reconstruct, self._blocks.copy(), res.sinogram, reconstruction, res.timings["sirt"])

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
        w = sp.vstack(blocks, format="csr")
        x = tomo.sirt(w, sinogram, self.cfg.sirt_iterations, x0=previous if self.cfg.warm_start else None)
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
