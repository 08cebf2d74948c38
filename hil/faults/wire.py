"""The ``net.*`` and ``serial.*`` fault kinds: the UDP proxy's partition and chaos, and an attacker's datagrams
(replayed, forged, stale) on the host link (hil/faults/net.py); the emulator's control line (hil/faults/serial.py).
"""
from __future__ import annotations

import asyncio
import os
from typing import Any

from controller.link.auth import Gains, Keyring, SetGains, SetTarget, Signer, wall_us
from hil.faults.serial import SERIAL_FAULTS
from hil.scenario.model import Fault, FaultFn, RunContext, fault


# gains an attacker's SetGains carries (hil/scenario/checks.py `gains_never_change`: they never take effect)
ATTACK_GAINS = Gains.from_rows([[33.0, 3300.0, 0.3], [33.0, 3300.0, 0.3]])


def _attack(signer: Signer, target_x_px: float, count: int) -> list[bytes]:
    """``count`` datagrams sealed by ``signer``, alternately a SetTarget to ``target_x_px`` and a SetGains."""
    return [signer.seal(SetTarget(target_x_px, 0.0) if i % 2 == 0 else SetGains(ATTACK_GAINS)) for i in range(count)]


# network
@fault("net.partition")
async def _partition(ctx: RunContext, f: Fault) -> None:
    assert ctx.proxy is not None, "net faults need stand.proxy = true"
    ctx.proxy.partition(f.seconds)


@fault("net.chaos")
async def _chaos(ctx: RunContext, f: Fault) -> None:
    assert ctx.proxy is not None, "net faults need stand.proxy = true"
    before, ctx.proxy.faults = ctx.proxy.faults, f.net
    asyncio.get_running_loop().call_later(f.seconds, setattr, ctx.proxy, "faults", before)


def _raw_send(ctx: RunContext, datagrams: list[bytes]) -> None:
    """Datagrams straight to the edge from a socket of their own (an attacker on the network)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for d in datagrams:
            s.sendto(d, ctx.stand.edge_addr)


@fault("net.replay")
async def _replay(ctx: RunContext, f: Fault) -> dict[str, Any]:
    """One valid SetTarget, then the same datagram ``count`` more times."""
    assert ctx.stand.keyring is not None
    d = Signer(ctx.stand.keyring, ctx.stand.keyring.newest).seal(SetTarget(0.0, 0.0))
    _raw_send(ctx, [d] * (f.count + 1))
    ctx.sent["replayed"] += f.count
    return {"replayed": f.count}


@fault("net.forge")
async def _forge(ctx: RunContext, f: Fault) -> dict[str, Any]:
    """``count`` SetTargets and SetGains signed with a key the edge does not have (right key id)."""
    assert ctx.stand.keyring is not None
    kid = ctx.stand.keyring.newest
    signer = Signer(Keyring({kid: os.urandom(32)}), kid)
    ctx.forged_targets.append(777.0)
    _raw_send(ctx, _attack(signer, 777.0, f.count))
    ctx.sent["bad_tag"] += f.count
    return {"forged": f.count}


@fault("net.stale")
async def _stale(ctx: RunContext, f: Fault) -> dict[str, Any]:
    """``count`` correctly signed SetTargets and SetGains stamped a minute ago."""
    assert ctx.stand.keyring is not None
    signer = Signer(ctx.stand.keyring, ctx.stand.keyring.newest, clock=lambda: wall_us() - 60_000_000)
    ctx.forged_targets.append(666.0)
    _raw_send(ctx, _attack(signer, 666.0, f.count))
    ctx.sent["stale"] += f.count
    return {"stale": f.count}


# serial (inside the emulator)
def _serial_fault(kind: str) -> FaultFn:
    async def inject(ctx: RunContext, f: Fault) -> None:
        assert ctx.serial is not None, "serial faults need stand.serial_faults = true"
        unit = SERIAL_FAULTS[kind]
        ctx.serial.inject(kind, None if unit is None else f.seconds if unit == "seconds" else f.count)

    return inject


for _kind in SERIAL_FAULTS:
    fault(f"serial.{_kind}")(_serial_fault(_kind))
