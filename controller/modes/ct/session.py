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

from functools import partial
from typing import Any, Callable

import numpy as np

from controller.config import EdgeConfig
from controller.link.push_wire import SampleSpec
from controller.modes.acquisition import AcquisitionSession
from controller.modes.base import ModeHost, ModeSpec
from controller.modes.ct.angles import AnglesMode, ScanResult
from controller.modes.ct.spec import TASK
from controller.policy.runtime import open_validated_policy, validated_decision_us
from controller.modes.registry import register
from controller.policy.slot import PolicySlot, PolicySpec
from controller.protocol import ct as p


class AnglesSession(AcquisitionSession):
    STAGE_STATUS = (p.StageStatusRequest, p.StageStatus)

    def __init__(self, host: ModeHost) -> None:
        a = self.angles = host.cfg.angles
        super().__init__(host, AnglesMode(host.driver, a), poll_s=a.poll_s, abort_timeout_s=a.move_timeout_s,
                         request_timeout_s=a.request_timeout_s)

    def sample_message(self, sample: SampleSpec) -> p.SetSample:
        return p.SetSample(p.SampleKind[sample.kind.upper()], sample.seed, p.Split[sample.split.upper()], self.angles.size)

    def details(self, res: ScanResult, stage: p.StageStatus) -> dict[str, Any]:
        return {"angles_deg": res.angles_deg, "measured_deg": res.measured_deg, "n_angles": len(res.angles_deg),
                # the policy that chose the last angle (golden-ratio fallbacks skipped)
                "policy": next((v for v in reversed(res.policy_versions) if v is not None), None),
                "policy_versions": res.policy_versions,
                "stage": {"angle_deg": stage.angle_deg, "moving": stage.moving, "at_min": stage.at_min,
                          "at_max": stage.at_max}}

    def images(self, res: ScanResult) -> dict[str, np.ndarray]:
        return {**super().images(res), "projection": res.sinogram}  # (angles, N): one projection per step

    def progress(self) -> tuple[str, int]:
        return "angles_acquired", len(self.mode.result.angles_deg)

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
