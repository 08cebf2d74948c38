"""Swap benchmark (`edgetune bench swap`): the rl-pid loop at `rate` Hz while models are pushed and
swapped, against the same loop without pushes, in one run.

The loop is in process: the asyncio `Scheduler` (timerfd) running the daemon's own tick in rl-pid mode
(`controller.daemon.Daemon.tick` against the in-process simulated device, hil/bench/production.py: the
policy slot's tick-boundary swap, the active ONNX actor re-tuning the gains every `decision_every` ticks,
PID, safety gate, recorder, sealed telemetry). The daemon's own `PushServer` runs on the same event loop on
a loopback TCP port; the pusher (controller.link.host_push) runs in another process, as the host would, and pushes
distinct signed models, each installed, validated (in the slot's validator process) and swapped in.
Short quiet and pushing chunks alternate so both see the same background load (this VM's stalls come in
bursts). swap_latency_ms: request received → swapped at a tick boundary.
"""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from controller.daemon import Daemon
from controller.lifeline import off_loop_priority
from controller.link.auth import Keyring
from controller.link.host_push import PushClient
from controller.latency import LatencyRing
from controller.scheduler import Scheduler, Tick, realtime
from hil.bench.loop import RT_PRIORITY, _result, affinity, pin
from hil.bench.production import production_daemon
from hil.faults.model_artifacts import make_artifact

PUSHER_TIMEOUT_S = 60.0  # the pusher process answers a query within this
_pusher: PushClient | None = None  # the pusher process's client (its sequence numbers persist across pushes)


def _start_pusher(addr: tuple[str, int], key_id: int, key: bytes) -> None:
    """The pusher stands in for the host, another machine: at nice 19 it takes as little of the edge's CPU as it can."""
    global _pusher
    off_loop_priority(19)
    _pusher = PushClient(addr, Keyring({key_id: key}), key_id)


def _push(art: Path) -> dict[str, Any]:
    assert _pusher is not None
    return _pusher.push(art)


async def _chunks(rate_hz: float, swaps: int, chunks: int, chunk_s: float, decision_every: int,
                  work: Path, rt: bool) -> dict[str, Any]:
    arts = [make_artifact("good", work / f"m{i}", version=f"v{i}", seed=i, steps=4,
                          decision_period_s=decision_every / rate_hz) for i in range(swaps)]
    async with production_daemon(work, rate_hz, mode="rl-pid", policy={"decision_every_n_ticks": decision_every}) as (
            daemon, daemon_tick):
        return await _phases(daemon, daemon_tick, arts, rate_hz, chunks, chunk_s, rt)


async def _phases(daemon: Daemon, daemon_tick: Callable[[Tick], None], arts: list[Path], rate_hz: float, chunks: int,
                  chunk_s: float, rt: bool) -> dict[str, Any]:
    slot, server, swaps = daemon.slot, daemon.push, len(arts)
    assert slot is not None
    await server.start()
    kid = daemon.keyring.newest
    pusher = ProcessPoolExecutor(1, multiprocessing.get_context("spawn"), _start_pusher,
                                 (server.address, kid, daemon.keyring.keys[kid]))
    pusher.submit(int).result()  # the process is up before the first quiet phase
    await slot.in_validator(int)  # so is the validator process

    # one loop throughout; each tick's lateness and overrun goes to the phase it ran in
    phase = "baseline"
    lat = {k: LatencyRing(round(rate_hz * chunk_s * chunks) + 16) for k in ("baseline", "with_swaps")}
    over = {"baseline": 0, "with_swaps": 0}

    def tick(t: Tick) -> None:
        lat[phase].add(t.lateness_ns)
        over[phase] += t.missed > 0
        daemon_tick(t)

    replies: list[dict[str, Any]] = []
    per_chunk = -(-swaps // chunks)

    async def driver(sched_done: asyncio.Future) -> None:
        nonlocal phase
        for c in range(chunks):
            phase = "baseline"
            await asyncio.sleep(chunk_s)
            phase = "with_swaps"
            t_end = asyncio.get_running_loop().time() + chunk_s
            batch = arts[c * per_chunk:(c + 1) * per_chunk]
            for art in batch:  # evenly spread; a push in flight keeps the phase
                replies.append(await asyncio.get_running_loop().run_in_executor(pusher, _push, art))
                await asyncio.sleep(max(0.0, (t_end - asyncio.get_running_loop().time()) / (len(batch) + 1)))
            await asyncio.sleep(max(0.0, t_end - asyncio.get_running_loop().time()))
        sched_done.set_result(None)

    try:  # under rt the loop thread only: other threads and processes stay in the normal class
        with realtime(RT_PRIORITY if rt else 0) as fifo:
            done = asyncio.get_running_loop().create_future()
            drive = asyncio.create_task(driver(done))
            sched = Scheduler(1.0 / rate_hz)
            stopper = asyncio.create_task(_stop_when(done, sched))
            await sched.run(tick)
            await asyncio.gather(drive, stopper)
        pusher_cpus = asyncio.get_running_loop().run_in_executor(pusher, os.sched_getaffinity, 0)
        cpus = {"bench": affinity(), "validator": sorted(await slot.in_validator(os.sched_getaffinity, 0)),
                "pusher": sorted(await asyncio.wait_for(pusher_cpus, PUSHER_TIMEOUT_S))}
    finally:
        pusher.shutdown()
        slot.close()
        await server.close()
    res = {k: _result(v.values(), over[k]) for k, v in lat.items()}
    ms = np.array([r["swap_latency_ms"] for r in replies if r["accepted"]] or [np.nan])
    return {
        "rate_hz": rate_hz, "swaps": len(replies), "accepted": sum(bool(r["accepted"]) for r in replies),
        "baseline": {k: res["baseline"][k] for k in ("overruns", "p99_us", "max_us")},
        "with_swaps": {k: res["with_swaps"][k] for k in ("overruns", "p99_us", "max_us")},
        "extra_overruns": res["with_swaps"]["overruns"] - res["baseline"]["overruns"],
        "swap_latency_ms": {"p50": round(float(np.median(ms)), 3), "max": round(float(ms.max()), 3)},
        "rejected": sorted({r["reason"] for r in replies if not r["accepted"]}),
        "decisions": daemon.mode.decisions, "non_finite_outputs": slot.counters["non_finite_output"],
        "sched": "fifo" if fifo else "other", "cpus": cpus,
    }


async def _stop_when(done: asyncio.Future, sched: Scheduler) -> None:
    await done
    sched.stop()


def bench(rate_hz: float = 1000.0, swaps: int = 100, chunks: int = 20, chunk_s: float = 0.5,
          decision_every: int = 10, rt: bool = False, cpus: set[int] | None = None) -> dict[str, Any]:
    """One loop of `chunks` × (quiet, pushing) phases of `chunk_s` each; `swaps` pushes spread over the pushing
    phases. rt: the loop thread under SCHED_FIFO, as the daemon's with [loop] realtime_priority. cpus: pin the
    benchmark, and so the validator and pusher processes it starts, to them (hil.bench.loop.pin)."""
    if not (rate_hz > 0 and swaps > 0 and chunks > 0 and chunk_s > 0 and decision_every > 0):
        raise ValueError("rate, swaps, chunks, chunk_s and decision_every must be positive")
    if cpus:
        pin(cpus)
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_chunks(rate_hz, swaps, chunks, chunk_s, decision_every, Path(tmp), rt))
