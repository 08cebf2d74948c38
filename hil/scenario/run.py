"""HIL scenarios: a TOML file says which simulated device, the daemon's config, what the host does, a
schedule of faults and the assertions; `run_scenario` runs it against real processes (emulator on a
pty, daemon, host client over loopback UDP, optionally through the fault proxy) and reports.

    name = "link_loss"
    duration_s = 8.0
    [stand]            speed, seed, proxy (host ↔ edge through hil.faults_net.UdpProxy), serial_faults, net
    [config]           edge config overrides (controller.config keys)
    [[host]]           at_s + action: set_gains (gains = [[P,I,D],[P,I,D]]) | set_target (x_px, y_px) | keepalive (on)
    [[faults]]         at_s + kind (see FAULTS) + seconds / count / net / config / expect_error / params
    [[assert]]         check (see hil.checks.CHECKS) + its thresholds

Fault kinds are a registry: ``@fault("kind")`` adds one. Model faults (``model.*``: good, corrupt, wrong
shape, other task, NaN/inf, slow, unsigned, bad signature, rollback, NaN at run time) live in
hil/faults_model.py and register the same way; their knobs go in ``Fault.params``.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
import tomllib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from controller.hostlink_wire import Keyring, SetTarget, Signer, wall_us
from hil.faults_net import NetFaults, UdpProxy
from hil.faults_serial import SERIAL_FAULTS, SerialFaults
from hil.stand import SimulatedStand, _edgetune, deep_merge, to_toml

SCENARIO_DIR = Path(__file__).parent / "scenarios"


class ScenarioError(ValueError):
    """A scenario file that cannot be read or does not validate; the message names the file and key."""


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
        from hil.checks import CHECKS

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


# --- the run ---------------------------------------------------------------------------------


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


# network
@fault("net.partition")
async def _partition(ctx: RunContext, f: Fault) -> None:
    assert ctx.proxy is not None, "net faults need stand.proxy = true"
    ctx.proxy.partition(f.seconds)


@fault("net.chaos")
async def _chaos(ctx: RunContext, f: Fault) -> None:
    assert ctx.proxy is not None, "net faults need stand.proxy = true"
    before, ctx.proxy.faults = ctx.proxy.faults, f.net
    asyncio.get_running_loop().call_later(f.seconds, setattr, ctx.proxy, "faults", before)


def _raw_send(ctx: RunContext, datagrams: list[bytes]) -> None:
    """Datagrams straight to the edge from a socket of their own (an attacker on the network)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for d in datagrams:
            s.sendto(d, ctx.stand.edge_addr)


@fault("net.replay")
async def _replay(ctx: RunContext, f: Fault) -> dict[str, Any]:
    """One valid SetTarget, then the same datagram ``count`` more times."""
    assert ctx.stand.keyring is not None
    d = Signer(ctx.stand.keyring, ctx.stand.keyring.newest).seal(SetTarget(0.0, 0.0))
    _raw_send(ctx, [d] * (f.count + 1))
    ctx.sent["replayed"] += f.count
    return {"replayed": f.count}


@fault("net.forge")
async def _forge(ctx: RunContext, f: Fault) -> dict[str, Any]:
    """``count`` SetTargets signed with a key the edge does not have (right key id)."""
    assert ctx.stand.keyring is not None
    kid = ctx.stand.keyring.newest
    signer = Signer(Keyring({kid: os.urandom(32)}), kid)
    ctx.forged_targets.append(777.0)
    _raw_send(ctx, [signer.seal(SetTarget(777.0, 0.0)) for _ in range(f.count)])
    ctx.sent["bad_tag"] += f.count
    return {"forged": f.count}


@fault("net.stale")
async def _stale(ctx: RunContext, f: Fault) -> dict[str, Any]:
    """``count`` correctly signed SetTargets stamped a minute ago."""
    assert ctx.stand.keyring is not None
    signer = Signer(ctx.stand.keyring, ctx.stand.keyring.newest, clock=lambda: wall_us() - 60_000_000)
    ctx.forged_targets.append(666.0)
    _raw_send(ctx, [signer.seal(SetTarget(666.0, 0.0)) for _ in range(f.count)])
    ctx.sent["stale"] += f.count
    return {"stale": f.count}


