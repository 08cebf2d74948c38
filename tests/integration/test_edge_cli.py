"""`edgetune-edge` (controller/cli.py), the edge's own entry point: its commands run without torch, learner or hil
loaded, and `edgetune` (hil/cli.py) still offers every edge command. The module is run as the console script
would run it (`python -m controller.cli`), so the test does not depend on the installed scripts."""
from __future__ import annotations

import json
import subprocess
import sys

import typer

PROBE = r"""
import json, runpy, sys
sys.argv = ["edgetune-edge", *sys.argv[1:]]
try:
    runpy.run_module("controller.cli", run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as e:
    code = e.code
import controller.daemon, controller.modes.registry as r; r.names()  # the code `daemon` runs: the edge's own modules only
print(json.dumps({"exit": code, "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "learner", "hil"))}))
"""


def _run_edge(*args: str) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    *out, last = proc.stdout.strip().splitlines()
    return json.loads(last), "\n".join(out)


def test_edge_cli_daemon_help_loads_no_torch_learner_or_hil() -> None:
    res, out = _run_edge("daemon", "--help")
    assert res == {"exit": 0, "loaded": []}
    assert "--config" in out


def test_edge_cli_offers_the_link_commands() -> None:
    res, out = _run_edge("link", "--help")
    assert res == {"exit": 0, "loaded": []}
    for name in ("ping", "set-gains", "set-target", "keygen", "policy-status", "hold", "resume", "scan", "abort"):
        assert name in out


def _commands(app: typer.Typer) -> set[str]:
    def walk(c, path: str) -> set[str]:  # noqa: ANN001
        if hasattr(c, "commands"):
            return {n for name, sub in c.commands.items() for n in walk(sub, f"{path} {name}".strip())}
        return {path}

    return walk(typer.main.get_command(app), "")


def test_edgetune_keeps_every_edge_command() -> None:
    import controller.cli
    import hil.cli

    edge = _commands(controller.cli.app)
    assert {"daemon", "push", "rollback", "link ping", "link hold"} <= edge
    assert edge <= _commands(hil.cli.app)
