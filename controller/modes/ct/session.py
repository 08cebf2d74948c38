"""The angles mode as a session mode (registered as "angles", config section [angles]): one adaptive CT scan
per ``scan`` request on the rotation stage + detector (`edgetune sim ct` or the instrument), driven by
``AnglesMode`` (controller/modes/ct/angles.py); the recorder gets one "scan" event per scan and the
reconstruction is saved as <recorder dir>/scans/scan-<session>-<n>.npy.

The policy slot validates angle policies in its validator process (`AnglePolicy.from_artifact` + an
exposure-time budget). A swap or rollback applies at the next decision boundary: between scans, or inside one
before the next angle is chosen (the angle in flight finishes with the policy that chose it). Each acquired
angle records the version of the policy that chose it. `scan` runs one scan (optionally after putting a
phantom on the stage) and replies with its summary; a second scan while one runs is refused ("busy").
`abort` halts the scan in flight and replies once the stage rests; send it with another key than the scan's
(the replay guard keeps one sequence window per key). Without a policy a scan takes golden-ratio angles.
`hold` aborts the scan in flight (the stage halted: the mode's safe state) and refuses scans ("held") until
`resume`.
"""
from __future__ import annotations

import asyncio
import logging
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from controller.config import EdgeConfig
from controller.link.push_wire import PushHeader, SampleSpec
from controller.modes.acquisition import AcquisitionSession
from controller.modes.base import ModeHost, ModeSpec
from controller.modes.ct.angles import AnglesMode, ScanResult
from controller.modes.ct.spec import TASK
from controller.policy.runtime import open_validated_policy, validated_decision_us
from controller.modes.registry import register
from controller.policy.slot import PolicySlot, PolicySpec
from controller.protocol import ct as p

log = logging.getLogger("edgetune.daemon")


def sample_message(spec: SampleSpec, size: int) -> p.SetSample:
    return p.SetSample(p.SampleKind[spec.kind.upper()], spec.seed, p.Split[spec.split.upper()], size)


class AnglesSession(AcquisitionSession):
    def __init__(self, host: ModeHost) -> None:
        a = self.angles = host.cfg.angles
        super().__init__(host, poll_s=a.poll_s, abort_timeout_s=a.move_timeout_s)
        self.mode = AnglesMode(host.driver, a)
        self.mode.slot = host.slot  # decisions run under the slot's run-time guard
        self.gate = self.mode.gate
        self.scans_dir = Path(host.cfg.recorder.path).parent / "scans"

    @property
    def running(self) -> bool:
        return self.mode.running

    async def stop(self) -> None:
        await self.mode.abort()

    def boundary(self) -> None:
        """Apply a requested swap or rollback (the next decision uses the new policy)."""
        slot = self.host.slot
        if slot is not None and slot.boundary():
            self.mode.policy = slot.active

    async def acquire(self, header: PushHeader) -> dict[str, Any]:
        driver, a = self.host.driver, self.angles
        if header.sample is not None:
            await driver.command(sample_message(header.sample, a.size), a.request_timeout_s)
        self.held_check()  # held while the phantom was put on the stage; nothing awaits from here to the scan
        res = await self.mode.run()
        stage: p.StageStatus = await driver.request(  # type: ignore[assignment]
            p.StageStatusRequest(), p.StageStatus, a.request_timeout_s)
        status = await driver.status()
        self.scans += 1
        path = await asyncio.to_thread(self._save, res)
        summary = self._summary(res, path, stage, status)
        self.host.record("scan", {**summary, "timings": res.timings})
        log.info("scan %d: %d angles, stopped by %s, %.2f s", self.scans, len(res.angles_deg), res.stopped_by,
                 res.total_s)
        return summary

    def _save(self, res: ScanResult) -> str | None:
        if res.reconstruction is None:
            return None
        self.scans_dir.mkdir(parents=True, exist_ok=True)
        path = self.scans_dir / f"scan-{self.host.session}-{self.scans:04d}.npy"
        np.save(path, res.reconstruction)
        return str(path)

    def _summary(self, res: ScanResult, path: str | None, stage: p.StageStatus, status: p.Status) -> dict[str, Any]:
        return {"scan": self.scans, "angles_deg": res.angles_deg, "measured_deg": res.measured_deg,
                "n_angles": len(res.angles_deg), "stopped_by": res.stopped_by, "reconstruction": path,
                # the policy that chose the last angle (golden-ratio fallbacks skipped)
                "policy": next((v for v in reversed(res.policy_versions) if v is not None), None),
                "policy_versions": res.policy_versions, "policy_faults": res.policy_faults,
                "total_s": round(res.total_s, 4),
                "timings_s": {k: round(sum(v), 4) for k, v in res.timings.items()},
                "stage": {"angle_deg": stage.angle_deg, "moving": stage.moving, "at_min": stage.at_min,
                          "at_max": stage.at_max},
                "device": {"busy_refused": stage.busy_refused, "cmd_rejected": status.cmd_rejected,
                           "naks": self.host.driver.stats.naks}}

    def status(self) -> dict[str, Any]:
        return {"scanning": self._scan_lock.locked(),
                "angles_acquired": len(self.mode.result.angles_deg) if self.mode.running else 0,
                "scans": self.scans, "device_up": self.host.driver.connected}

    def describe(self) -> str:
        return f"N={self.angles.size}, ≤ {self.angles.max_angles} angles"


def _slot(cfg: EdgeConfig, on_request: Callable[[], None]) -> PolicySlot:
    a = cfg.angles  # one "step" of the flat observation is the whole x̂ ‖ acquired vector
    return PolicySlot(PolicySpec(TASK, a.size * a.size + a.n_angles, a.n_angles + 1, 1), budget_s=a.exposure_s,
                      on_request=on_request, validate_timeout_s=cfg.policy.validate_timeout_s,
                      validator=partial(validated_decision_us, size=a.size, n_angles=a.n_angles, budget_s=a.exposure_s),
                      opener=partial(open_validated_policy, size=a.size, n_angles=a.n_angles))


SPEC = register(ModeSpec(name="angles", kind="session", messages=p.CT, build=AnglesSession,
                         slot=_slot, ops=AcquisitionSession.OPS,
                         decision_period_s=lambda cfg: cfg.angles.exposure_s))
