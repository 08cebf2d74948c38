"""The HIL scenario model: a TOML file says which simulated device, the daemon's config, what the host does,
a schedule of faults and the assertions (the pydantic models below; hil/scenario/run.py runs one).

    name = "link_loss"
    duration_s = 8.0
    [stand]            speed, seed, proxy (host ↔ edge through hil.faults.net.UdpProxy), serial_faults, net
    [config]           edge config overrides (controller.config keys)
    [[host]]           at_s + action: set_gains (gains = [[P,I,D],[P,I,D]]) | set_target (x_px, y_px) | keepalive (on)
    [[faults]]         at_s + kind (see FAULTS) + seconds / count / net / config / expect_error / params
    [[assert]]         check (see CHECKS) + its thresholds

Fault kinds and checks are registries here: ``@fault("kind")`` adds an injector (hil/faults/: wire.py net.* and
serial.*, process.py daemon.* and config.*, model.py model.*, whose knobs go in ``Fault.params``), ``@check("name")``
a check (hil/scenario/checks.py). This module imports none of them; they import it, and the runner
(hil/scenario/run.py) imports them all, so load scenarios through the runner, once every kind is registered.
``RunData`` is what the checks read after a run. Every wait of a scenario step has a deadline: `wait_until` polls
a probe and fails naming what it waited for.

Host actions and faults run one after another in ``at_s`` order, each awaited. A step that starts late (the one
before it ran long: a push validated on a loaded machine, say) shifts every later step, and the end of the run,
by as much, so the spacing the scenario was written with holds: a target move planned 1 s after a model push
still comes 1 s after that model became active.
"""
from __future__ import annotations

import asyncio
import sqlite3
import time
import tomllib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from controller.config import EdgeConfig, parse_config
from controller.recorder import read_events, read_ticks
from hil.faults.net import NetFaults, UdpProxy
from hil.faults.serial import SerialFaults
from hil.stand import SimulatedStand

SCENARIO_DIR = Path(__file__).parents[1] / "scenarios"


class ScenarioError(ValueError):
    """A scenario file that cannot be read or does not validate; the message names the file and key."""


class StepTimeout(TimeoutError):
    """A scenario step waited past its deadline; the message names what it waited for."""