# serial (inside the emulator)
def _serial_fault(kind: str) -> FaultFn:
    async def inject(ctx: RunContext, f: Fault) -> None:
        assert ctx.serial is not None, "serial faults need stand.serial_faults = true"
        unit = SERIAL_FAULTS[kind]
        ctx.serial.inject(kind, None if unit is None else f.seconds if unit == "seconds" else f.count)

    return inject


for _kind in SERIAL_FAULTS:
    fault(f"serial.{_kind}")(_serial_fault(_kind))


# the daemon process
@fault("daemon.sigkill")
async def _sigkill(ctx: RunContext, f: Fault) -> dict[str, Any]:
    d = ctx.stand.daemon
    assert d is not None
    d.kill()
    return {"rc": await asyncio.to_thread(d.wait)}


@fault("daemon.sigterm")
async def _sigterm(ctx: RunContext, f: Fault) -> dict[str, Any]:
    return {"rc": await asyncio.to_thread(ctx.stand.terminate_daemon, signal.SIGTERM)}


@fault("daemon.start")
async def _start(ctx: RunContext, f: Fault) -> None:
    ctx.stand.start_daemon()


# configuration: a second daemon started with a bad config/key file must refuse to start
async def _refused(ctx: RunContext, f: Fault, cfg: dict[str, Any], tag: str) -> dict[str, Any]:
    path = ctx.stand.workdir / f"bad-{len(ctx.config_results)}-{tag}.toml"
    path.write_text(to_toml(cfg))
    try:
        proc = await asyncio.to_thread(subprocess.run, _edgetune("daemon", "--config", str(path)),
                                       capture_output=True, text=True, timeout=20)
        rc, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired:
        rc, err = None, "daemon started with a bad configuration (still running after 20 s)"
    res = {"kind": f.kind, "config": path.name, "rc": rc, "stderr": err[-600:], "expect_error": f.expect_error}
    ctx.config_results.append(res)
    return res


@fault("config.invalid")
async def _bad_config(ctx: RunContext, f: Fault) -> dict[str, Any]:
    return await _refused(ctx, f, deep_merge(ctx.stand.edge_config, f.config), "invalid")


@fault("config.key_world_readable")
async def _bad_key(ctx: RunContext, f: Fault) -> dict[str, Any]:
    key = ctx.stand.workdir / "world-readable.keys"
    shutil.copyfile(ctx.stand.key_file, key)
    key.chmod(0o644)
    return await _refused(ctx, f, deep_merge(ctx.stand.edge_config, {"hostlink": {"key_file": str(key)}}), "key")


# models (pushes and rollbacks over the authenticated push channel)
from hil import faults_model  # noqa: E402,F401  (registers model.*; imports this module's registry)


# --- host side -------------------------------------------------------------------------------


async def _host_action(ctx: RunContext, a: HostAction) -> None:
    client = ctx.stand.client
    assert client is not None
    entry: dict[str, Any] = {"t_s": ctx.t(), "action": a.action}
    if a.action == "keepalive":
        ctx.keepalive = a.on
        entry["on"] = a.on
    else:
        call = ((lambda: client.set_gains(_gains(a.gains))) if a.action == "set_gains"
                else (lambda: client.set_target(a.x_px, a.y_px)))
        entry.update(gains=a.gains) if a.action == "set_gains" else entry.update(x_px=a.x_px, y_px=a.y_px)
        for attempt in range(10):  # a lossy link may eat a few tries; each try is a fresh datagram
            try:
                await call()
                entry["acked"], entry["attempts"] = True, attempt + 1
                break
            except TimeoutError:
                entry["acked"] = False
    ctx.host_log.append(entry)


def _gains(rows: Any) -> Any:
    from controller.hostlink_wire import Gains

    if rows is None:
        raise ScenarioError("set_gains needs gains = [[P, I, D], [P, I, D]]")
    return Gains.from_rows(rows)


