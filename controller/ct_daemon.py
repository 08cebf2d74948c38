"""The angles-mode daemon (`loop.mode = "angles"`): adaptive CT scans on the rotation stage + detector
(`edgetune sim ct` or the instrument) driven by `AnglesMode`, one scan per request. Start-up, supervised
tasks, metrics, the operator hold and shutdown are shared with the MEMS daemon (controller/lifecycle.py).

  CT serial driver → AnglesMode (policy from the slot) → recorder (one "scan" event per scan, the
  reconstruction saved as <recorder dir>/scans/scan-<session>-<n>.npy)
  PushServer (authenticated, controller/link/push_wire.py): push / rollback (the angle policy, installed atomically,
  validated in the slot's validator process: `AnglePolicy.from_artifact` + an exposure-time budget), status,
  scan, abort, hold, resume.

A swap or rollback applies at the next decision boundary, as the rl-pid loop's does at the next tick:
between scans, or inside one before the next angle is chosen (the angle in flight finishes with the
policy that chose it). Each acquired angle records the version of the policy that chose it.
`scan` runs one scan (optionally after putting a phantom on the stage) and replies with its summary;
a second scan while one runs is refused ("busy"). `abort` halts the scan in flight and replies once the
stage rests; send it with another key than the scan's (the replay guard keeps one sequence window per key,
so a request overtaken on the same key is refused as replayed). Without a policy a scan takes
golden-ratio angles. `hold` aborts the scan in flight (the stage halted: the mode's safe state) and refuses
scans ("held") until `resume`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from controller.protocol import common, ct
from controller.config import EdgeConfig
from controller.driver import SerialDriver
from controller.modes.ct.angles import TASK, AnglesMode, ScanResult, open_validated_policy, validated_decision_us
from controller.lifecycle import EdgeDaemon
from controller.policy.slot import PolicySlot, PolicySpec
from controller.link.push_wire import PushHeader, SampleSpec

log = logging.getLogger("edgetune.ct_daemon")

HELD = {"accepted": False, "reason": "held", "detail": "operator hold: scans resume after `edgetune link resume`"}


def sample_message(spec: SampleSpec, size: int) -> ct.SetSample:
    return ct.SetSample(ct.SampleKind[spec.kind.upper()], spec.seed, ct.Split[spec.split.upper()], size)


class CtDaemon(EdgeDaemon):
    """Build from a validated config (``loop.mode == "angles"``); ``await run()`` until ``stop()`` or SIGTERM/SIGINT."""

    name = "the angles daemon"

    def __init__(self, cfg: EdgeConfig) -> None:
        a = self.angles = cfg.angles
        dev = cfg.device
        driver = SerialDriver(dev.port, dev.baud, messages=ct.CT, backoff_min_s=dev.reconnect_backoff_min_s,
                              backoff_max_s=dev.reconnect_backoff_max_s, on_link=self._on_device_link)
        self.mode = AnglesMode(driver, a)
        # one "step" of the flat observation is the whole x̂ ‖ acquired vector
        slot = PolicySlot(PolicySpec(TASK, a.size * a.size + a.n_angles, a.n_angles + 1, 1),
                          budget_s=a.exposure_s, on_request=self._boundary,
                          validate_timeout_s=cfg.policy.validate_timeout_s,
                          validator=partial(validated_decision_us, size=a.size, n_angles=a.n_angles,
                                            budget_s=a.exposure_s),
                          opener=partial(open_validated_policy, size=a.size, n_angles=a.n_angles))
        super().__init__(cfg, driver, slot, nominal_period_s=a.exposure_s,
                         ops={"scan": self._scan_op, "abort": self._abort_op})
        self.mode.slot = self.slot  # decisions run under the slot's run-time guard
        self.scans_dir = Path(cfg.recorder.path).parent / "scans"
        self.scans = 0
        self._scan_lock = asyncio.Lock()  # held from a scan request to its reply

    def _boundary(self) -> None:
        """Apply a requested swap or rollback to the mode (its next decision uses the new policy)."""
        if self.slot.boundary():
            self.mode.policy = self.slot.active

    # -- push-channel ops ---------------------------------------------------------------------------

    async def _scan_op(self, header: PushHeader) -> dict[str, Any]:
        if self._scan_lock.locked():
            return {"accepted": False, "reason": "busy", "detail": "a scan is running"}
        async with self._scan_lock:
            if self.held:
                return HELD
            if not self.driver.connected:
                return {"accepted": False, "reason": "device_down", "detail": f"no device on {self.cfg.device.port}"}
            try:
                if header.sample is not None:
                    await self.driver.command(sample_message(header.sample, self.angles.size),
                                              self.angles.request_timeout_s)
                if self.held:  # held while the phantom was put on the stage; nothing awaits from here to the scan
                    return HELD
                res = await self.mode.run()
                stage: ct.StageStatus = await self.driver.request(  # type: ignore[assignment]
                    ct.StageStatusRequest(), ct.StageStatus, self.angles.request_timeout_s)
                status = await self.driver.status()
            except (TimeoutError, ValueError) as e:  # Nak, lost device, angle outside the limits
                log.warning("scan failed: %s", e)
                self.record("scan", {"error": str(e)})
                return {"accepted": False, "reason": "device_error", "detail": str(e)}
            self.scans += 1
            path = await asyncio.to_thread(self._save, res)
            summary = self._summary(res, path, stage, status)
            self.record("scan", {**summary, "timings": res.timings})
            log.info("scan %d: %d angles, stopped by %s, %.2f s", self.scans, len(res.angles_deg), res.stopped_by,
                     res.total_s)
            return {"accepted": True, "reason": "scanned", **summary}

    def _save(self, res: ScanResult) -> str | None:
        if res.reconstruction is None:
            return None
        self.scans_dir.mkdir(parents=True, exist_ok=True)
        path = self.scans_dir / f"scan-{self.recorder.session}-{self.scans:04d}.npy"
        np.save(path, res.reconstruction)
        return str(path)

    def _summary(self, res: ScanResult, path: str | None, stage: ct.StageStatus,
                 status: common.Status) -> dict[str, Any]:
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
                           "naks": self.driver.stats.naks}}

    async def _abort_op(self, header: PushHeader) -> dict[str, Any]:
        return {"accepted": True, "reason": "aborted" if await self._abort_scan("abort") else "idle"}

    async def _abort_scan(self, by: str) -> bool:
        """Halt the scan in flight (if any) and wait until the stage rests; True when one was running."""
        deadline = time.monotonic() + self.angles.move_timeout_s
        while self._scan_lock.locked() and not self.mode.running:  # a scan op before or after its scan (ms)
            if time.monotonic() > deadline:  # e.g. saving a reconstruction to storage that does not answer
                log.error("%s: the scan request did not reach or leave its scan within %g s (move_timeout_s); "
                          "aborting what runs now", by, self.angles.move_timeout_s)
                break
            await asyncio.sleep(self.angles.poll_s)
        running = self.mode.running
        await self.mode.abort()
        if running:
            self.record("abort", {"scan": self.scans + 1, "by": by})
        return running

    # -- lifecycle (controller/lifecycle.py) ----------------------------------------------------------

    async def _apply_hold(self, held: bool) -> None:
        if held:
            await self._abort_scan("hold")

    def _status(self) -> dict[str, Any]:
        return {"scanning": self._scan_lock.locked(),
                "angles_acquired": len(self.mode.result.angles_deg) if self.mode.running else 0,
                "scans": self.scans, "device_up": self.driver.connected}

    async def _serve(self) -> None:
        await self._stop.wait()

    async def _actuators_safe(self) -> None:
        await self.mode.abort()  # the stage rests before anything goes down

    def _log_up(self) -> None:
        log.info("angles daemon up: device %s, model push %s:%d, N=%d, ≤ %d angles", self.cfg.device.port,
                 *self.push.address, self.angles.size, self.angles.max_angles)

    def _log_stopped(self) -> None:
        log.info("angles daemon stopped after %d scans", self.scans)

    def _stop_details(self) -> dict[str, Any]:
        return {"scans": self.scans}
