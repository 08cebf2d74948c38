"""The transceiver mode (registered as "transceiver", config section [scatter]): one inverse-scattering scan of K =
spec.BUDGET transceivers per ``scan`` request on the transceiver ring (`edgetune sim scatter` or the instrument),
through the shared acquisition loop (controller/modes/acquisition.py).

One step t: the policy sees s_t (spec.observation: the newest source's data, the angles and frequencies so far, the
budget left) and its GRU state and proposes (angle, frequency) (controller/modes/scatter/policy.py); the safety
gate (`Designer`) refuses an angle outside the arm limits or already used and a frequency index outside the set,
and a refused or failed decision falls back to the next angle of a uniform design with the frequency cycling
(logged, counted in the reply's ``refusals`` and ``policy_faults``); the arm moves there (through the stage gate)
and settles, the frequency is set, and the source fires with every transceiver placed so far receiving
(``Acquire``; a lost reply is asked for again); the data are checked (finite, one value per receiver, fired at the
angle and frequency asked) and the warm-started L1 L-BFGS update (controller/modes/scatter/recon.py, scipy) runs in
a worker thread while the policy decides and the arm moves to the next angle; after the last step
``final_iterations`` more finish it. The recorder gets one "scan" event per scan with the design (angles,
frequencies, who chose each), the data d[s, r] (r ≤ s) and the final η map (saved as <recorder
dir>/scans/scan-<session>-<n>.npy). A swap or rollback applies at the next decision, the new policy first fed the
scan's earlier observations (`catch_up`); `abort` halts the arm. At the start of a scan the device's Info must
match the config's grid and Born order, and its arm limits hold the config's.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from controller.config import EdgeConfig
from controller.driver import SerialDriver
from controller.link.push_wire import SampleSpec
from controller.modes.acquisition import AcquisitionLoop, AcquisitionResult, AcquisitionSession, drained_thread
from controller.modes.base import ModeHost, ModeSpec
from controller.modes.registry import register
from controller.modes.scatter import recon, spec
from controller.modes.scatter.config import ScatterConfig
from controller.modes.scatter.policy import N_FREQ, Choice, Designer, TransceiverPolicy
from controller.policy.slot import PolicySlot, PolicySpec
from controller.protocol import framing
from controller.protocol import scatter as p
from controller.safety import StageGate

log = logging.getLogger(__name__)


@dataclass
class ScanResult(AcquisitionResult):
    """reconstruction: the (n, n) η map (zeros before the first update lands)."""

    angles: list[int] = field(default_factory=list)  # in placement order
    frequencies: list[int] = field(default_factory=list)
    choices: list[Choice] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)  # row s: d[s, 0 … s] (complex64)
    refusals: dict[str, int] = field(default_factory=dict)  # fallbacks by reason (no_policy excluded)
    policy_versions: list[str | None] = field(default_factory=list)
    timings: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in ("policy", "move", "acquire",
                                                                                     "recon")})

    def data(self) -> np.ndarray:
        """(t, t) complex: d[s, r] for r ≤ s, zeros above."""
        t = len(self.rows)
        d = np.zeros((t, t), complex)
        for s, row in enumerate(self.rows):
            d[s, : s + 1] = row
        return d


def observation(res: ScanResult, n: int, t: int | None = None) -> np.ndarray:
    """s_t of the scan after its first t steps (default: all so far) (spec.observation; the newest row's source
    wavenumber, any allowed one before the first row: there are no data to scale, and k = 0 would make the scale
    0/0)."""
    t = len(res.rows) if t is None else t
    k = spec.wavenumbers(n)[res.frequencies[t - 1] if t else 0]
    newest = res.rows[t - 1] if t else np.zeros(0, complex)
    return spec.observation(newest, k, np.asarray(res.angles[:t]), np.asarray(res.frequencies[:t]), n)


def catch_up(policy: TransceiverPolicy, res: ScanResult, n: int) -> None:
    """Bring a policy that joins a scan mid-way (a swap or rollback) to the GRU state it would have after the scan's
    steps so far, by feeding it their observations (its choices for them are ignored): it never starts from a zero
    state at a step t > 0, which it has not seen in training."""
    policy.reset()
    for t in range(len(res.rows)):
        policy.decide(observation(res, n, t))


class TransceiverMode(AcquisitionLoop[ScanResult]):
    """Drives the transceiver ring (SerialDriver with messages=protocol.SCATTER) with the shared acquisition loop:
    decide = the transceiver policy behind the `Designer`'s gate, update = L1 L-BFGS. One scan at a time."""

    def __init__(self, driver: SerialDriver, config: ScatterConfig = ScatterConfig(),
                 policy: TransceiverPolicy | None = None) -> None:
        if p.Data not in driver.messages:
            raise ValueError("the driver must decode protocol.SCATTER messages")
        super().__init__()
        self.driver, self.cfg, self.policy = driver, config, policy
        self.max_steps = spec.BUDGET
        self.result = ScanResult()
        self.designer = Designer(config.allowed_angles)
        self.gate = StageGate(config.min_deg, config.max_deg, config.max_step_deg, config.max_rate_deg_s)
        self._policy: TransceiverPolicy | None = None
        self._following: TransceiverPolicy | None = None  # the policy whose GRU state has seen this scan's steps
        self._choice: Choice | None = None

    # --- the acquisition loop's hooks ------------------------------------------------------------

    def new_result(self) -> ScanResult:
        if self.policy is not None:
            self.policy.reset()
        self._following = self.policy
        return ScanResult()

    async def prepare(self) -> None:
        info = await self.driver.query(p.InfoRequest(), p.Info, self.cfg.request_timeout_s)
        if (info.n, info.order) != (self.cfg.n, self.cfg.order):
            raise ValueError(f"the device measures n = {info.n}, Born order {info.order}; the mode is configured "
                             f"for n = {self.cfg.n}, order {self.cfg.order}")
        if info.min_deg > self.cfg.min_deg or info.max_deg < self.cfg.max_deg:
            raise ValueError(f"the device's arm turns within {info.min_deg}° … {info.max_deg}°, narrower than the "
                             f"mode's limits {self.cfg.min_deg}° … {self.cfg.max_deg}°")
        st = await self._wait(lambda s: True)
        self.position = st.target_deg

    def new_reconstruction(self) -> np.ndarray:
        return np.zeros((self.cfg.n, self.cfg.n))

    def begin_step(self) -> bool:
        self._policy = self.policy  # a swap takes effect at the next decision
        return False  # the decision reads the data, not the reconstruction: the update overlaps the move

    async def decide(self, step: int, reconstruction: np.ndarray, res: ScanResult) -> tuple[float, bool]:
        policy, decision = self._policy, None
        if policy is not None:
            t = time.perf_counter()
            if policy is self._following or await self._catch_up(policy, res):
                decision = await self.decision(policy, policy.decide, (observation(res, self.cfg.n),),
                                                self.cfg.decision_budget_s, "transceiver")
            res.timings["policy"].append(time.perf_counter() - t)
        choice = self._choice = self.designer.resolve(policy, decision, res.angles)
        if choice.reason not in (None, "no_policy"):
            res.policy_faults += 1
            res.refusals[choice.reason] = res.refusals.get(choice.reason, 0) + 1
            log.warning("transceiver policy %s: step %d refused (%s: %s), uniform angle %d° at frequency %d instead",
                        policy.version if policy else None, step, choice.reason, decision, choice.angle,
                        choice.frequency)
        return float(choice.angle), False

    async def move(self, target: float) -> None:
        """MoveArm only a resting arm (the previous step ended in position), then wait for in-position."""
        await self.driver.command(p.MoveArm(target), self.cfg.request_timeout_s)
        want = np.float32(target)
        await self._wait(lambda s: np.float32(s.target_deg) == want)
        self.position = target

    async def measure(self) -> p.Data:
        """Set the step's frequency, fire, and read every transceiver placed so far (this one last)."""
        choice = self._choice
        assert choice is not None
        await self.driver.command(p.SetFrequency(choice.frequency), self.cfg.request_timeout_s)
        receivers = (*self.result.angles, choice.angle)
        return await self.driver.query(p.Acquire(receivers), p.Data, self.cfg.request_timeout_s)  # type: ignore[return-value]

    def record(self, res: ScanResult, target: float, measurement: p.Data) -> None:
        choice = self._choice
        assert choice is not None
        values = measurement.field()
        if (measurement.source_deg, measurement.frequency) != (choice.angle, choice.frequency):
            raise ValueError(f"the source fired at {measurement.source_deg}° with frequency {measurement.frequency}; "
                             f"the step asked for {choice.angle}° and {choice.frequency} (the arm commanded {target}°)")
        if values.size != len(res.angles) + 1 or not np.isfinite(values).all():
            raise ValueError(f"{values.size} data values (finite: {bool(np.isfinite(values).all())}) for "
                             f"{len(res.angles) + 1} receivers")
        res.angles.append(choice.angle)
        res.frequencies.append(choice.frequency)
        res.choices.append(choice)
        res.rows.append(values)
        res.policy_versions.append(self._policy.version if self._policy and choice.source == "policy" else None)

    def update(self, res: ScanResult, reconstruction: np.ndarray) -> Callable[[], np.ndarray]:
        last = len(res.angles) == spec.BUDGET
        iterations = self.cfg.iterations + (self.cfg.final_iterations if last else 0)
        return partial(self._reconstruct, reconstruction, np.asarray(res.angles), np.asarray(res.frequencies),
                       res.data(), iterations, res.timings["recon"])

    def stop_reason(self, stopped: bool) -> str:
        return "budget"

    def finish(self) -> None:
        self._choice = None

    async def halt(self) -> None:
        """Brake, hold, and wait until the arm rests (best effort: a lost link is logged, not raised)."""
        try:
            await self.driver.command(p.Halt(), self.cfg.request_timeout_s)
            deadline = time.monotonic() + self.cfg.move_timeout_s
            while (await self._status()).moving and time.monotonic() < deadline:
                await asyncio.sleep(self.cfg.poll_s)
        except (TimeoutError, ValueError) as e:
            log.warning("halt after the scan failed: %s", e)

    # --- helpers ---------------------------------------------------------------------------------

    async def _catch_up(self, policy: TransceiverPolicy, res: ScanResult) -> bool:
        """`catch_up` for a policy swapped in (or rolled back to) during the scan, in a worker thread that an abort
        waits for (`drained_thread`), within one decision budget per step replayed; False when it failed or ran over
        (logged; the step falls back, the next one tries again)."""
        try:
            await drained_thread(catch_up, policy, res, self.cfg.n,
                                 timeout_s=self.cfg.decision_budget_s * (len(res.rows) + 1))
        except Exception as e:  # onnxruntime's run-time errors, the deadline (TimeoutError)
            log.warning("transceiver policy %s could not catch up on the scan: %r", policy.version, e)
            return False
        self._following = policy
        return True

    def _reconstruct(self, eta0: np.ndarray, angles: np.ndarray, freqs: np.ndarray, data: np.ndarray,
                     iterations: int, timings: list[float]) -> np.ndarray:
        t = time.perf_counter()
        eta = recon.reconstruct(eta0, angles, freqs, data, order=self.cfg.order, lam=self.cfg.lam,
                                iterations=iterations)
        timings.append(time.perf_counter() - t)
        return eta

    async def _status(self) -> p.ArmStatus:
        return await self.driver.query(p.ArmStatusRequest(), p.ArmStatus,  # type: ignore[return-value]
                                       self.cfg.request_timeout_s)

    async def _wait(self, ok: Callable[[p.ArmStatus], bool]) -> p.ArmStatus:
        deadline = time.monotonic() + self.cfg.move_timeout_s
        while True:
            st = await self._status()
            if st.in_position and ok(st):
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"arm not in position within {self.cfg.move_timeout_s} s: {st}")
            await asyncio.sleep(self.cfg.poll_s)


