"""EPICS benchmark (`edgetune bench epics`): the daemon's tick with its PV server serving a client that monitors
every PV at full rate, against the same tick without them, in one run.

with:    the production daemon of `bench loop` (hil/bench/production.py) with [epics] enabled: the tick writes the
         snapshot, the publisher sends to the caproto server's process at 50 Hz with no deadband, and a
         client in another process (caproto's threading client, as a beamline's monitoring host would be)
         subscribes to every PV;
without: the same daemon with the snapshot off, no PV server and no client process.

Each run is `bench loop`'s measurement (hil/bench/loop.py: the tick against the time.sleep floor in alternating
chunks); the variants alternate run by run (with/without, then without/with, ...), `runs` of each. The report's
`p99_ratio` is the median p99 lateness of the tick with the PV server over the median without (target ≤ 1.1);
`updates_per_s` is what the client received. The EPICS environment of the client is confined to 127.0.0.1 and a
free port.
"""
from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from hil.bench.loop import _alternate
from hil.bench.production import production_daemon

PREFIX = "BENCH"
CLIENT_READY_S = 60.0  # the client process must have subscribed to every PV within this


def confined_env(port: int) -> dict[str, str]:
    """Channel Access on 127.0.0.1:port only (what caproto's clients read)."""
    return {**os.environ, "EPICS_CA_SERVER_PORT": str(port), "EPICS_CA_ADDR_LIST": "127.0.0.1",
            "EPICS_CA_AUTO_ADDR_LIST": "NO", "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1"}


def monitor(parent: int, names: list[str]) -> None:
    """The client process: subscribe to every PV, print "ready", count updates until SIGTERM, print the count.
    It ends with ``parent`` (the benchmark), however that ends."""
    import threading

    from controller.lifeline import die_with_parent

    die_with_parent(parent)
    from caproto.threading.client import Context

    ctx = Context()
    pvs = ctx.get_pvs(*names, timeout=10.0)
    count = [0]
    lock = threading.Lock()

    def on_update(sub: Any, response: Any) -> None:
        with lock:
            count[0] += 1

    subs = []
    for pv in pvs:
        pv.wait_for_connection(timeout=CLIENT_READY_S)
        sub = pv.subscribe(data_type="time")
        sub.add_callback(on_update)
        subs.append(sub)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    while not stop.wait(1.0):
        if os.getppid() != parent:  # (the kernel's signal comes when the parent's starting thread ends: a check too)
            os._exit(1)
    print(count[0], flush=True)
    os._exit(0)  # a throwaway process: no orderly disconnect (its thread joins can take seconds on a loaded machine)


async def _start_client(names: list[str], port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "hil.bench.epics", str(os.getpid()), *names,
                                                env=confined_env(port), stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(CLIENT_READY_S):
            line = await proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"the monitoring client did not start (got {line!r})")
    except BaseException:  # a timeout, a cancel, a bad first line: the client goes
        proc.kill()
        await proc.wait()
        raise
    return proc


async def _stop_client(proc: asyncio.subprocess.Process) -> int:
    """SIGTERM; the updates it counted."""
    assert proc.stdout is not None
    proc.terminate()
    try:
        async with asyncio.timeout(10.0):
            line = await proc.stdout.readline()
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return int(line)


def bench(rate_hz: float, seconds: float, runs: int = 5, chunk_s: float = 2.0, nice: int = 0) -> dict[str, Any]:
    if not (rate_hz > 0 and seconds > 0 and runs > 0 and chunk_s > 0):
        raise ValueError("rate, seconds, runs and chunk must be positive")
    from hil.stand import free_udp_port

    port = free_udp_port()
    epics = {"enabled": True, "port": port, "prefix": PREFIX, "rate_hz": 50.0, "deadband_px": 0.0,
             "deadband_us": 0.0, "deadband_hz": 0.0, "nice": nice}

    async def run(workdir: Path) -> dict[str, Any]:
        async with production_daemon(workdir, rate_hz, epics=epics) as (daemon, tick):
            server, snapshot = daemon.epics, daemon.snapshot
            assert server is not None
            names: list[str] = []
            out: dict[str, list[dict[str, Any]]] = {"with": [], "without": []}
            order = [v for i in range(runs) for v in (("with", "without") if i % 2 == 0 else ("without", "with"))]
            for variant in order:
                gains = lambda: daemon.mode.gains  # noqa: E731
                if variant == "without":
                    daemon.snapshot = None
                    out[variant].append(await _alternate(rate_hz, seconds, tick, gains, chunk_s))
                    continue
                daemon.snapshot = snapshot
                await server.start()
                names = server.pvnames
                serving = asyncio.get_running_loop().create_task(server.serve_forever())
                client = await _start_client(names, port)
                posts = server.publisher.posts
                t0 = asyncio.get_running_loop().time()
                try:
                    report = await _alternate(rate_hz, seconds, tick, gains, chunk_s)
                finally:
                    elapsed = asyncio.get_running_loop().time() - t0
                    updates = await _stop_client(client)
                    serving.cancel()
                    await asyncio.gather(serving, return_exceptions=True)
                report.update(updates_per_s=round(updates / elapsed, 1),
                              posts_per_s=round((server.publisher.posts - posts) / elapsed, 1))
                out[variant].append(report)
        p99 = {k: statistics.median(r["ours"]["p99_us"] for r in v) for k, v in out.items()}
        floor = {k: statistics.median(r["floor"]["p99_us"] for r in v) for k, v in out.items()}
        return {"rate_hz": rate_hz, "seconds": seconds, "runs": runs, "nice": nice, "pvs": len(names),
                "median_p99_us": p99, "median_floor_p99_us": floor,
                "p99_ratio": round(p99["with"] / p99["without"], 3),
                "updates_per_s": statistics.median(r["updates_per_s"] for r in out["with"]),
                "posts_per_s": statistics.median(r["posts_per_s"] for r in out["with"]),
                "overruns": {k: sum(r["ours"]["overruns"] for r in v) for k, v in out.items()},
                "p99_us": {k: [r["ours"]["p99_us"] for r in v] for k, v in out.items()}}

    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(run(Path(tmp)))


if __name__ == "__main__":
    monitor(int(sys.argv[1]), sys.argv[2:])