async def _keepalive(ctx: RunContext) -> None:
    """The host pings every 0.25 s while ``keepalive`` is on (a silent host loses the link)."""
    client = ctx.stand.client
    assert client is not None
    while True:
        await asyncio.sleep(0.25)
        if ctx.keepalive:
            try:
                await client.ping()
            except TimeoutError:
                pass


async def _telemetry(ctx: RunContext) -> None:
    assert ctx.stand.client is not None
    async for _ in ctx.stand.client.telemetry():
        ctx.telemetry_ns.append(time.monotonic_ns())


def _bound_loopback(port: int) -> bool:
    """True when the only UDP socket on ``port`` is bound to 127.0.0.1 (/proc/net/udp, hex, little endian)."""
    locals_ = [line.split()[1] for line in Path("/proc/net/udp").read_text().splitlines()[1:]]
    mine = [a for a in locals_ if int(a.split(":")[1], 16) == port]
    return bool(mine) and all(a.split(":")[0] == "0100007F" for a in mine)


def _scrape(port: int) -> dict[str, float]:
    """The daemon's Prometheus metrics: ``edgetune_faults_total`` by kind plus scheduler counters."""
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "edgetune_faults_total":
                out[s.labels["kind"]] = s.value
            elif s.name in ("edgetune_ticks_total", "edgetune_overruns_total", "edgetune_missed_periods_total"):
                out[s.name.removeprefix("edgetune_").removesuffix("_total")] = s.value
    return out


async def run_scenario(scenario: Scenario, workdir: Path) -> dict[str, Any]:
    """Run one scenario; returns the report dict (see hil.report) and writes it under ``workdir``."""
    from hil.checks import RunData, evaluate
    from hil.report import write_report

    spec = scenario.stand
    stand = SimulatedStand(workdir / "stand", device=spec.device, speed=spec.speed, seed=spec.seed,
                           config=scenario.config, serial_faults=spec.serial_faults)
    ctx = RunContext(scenario, stand)
    tasks: list[asyncio.Task] = []
    edge: dict[str, float] = {}
    alive = False
    try:
        stand.start_emulator()
        stand.write_config()
        if spec.proxy:
            ctx.proxy = await UdpProxy(stand.edge_addr, spec.net, seed=spec.seed).start()
            stand.client_addr = ctx.proxy.address
        if spec.serial_faults:
            ctx.serial = SerialFaults(stand.emulator_control)
        stand.start_daemon()
        await stand.connect()
        ctx.probes["bound_loopback"] = float(_bound_loopback(stand.edge_addr[1]))
        ctx.t0_ns = time.monotonic_ns()
        tasks = [asyncio.create_task(_keepalive(ctx)), asyncio.create_task(_telemetry(ctx))]
        timeline = sorted([(a.at_s, "host", a) for a in scenario.host] + [(f.at_s, "fault", f) for f in scenario.faults],
                          key=lambda e: e[0])
        for at_s, what, item in timeline:
            await asyncio.sleep(max(0.0, at_s - ctx.t()))
            if what == "host":
                await _host_action(ctx, item)
            else:
                t_ns = time.monotonic_ns()
                details = await FAULTS[item.kind](ctx, item)
                ctx.fault_log.append({"kind": item.kind, "t_ns": t_ns, "end_ns": t_ns + int(item.seconds * 1e9),
                                      "at_s": item.at_s, "seconds": item.seconds, "count": item.count,
                                      "details": details or {}})
        await asyncio.sleep(max(0.0, scenario.duration_s - ctx.t()))
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if ctx.proxy is not None:  # no more traffic; the edge exports its counters once a second
            ctx.proxy.close()
            ctx.probes["proxy_damaged_to_edge"] = float(ctx.proxy.counters["to_edge.delivered_damaged"])
            await asyncio.sleep(1.2)
        alive = stand.daemon is not None and stand.daemon.poll() is None
        if alive:
            edge = await asyncio.to_thread(_scrape, int(stand.edge_config["metrics"]["port"]))
    finally:
        end_ns = time.monotonic_ns()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if ctx.proxy is not None:
            ctx.proxy.close()
        await stand.close()
    data = RunData.collect(ctx, end_ns, {**edge, **ctx.probes}, alive)
    results = evaluate(data)
    return write_report(workdir, data, results)
