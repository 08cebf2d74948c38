"""Ptycho mode: an adaptive ptychographic scan on the edge (paper: ptychography-adaptive-scanning; issue #21 §5).

A scan of `positions` positions in `subsequences` sub-sequences (controller/modes/ptycho/config.py). At the
start of sub-sequence t the positions are chosen (controller/modes/ptycho/path.py): t = 0 the Halton sequence;
t ≥ 1 the policy (controller/modes/ptycho/policy.py `ScanPolicy`) on the latest reconstruction's field (mean
removed), the last sub-sequence (in the policy's order, normalised), the prior (the Halton continuation,
path.prior) and its carried GRU state, its first M means snapped to unvisited grid points inside the config's
stage limits [min_A, max_A]. A decision that fails (raises, runs over its budget, or gives
non-finite means) continues the Halton sequence instead, counted (with the daemon's slot: it counts too and
quarantines after too many). The sub-sequence's positions are then ordered to shorten the stage's path from
where it is (nearest neighbour + 2-opt on the estimated move time); the summary reports the path length and
estimated move time of that order, of the policy's own order and of a raster order of the same positions.
Each position: the safety gate (`PlaneGate`: limits per axis, step and rate; a move it would change ends the scan
with an error, counted, since a pattern elsewhere would be recorded at the wrong window) → MoveTo → wait
in position → Acquire → its Frame (a frame lost on the wire is acquired again: the counts are keyed per
(sample, position), so the retry gives the same pattern). At the last position of each sub-sequence the
reconstruction (controller/modes/ptycho/recon.py, numpy, warm-started, `iterations`) runs off the loop; the
next decision waits for it. The loop itself (abort, halt, the policy fixed per decision) is the shared one
(controller/modes/acquisition.py); a swap applies at the next sub-sequence's decision.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from controller.driver import QUERY_TRIES, SerialDriver
from controller.modes.acquisition import AcquisitionLoop, AcquisitionResult
from controller.modes.ptycho import recon
from controller.modes.ptycho.config import PtychoConfig
from controller.modes.ptycho.optics import probe
from controller.modes.ptycho.path import halton, order_path, prior, raster_order, snap_unvisited
from controller.modes.ptycho.policy import ScanPolicy
from controller.protocol import framing, ptycho
from controller.safety import StageGate

log = logging.getLogger(__name__)
Target = tuple[float, float]  # (x, y) [Å]


class PlaneGate:
    """The scan stage's safety gate: one StageGate per axis (x, y) [Å]; a move with a non-finite coordinate
    stays where it is."""

    def __init__(self, low: float, high: float, max_step: float, max_rate: float) -> None:
        self.axes = (StageGate(low, high, max_step, max_rate), StageGate(low, high, max_step, max_rate))
        self.clamped = self.non_finite = 0  # moves with a coordinate clamped / not finite

    def __call__(self, target: Target, current: Target, now_s: float) -> Target:
        if not all(map(math.isfinite, (*target, *current))):
            self.non_finite += 1
            return current
        out = tuple(g(t, c, now_s) for g, t, c in zip(self.axes, target, current))
        self.clamped += out != tuple(target)
        return out  # type: ignore[return-value]


def policy_field(phase: np.ndarray, grid: int, window: int) -> np.ndarray:
    """The scanned field (grid × grid: object pixels window/2 … window/2 + grid − 1) of the object phase,
    mean removed (the constant phase is unobservable), float32: the policy's ``recon``."""
    o = window // 2
    f = phase[o:o + grid, o:o + grid]
    return (f - f.mean()).astype(np.float32)


@dataclass
class ScanResult(AcquisitionResult):
    """reconstruction: the object phase (object_px, object_px) after the last update (None before the first)."""

    positions: list[tuple[int, int]] = field(default_factory=list)  # acquired (row, col), in acquisition order
    readback_A: list[tuple[float, float]] = field(default_factory=list)  # the stage's (x, y) during each frame
    frames: list[np.ndarray] = field(default_factory=list)  # each position's diffraction pattern (counts, uint32):
    # kept only when the scan's images go somewhere (PtychoScan's keep_frames)
    subsequences: list[dict[str, Any]] = field(default_factory=list)  # per sub-sequence: source, positions, paths
    timings: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in
                                                                     ("policy", "order", "move", "acquire", "recon")})
    reacquired: int = 0  # frames acquired again after one was lost on the wire


