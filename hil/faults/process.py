"""The ``daemon.*`` and ``config.*`` fault kinds: kill, stop and start the daemon process; start a second daemon
with a bad configuration or key file, which must refuse to start.

Every wait has a deadline and a timeout fails the step naming what it waited for: a killed daemon must be reaped
within EXIT_TIMEOUT_S, and ``daemon.start`` returns only once the new daemon answers the host's ping and its
metrics endpoint accepts connections (READY_TIMEOUT_S; a slow start on a loaded machine is waited for, not raced).
"""
from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from typing import Any

from hil.scenario.model import Fault, RunContext, StepTimeout, fault, wait_until
from hil.stand import _edgetune, deep_merge, to_toml

EXIT_TIMEOUT_S = 10.0  # a SIGKILLed daemon is reaped within this
READY_TIMEOUT_S = 60.0  # a (re)started daemon answers the host and serves its metrics within this


# the daemon process
@fault("daemon.sigkill")
async def _sigkill(ctx: RunContext, f: Fault) -> dict[str, Any]:
    d = ctx.stand.daemon
    assert d is not None
    d.kill()
    try:
        return {"rc": await asyncio.to_thread(d.wait, EXIT_TIMEOUT_S)}
    except subprocess.TimeoutExpired:
        raise StepTimeout(f"daemon.sigkill: the killed daemon (pid {d.pid}) had not exited after {EXIT_TIMEOUT_S:g} s") from None


@fault("daemon.sigterm")
async def _sigterm(ctx: RunContext, f: Fault) -> dict[str, Any]:
    return {"rc": await asyncio.to_thread(ctx.stand.terminate_daemon, signal.SIGTERM)}


@fault("daemon.start")
async def _start(ctx: RunContext, f: Fault) -> dict[str, Any]:
    t0 = time.monotonic()
    d = ctx.stand.start_daemon()
    await wait_ready(ctx, d)
    return {"ready_s": round(time.monotonic() - t0, 3)}


async def wait_ready(ctx: RunContext, d: subprocess.Popen) -> None:
    """Until the daemon ``d`` answers a ping and accepts a connection on its metrics port (StepTimeout naming
    which it did not do; RuntimeError when it exits meanwhile)."""
    client, port = ctx.stand.client, int(ctx.stand.edge_config["metrics"]["port"])
    assert client is not None

    def running() -> None:
        if d.poll() is not None:
            raise RuntimeError(f"daemon.start: the daemon exited with {d.returncode} while starting "
                               f"(see {ctx.stand.workdir / 'daemon.log'})")

    async def answers() -> bool:
        running()
        try:
            await client.ping()
            return True
        except TimeoutError:
            return False

    async def serves_metrics() -> bool:
        running()
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        w.close()
        return True

    await wait_until(f"the restarted daemon (pid {d.pid}) to answer a ping", answers, READY_TIMEOUT_S)
    await wait_until(f"the restarted daemon's metrics on port {port}", serves_metrics, READY_TIMEOUT_S)


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
