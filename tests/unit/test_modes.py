"""The mode registry, push ops registered by the mode, and the stage's safety gate."""
from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from controller.link.push_wire import PushHeader
from controller.modes import registry
from controller.modes.base import ModeSpec
from controller.modes.ct.config import AnglesConfig
from controller.protocol import ct as p
from controller.safety import StageGate


def test_every_configurable_mode_is_registered_with_its_kind_and_ops() -> None:
    assert registry.names() == ["angles", "forge", "ptycho", "rl-pid", "stabilize", "transceiver"]
    assert registry.get("stabilize").kind == "tick" and registry.get("angles").kind == "session"
    assert registry.get("ptycho").kind == "session" and registry.get("ptycho").ops == ("scan", "abort")
    assert registry.get("transceiver").kind == "session" and registry.get("transceiver").ops == ("scan", "abort")
    assert registry.get("angles").ops == ("scan", "abort") and registry.get("rl-pid").ops == ()
    assert registry.get("forge").kind == "tick" and registry.get("forge").ops == ("episode",)
    assert {"scan", "abort", "push", "hold"} <= registry.ops()
    with pytest.raises(ValueError, match="unknown mode 'raster'; registered: angles, forge, ptycho, rl-pid, stabilize, transceiver"):
        registry.get("raster")


def test_an_acquiring_mode_must_supply_its_progress_sample_command_and_reply() -> None:
    from controller.modes.acquisition import AcquisitionSession

    assert {"progress", "sample_message", "details"} <= AcquisitionSession.__abstractmethods__


def test_a_mode_cannot_take_a_core_op_or_a_registered_name() -> None:
    spec = registry.get("angles")
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(ModeSpec(name="angles", kind="session", messages=p.CT, build=spec.build))
    with pytest.raises(ValueError, match="core push ops"):
        registry.register(ModeSpec(name="x", kind="session", messages=p.CT, build=spec.build, ops=("hold",)))


def test_push_ops_are_names_not_a_fixed_list() -> None:
    assert PushHeader(op="ring").op == "ring"  # a future mode's op passes the wire; the edge decides
    for bad in ("", "Scan", "x" * 40, "scan;rm"):
        with pytest.raises(ValidationError):
            PushHeader(op=bad)


def test_stage_gate_clamps_range_step_and_rate_and_counts() -> None:
    g = StageGate(low=10.0, high=170.0, max_step=50.0, max_rate=100.0)
    assert g(5.0, 20.0, 0.0) == 10.0 and g.clamped == 1  # range (first command: no rate history)
    assert g(100.0, 10.0, 10.0) == 60.0 and g.clamped == 2  # step
    assert g(90.0, 60.0, 10.25) == 85.0 and g.clamped == 3  # rate: 100 °/s × 0.25 s
    assert g(75.0, 85.0, 20.0) == 75.0 and g.clamped == 3  # inside every limit: unchanged
    assert g(math.nan, 75.0, 21.0) == 75.0 and g.non_finite == 1  # non-finite: stay where it is
    with pytest.raises(ValueError):
        StageGate(low=1.0, high=0.0, max_step=1.0, max_rate=1.0)


def test_default_angle_limits_never_bind_on_the_grid() -> None:
    a = AnglesConfig()
    g = StageGate(a.min_deg, a.max_deg, a.max_step_deg, a.max_rate_deg_s)
    t, pos = 0.0, 0.0
    for target in (179.0, 0.0, 90.5, 179.9, 0.1):
        t += 0.002  # a move and an acquisition take far longer
        pos = g(target, pos, t)
        assert pos == target
    assert g.clamped == 0


def test_the_daemon_takes_registered_modes_only(tmp_path) -> None:
    from typer.testing import CliRunner

    from controller.cli import app
    from controller.config import parse_config

    assert parse_config({"loop": {"mode": "angles"}}).loop.mode == "angles"
    cfg = tmp_path / "edge.toml"
    cfg.write_text('[loop]\nmode = "raster"\n')
    result = CliRunner().invoke(app, ["daemon", "--config", str(cfg)])
    assert result.exit_code == 2
    assert "edge.toml: loop.mode: unknown mode 'raster'; registered: angles, forge, ptycho, rl-pid, stabilize" in result.output


def test_a_cancelled_drained_thread_returns_only_once_its_thread_has_ended() -> None:
    import asyncio
    import threading
    import time

    from controller.modes.acquisition import drained_thread

    ended = threading.Event()

    def work() -> None:
        time.sleep(0.2)
        ended.set()

    async def main() -> None:
        task = asyncio.ensure_future(drained_thread(work))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ended.is_set()  # a catch-up or decision cut off by an abort no longer runs when the scan ends
        with pytest.raises(TimeoutError):
            await drained_thread(time.sleep, 0.2, timeout_s=0.05)

    asyncio.run(main())