class PtychoScan(AcquisitionLoop[ScanResult]):
    """Drives the ptychography instrument (SerialDriver with messages=protocol.PTYCHO) with the shared
    acquisition loop (module doc). Takes over the driver's data hook to receive frames. ``keep_frames``: keep each
    diffraction pattern in the result (for the live documents: the daemon's ``wants_images``)."""

    def __init__(self, driver: SerialDriver, config: PtychoConfig = PtychoConfig(),
                 policy: ScanPolicy | None = None, keep_frames: bool = False) -> None:
        if ptycho.Frame not in driver.messages:
            raise ValueError("the driver must decode protocol.PTYCHO messages")
        super().__init__()
        self.driver, self.cfg, self.policy, self.keep_frames = driver, config, policy, keep_frames
        self.optics, self.model = config.optics, config.stage
        self.probe = probe(self.optics)
        self.max_steps = config.positions
        self.starts = np.cumsum([0, *config.sizes])  # first step of each sub-sequence (and the end)
        self.gate = PlaneGate(config.min_A, config.max_A, config.max_step_A, config.max_rate_A_s)
        self.result = ScanResult()
        self.position: Target = (0.0, 0.0)
        driver.on_frame = self._on_data
        self._frame: asyncio.Future[ptycho.Frame] | None = None
        self._plan: list[tuple[int, int]] = []
        self._visited = np.zeros((self.optics.grid, self.optics.grid), bool)
        allowed = self.cfg.allowed
        self._outside = ~(allowed[:, None] & allowed[None, :])  # grid positions outside the config's stage limits
        self.info: ptycho.Info | None = None  # the instrument's set-up (prepare)
        self._planned: Target = (0.0, 0.0)  # the position decide() chose for this step
        self._last = np.zeros((0, 2))  # the last sub-sequence, policy order, normalised
        self._indices: list[np.ndarray] = []
        self._amplitudes: list[np.ndarray] = []
        self._policy: ScanPolicy | None = None  # this sub-sequence's
        self.unexpected_data = 0

    # --- the acquisition loop's hooks ------------------------------------------------------------

    def new_result(self) -> ScanResult:
        self._visited[:] = False
        self._plan, self._indices, self._amplitudes, self._last = [], [], [], np.zeros((0, 2))
        if self.policy is not None:
            self.policy.reset()  # a scan starts from the initial GRU state
        return ScanResult()

    async def prepare(self) -> None:
        """Check the instrument's set-up against the config's; wait until the stage rests; start there."""
        info: ptycho.Info = await self.driver.request(  # type: ignore[assignment]
            ptycho.InfoRequest(), ptycho.Info, self.cfg.request_timeout_s)
        o = self.optics
        mine = (o.energy_eV, o.aperture_mrad, o.defocus_A, o.pixel_A, o.window, o.grid, o.dose)
        theirs = (info.energy_eV, info.aperture_mrad, info.defocus_A, info.pixel_A, info.window, info.grid, info.dose)
        if not np.allclose(mine, theirs, rtol=1e-6, atol=1e-6):
            raise ValueError(f"the instrument's optics (energy, aperture, defocus, pixel, window, grid, dose) "
                             f"{theirs} differ from the config's {mine}")
        if not info.min_A - 1e-4 <= self.cfg.min_A <= self.cfg.max_A <= info.max_A + 1e-4:  # float32 on the wire
            raise ValueError(f"the config's stage limits [{self.cfg.min_A}, {self.cfg.max_A}] Å exceed the "
                             f"instrument's range [{info.min_A}, {info.max_A}] Å")
        self.info = info
        st = await self._wait_in_position(lambda s: True)
        self.position = (st.target_x_A, st.target_y_A)

    def new_reconstruction(self) -> np.ndarray:
        return np.zeros((self.optics.object_px, self.optics.object_px))

    def begin_step(self) -> bool:
        k = len(self.result.positions)
        if k not in self.starts:
            return False
        self._policy = self.policy  # a swap (the daemon's slot) takes effect at a sub-sequence's decision
        return self._policy is not None and k > 0

    async def decide(self, step: int, reconstruction: np.ndarray, res: ScanResult) -> tuple[Target, bool]:
        if step in self.starts:
            await self._plan_subsequence(step, reconstruction, res)
        i, j = self._plan.pop(0)
        self._planned = (j * self.optics.pixel_A, i * self.optics.pixel_A)
        return self._planned, False

    async def _plan_subsequence(self, step: int, reconstruction: np.ndarray, res: ScanResult) -> None:
        t = int(np.searchsorted(self.starts, step))
        size, policy, means, source = self.cfg.sizes[t], self._policy, None, "halton"
        if policy is not None and t > 0:
            started = time.perf_counter()
            field_ = policy_field(reconstruction, self.optics.grid, self.optics.window)
            means = await self._decide(policy, field_, self._last, await asyncio.to_thread(prior, step))
            res.timings["policy"].append(time.perf_counter() - started)
            source = "policy" if means is not None else "fallback"
            res.policy_faults += means is None
        here = np.array(self.position[::-1]) / self.optics.pixel_A  # (row, col)
        started = time.perf_counter()
        points = means[:size] if means is not None else None
        planned, order, paths = await asyncio.to_thread(self._plan_path, points, size, step, here)  # off the loop
        res.timings["order"].append(time.perf_counter() - started)
        self._plan = [tuple(map(int, p)) for p in planned[order]]
        self._last = planned / (self.optics.grid - 1)
        res.subsequences.append({"source": source, "policy": policy.version if source == "policy" else None,
                                 "positions": planned.tolist(), "order": list(self._plan), "paths": paths})

    def _plan_path(self, points: np.ndarray | None, size: int, step: int,
                   here: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        """Snap ``points`` (None: the Halton continuation after ``step`` positions, ``size`` of them) to unvisited
        grid positions within the stage limits, order them to shorten the path from ``here``, and cost that order
        against the policy's own and a raster (worker thread)."""
        if points is None:
            points = halton(size, start=step)
        planned = snap_unvisited(points, self._visited | self._outside)  # within the stage limits, never twice
        order = order_path(here, planned, self.model)
        orders = (("ordered", order), ("policy", np.arange(len(planned))), ("raster", raster_order(planned)))
        paths = {name: dict(zip(("length_A", "move_s"),
                                (round(float(v), 6) for v in self.model.cost(here, planned[o]))))
                 for name, o in orders}
        return planned, order, paths

    def record(self, res: ScanResult, target: Target, measurement: ptycho.Frame) -> None:
        o = self.optics
        data = measurement.counts()
        if data.shape != (o.window, o.window):
            raise ValueError(f"detector sent a {data.shape} frame, the mode reconstructs {o.window} × {o.window}")
        pos = (int(round(target[1] / o.pixel_A)), int(round(target[0] / o.pixel_A)))
        if not max(abs(measurement.x_A - target[0]), abs(measurement.y_A - target[1])) <= o.pixel_A / 2:  # NaN too
            raise ValueError(f"frame read-back ({measurement.x_A}, {measurement.y_A}) Å is not at {target} Å")
        assert self.info is not None  # prepare() ran
        dose = self.info.dose * self.cfg.exposure_us / self.info.exposure_us
        if measurement.exposure_us != self.cfg.exposure_us or not math.isclose(measurement.dose, dose, rel_tol=1e-6):
            raise ValueError(f"frame of {measurement.exposure_us} µs at dose {measurement.dose}: expected "
                             f"{self.cfg.exposure_us} µs at {dose}")
        self._visited[pos] = True
        res.positions.append(pos)
        res.readback_A.append((measurement.x_A, measurement.y_A))
        if self.keep_frames:
            res.frames.append(data)
        self._indices.append(recon.window_indices(np.array([pos]), o.object_px, o.window)[0])
        self._amplitudes.append(recon.amplitudes(data.astype(np.float64), measurement.dose))

    def update(self, res: ScanResult, reconstruction: np.ndarray) -> Callable[[], np.ndarray]:
        if len(res.positions) not in self.starts:  # mid-sub-sequence: nothing to update
            return lambda: reconstruction
        data = recon.Measured(np.stack(self._indices)[None], np.stack(self._amplitudes)[None],
                              np.ones((1, len(self._indices))))
        return partial(self._reconstruct, data, reconstruction, res.timings["recon"])

    def _reconstruct(self, data: recon.Measured, previous: np.ndarray, timings: list[float]) -> np.ndarray:
        """`iterations` warm-started gradient steps on every pattern so far (worker thread)."""
        started = time.perf_counter()
        phase = recon.reconstruct(previous.reshape(1, -1), self.probe, data, self.cfg.iterations)
        timings.append(time.perf_counter() - started)
        return phase.reshape(previous.shape)

    def finish(self) -> None:
        self._frame = None

    async def _decide(self, policy: ScanPolicy, field_: np.ndarray, last: np.ndarray,
                      default: np.ndarray) -> np.ndarray | None:
        """The policy's means, or None when the decision failed (AcquisitionLoop.decision; module doc)."""
        return await self.decision(policy, policy.decide, (field_, last, default), self.cfg.decision_budget_s, "scan")

    # --- device steps ----------------------------------------------------------------------------

    async def _status(self) -> ptycho.StageStatus:
        """The stage's status (a reply lost on the wire is asked for again: SerialDriver.query)."""
        return await self.driver.query(ptycho.StageStatusRequest(), ptycho.StageStatus,  # type: ignore[return-value]
                                       self.cfg.request_timeout_s)

    async def _command(self, msg: framing.Message, done: Callable[[ptycho.StageStatus], bool]) -> None:
        """Send ``msg``; when its ack is lost on the wire, the stage's status says whether it was carried out
        (``done``) or it is sent again (QUERY_TRIES in all, each loss counted in the driver's ``lost_replies``;
        a Nak still raises ValueError at once)."""
        for attempt in range(QUERY_TRIES):
            try:
                await self.driver.command(msg, self.cfg.request_timeout_s)
                return
            except TimeoutError:
                if attempt == QUERY_TRIES - 1:
                    raise
                self.driver.stats.lost_replies += 1
                if done(await self._status()):
                    return

    async def _wait_in_position(self, ok: Callable[[ptycho.StageStatus], bool]) -> ptycho.StageStatus:
        deadline = time.monotonic() + self.cfg.move_timeout_s
        while True:
            st = await self._status()
            if st.in_position and not st.moving and ok(st):
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"stage not in position within {self.cfg.move_timeout_s} s: {st}")
            await asyncio.sleep(self.cfg.poll_s)

    async def move(self, target: Target) -> None:
        """MoveTo only a resting stage, then wait until it is in position there. A target the safety gate changed
        (a step or rate limit) is refused: a pattern taken elsewhere than planned is of no use to the scan."""
        if target != self._planned:
            raise ValueError(f"the stage gate changed the move to {self._planned} Å into {target} Å "
                             f"(max_step_A {self.cfg.max_step_A}, max_rate_A_s {self.cfg.max_rate_A_s})")
        want = tuple(np.float32(target))

        def at_target(s: ptycho.StageStatus) -> bool:
            return (np.float32(s.target_x_A), np.float32(s.target_y_A)) == want

        await self._command(ptycho.MoveTo(*target), at_target)
        await self._wait_in_position(at_target)
        self.position = target

    async def measure(self) -> ptycho.Frame:
        """One exposure's frame; a frame lost on the wire (none within exposure + request timeout) is acquired
        again, twice at most (counted)."""
        wait_s = self.cfg.exposure_us * 1e-6 + self.cfg.request_timeout_s
        for attempt in range(3):
            self._frame = asyncio.get_running_loop().create_future()
            await self._command(ptycho.Acquire(self.cfg.exposure_us), lambda s: s.exposing or self._frame.done())
            try:
                async with asyncio.timeout(wait_s):
                    return await self._frame
            except TimeoutError:
                if attempt == 2:
                    raise TimeoutError(f"no frame within {wait_s:g} s, three times") from None
                self.result.reacquired += 1
                log.warning("frame lost on the wire at %s Å: acquiring again", self.position)
                await self._wait_in_position(lambda s: not s.exposing)
        raise AssertionError("unreachable")

    def _on_data(self, msg: framing.Message, t_ns: int) -> None:
        fut = self._frame
        if isinstance(msg, ptycho.Frame) and fut is not None and not fut.done():
            fut.set_result(msg)
        else:
            self.unexpected_data += 1

    async def halt(self) -> None:
        """Brake, hold, and wait until the stage rests (best effort: a lost link is logged, not raised)."""
        try:
            await self._command(ptycho.Halt(), lambda s: False)  # a lost ack: braking again is harmless
            deadline = time.monotonic() + self.cfg.move_timeout_s
            while (await self._status()).moving and time.monotonic() < deadline:
                await asyncio.sleep(self.cfg.poll_s)
        except (TimeoutError, ValueError) as e:
            log.warning("halt after the scan failed: %s", e)
