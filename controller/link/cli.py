"""Host-link commands (`edgetune link ...`). Module top: stdlib + typer only."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from controller.link.auth import Keyring

KEY_ID = typer.Option(None, "--key-id", help="Key id to sign with (default: the newest).")

_KEYS = typer.Option(..., "--key-file", "-k", help="key file (`id:hex` lines, mode 600)")
_EDGE = typer.Option("127.0.0.1:9750", "--to", help="the daemon's host-link address HOST:PORT")


def signing(to: str, key_file: Path, key_id: int | None) -> tuple[tuple[str, int], Keyring, int]:
    """(HOST, PORT), the keyring and the key id to sign with; a usage error names the bad option."""
    from controller.link.auth import KeyringError, load_keyring

    host, _, port = to.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter(f"expected HOST:PORT, got {to!r}", param_hint="--to")
    try:
        keyring = load_keyring(key_file)
    except KeyringError as e:
        raise typer.BadParameter(str(e), param_hint="--key-file") from None
    key_id = keyring.newest if key_id is None else key_id
    if key_id not in keyring.keys:
        raise typer.BadParameter(f"key id {key_id} is not in {key_file} (it has {sorted(keyring.keys)})",
                                 param_hint="--key-id")
    return (host, int(port)), keyring, key_id


def _run(keys: Path, edge: str, key_id: int | None, action):  # noqa: ANN001, ANN202
    import asyncio

    from controller.link.host_udp import HostClient

    addr, ring, key_id = signing(edge, keys, key_id)

    async def go():  # noqa: ANN202
        async with HostClient(addr, ring, key_id) as c:
            return await action(c)

    try:
        return asyncio.run(go())
    except (OSError, TimeoutError) as e:
        typer.echo(f"host link to {edge}: {e}", err=True)
        raise typer.Exit(1) from None


def link_keygen(path: Path = typer.Argument(..., help="new key file (must not exist)"),
                key_id: list[int] = typer.Option([1], "--id", help="key id(s) to create")) -> None:
    """Create a key file with a random 256-bit key per id (mode 600); copy it to edge and host."""
    from controller.link.auth import write_keyfile

    try:
        write_keyfile(path, tuple(key_id))
    except (OSError, ValueError) as e:
        typer.echo(f"cannot create {path}: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {path} (key ids {', '.join(map(str, key_id))})")


def link_ping(keys: Path = _KEYS, edge: str = _EDGE, key_id: int = KEY_ID,
              count: int = typer.Option(5, "--count", "-n", min=1, help="pings to send")) -> None:
    """Measure the round-trip time to the edge."""
    async def action(c):  # noqa: ANN001, ANN202
        return [await c.ping() for _ in range(count)]

    rtts = sorted(_run(keys, edge, key_id, action))
    typer.echo(f"rtt ms: min {rtts[0] * 1e3:.3f}  median {rtts[len(rtts) // 2] * 1e3:.3f}  max {rtts[-1] * 1e3:.3f}")


def link_set_gains(kp_x: float, ki_x: float, kd_x: float, kp_y: float, ki_y: float, kd_y: float,
                   keys: Path = _KEYS, edge: str = _EDGE, key_id: int = KEY_ID) -> None:
    """Set PID gains (P I D for x, then y); prints what the edge applied after clamping."""
    from controller.link.auth import Gains

    gains = Gains.from_rows([[kp_x, ki_x, kd_x], [kp_y, ki_y, kd_y]])
    ack = _run(keys, edge, key_id, lambda c: c.set_gains(gains))
    typer.echo(f"applied {ack.gains.rows()}{' (clamped to the envelope)' if ack.clamped else ''}")


def link_set_target(x_px: float, y_px: float, keys: Path = _KEYS, edge: str = _EDGE,
                    key_id: int = KEY_ID) -> None:
    """Move the spot set point [px]."""
    _run(keys, edge, key_id, lambda c: c.set_target(x_px, y_px))
    typer.echo(f"target set to ({x_px}, {y_px}) px")
