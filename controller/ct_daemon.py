"""The angles-mode daemon (`loop.mode = "angles"`): adaptive CT scans on the rotation stage + detector
(`edgetune sim ct` or the instrument) driven by `AnglesMode`, one scan per request.

  CT serial driver → AnglesMode (policy from the slot) → recorder (one "scan" event per scan, the
  reconstruction saved as <recorder dir>/scans/scan-<session>-<n>.npy)
  PushServer (authenticated, controller/pushwire.py): push / rollback (the angle policy, installed atomically,
  validated in the slot's validator process: `AnglePolicy.from_artifact` + an exposure-time budget), status,
  scan, abort.

A swap or rollback applies at the next decision boundary, as the rl-pid loop's does at the next tick:
between scans, or inside one before the next angle is chosen (the angle in flight finishes with the
policy that chose it). Each acquired angle records the version of the policy that chose it.
`scan` runs one scan (optionally after putting a phantom on the stage) and replies with its summary;
a second scan while one runs is refused ("busy"). `abort` halts the scan in flight and replies once the
stage rests; send it with another key than the scan's (the replay guard keeps one sequence window per key,
so a request overtaken on the same key is refused as replayed). Without a policy a scan takes
golden-ratio angles.
"""
from __future__ import annotations

import asyncio
import logging
import signal
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from controller import protocol as p
from controller.config import EdgeConfig
from controller.driver import SerialDriver
from controller.hostlink_wire import load_keyring
from controller.modes.angles import TASK, AnglesMode, ScanResult, open_validated_policy, validated_decision_us
from controller.policy import PolicySlot, PolicySpec
from controller.push import PushServer
from controller.pushwire import PushHeader, SampleSpec
from controller.recorder import Recorder
from controller.sdnotify import notify

log = logging.getLogger("edgetune.ct_daemon")


def sample_message(spec: SampleSpec, size: int) -> p.SetSample:
    return p.SetSample(p.SampleKind[spec.kind.upper()], spec.seed, p.Split[spec.split.upper()], size)


class CtDaemon:
    """Build from a validated config (``loop.mode == "angles"``); ``await run()`` until ``stop()`` or SIGTERM/SIGINT."""

    def __init__(self, cfg: EdgeConfig) -> None:
        self.cfg = cfg
        keyring = load_keyring(cfg.hostlink.key_file)  # refuses a world-readable key file
        a = self.angles = cfg.angles
        dev = cfg.device
        self.driver = SerialDriver(dev.port, dev.baud, messages=p.CT, backoff_min_s=dev.reconnect_backoff_min_s,
                                   backoff_max_s=dev.reconnect_backoff_max_s, on_link=self._on_device_link)
        self.mode = AnglesMode(self.driver, a)
        # one "step" of the flat observation is the whole x̂ ‖ acquired vector
        self.slot = PolicySlot(PolicySpec(TASK, a.size * a.size + a.n_angles, a.n_angles + 1, 1),
                               budget_s=a.exposure_s, on_request=self._boundary,
                               validate_timeout_s=cfg.policy.validate_timeout_s,
                               validator=partial(validated_decision_us, size=a.size, n_angles=a.n_angles,
                                                 budget_s=a.exposure_s),
                               opener=partial(open_validated_policy, size=a.size, n_angles=a.n_angles))
        self.mode.slot = self.slot  # decisions run under the slot's run-time guard
        self.recorder = Recorder.open(cfg.recorder.path, batch_rows=cfg.recorder.batch_rows,
                                      flush_ms=cfg.recorder.flush_ms)
        self.scans_dir = Path(cfg.recorder.path).parent / "scans"
        self.push = PushServer(cfg.policy, keyring, self.slot, nominal_period_s=a.exposure_s,
                               max_clock_skew_s=cfg.hostlink.max_clock_skew_s, replay_window=cfg.hostlink.replay_window,
                               record=self.recorder.record_event,
                               ops={"scan": self._scan_op, "abort": self._abort_op, "status": self._status_op})
        self.scans = 0
        self._scan_lock = asyncio.Lock()  # held from a scan request to its reply
        self._stop = asyncio.Event()

    def _on_device_link(self, up: bool, reason: str) -> None:
        self.recorder.record_event("device", {"up": up, "reason": reason})

    def _boundary(self) -> None:
        """Apply a requested swap or rollback to the mode (its next decision uses the new policy)."""
        if self.slot.boundary():
            self.mode.policy = self.slot.active

    # -- push-channel ops ---------------------------------------------------------------------------

    async def _scan_op(self, header: PushHeader) -> dict[str, Any]:
        if self._scan_lock.locked():
            return {"accepted": False, "reason": "busy", "detail": "a scan is running"}
        async with self._scan_lock:
            if not self.driver.connected:
                return {"accepted": False, "reason": "device_down", "detail": f"no device on {self.cfg.device.port}"}
            try:
                if header.sample is not None:
                    await self.driver.command(sample_message(header.sample, self.angles.size),
                                              self.angles.request_timeout_s)
                res = await self.mode.run()
                stage: p.StageStatus = await self.driver.request(  # type: ignore[assignment]
                    p.StageStatusRequest(), p.StageStatus, self.angles.request_timeout_s)
                status = await self.driver.status()
            except (TimeoutError, ValueError) as e:  # Nak, lost device, angle outside the limits
                log.warning("scan failed: %s", e)
                self.recorder.record_event("scan", {"error": str(e)})
                return {"accepted": False, "reason": "device_error", "detail": str(e)}
            self.scans += 1
            path = await asyncio.to_thread(self._save, res)
            summary = self._summary(res, path, stage, status)
            self.recorder.record_event("scan", {**summary, "timings": res.timings})
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
                           "naks": self.driver.stats.naks}}

    async def _abort_op(self, header: PushHeader) -> dict[str, Any]:
        while self._scan_lock.locked() and not self.mode.running:  # a scan op before or after its scan (ms)
            await asyncio.sleep(self.angles.poll_s)
        running = self.mode.running
        await self.mode.abort()
        if running:
            self.recorder.record_event("abort", {"scan": self.scans + 1})
        return {"accepted": True, "reason": "aborted" if running else "idle"}

    async def _status_op(self, header: PushHeader) -> dict[str, Any]:
        return {"accepted": True, "reason": "ok", **self.push.status(), "scanning": self._scan_lock.locked(),
                "angles_acquired": len(self.mode.result.angles_deg) if self.mode.running else 0,
                "scans": self.scans, "device_up": self.driver.connected}

    # -- lifecycle ----------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        await self.push.start()
        self.slot.start_validator()
        restore = loop.create_task(self.push.restore(), name="policy restore")
        await self.driver.start()
        log.info("angles daemon up: device %s, model push %s:%d, N=%d, ≤ %d angles", self.cfg.device.port,
                 *self.push.address, self.angles.size, self.angles.max_angles)
        notify("READY=1", "STATUS=running")
        try:
            await self._stop.wait()
        finally:
            notify("STOPPING=1")
            restore.cancel()
            await asyncio.gather(restore, return_exceptions=True)
            await self.mode.abort()  # the stage rests before anything goes down
            await self.push.close()
            self.slot.close()
            await self.driver.close()
            self.recorder.record_event("stop", {"scans": self.scans})
            self.recorder.close()
            log.info("angles daemon stopped after %d scans", self.scans)
