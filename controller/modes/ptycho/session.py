"""The ptycho mode as a session mode (registered as "ptycho", config section [ptycho]): one adaptive
ptychographic scan per ``scan`` request on the scan stage + pixel detector (`edgetune sim ptycho` or the
instrument), driven by ``PtychoScan`` (controller/modes/ptycho/scan.py); the recorder gets one "scan" event per
scan and the final reconstruction (the object phase) is saved as <recorder dir>/scans/scan-<session>-<n>.npy.

The policy slot validates scan policies in its validator process (`ScanPolicy.from_artifact` + the decision
budget). A swap or rollback applies at the next decision boundary: between scans, or inside one before the
next sub-sequence is chosen. `scan` (optionally after `SetSample` with the request's sample seed as the key;
its kind and split are the CT phantom's and are not used here) runs one scan and replies with its summary:
positions per sub-sequence (in the policy's order and in the acquired order), where each came from (halton,
policy, fallback), the path length and estimated move time of the acquired order, the policy's order and a
raster order, timings, gate and device counters. `abort` and `hold` as in the angles mode.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

import numpy as np

from controller.config import EdgeConfig
from controller.link.push_wire import SampleSpec
from controller.modes.acquisition import AcquisitionSession
from controller.modes.base import ModeHost, ModeSpec
from controller.modes.ptycho import spec
from controller.modes.ptycho.scan import PtychoScan, ScanResult
from controller.modes.registry import register
from controller.modes.ptycho.policy import ScanPolicy
from controller.policy.slot import PolicySlot, PolicySpec
from controller.protocol import ptycho as p


class PtychoSession(AcquisitionSession):
    STAGE_STATUS = (p.StageStatusRequest, p.StageStatus)

    def __init__(self, host: ModeHost) -> None:
        c = self.config = host.cfg.ptycho
        super().__init__(host, PtychoScan(host.driver, c, keep_frames=host.wants_images), poll_s=c.poll_s, abort_timeout_s=c.move_timeout_s,
                         request_timeout_s=c.request_timeout_s)

    def sample_message(self, sample: SampleSpec) -> p.SetSample:
        return p.SetSample(sample.seed)  # the seed is the sample key (kind and split are CT's)

    def details(self, res: ScanResult, stage: p.StageStatus) -> dict[str, Any]:
        totals = {name: {k: round(sum(s["paths"][name][k] for s in res.subsequences), 6) for k in ("length_A", "move_s")}
                  for name in ("ordered", "policy", "raster")}
        return {"n_positions": len(res.positions), "positions": res.positions, "subsequences": res.subsequences,
                "paths": totals, "reacquired": res.reacquired,
                "gate": {"clamped": self.gate.clamped, "non_finite": self.gate.non_finite},
                "stage": {"x_A": stage.x_A, "y_A": stage.y_A, "moving": stage.moving}}

    def images(self, res: ScanResult) -> dict[str, np.ndarray]:
        frames = {"diffraction": np.stack(res.frames)} if res.frames else {}  # (positions, window, window) counts
        return {**super().images(res), **frames}

    def progress(self) -> tuple[str, int]:
        return "positions_acquired", len(self.mode.result.positions)

    def describe(self) -> str:
        return f"{self.config.positions} positions in {self.config.subsequences} sub-sequences"


def _slot(cfg: EdgeConfig, on_request: Callable[[], None]) -> PolicySlot:
    c, field = cfg.ptycho, cfg.ptycho.optics.grid
    return PolicySlot(PolicySpec(spec.TASK, field * field + 4 * spec.M_MAX + 1, 2 * spec.M_MAX, 1),
                      budget_s=c.decision_budget_s, on_request=on_request,
                      validate_timeout_s=cfg.policy.validate_timeout_s,
                      validator=partial(ScanPolicy.validated_us, field=field, budget_s=c.decision_budget_s),
                      opener=partial(ScanPolicy.opened, field=field))


SPEC = register(ModeSpec(name="ptycho", kind="session", messages=p.PTYCHO, build=PtychoSession, slot=_slot,
                         ops=AcquisitionSession.OPS, decision_period_s=lambda cfg: cfg.ptycho.decision_budget_s))
