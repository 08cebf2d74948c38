"""The edge's command line: `edgetune-edge` (deploy/edgetune.service), the daemon and the commands that talk to it
over the push channel; the link commands come from controller/link/cli.py. `edgetune` (hil/cli.py) registers the
same commands through `register`. Module top: stdlib + typer only; nothing here imports torch, learner or hil."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from controller.link import cli as link_cli
from controller.link.cli import KEY_ID, signing


def daemon(config: Path = typer.Option(..., "--config", "-c", help="edge.toml (see deploy/edge.toml)")) -> None:
    """Run the edge control loop as a daemon (SIGTERM/SIGINT stop it gracefully). Exit status 2: refused to start
    (one line on stderr says why); 1: its loop died (logged) and it stopped, for systemd to restart it."""
    import asyncio

    from controller.config import ConfigError, load_config
    from controller.lifecycle import Fatal, StartupError
    from controller.logs import setup_logging

    from controller.modes import registry

    try:
        cfg = load_config(config)
        registry.get(cfg.loop.mode)
    except (ConfigError, ValueError) as e:  # ValueError: a mode nobody registered (it names those that are)
        where = "" if isinstance(e, ConfigError) else f"{config.name}: loop.mode: "
        typer.echo(f"invalid configuration:\n{where}{e}", err=True)
        raise typer.Exit(2) from None
    setup_logging(cfg.log.level, cfg.log.json_lines)
    from controller.daemon import Daemon

    try:
        asyncio.run(Daemon(cfg).run())
    except StartupError as e:
        typer.echo(f"refusing to start: {e}", err=True)
        raise typer.Exit(2) from None
    except Fatal:
        raise typer.Exit(1) from None


def _request(to: str, key_file: Path, key_id: int | None, op: Callable[[Any], dict], timeout_s: float = 30.0) -> None:
    """Run one signed request (`op` on a PushClient) and print the JSON reply; exit 1 unless it was accepted.
    A bad address or key file, or a daemon that cannot be reached, is a clean error, not a traceback."""
    import json

    from controller.link.host_push import PushClient

    try:
        reply = op(PushClient(*signing(to, key_file, key_id), timeout_s))
    except (OSError, ValueError) as e:  # refused, unreachable, timed out, or a reply that fails authentication
        typer.echo(f"no reply from the daemon at {to}: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(reply))
    if not reply.get("accepted"):
        raise typer.Exit(1)


_TO = typer.Option(..., "--to", help="The daemon's model-push address HOST:PORT ([policy] push_port).")
_KEY_FILE = typer.Option(..., "--key-file", help="The host-link key file (id:hex lines, mode 600).")


def push(out_dir: Path = typer.Argument(..., help="Folder with model.onnx + manifest.json (`edgetune export`)."),
         to: str = _TO, key_file: Path = _KEY_FILE, key_id: int = KEY_ID) -> None:
    """Push a policy to the edge; it is validated and swapped in at a tick boundary. Prints the JSON reply."""
    from controller.policy.manifest import ManifestError, load_artifact

    try:
        load_artifact(out_dir)  # the edge checks it again; this catches a wrong folder before connecting
    except ManifestError as e:
        raise typer.BadParameter(f"{out_dir} is not an exported policy (`edgetune export RUN {out_dir}`): {e}",
                                 param_hint="OUT_DIR") from None
    _request(to, key_file, key_id, lambda c: c.push(out_dir))


def rollback(to: str = _TO, key_file: Path = _KEY_FILE, key_id: int = KEY_ID) -> None:
    """Make the edge's previous policy active again at its next tick boundary (after the first push: none, so
    the mode's fallback, e.g. the baseline gains; rolling back again restores the push). Prints the JSON reply."""
    _request(to, key_file, key_id, lambda c: c.rollback())


def policy_status(to: str = _TO, key_file: Path = _KEY_FILE, key_id: int = KEY_ID) -> None:
    """The daemon's mode, the operator hold, active/previous policy versions (none in stabilize mode) and the
    slot's and push channel's counters. Prints the JSON reply."""
    _request(to, key_file, key_id, lambda c: c.status())


def hold(to: str = _TO, key_file: Path = _KEY_FILE, key_id: int = KEY_ID) -> None:
    """Operator hold: the actuators go to the mode's safe command (a scan in flight is aborted) and stay there
    until `resume`; the loop keeps ticking and recording, host gains/targets are taken but act only after the
    resume. Prints the JSON reply."""
    _request(to, key_file, key_id, lambda c: c.hold())


def resume(to: str = _TO, key_file: Path = _KEY_FILE, key_id: int = KEY_ID) -> None:
    """End an operator hold: the mode commands the actuators again. Prints the JSON reply."""
    _request(to, key_file, key_id, lambda c: c.resume())


def scan(to: str = _TO, key_file: Path = _KEY_FILE, key_id: int = KEY_ID,
         sample: str = typer.Option(None, help="Put this phantom on the stage first: any, parallelogram, triangle "
                                                "or pentagon (default: keep the current one)."),
         sample_seed: int = typer.Option(0, help="Phantom seed (with --sample)."),
         split: str = typer.Option("val", help="Phantom rotations from the train or val bins (with --sample)."),
         timeout: float = typer.Option(300.0, help="Seconds to wait for the scan's reply.")) -> None:
    """Run one adaptive CT scan on an angles-mode daemon. Prints the JSON summary (angles, stop reason,
    reconstruction path)."""
    from pydantic import ValidationError

    from controller.link.push_wire import SampleSpec

    try:
        spec = None if sample is None else SampleSpec(kind=sample, seed=sample_seed, split=split)
    except ValidationError as e:
        raise typer.BadParameter("; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()),
                                 param_hint="--sample/--sample-seed/--split") from None
    _request(to, key_file, key_id, lambda c: c.scan(spec), timeout)


def abort(to: str = _TO, key_file: Path = _KEY_FILE, key_id: int = KEY_ID) -> None:
    """Halt the scan in flight on an angles-mode daemon; replies once the stage rests. Prints the JSON reply."""
    _request(to, key_file, key_id, lambda c: c.abort())


def register(app: typer.Typer, link_app: typer.Typer) -> None:
    """Add the edge's commands to a CLI: `daemon`, `push`, `rollback` on ``app``; the rest on ``link_app``."""
    app.command("daemon")(daemon)
    app.command("push")(push)
    app.command("rollback")(rollback)
    for name, fn in {"policy-status": policy_status, "scan": scan, "abort": abort, "hold": hold, "resume": resume,
                     "keygen": link_cli.link_keygen, "ping": link_cli.link_ping,
                     "set-gains": link_cli.link_set_gains, "set-target": link_cli.link_set_target}.items():
        link_app.command(name)(fn)


# rich_markup_mode=None: help texts keep their units in brackets ([px], [dB]) instead of reading them as markup
GROUP = {"no_args_is_help": True, "rich_markup_mode": None}
LINK_HELP = "Talk to a running daemon over the authenticated host link."
app = typer.Typer(**GROUP, add_completion=False, help="edgetune-edge: the edge daemon and the commands that talk to it.")
link_app = typer.Typer(**GROUP, help=LINK_HELP)
app.add_typer(link_app, name="link")
register(app, link_app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
