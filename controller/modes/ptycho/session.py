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

import asyncio
import logging
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from controller.config import EdgeConfig
from controller.link.push_wire import PushHeader
from controller.modes.acquisition import AcquisitionSession
from controller.modes.base import ModeHost, ModeSpec
from controller.modes.ptycho import spec
from controller.modes.ptycho.scan import PtychoScan, ScanResult
from controller.modes.registry import register
from controller.policy.runtime import open_validated_scan_policy, validated_scan_us
from controller.policy.slot import PolicySlot, PolicySpec
from controller.protocol import ptycho as p

log = logging.getLogger("edgetune.daemon")


class PtychoSession(AcquisitionSession):
    def __init__(self, host: ModeHost) -> None:
        c = self.config = host.cfg.ptycho
        super().__init__(host, poll_s=c.poll_s, abort_timeout_s=c.move_timeout_s)
        self.mode = PtychoScan(host.driver, c)
        self.mode.slot = host.slot  # decisions run under the slot's run-time guard
        self.gate = self.mode.gate
        self.scans_dir = Path(host.cfg.recorder.path).parent / "scans"

    @property
    def running(self) -> bool:
        return self.mode.running

    async def stop(self) -> None:
        await self.mode.abort()

    def boundary(self) -> None:
        """Apply a requested swap or rollback (the next sub-sequence's decision uses the new policy)."""
        slot = self.host.slot
        if slot is not None and slot.boundary():
            self.mode.policy = slot.active

    async def acquire(self, header: PushHeader) -> dict[str, Any]:
        driver, c = self.host.driver, self.config
        if header.sample is not None:
            await driver.command(p.SetSample(header.sample.seed), c.request_timeout_s)
        self.held_check()
        res = await self.mode.run()
        stage: p.StageStatus = await driver.request(  # type: ignore[assignment]
            p.StageStatusRequest(), p.StageStatus, c.request_timeout_s)
        status = await driver.status()
        self.scans += 1
        path = await asyncio.to_thread(self._save, res)
        summary = self._summary(res, path, stage, status)
        self.host.record("scan", {**summary, "timings": res.timings})
        log.info("scan %d: %d positions in %d sub-sequences, stopped by %s, %.2f s", self.scans, len(res.positions),
                 len(res.subsequences), res.stopped_by, res.total_s)
        return summary

    def _save(self, res: ScanResult) -> str | None:
        if res.reconstruction is None:
            return None
        self.scans_dir.mkdir(parents=True, exist_ok=True)
        path = self.scans_dir / f"scan-{self.host.session}-{self.scans:04d}.npy"
        np.save(path, res.reconstruction)
        return str(path)

    def _summary(self, res: ScanResult, path: str | None, stage: p.StageStatus, status: p.Status) -> dict[str, Any]:
        totals = {name: {k: round(sum(s["paths"][name][k] for s in res.subsequences), 6) for k in ("length_A", "move_s")}
                  for name in ("ordered", "policy", "raster")}
        return {"scan": self.scans, "n_positions": len(res.positions), "positions": res.positions,
                "subsequences": res.subsequences, "paths": totals, "stopped_by": res.stopped_by,
                "reconstruction": path, "policy_faults": res.policy_faults, "reacquired": res.reacquired,
                "total_s": round(res.total_s, 4), "timings_s": {k: round(sum(v), 4) for k, v in res.timings.items()},
                "gate": {"clamped": self.gate.clamped, "non_finite": self.gate.non_finite},
                "stage": {"x_A": stage.x_A, "y_A": stage.y_A, "moving": stage.moving},
                "device": {"busy_refused": stage.busy_refused, "cmd_rejected": status.cmd_rejected,
                           "naks": self.host.driver.stats.naks}}

    def status(self) -> dict[str, Any]:
        return {"scanning": self._scan_lock.locked(),
                "positions_acquired": len(self.mode.result.positions) if self.mode.running else 0,
                "scans": self.scans, "device_up": self.host.driver.connected}

    def describe(self) -> str:
        return f"{self.config.positions} positions in {self.config.subsequences} sub-sequences"


def _slot(cfg: EdgeConfig, on_request: Callable[[], None]) -> PolicySlot:
    c, field = cfg.ptycho, cfg.ptycho.optics.grid
    return PolicySlot(PolicySpec(spec.TASK, field * field + 2 * spec.M_MAX + 1, 2 * spec.M_MAX, 1),
                      budget_s=c.decision_budget_s, on_request=on_request,
                      validate_timeout_s=cfg.policy.validate_timeout_s,
                      validator=partial(validated_scan_us, field=field, budget_s=c.decision_budget_s),
                      opener=partial(open_validated_scan_policy, field=field))


SPEC = register(ModeSpec(name="ptycho", kind="session", messages=p.PTYCHO, build=PtychoSession, slot=_slot,
                         ops=AcquisitionSession.OPS, decision_period_s=lambda cfg: cfg.ptycho.decision_budget_s))
