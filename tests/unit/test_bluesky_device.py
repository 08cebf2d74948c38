"""hil/bluesky/device.py in ophyd-async's mock mode, in a RunEngine: the PV names of the contract, reads,
`bps.mv` waiting for the put-callback (the loop settled), `bp.count`/`bp.scan` documents, and the scan as a
triggerable and a flyer."""
from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

pytest.importorskip("ophyd_async")
import bluesky.plan_stubs as bps  # noqa: E402
import bluesky.plans as bp  # noqa: E402
import bluesky.preprocessors as bpp  # noqa: E402
from bluesky import RunEngine  # noqa: E402
from bluesky.utils import FailedStatus  # noqa: E402
from ophyd_async.core import YesNo, callback_on_mock_put, init_devices, set_mock_value  # noqa: E402

from hil.bluesky.device import EdgeMems, EdgeScanner, Link, ScanFailed, ScanState  # noqa: E402

COMMON = ["Mode-RB", "TickRate-RB", "LatenessP99-RB", "Overruns-RB", "Link-RB", "PolicyVersion-RB", "Held-RB"]
MEMS = ["X-RB", "Y-RB", "TargetX-RB", "TargetY-RB", "Gains-RB", "Error-RB", "Settled-RB",
        "TargetX-SP", "TargetY-SP", "Gains-SP"]
SCAN = ["ScanState-RB", "ScanProgress-RB", "ScanPoints-RB", "ScanSummary-RB", "ScanStart-SP", "ScanAbort-SP"]


@pytest.fixture
def RE():
    re = RunEngine(call_returns_result=True)
    docs: list[tuple[str, dict]] = []
    re.subscribe(lambda name, doc: docs.append((name, doc)))
    re.docs = docs
    yield re
    re.reset()  # a clean end whatever a test left


@pytest.fixture
def edge(RE) -> EdgeMems:
    with init_devices(mock=True):
        edge = EdgeMems("EDGE", settle_timeout_s=5.0)
    for sig, v in [(edge.mode, "stabilize"), (edge.policy_version, ""), (edge.tick_rate, 1000.0),
                   (edge.lateness_p99, 35.0), (edge.overruns, 0), (edge.link, Link.UP), (edge.held, YesNo.NO),
                   (edge.x, 1.5), (edge.y, -2.0), (edge.error, 2.5), (edge.settled, YesNo.NO),
                   (edge.gains, np.array([0.5, 20.0, 0.0, 0.5, 20.0, 0.0]))]:
        set_mock_value(sig, v)
    return edge


@pytest.fixture
def scanner(RE) -> EdgeScanner:
    with init_devices(mock=True):
        scanner = EdgeScanner("EDGE", scan_timeout_s=5.0)
    set_mock_value(scanner.state, ScanState.IDLE)
    return scanner


def pv_names(device) -> set[str]:
    """The PVs the device's signals read and write (their mock sources, less the scheme)."""
    return {sig._connector.backend.source(sig.name, read=read).split("://", 1)[1]  # noqa: SLF001
            for _, sig in device.children() for read in (True, False)}


def test_devices_name_the_contracts_pvs(edge, scanner) -> None:
    assert pv_names(edge) == {f"EDGE:{n}" for n in COMMON + MEMS}
    assert pv_names(scanner) == {f"EDGE:{n}" for n in COMMON + SCAN}
    assert edge.target_x._connector.backend.source("", read=False) == "mock+ca://EDGE:TargetX-SP"  # noqa: SLF001


def test_count_reads_the_loop_state_and_hints_the_spot(RE, edge) -> None:
    RE(bp.count([edge], num=2))
    names = [n for n, _ in RE.docs]
    assert names == ["start", "descriptor", "event", "event", "stop"]
    descriptor = RE.docs[1][1]
    assert sorted(descriptor["hints"]["edge"]["fields"]) == ["edge-x", "edge-y"]
    config = descriptor["configuration"]["edge"]["data"]
    assert config["edge-mode"] == "stabilize" and list(config["edge-gains"]) == [0.5, 20.0, 0.0, 0.5, 20.0, 0.0]
    data = RE.docs[2][1]["data"]
    assert data["edge-x"] == 1.5 and data["edge-link"] == "Up" and data["edge-settled"] == "No"
    assert data["edge-lateness_p99"] == 35.0 and data["edge-overruns"] == 0
    assert RE.docs[-1][1]["exit_status"] == "success"


def settling(edge: EdgeMems, axis, delay_s: float):
    """A mock put-callback that behaves like the daemon: the loop reaches the target after `delay_s`, then the
    put completes (settled)."""
    async def put(value: float) -> None:
        set_mock_value(edge.settled, YesNo.NO)
        await asyncio.sleep(delay_s)
        set_mock_value(axis, value)
        set_mock_value(edge.error, 0.0)
        set_mock_value(edge.settled, YesNo.YES)
    return put


def test_mv_returns_when_the_loop_has_settled(RE, edge) -> None:
    callback_on_mock_put(edge.target_x, settling(edge, edge.x, 0.3))
    t = time.monotonic()
    RE(bps.mv(edge.target_x, 10.0))
    assert time.monotonic() - t >= 0.3  # waited for the put-callback
    assert edge.target_x._connector.backend.put_mock.call_args.args == (10.0,)  # noqa: SLF001
    values = RE(_read(edge.x, edge.settled, edge.target_x)).plan_result
    assert values == [10.0, YesNo.YES, 10.0]


