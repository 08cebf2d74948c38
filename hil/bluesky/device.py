"""ophyd-async devices over the daemon's Channel Access PVs (ophyd-async 0.21, pinned by the bluesky extra).

The PV names are the daemon's contract (controller/epics/pvs.py, docs/epics.md): ``P:Name`` with P the daemon's `[epics]`
prefix (no trailing colon), ``-RB`` read-backs and ``-SP`` set points. Which PVs a daemon serves depends on its
mode, so there is one device per kind of mode, each with the read-only loop state every mode serves (`EdgeLoop`):

- `EdgeMems` (stabilize, rl-pid): the spot (``x``, ``y``, hinted), ``error`` and ``settled`` in ``read()``;
  ``target_x``/``target_y`` and ``gains`` are settable signals whose put waits for the daemon's put-callback: a
  target put completes when the loop has settled on it (or fails on the daemon's settle timeout), a gains put
  when the gains are applied at a tick boundary. So ``bps.mv(edge.target_x, 10)`` is "move and settle", and
  ``bp.scan([edge], edge.target_x, 0, 10, 5)`` records the spot at each settled target.
- `EdgeScanner` (angles/CT; the later scan modes serve the same PVs): ``trigger()`` runs one scan with the
  mode's configured defaults (``ScanStart-SP``, whose put completes when the scan ends) and fails unless it ended
  ``Done``; ``read()`` gives its state, progress, points and the JSON summary, so ``bp.count([scanner])`` runs and
  records scans. As a flyer, ``kickoff()`` returns once the scan runs and ``complete()`` when it has ended;
  ``stop()`` aborts it (``ScanAbort-SP``).

A put the daemon fails (a target not settled in time, a value its validation refuses, a write it does not allow)
fails the status: the set points use `PutChecked`, see there why ophyd-async's own CA signals would not.

The connection comes from the CA environment (EPICS_CA_ADDR_LIST, EPICS_CA_SERVER_PORT, ...), read once when the
first CA context is made: set it before connecting the first device.
"""
from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from aioca import CANothing
from bluesky.protocols import Flyable, Stoppable, Triggerable
from ophyd_async.core import (Array1D, AsyncStatus, SignalRW, SignalW, StandardReadable,
                              StandardReadableFormat as Format, StrictEnum, YesNo, wait_for_value)
from ophyd_async.epics.core import CaSignalBackend, EpicsOptions, epics_signal_r

SETTLE_TIMEOUT_S = 30.0  # a set point's put waits this long for the callback (the daemon's settle timeout: shorter)
SCAN_TIMEOUT_S = 600.0  # a scan's put (trigger, complete) waits this long
READBACK_S = 5.0  # a monitored read-back may arrive just after its put-callback; this long at most


class Link(StrictEnum):
    DOWN = "Down"
    UP = "Up"


class ScanState(StrictEnum):
    IDLE = "Idle"
    RUNNING = "Running"
    DONE = "Done"
    ABORTED = "Aborted"
    FAILED = "Failed"


class ScanFailed(RuntimeError):
    """A scan that ended other than Done (aborted, failed); the message has the daemon's summary."""


class PutFailed(RuntimeError):
    """The daemon failed a put (its CA status and the PV in the message)."""


class PutChecked(CaSignalBackend):
    """ophyd-async's CA backend, with a failed put raised as `PutFailed`. aioca reports a failed put-callback as
    ``CANothing``, an exception that is falsy (its ``__bool__`` is the put's ok); ophyd-async 0.21.3 runs every put
    inside stamina's retry context, and tenacity 9.2 takes a falsy exception for no exception, so the set would
    complete as if the put had succeeded (tests/unit/test_bluesky_device.py shows both)."""

    async def put(self, value: Any) -> None:
        try:
            await super().put(value)
        except CANothing as e:
            raise PutFailed(f"{self.write_pv}: {e}") from None


def checked_rw(datatype: Any, read_pv: str, write_pv: str, timeout: float) -> SignalRW:
    """``epics_signal_rw`` with `PutChecked`: the put waits for the put-callback (up to ``timeout``)."""
    return SignalRW(PutChecked(datatype, read_pv, write_pv, EpicsOptions(wait=True)), timeout=timeout)


def checked_w(datatype: Any, write_pv: str, timeout: float) -> SignalW:
    """``epics_signal_w`` with `PutChecked`."""
    return SignalW(PutChecked(datatype, write_pv, write_pv, EpicsOptions(wait=True)), timeout=timeout)


