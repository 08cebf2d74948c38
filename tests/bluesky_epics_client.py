"""The beamline host's side of tests/hil/test_bluesky_epics.py, run as its own process: the CA client reads the
EPICS environment (address list, server port) once, when its context is made, so each test gets a fresh process
with its own. ``python tests/bluesky_epics_client.py PREFIX`` runs Bluesky plans with `EdgeMems` against the
daemon and prints one JSON object of what it saw; ``... PREFIX scan`` the same with `EdgeScanner` on a daemon in
angles mode. Reads follow a move by 0.1 s: the put's read-backs are in the PVs when its put-callback completes,
but a staged device reads its monitors, whose update caproto may send just after that completion."""
from __future__ import annotations

import json
import sys
import time

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import bluesky.preprocessors as bpp
from bluesky import RunEngine
from bluesky.utils import FailedStatus
from ophyd_async.core import init_devices

from hil.bluesky.device import EdgeMems, EdgeScanner, PutFailed, ScanFailed


def engine() -> tuple[RunEngine, list[tuple[str, dict]]]:
    RE = RunEngine(call_returns_result=True)
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    return RE, docs


def mems(prefix: str) -> dict:
    RE, docs = engine()
    with init_devices(timeout=30.0):  # the daemon may still be starting
        edge = EdgeMems(prefix, settle_timeout_s=15.0)
    out: dict = {}

    def read():
        return {k: v["value"] for k, v in (yield from bps.read(edge)).items()}

    deadline = time.monotonic() + 10.0  # the tick rate is measured over the daemon's first second
    while RE(_rd(edge.tick_rate)).plan_result == 0.0 and time.monotonic() < deadline:
        time.sleep(0.1)
    RE(bp.count([edge]))
    out["count"] = [d["data"] for n, d in docs if n == "event"][0]
    out["configuration"] = {k: v for k, v in [d for n, d in docs if n == "descriptor"][0]["configuration"]["edge"]
                            ["data"].items()}
    t = time.monotonic()
    RE(bps.mv(edge.target_x, 12.0))
    out["mv_s"] = time.monotonic() - t
    time.sleep(0.1)
    out["after_mv"] = RE(read()).plan_result
    docs.clear()
    RE(bp.scan([edge], edge.target_y, -6.0, 6.0, 3, per_step=_settle_then_read))
    out["scan"] = [d["data"] for n, d in docs if n == "event"]
    out["scan_exit"] = [d for n, d in docs if n == "stop"][0]["exit_status"]
    gains = [float(g) for g in out["configuration"]["edge-gains"]]
    gains[0] *= 0.9
    RE(bps.mv(edge.gains, gains))
    time.sleep(0.1)
    out["gains_put"], out["gains_read"] = gains, [float(g) for g in RE(_rd(edge.gains)).plan_result]
    t = time.monotonic()
    try:  # a target the spot cannot reach: the daemon fails the put after its settle timeout
        RE(bps.mv(edge.target_x, 1e6))
        out["far_move"] = "completed"
    except FailedStatus as e:
        out["far_move"] = f"failed: {e.__cause__!r}"[:300]
    out["far_move_s"] = time.monotonic() - t
    return out


def scan(prefix: str) -> dict:
    RE, docs = engine()
    with init_devices(timeout=30.0):
        scanner = EdgeScanner(prefix, scan_timeout_s=60.0)
    out: dict = {"mode": RE(_rd(scanner.mode)).plan_result}
    deadline = time.monotonic() + 30.0
    while True:  # the daemon refuses scans (device_down) until it has reached its device
        try:
            RE(bp.count([scanner]))
            break
        except FailedStatus as e:
            if not isinstance(e.__cause__, PutFailed) or time.monotonic() > deadline:
                raise
            docs.clear()
            time.sleep(0.2)
    out["count"] = [d["data"] for n, d in docs if n == "event"]
    seen: list = []

    @bpp.run_decorator()
    def fly(abort: bool):
        t = time.monotonic()
        yield from bps.kickoff(scanner, wait=True)
        seen.append({"kickoff_s": time.monotonic() - t, "state": (yield from bps.rd(scanner.state)).value})
        if abort:
            yield from bps.sleep(0.2)
            yield from bps.stop(scanner)
        yield from bps.complete(scanner, wait=True)
        seen[-1].update(complete_s=time.monotonic() - t, end=(yield from bps.rd(scanner.state)).value)

    RE(fly(False))
    try:
        RE(fly(True))
        out["aborted_fly"] = "completed"
    except FailedStatus as e:
        out["aborted_fly"] = f"{type(e.__cause__).__name__}: {e.__cause__}"[:300]
        out["aborted_is_scan_failed"] = isinstance(e.__cause__, ScanFailed)
    out["fly"] = seen
    return out


def _settle_then_read(detectors, step, pos_cache):
    """bp.scan's per step: move (waits for the settled put-callback), 0.1 s for the read-backs, trigger and read."""
    yield from bps.move_per_step(step, pos_cache)
    yield from bps.sleep(0.1)
    yield from bps.trigger_and_read(list(detectors) + list(step))


def _rd(signal):
    return (yield from bps.rd(signal))


if __name__ == "__main__":
    print(json.dumps((scan if sys.argv[2:] == ["scan"] else mems)(sys.argv[1]), default=str))
