"""Edge commands (`edgetune daemon`). Module top: stdlib + typer only; no torch anywhere below."""
from __future__ import annotations

from pathlib import Path

import typer


def daemon(config: Path = typer.Option(..., "--config", "-c", help="edge.toml (see deploy/edge.toml)")) -> None:
    """Run the edge control loop as a daemon (SIGTERM/SIGINT stop it gracefully)."""
    import asyncio

    from controller.config import ConfigError, load_config
    from controller.hostlink_wire import KeyringError
    from controller.logs import setup_logging

    try:
        cfg = load_config(config)
    except ConfigError as e:
        typer.echo(f"invalid configuration:\n{e}", err=True)
        raise typer.Exit(2) from None
    setup_logging(cfg.log.level, cfg.log.json_lines)
    from controller.daemon import Daemon

    try:
        d = Daemon(cfg)
    except KeyringError as e:
        typer.echo(f"refusing to start: {e}", err=True)
        raise typer.Exit(2) from None
    asyncio.run(d.run())
