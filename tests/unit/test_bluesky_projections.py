"""hil/bluesky/agent.Projections on a real RunEngine: an acquisition run's events become its suggestions' outcomes,
and nothing is kept of other plans' runs, of an acquisition run that failed, or of one already evaluated."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("bluesky_adaptive")
import bluesky.plan_stubs as bps  # noqa: E402
import bluesky.plans as bp  # noqa: E402
import bluesky.preprocessors as bpp  # noqa: E402
from bluesky import RunEngine  # noqa: E402
from ophyd_async.core import init_devices, soft_signal_rw  # noqa: E402

from hil.bluesky.agent import ID_KEY, Projections  # noqa: E402


def _held(p: Projections) -> list[dict]:
    return [p._order, p._events, p._run_of]  # noqa: SLF001


def test_only_acquisition_runs_are_kept_until_evaluated_or_failed() -> None:
    RE = RunEngine(call_returns_result=True)
    with init_devices():
        projection = soft_signal_rw(float, initial_value=2.5, name="det-projection")
        angle = soft_signal_rw(float, initial_value=30.0, name="det-angle")
    projections = Projections(SimpleNamespace(name="det"))
    RE.subscribe(projections)

    for _ in range(3):  # another plan on the same RunEngine
        RE(bp.count([projection, angle], num=2))
    assert _held(projections) == [{}, {}, {}]

    uid = RE(bp.count([projection, angle], num=2, md={"blop_acquisition_order": ["b", "a"]})).run_start_uids[0]
    assert projections._run_of == {}  # noqa: SLF001 — the run has ended
    assert projections.evaluate(uid, [{ID_KEY: "a"}, {ID_KEY: "b"}]) == [
        {ID_KEY: "b", "projection": 2.5, "angle_deg": 30.0}, {ID_KEY: "a", "projection": 2.5, "angle_deg": 30.0}]
    assert _held(projections) == [{}, {}, {}]

    def failing():
        yield from bps.trigger_and_read([projection, angle])
        raise RuntimeError("the stage stalled")

    with pytest.raises(RuntimeError, match="stalled"):
        RE(bpp.run_wrapper(failing(), md={"blop_acquisition_order": ["c"]}))
    assert _held(projections) == [{}, {}, {}]
    with pytest.raises(ValueError, match="0 events for 0 suggestions"):
        projections.evaluate(uid, [{ID_KEY: "a"}])
