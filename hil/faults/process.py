"""The ``daemon.*`` and ``config.*`` fault kinds: kill, stop and start the daemon process; start a second daemon
with a bad configuration or key file, which must refuse to start.
"""
from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
from typing import Any

from hil.scenario.model import Fault, RunContext, fault
from hil.stand import _edgetune, deep_merge, to_toml


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