async def wait_until(what: str, probe: Callable[[], Awaitable[bool]], timeout_s: float, poll_s: float = 0.1) -> None:
    """Poll ``probe`` until it returns True; StepTimeout naming ``what`` after ``timeout_s`` (the probe itself
    is bounded by the same deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise StepTimeout(f"timed out after {timeout_s:g} s waiting for {what}")
        try:
            async with asyncio.timeout(left):
                if await probe():
                    return
        except TimeoutError:
            continue  # the deadline check above reports it
        await asyncio.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class StandSpec(_Strict):
    device: Literal["mems"] = "mems"
    speed: float = Field(1.0, gt=0)
    seed: int = 0
    proxy: bool = False  # host ↔ edge through the UDP fault proxy
    serial_faults: bool = False  # emulator with its fault control channel and a stable device symlink
    net: NetFaults = NetFaults()  # proxy faults from the start


class HostAction(_Strict):
    at_s: float = Field(ge=0)
    action: Literal["set_gains", "set_target", "keepalive"]
    gains: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    x_px: float = 0.0
    y_px: float = 0.0
    on: bool = True


class Fault(_Strict):
    at_s: float = Field(ge=0)
    kind: str
    seconds: float = Field(0.0, ge=0)  # duration (partition, chaos, stall, unplug)
    count: int = Field(1, ge=0)  # bytes / frames / packets
    net: NetFaults = NetFaults()  # net.chaos
    config: dict[str, Any] = {}  # config.invalid: overrides merged into the running config
    expect_error: str = ""  # config.*: text the refusal must contain
    params: dict[str, Any] = {}  # knobs of registered extensions (model faults)

    @field_validator("kind")
    @classmethod
    def _known(cls, kind: str) -> str:
        if kind not in FAULTS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(sorted(FAULTS))}")
        return kind


class Check(_Strict):
    check: str
    max_gap_s: float = 0.25  # loop_alive: longest pause between ticks
    max_overrun_fraction: float = 0.25  # overruns_bounded: ticks followed by a skip (a shared 2-core CI box)
    max_missed_run: int = 25  # overruns_bounded: most periods skipped at once
    band_px: float = 5.0  # stabilised_at_end
    recover_s: float = 5.0  # device_recovers / link_resumes: time allowed after the fault ends

    @field_validator("check")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in CHECKS:
            raise ValueError(f"unknown check {name!r}; known: {', '.join(sorted(CHECKS))}")
        return name


class Scenario(_Strict):
    name: str
    description: str = ""
    duration_s: float = Field(gt=0, le=600)
    stand: StandSpec = StandSpec()
    config: dict[str, Any] = {}
    host: list[HostAction] = []
    faults: list[Fault] = []
    checks: list[Check] = Field(alias="assert", min_length=1)


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        return Scenario.model_validate(tomllib.loads(p.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ScenarioError(f"{p.name}: {e}") from None
    except ValidationError as e:
        raise ScenarioError("\n".join(f"{p.name}: {'.'.join(map(str, err['loc']))}: {err['msg']}"
                                      for err in e.errors())) from None


def bundled() -> list[Path]:
    return sorted(SCENARIO_DIR.glob("*.toml"))



@dataclass
class RunContext:
    """What faults, host actions and checks share during one run (times: monotonic ns)."""

    scenario: Scenario
    stand: SimulatedStand
    proxy: UdpProxy | None = None
    serial: SerialFaults | None = None
    t0_ns: int = 0
    keepalive: bool = True
    fault_log: list[dict[str, Any]] = field(default_factory=list)
    host_log: list[dict[str, Any]] = field(default_factory=list)
    telemetry_ns: list[int] = field(default_factory=list)  # host receive times
    sent: Counter[str] = field(default_factory=Counter)  # security packets sent, by expected drop kind
    forged_targets: list[float] = field(default_factory=list)  # x_px of targets that must never apply
    config_results: list[dict[str, Any]] = field(default_factory=list)
    probes: dict[str, float] = field(default_factory=dict)  # facts measured during the run

    def t(self) -> float:
        return (time.monotonic_ns() - self.t0_ns) / 1e9


FaultFn = Callable[[RunContext, Fault], Awaitable[dict[str, Any] | None]]
FAULTS: dict[str, FaultFn] = {}


def fault(kind: str) -> Callable[[FaultFn], FaultFn]:
    """Register a fault injector: ``async fn(ctx, fault) -> details | None``, returning when injected."""

    def deco(fn: FaultFn) -> FaultFn:
        FAULTS[kind] = fn
        return fn

    return deco


TICK_FIELDS = ("session", "seq", "idx", "t_ns", "x", "y", "target_x", "target_y", "cmd_x", "cmd_y",
               "kp_x", "ki_x", "kd_x", "kp_y", "ki_y", "kd_y", "flags")
STALE = 1  # tick flag: no fresh frame, the safe command was written


@dataclass
class RunData:
    scenario: Scenario
    cfg: EdgeConfig
    t0_ns: int
    end_ns: int
    ticks: dict[str, np.ndarray]  # TICK_FIELDS -> column over every session, in record order
    events: list[dict[str, Any]]
    sessions: list[dict[str, Any]]
    faults: list[dict[str, Any]]
    host: list[dict[str, Any]]
    telemetry_ns: np.ndarray
    edge: dict[str, float]  # scraped metrics (faults by kind, ticks, overruns) at the end
    daemon_alive: bool
    daemon_log: str
    sent: dict[str, int] = field(default_factory=dict)
    forged_targets: list[float] = field(default_factory=list)
    config_results: list[dict[str, Any]] = field(default_factory=list)
    edge_port: int = 0

    @classmethod
    def collect(cls, ctx: RunContext, end_ns: int, edge: dict[str, float], alive: bool) -> RunData:
        stand = ctx.stand
        path = stand.recorder_path
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            conn.row_factory = sqlite3.Row
            sessions = [dict(r) for r in conn.execute("SELECT * FROM sessions ORDER BY id")]
        rows = [r for s in sessions for r in read_ticks(path, s["id"])]
        ticks = {k: np.array([r[k] for r in rows], dtype=np.float64) for k in TICK_FIELDS}
        events = [{**e, "session": s["id"]} for s in sessions for e in read_events(path, s["id"])]
        log = stand.workdir / "daemon.log"
        return cls(ctx.scenario, parse_config(stand.edge_config), ctx.t0_ns, end_ns, ticks, events, sessions,
                   ctx.fault_log, ctx.host_log, np.array(ctx.telemetry_ns, dtype=np.int64), edge, alive,
                   log.read_text(errors="replace") if log.exists() else "", dict(ctx.sent), ctx.forged_targets,
                   ctx.config_results, int(stand.edge_config["hostlink"]["port"]))

    # helpers
    def window(self, t0_ns: float, t1_ns: float) -> np.ndarray:
        t = self.ticks["t_ns"]
        return (t >= t0_ns) & (t < t1_ns)

    def gains(self, mask: np.ndarray) -> np.ndarray:
        return np.stack([self.ticks[k][mask] for k in ("kp_x", "ki_x", "kd_x", "kp_y", "ki_y", "kd_y")], axis=1)

    def baseline(self) -> np.ndarray:
        p = self.cfg.pid
        return np.array([p.x.kp, p.x.ki, p.x.kd, p.y.kp, p.y.ki, p.y.kd])

    def link_events(self, up: bool, after_ns: float) -> list[int]:
        return [e["t_ns"] for e in self.events if e["kind"] == "link" and e["details"]["up"] is up and e["t_ns"] >= after_ns]

    def device_events(self, up: bool, after_ns: float) -> list[int]:
        return [e["t_ns"] for e in self.events
                if e["kind"] == "device" and e["details"]["up"] is up and e["t_ns"] >= after_ns]

    def faults_of(self, *prefixes: str) -> list[dict[str, Any]]:
        return [f for f in self.faults if f["kind"].startswith(prefixes)]

    def overruns(self) -> int:
        """Ticks after which periods were skipped (timer pacing: index jumps within a session)."""
        same = np.diff(self.ticks["session"]) == 0
        return int(np.sum((np.diff(self.ticks["idx"]) > 1) & same))


CheckFn = Callable[[RunData, "Check"], tuple[bool, str]]
CHECKS: dict[str, CheckFn] = {}


def check(name: str) -> Callable[[CheckFn], CheckFn]:
    def deco(fn: CheckFn) -> CheckFn:
        CHECKS[name] = fn
        return fn

    return deco