def _read(*signals):
    values = []
    for s in signals:
        values.append((yield from bps.rd(s)))
    return values


def test_a_put_the_daemon_fails_fails_the_move(RE, edge) -> None:
    def refuse(value: float) -> None:
        raise TimeoutError("not settled within 2 s")  # what a failed put-callback raises in the CA client
    callback_on_mock_put(edge.target_y, refuse)
    with pytest.raises(FailedStatus):
        RE(bps.mv(edge.target_y, 3.0))


def test_scan_over_targets_records_the_settled_spot(RE, edge) -> None:
    callback_on_mock_put(edge.target_x, settling(edge, edge.x, 0.01))
    RE(bp.scan([edge], edge.target_x, 0.0, 10.0, 3))
    events = [d["data"] for n, d in RE.docs if n == "event"]
    assert [e["edge-target_x"] for e in events] == [0.0, 5.0, 10.0]
    assert [e["edge-x"] for e in events] == [0.0, 5.0, 10.0]
    assert all(e["edge-settled"] == "Yes" for e in events)


def scanning(scanner: EdgeScanner, duration_s: float, end: ScanState = ScanState.DONE, points: int = 7):
    """A mock ScanStart-SP put that behaves like the daemon: Running and progress while the put is pending; the
    put completes when the scan ends, and the end state and summary are published 50 ms later (the daemon's
    read-backs follow at rate_hz)."""
    scans = [0]

    def publish_end() -> None:
        set_mock_value(scanner.summary, json.dumps({"scan": scans[0], "n_angles": points,
                                                    "stopped_by": end.value.lower()}))
        set_mock_value(scanner.state, end)

    async def put(value: int) -> None:
        scans[0] += 1
        set_mock_value(scanner.state, ScanState.RUNNING)
        for k in range(1, points + 1):
            await asyncio.sleep(duration_s / points)
            set_mock_value(scanner.points, k)
            set_mock_value(scanner.progress, k / points)
        asyncio.get_running_loop().call_later(0.05, publish_end)
    return put


def test_count_runs_one_scan_per_point(RE, scanner) -> None:
    callback_on_mock_put(scanner.start, scanning(scanner, 0.05))
    RE(bp.count([scanner], num=2))
    events = [d["data"] for n, d in RE.docs if n == "event"]
    assert len(events) == 2 and all(e["scanner-state"] == "Done" and e["scanner-points"] == 7 for e in events)
    assert json.loads(events[0]["scanner-summary"])["n_angles"] == 7
    assert scanner.start._connector.backend.put_mock.call_count == 2  # noqa: SLF001


def test_a_scan_that_ends_aborted_fails_the_trigger(RE, scanner) -> None:
    callback_on_mock_put(scanner.start, scanning(scanner, 0.01, ScanState.ABORTED))
    with pytest.raises(FailedStatus) as e:
        RE(bp.count([scanner]))
    assert isinstance(e.value.__cause__, ScanFailed) and "Aborted" in str(e.value.__cause__)


def test_fly_kickoff_returns_while_running_complete_when_done(RE, scanner) -> None:
    callback_on_mock_put(scanner.start, scanning(scanner, 0.4))

    seen = []

    @bpp.run_decorator()
    def fly():
        t = time.monotonic()
        yield from bps.kickoff(scanner, wait=True)
        seen.extend([time.monotonic() - t, (yield from bps.rd(scanner.state))])
        yield from bps.complete(scanner, wait=True)
        seen.extend([time.monotonic() - t, (yield from bps.rd(scanner.state))])

    RE(fly())
    kicked, state, done, end = seen
    assert kicked < 0.3 and state == ScanState.RUNNING
    assert done >= 0.4 and end == ScanState.DONE


def test_stop_aborts(RE, scanner) -> None:
    RE(bps.stop(scanner))
    assert scanner.abort._connector.backend.put_mock.call_args.args == (1,)  # noqa: SLF001


async def test_a_put_the_daemon_fails_raises_despite_the_falsy_canothing(monkeypatch) -> None:
    """aioca's failed put (CANothing, falsy) is swallowed by ophyd-async's retry wrapper on its own CA signals;
    the device's set points (PutChecked) raise it."""
    from aioca import CANothing
    from ophyd_async.epics.core import CaSignalBackend, epics_signal_rw

    from hil.bluesky.device import PutFailed, checked_rw

    async def failed_put(self, value) -> None:
        raise CANothing(self.write_pv, 160)  # ECA_PUTFAIL, as libca reports a failed put-callback
    monkeypatch.setattr(CaSignalBackend, "put", failed_put)
    await epics_signal_rw(float, "EDGE:TargetX-RB", "EDGE:TargetX-SP").set(1.0)  # completes: the upstream flaw
    with pytest.raises(PutFailed, match="EDGE:TargetX-SP"):
        await checked_rw(float, "EDGE:TargetX-RB", "EDGE:TargetX-SP", 1.0).set(1.0)
