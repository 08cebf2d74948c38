"""Soak: the edge daemon (in this process, timer-paced at ``rate_hz``) against the emulator process,
with the host talking through the UDP fault proxy, and a fault injected every few seconds.

Each fault is checked off as *handled* by the symptom the edge must show (`edgetune hil soak`):
serial.garbage / serial.truncate → the frame decoder rejected more; serial.drop → sequence gaps seen;
serial.stall → ticks went on and fresh frames came back; serial.unplug / serial.reboot → the driver
reconnected; net.partition → link lost, the mode's fallback (an active rl-pid policy keeps deciding and its
gains stay in force; without one, the baseline gains), link back; net.chaos → every damaged datagram
dropped and counted; command.nan → the safety gate replaced a non-finite command; model.swap → over the
authenticated push channel, a good policy is accepted and active, a bad one (a random kind from
hil/faults/model.py: corrupt, wrong shape, other task, NaN/inf, slow, tampered, unsigned, forged) is refused
with its reason and the active policy kept, a second good one is accepted, and a rollback restores the
first (``swaps`` counts each request). The daemon runs in rl-pid mode, so an accepted policy re-tunes the gains every few ticks.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from controller.config import parse_config
from controller.daemon import Daemon
from controller.link.auth import DROP_KINDS, Gains
from controller.recorder import read_events, read_ticks
from controller.link.host_push import PushClient
from hil.faults import model as faults_model
from hil.faults.net import NetFaults, UdpProxy
from hil.faults.serial import SerialFaults
from hil.stand import SimulatedStand

log = logging.getLogger(__name__)

CHAOS = NetFaults(loss=0.2, delay_ms=10.0, jitter_ms=8.0, duplicate=0.2, reorder=0.2, corrupt=0.2, truncate=0.1)
SILENCE_S = 1.0  # host-link silence timeout in the soak config
HOST_GAINS = Gains.from_rows([[12.0, 600.0, 0.0], [16.0, 816.0, 0.02]])  # the host's gains (not the baseline)


class Soak:
    def __init__(self, daemon: Daemon, stand: SimulatedStand, proxy: UdpProxy, rng: random.Random) -> None:
        self.d, self.stand, self.proxy, self.rng = daemon, stand, proxy, rng
        self.serial = SerialFaults(stand.emulator_control)
        self.injected: Counter[str] = Counter()
        self.handled: Counter[str] = Counter()
        self.swaps: Counter[str] = Counter()
        self.fallbacks: Counter[str] = Counter()  # link-lost fallbacks checked: "policy" / "baseline"
        self.kinds: dict[str, Callable[[], Awaitable[bool]]] = {
            "serial.garbage": self._garbage, "serial.truncate": self._truncate, "serial.drop": self._drop,
            "serial.stall": self._stall, "serial.unplug": self._unplug, "serial.reboot": self._reboot,
            "net.partition": self._partition, "net.chaos": self._chaos, "command.nan": self._nan,
            "model.swap": self._swap,
        }

    async def inject(self, kind: str) -> None:
        self.injected[kind] += 1
        if await self.kinds[kind]():
            self.handled[kind] += 1
        else:
            log.warning("soak: %s not handled", kind)

    async def _until(self, cond: Callable[[], bool], timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while not cond():
            if time.monotonic() > end:
                return False
            await asyncio.sleep(0.02)
        return True

    def _fresh_after(self, t_ns: int) -> Callable[[], bool]:
        return lambda: self.d.driver.connected and self.d.frame_t_ns > t_ns

    # serial
    async def _garbage(self) -> bool:
        before = self.d.driver.decoder.rejected
        self.serial.inject("garbage", 400)
        return await self._until(lambda: self.d.driver.decoder.rejected > before, 2.0)

    async def _truncate(self) -> bool:
        before = self.d.driver.decoder.rejected
        self.serial.inject("truncate", 5)
        return await self._until(lambda: self.d.driver.decoder.rejected >= before + 5, 2.0)

    async def _drop(self) -> bool:
        before = self.d.driver.decoder.seq_gaps
        self.serial.inject("drop", 5)
        return await self._until(lambda: self.d.driver.decoder.seq_gaps >= before + 5, 2.0)

    async def _stall(self) -> bool:
        ticks, t0 = self.d.scheduler.stats.ticks, time.monotonic_ns()
        self.serial.inject("stall", 0.3)
        await asyncio.sleep(0.3)
        kept_ticking = self.d.scheduler.stats.ticks - ticks >= 0.1 * self.d.cfg.loop.rate_hz  # ≥ 1/3 of the periods
        return kept_ticking and await self._until(self._fresh_after(t0 + int(0.3e9)), 2.0)

    async def _reconnect(self, kind: str, value: float | None, timeout_s: float) -> bool:
        before, t0 = self.d.driver.stats.connects, time.monotonic_ns()
        self.serial.inject(kind, value)
        return await self._until(lambda: self.d.driver.stats.connects > before and self._fresh_after(t0)(), timeout_s)

    async def _unplug(self) -> bool:
        return await self._reconnect("unplug", 0.5, 5.0)

    async def _reboot(self) -> bool:
        return await self._reconnect("reboot", None, 5.0)

    # network
    async def _partition(self) -> bool:
        hl = self.d.hostlink
        if not await self._host_gains():
            return False
        lost = hl.counters["link_lost"]
        self.proxy.partition(SILENCE_S + 0.6)
        went = await self._until(lambda: hl.counters["link_lost"] > lost, SILENCE_S + 0.6)
        fallback = went and await self._until(self._link_lost_fallback(), 0.5)  # well inside the partition
        back = await self._until(lambda: hl.state == "up", SILENCE_S + 2.0)
        return went and fallback and back

    def _policy_active(self) -> bool:
        return self.d.slot is not None and self.d.slot.active is not None

    async def _host_gains(self) -> bool:
        """Set the host's gains; without an active policy (whose next decision overrides them) wait until they are
        in force, so that a fall back to the baseline shows."""
        assert self.stand.client is not None
        try:
            await self.stand.client.set_gains(HOST_GAINS)
        except TimeoutError:
            return False
        want = np.asarray(HOST_GAINS.rows())
        return self._policy_active() or await self._until(lambda: np.array_equal(self.d.mode.gains, want), 0.5)

    def _link_lost_fallback(self) -> Callable[[], bool]:
        """The mode's gains without a host (controller/modes/mems): an active rl-pid policy needs none, so it
        keeps deciding and its last decision's gains are in force (two decisions after the loss was counted:
        one comes after the tick that applied it); without one, the baseline gains."""
        mode, policy = self.d.mode, self._policy_active()
        self.fallbacks["policy" if policy else "baseline"] += 1
        if not policy:
            return lambda: bool(np.array_equal(mode.gains, mode.baseline_gains))
        decided = mode.decisions
        return lambda: mode.decisions >= decided + 2 and bool(np.array_equal(mode.gains, mode._gains))

    def _edge_drops(self) -> int:
        return sum(self.d.hostlink.counters[k] for k in DROP_KINDS)

    def _damaged(self) -> int:
        return sum(self.proxy.counters[f"to_edge.{k}"] for k in ("corrupt", "truncate", "duplicate"))

    async def _chaos(self) -> bool:
        drops, damaged = self._edge_drops(), self._damaged()
        self.proxy.faults = CHAOS
        await asyncio.sleep(2.0)
        self.proxy.faults = NetFaults()
        await asyncio.sleep(0.3)  # delayed datagrams land
        return self._edge_drops() - drops >= self._damaged() - damaged

    # models: good push, bad push, another good push, rollback to the first
    async def _swap(self) -> bool:
        assert self.stand.keyring is not None
        client = PushClient(self.stand.push_addr, self.stand.keyring, self.stand.keyring.newest, timeout_s=10.0)
        n = sum(self.swaps.values())
        period_s = self.d.cfg.policy.decision_every_n_ticks / self.d.cfg.loop.rate_hz  # trained where it runs
        recs = []
        for i, kind in enumerate(("good", self.rng.choice(faults_model.BAD_KINDS), "good", "rollback")):
            rec = await asyncio.to_thread(faults_model.attempt, client, kind, self.stand.workdir / "models",
                                          f"soak-{n + i}-{kind}", {"seed": n + i, "decision_period_s": period_s})
            self.swaps["accepted" if rec["accepted"] else "rejected"] += 1
            if why := faults_model.handled(rec):
                log.warning("soak: %s", why)
            recs.append(why)
        return not any(recs)

    # the command path: a controller that outputs NaN
    async def _nan(self) -> bool:
        pid, before = self.d.mode.pid, self.d.mode.gate.non_finite
        update = pid.update
        pid.update = lambda *a, **k: np.full(2, np.nan)  # type: ignore[method-assign]
        try:
            return await self._until(lambda: self.d.mode.gate.non_finite > before, 1.0)
        finally:
            pid.update = update  # type: ignore[method-assign]


async def _host(stand: SimulatedStand, stop: asyncio.Event) -> None:
    """The host: pings every 0.25 s, sets gains every 5 s (through the proxy; failures are expected)."""
    client = stand.client
    assert client is not None
    n = 0
    while not stop.is_set():
        await asyncio.sleep(0.25)
        n += 1
        try:
            if n % 20 == 0:
                await client.set_gains(HOST_GAINS)
            else:
                await client.ping()
        except TimeoutError:
            pass


async def _soak(rate_hz: float, seconds: float, workdir: Path, fault_every_s: float, seed: int,
                realtime_priority: int) -> dict[str, Any]:
    stand = SimulatedStand(workdir, seed=seed, serial_faults=True, config={
        "loop": {"mode": "rl-pid", "pacing": "timer", "rate_hz": rate_hz, "realtime_priority": realtime_priority},
        "hostlink": {"silence_timeout_s": SILENCE_S, "telemetry_decimation": 10},
        "device": {"reconnect_backoff_min_s": 0.05, "reconnect_backoff_max_s": 0.5},
        "metrics": {"enabled": False}})
    stand.start_emulator()
    stand.write_config()
    daemon = Daemon(parse_config(stand.edge_config, "soak"))
    daemon.driver.silence_timeout_s = 1.0  # a streaming device that falls silent is reconnected
    run = asyncio.create_task(daemon.run())
    proxy = await UdpProxy(stand.edge_addr, seed=seed).start()
    stand.client_addr = proxy.address
    rng = random.Random(seed)
    soak = Soak(daemon, stand, proxy, rng)
    stop = asyncio.Event()
    host: asyncio.Task | None = None
    try:
        await stand.connect()
        host = asyncio.create_task(_host(stand, stop))
        end = time.monotonic() + seconds
        kinds: list[str] = []
        while time.monotonic() + fault_every_s < end:
            await asyncio.sleep(fault_every_s * rng.uniform(0.5, 1.0))
            if run.done():
                break
            if not kinds:  # every kind once per round, in a random order
                kinds = rng.sample(list(soak.kinds), len(soak.kinds))
            await soak.inject(kinds.pop())
        await asyncio.sleep(max(0.0, end - time.monotonic()))
    finally:
        stop.set()
        if host is not None:
            await asyncio.gather(host, return_exceptions=True)
        daemon.stop()
        await asyncio.gather(run, return_exceptions=True)
        proxy.close()
        await stand.close()
    if run.exception() is not None:
        raise RuntimeError("the daemon's loop stopped") from run.exception()
    ticks = read_ticks(stand.recorder_path)
    sched = [e["details"]["sched"] for e in read_events(stand.recorder_path) if e["kind"] == "loop"]
    cmd = np.array([(r["cmd_x"], r["cmd_y"]) for r in ticks], dtype=np.float64).reshape(-1, 2)
    st = daemon.scheduler.stats
    expected = st.ticks
    return {
        "rate_hz": rate_hz, "seconds": seconds, "sched": sched[0] if sched else None,
        "ticks": st.ticks, "ticks_expected": round(rate_hz * seconds),
        "overruns": st.overruns,
        "missed_periods": st.missed_periods,
        "faults_injected": dict(sorted(soak.injected.items())), "faults_handled": dict(sorted(soak.handled.items())),
        "records_expected": expected, "records_written": len(ticks), "records_lost": expected - len(ticks),
        "recorder_dropped": daemon.recorder.dropped,
        "swaps": {"attempted": sum(soak.swaps.values()), "accepted": soak.swaps["accepted"],
                  "rejected": soak.swaps["rejected"]},
        "partition_fallbacks": dict(sorted(soak.fallbacks.items())),
        "max_command_ratio": round(daemon.mode.gate.ratio(cmd), 6) if len(cmd) else 0.0,
    }


def soak(rate_hz: float, seconds: float, workdir: Path, *, fault_every_s: float = 3.0, seed: int = 0,
         realtime_priority: int = 0) -> dict[str, Any]:
    """realtime_priority: the daemon's [loop] realtime_priority (SCHED_FIFO where this user may; the report's
    "sched" says which class the loop ran in)."""
    if not (rate_hz > 0 and seconds > 0 and fault_every_s > 0):
        raise ValueError(f"rate, duration and fault interval must be positive ({rate_hz}, {seconds}, {fault_every_s})")
    workdir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_soak(rate_hz, seconds, workdir, fault_every_s, seed, realtime_priority))