class EdgeLoop(StandardReadable):
    """The loop state every mode serves: tick rate, lateness p99, overruns, link and hold in ``read()``; the mode
    and the active policy version in ``read_configuration()``."""

    def __init__(self, prefix: str, name: str = "") -> None:
        pv = f"{prefix}:".__add__
        with self.add_children_as_readables(Format.CONFIG_SIGNAL):
            self.mode = epics_signal_r(str, pv("Mode-RB"))
            self.policy_version = epics_signal_r(str, pv("PolicyVersion-RB"))
        with self.add_children_as_readables():
            self.tick_rate = epics_signal_r(float, pv("TickRate-RB"))
            self.lateness_p99 = epics_signal_r(float, pv("LatenessP99-RB"))
            self.overruns = epics_signal_r(int, pv("Overruns-RB"))
            self.link = epics_signal_r(Link, pv("Link-RB"))
            self.held = epics_signal_r(YesNo, pv("Held-RB"))
        super().__init__(name=name)


class EdgeMems(EdgeLoop):
    """A MEMS tick mode's PVs (module doc). ``settle_timeout_s``: how long a target or gains put may wait."""

    def __init__(self, prefix: str, name: str = "", settle_timeout_s: float = SETTLE_TIMEOUT_S) -> None:
        pv = f"{prefix}:".__add__
        with self.add_children_as_readables(Format.HINTED_SIGNAL):
            self.x = epics_signal_r(float, pv("X-RB"))
            self.y = epics_signal_r(float, pv("Y-RB"))
        with self.add_children_as_readables():
            self.error = epics_signal_r(float, pv("Error-RB"))
            self.settled = epics_signal_r(YesNo, pv("Settled-RB"))
            self.target_x = checked_rw(float, pv("TargetX-RB"), pv("TargetX-SP"), settle_timeout_s)
            self.target_y = checked_rw(float, pv("TargetY-RB"), pv("TargetY-SP"), settle_timeout_s)
        with self.add_children_as_readables(Format.CONFIG_SIGNAL):
            # kp_x, ki_x, kd_x, kp_y, ki_y, kd_y
            self.gains = checked_rw(Array1D[np.float64], pv("Gains-RB"), pv("Gains-SP"), settle_timeout_s)
        super().__init__(prefix, name)


class EdgeScanner(EdgeLoop, Triggerable, Flyable, Stoppable):
    """A scan mode's PVs (module doc). ``scan_timeout_s``: the longest a scan may take."""

    def __init__(self, prefix: str, name: str = "", scan_timeout_s: float = SCAN_TIMEOUT_S) -> None:
        pv = f"{prefix}:".__add__
        with self.add_children_as_readables(Format.HINTED_SIGNAL):
            self.progress = epics_signal_r(float, pv("ScanProgress-RB"))
        with self.add_children_as_readables():
            self.state = epics_signal_r(ScanState, pv("ScanState-RB"))
            self.points = epics_signal_r(int, pv("ScanPoints-RB"))
            self.summary = epics_signal_r(str, pv("ScanSummary-RB"))
        self.start = checked_w(int, pv("ScanStart-SP"), scan_timeout_s)
        self.abort = checked_w(int, pv("ScanAbort-SP"), SETTLE_TIMEOUT_S)
        self._scan: asyncio.Future[None] | None = None
        super().__init__(prefix, name)

    async def _run(self) -> None:
        """One scan: the start put (completes when the scan ends), then its end state must be Done. The read-backs
        are in the PVs when the put completes, but a monitored value may arrive just after: wait for this scan's
        summary (each names its scan) and an end state."""
        before = await self.summary.get_value()
        await self.start.set(1)
        await wait_for_value(self.summary, lambda s: s != before, timeout=READBACK_S)
        await wait_for_value(self.state, lambda s: s != ScanState.RUNNING, timeout=READBACK_S)
        state = await self.state.get_value()
        if state != ScanState.DONE:
            raise ScanFailed(f"scan ended {state.value}: {await self.summary.get_value()}")

    @AsyncStatus.wrap
    async def trigger(self) -> None:
        await self._run()

    @AsyncStatus.wrap
    async def kickoff(self) -> None:
        """Start a scan; done once the daemon reports it running (or it has already ended)."""
        if self._scan is not None and not self._scan.done():
            raise RuntimeError("a scan kicked off by this device is still running")
        self._scan = asyncio.ensure_future(self._run())
        running = asyncio.ensure_future(wait_for_value(self.state, ScanState.RUNNING, timeout=None))
        try:
            await asyncio.wait({self._scan, running}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            running.cancel()
        if self._scan.done():
            self._scan.result()  # raises when the scan failed to start or failed

    @AsyncStatus.wrap
    async def complete(self) -> None:
        """Done when the kicked-off scan has ended Done; fails when it ended otherwise."""
        if self._scan is None:
            raise RuntimeError("complete() before kickoff()")
        await self._scan

    async def stop(self, success: bool = True) -> None:
        """Abort the scan in flight (a no-op on the daemon when none runs)."""
        await self.abort.set(1)
