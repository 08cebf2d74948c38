"""hil/bluesky/agent.py + ct_stand.py: the bundled CT policy (ct_63, exported to ONNX) as a bluesky-adaptive
optimizer in a Bluesky plan, on a CT emulator over a real pty through ophyd-async devices, picks the same angles
(and ends with the same reconstruction) as the edge's own angles mode on a twin emulator with the same sample."""
from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bluesky_adaptive")
pytest.importorskip("torch")  # the export of the bundled run (the learn extra)
from bluesky import RunEngine  # noqa: E402
from bluesky.run_engine import call_in_bluesky_event_loop  # noqa: E402
from bluesky_adaptive.plans import optimize  # noqa: E402
from ophyd_async.core import init_devices  # noqa: E402

from controller.modes.ct import tomo  # noqa: E402
from controller.modes.ct.angles import AnglesMode  # noqa: E402
from controller.modes.ct.config import AnglesConfig  # noqa: E402
from controller.policy.runtime import AnglePolicy  # noqa: E402
from controller.protocol import ct  # noqa: E402
from firmware_sim.ct.emulator import CtEmulator  # noqa: E402
from hil.bluesky.agent import AngleAgent, Projections  # noqa: E402
from hil.bluesky.ct_stand import CtStand  # noqa: E402
from learner.ct.export import export_ct  # noqa: E402
from stage_device import served  # noqa: E402

POLICIES = Path(__file__).parents[2] / "learner" / "ct" / "policies"
SAMPLE = ct.SetSample(ct.SampleKind.ANY, 11, ct.Split.VAL, 63)
CFG = AnglesConfig(size=63, max_angles=12, poll_s=0.002)


def emulator() -> CtEmulator:
    return CtEmulator(sample=SAMPLE, seed=3, speed=20.0, tick_hz=100.0)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ct") / "policy"
    export_ct(POLICIES / "ct_63", out)
    return out


def edge_scan(policy: AnglePolicy | None):
    """The daemon's own scan: the angles mode on an emulator."""
    async def run():
        async with served(emulator(), ct.CT) as driver:
            return await AnglesMode(driver, CFG, policy).run()
    return asyncio.run(run())


def bluesky_scan(policy: AnglePolicy | None) -> AngleAgent:
    """The same policy as a bluesky-adaptive optimizer in `optimize`, on a twin emulator through ophyd-async."""
    RE = RunEngine(call_returns_result=True)
    stack = AsyncExitStack()
    driver = call_in_bluesky_event_loop(stack.enter_async_context(served(emulator(), ct.CT)))
    try:
        with init_devices():
            stand = CtStand(driver, CFG)
        agent = AngleAgent(policy, CFG, dof=stand.rotation.name)
        projections = Projections(stand.detector)
        RE.subscribe(projections)
        RE(optimize(agent.problem(stand.rotation, stand.detector, projections), iterations=None))
    finally:
        call_in_bluesky_event_loop(stack.aclose())
    return agent


@pytest.mark.timeout(120)
def test_agent_picks_the_edges_angles_on_the_same_sample(artifact) -> None:
    edge = edge_scan(AnglePolicy.from_artifact(artifact, 63))
    agent = bluesky_scan(AnglePolicy.from_artifact(artifact, 63))
    assert agent.angles == edge.angles_deg
    assert np.array_equal(agent.image, edge.reconstruction)  # the same x̂ at every decision, to the bit
    assert agent.should_stop() == (True, edge.stopped_by) and agent.policy_faults == 0
    golden = [float(a) for a in tomo.golden_ratio_angles(len(edge.angles_deg))]
    assert edge.angles_deg != golden  # the policy chose them (a scan that needs x̂)


@pytest.mark.timeout(60)
def test_without_a_policy_both_scan_golden_ratio_angles() -> None:
    agent = bluesky_scan(None)
    assert agent.angles == [float(a) for a in tomo.golden_ratio_angles(CFG.max_angles)]
    assert agent.should_stop() == (True, "max_angles")
