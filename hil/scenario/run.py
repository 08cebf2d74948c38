"""The HIL scenario runner: `run_scenario` runs a scenario (hil/scenario/model.py) against real processes
(emulator on a pty, daemon, host client over loopback UDP, optionally through the fault proxy), evaluates
its checks (hil/scenario/checks.py) and writes the report (hil/scenario/report.py).

Importing this module registers every built-in fault kind (hil/faults/: wire.py, process.py, model.py) and
check, so load scenarios through it: ``from hil.scenario.run import load_scenario, run_scenario``.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from hil.faults import model as _model_faults, process as _process_faults, wire as _wire_faults  # noqa: F401  (register fault kinds)
from hil.faults.net import UdpProxy
from hil.faults.serial import SerialFaults
from hil.scenario.checks import evaluate
from hil.scenario.model import (  # noqa: F401  (SCENARIO_DIR, ScenarioError, bundled, load_scenario: re-exported)
    FAULTS, SCENARIO_DIR, HostAction, RunContext, RunData, Scenario, ScenarioError, bundled, load_scenario, wait_until,
)
from hil.scenario.report import write_report
from hil.stand import SimulatedStand

__all__ = ["SCENARIO_DIR", "ScenarioError", "bundled", "load_scenario", "run_scenario"]
SCRAPE_TIMEOUT_S = 10.0  # the daemon's metrics endpoint answers within this at the end of a run


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
    from controller.link.auth import Gains

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


async def _scrape(port: int) -> dict[str, float]:
    """The daemon's Prometheus metrics: ``edgetune_faults_total`` by kind plus scheduler counters (retried until
    SCRAPE_TIMEOUT_S; StepTimeout naming the endpoint after that)."""
    from urllib.error import URLError
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    url, text = f"http://127.0.0.1:{port}/metrics", ""

    def fetch() -> bool:
        nonlocal text
        try:
            with urlopen(url, timeout=2) as r:
                text = r.read().decode()
            return True
        except (URLError, OSError):
            return False

    await wait_until(f"the daemon's metrics at {url}", lambda: asyncio.to_thread(fetch), SCRAPE_TIMEOUT_S, poll_s=0.2)
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "edgetune_faults_total":
                out[s.labels["kind"]] = s.value
            elif s.name in ("edgetune_ticks_total", "edgetune_overruns_total", "edgetune_missed_periods_total"):
                out[s.name.removeprefix("edgetune_").removesuffix("_total")] = s.value
    return out


async def run_scenario(scenario: Scenario, workdir: Path) -> dict[str, Any]:
    """Run one scenario; returns the report dict (see hil.scenario.report) and writes it under ``workdir``."""
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
        late_s = 0.0  # how far the schedule has slipped (module doc of hil.scenario.model)
        for at_s, what, item in timeline:
            await asyncio.sleep(max(0.0, at_s + late_s - ctx.t()))
            late_s = max(late_s, ctx.t() - at_s)
            if what == "host":
                await _host_action(ctx, item)
            else:
                t_ns = time.monotonic_ns()
                details = await FAULTS[item.kind](ctx, item)
                ctx.fault_log.append({"kind": item.kind, "t_ns": t_ns, "end_ns": t_ns + int(item.seconds * 1e9),
                                      "at_s": item.at_s, "seconds": item.seconds, "count": item.count,
                                      "details": details or {}})
        await asyncio.sleep(max(0.0, scenario.duration_s + late_s - ctx.t()))
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if ctx.proxy is not None:  # no more traffic; the edge exports its counters once a second
            ctx.proxy.close()
            ctx.probes["proxy_damaged_to_edge"] = float(ctx.proxy.counters["to_edge.delivered_damaged"])
            await asyncio.sleep(1.2)
        alive = stand.daemon is not None and stand.daemon.poll() is None
        if alive:
            edge = await _scrape(int(stand.edge_config["metrics"]["port"]))
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