class TransceiverSession(AcquisitionSession):
    STAGE_STATUS = (p.ArmStatusRequest, p.ArmStatus)

    def __init__(self, host: ModeHost) -> None:
        c = self.config = host.cfg.scatter
        super().__init__(host, TransceiverMode(host.driver, c), poll_s=c.poll_s, abort_timeout_s=c.move_timeout_s,
                         request_timeout_s=c.request_timeout_s)

    def sample_message(self, sample: SampleSpec) -> framing.Message:
        raise ValueError("the transceiver ring has no sample command: its scatterer is set when it starts "
                         "(`edgetune sim scatter --family/--index` or --eta)")

    def details(self, res: ScanResult, stage: p.ArmStatus) -> dict[str, Any]:
        d = res.data()
        return {"angles": res.angles, "frequencies": res.frequencies,
                "wavenumbers": [float(spec.wavenumbers(self.config.n)[f]) for f in res.frequencies],
                "sources": [c.source for c in res.choices], "reasons": [c.reason for c in res.choices],
                "refusals": res.refusals, "policy_versions": res.policy_versions,
                "data": {"re": d.real.tolist(), "im": d.imag.tolist()},
                "gate": {"clamped": self.gate.clamped, "non_finite": self.gate.non_finite},
                "arm": {"angle_deg": stage.angle_deg, "moving": stage.moving}}

    def progress(self) -> tuple[str, int]:
        return "transceivers_placed", len(self.mode.result.angles)

    def describe(self) -> str:
        return f"{spec.BUDGET} transceivers on n = {self.config.n}, Born order {self.config.order}"


def _slot(cfg: EdgeConfig, on_request: Callable[[], None]) -> PolicySlot:
    c = cfg.scatter
    return PolicySlot(PolicySpec(spec.TASK, spec.obs_size(), spec.N_ANGLES * (1 + N_FREQ), 1),
                      budget_s=c.decision_budget_s, on_request=on_request,
                      validate_timeout_s=cfg.policy.validate_timeout_s,
                      validator=partial(TransceiverPolicy.validated_us, budget_s=c.decision_budget_s),
                      opener=TransceiverPolicy.opened)


SPEC = register(ModeSpec(name="transceiver", kind="session", messages=p.SCATTER, build=TransceiverSession,
                         slot=_slot, ops=AcquisitionSession.OPS,
                         decision_period_s=lambda cfg: cfg.scatter.decision_budget_s))
