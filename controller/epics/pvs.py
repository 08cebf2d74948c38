"""The PV contract (docs/epics.md; shared with the ophyd-async device) as caproto PVGroups.

``LoopPVs``: every mode. ``MemsPVs``: the MEMS tick modes' spot, target, gains and set points. ``ScanPVs``: the
session modes' scan state and start/abort. Names are ``<prefix>:<Name>``; read-backs end in ``-RB`` and are
read-only to Channel Access (the publisher in controller/epics/server.py writes them); set points end in ``-SP``.
A set point's put goes to the group's ``Bridge`` (the daemon side): its putter awaits the bridge, so the client's
put-callback completes when the bridge returns and fails (ECA_PUTFAIL, with the reason) when it raises. Who may
write is the bridge's ``access`` (caproto's access-rights hook, asked with the client's self-reported host name);
a refused write never reaches a putter and is counted by the bridge.
"""
from __future__ import annotations

from typing import Any, Protocol

from caproto import AccessRights, ChannelType
from caproto.server import PVGroup, pvproperty
from caproto.server.server import PvpropertyDouble, PvpropertyInteger

from controller.epics import MAX_SUMMARY

LINK, NO_YES = ("Down", "Up"), ("No", "Yes")
SCAN_STATES = ("Idle", "Running", "Done", "Aborted", "Failed")


class Bridge(Protocol):
    """What the PVs ask of the daemon side (controller/epics/server.py)."""

    def access(self, host: str | None) -> AccessRights: ...

    def refused(self, host: str | None, pv: str) -> None: ...

    async def move_target(self, x: float | None = None, y: float | None = None) -> float: ...

    async def set_gains(self, values: Any) -> list[float]: ...

    async def start_scan(self) -> None: ...

    async def abort_scan(self) -> None: ...


class _Guarded:
    """A writable PV whose access is the bridge's; a write it refuses is counted there, then refused by caproto."""

    group: EdgePVGroup
    pvname: str

    def check_access(self, host: str | None, user: str | None) -> AccessRights:
        return self.group.bridge.access(host)

    async def auth_write(self, hostname: str | None, username: str | None, *args: Any, **kwargs: Any) -> Any:
        if AccessRights.WRITE not in self.check_access(hostname, username):
            self.group.bridge.refused(hostname, self.pvname)
        return await super().auth_write(hostname, username, *args, **kwargs)  # type: ignore[misc]


class GuardedDouble(_Guarded, PvpropertyDouble):
    pass


class GuardedInteger(_Guarded, PvpropertyInteger):
    pass


class EdgePVGroup(PVGroup):
    type_map = {**PVGroup.type_map, float: GuardedDouble, int: GuardedInteger}  # set points; read-backs: read-only

    def __init__(self, prefix: str, bridge: Bridge) -> None:
        self.bridge = bridge
        super().__init__(prefix)


def _ro(name: str, value: Any, **kw: Any) -> pvproperty:
    return pvproperty(name=f":{name}", value=value, read_only=True, **kw)


def _enum(name: str, strings: tuple[str, ...]) -> pvproperty:
    return _ro(name, strings[0], dtype=ChannelType.ENUM, enum_strings=strings)


class LoopPVs(EdgePVGroup):
    """Every mode: the loop's state."""

    mode = _ro("Mode-RB", "", dtype=ChannelType.STRING)
    tick_rate = _ro("TickRate-RB", 0.0, units="Hz", precision=2)
    lateness_p99 = _ro("LatenessP99-RB", 0.0, units="us", precision=1)
    overruns = _ro("Overruns-RB", 0)
    link = _enum("Link-RB", LINK)
    policy_version = _ro("PolicyVersion-RB", "", dtype=ChannelType.STRING)
    held = _enum("Held-RB", NO_YES)


class MemsPVs(LoopPVs):
    """The MEMS tick modes (stabilize, rl-pid)."""

    x = _ro("X-RB", 0.0, units="px", precision=3)
    y = _ro("Y-RB", 0.0, units="px", precision=3)
    target_x = _ro("TargetX-RB", 0.0, units="px", precision=3)
    target_y = _ro("TargetY-RB", 0.0, units="px", precision=3)
    gains = _ro("Gains-RB", [0.0] * 6, max_length=6, precision=6)
    error = _ro("Error-RB", 0.0, units="px", precision=3)
    settled = _enum("Settled-RB", NO_YES)
    target_x_sp = pvproperty(name=":TargetX-SP", value=0.0, units="px", precision=3)
    target_y_sp = pvproperty(name=":TargetY-SP", value=0.0, units="px", precision=3)
    gains_sp = pvproperty(name=":Gains-SP", value=[0.0] * 6, max_length=6, precision=6)

    @target_x_sp.putter
    async def target_x_sp(self, instance: Any, value: float) -> float:
        return await self.bridge.move_target(x=value)

    @target_y_sp.putter
    async def target_y_sp(self, instance: Any, value: float) -> float:
        return await self.bridge.move_target(y=value)

    @gains_sp.putter
    async def gains_sp(self, instance: Any, value: Any) -> list[float]:
        return await self.bridge.set_gains(value)


class ScanPVs(LoopPVs):
    """The session (scan) modes: every AcquisitionSession (angles, ptycho, transceiver)."""

    scan_state = _enum("ScanState-RB", SCAN_STATES)
    scan_progress = _ro("ScanProgress-RB", 0.0, precision=3)
    scan_points = _ro("ScanPoints-RB", 0)
    scan_summary = _ro("ScanSummary-RB", "", dtype=ChannelType.CHAR, max_length=MAX_SUMMARY)
    scan_start = pvproperty(name=":ScanStart-SP", value=0)
    scan_abort = pvproperty(name=":ScanAbort-SP", value=0)

    @scan_start.putter
    async def scan_start(self, instance: Any, value: int) -> int:
        if value == 1:
            await self.bridge.start_scan()  # returns when the scan has ended
        return 0

    @scan_abort.putter
    async def scan_abort(self, instance: Any, value: int) -> int:
        if value == 1:
            await self.bridge.abort_scan()
        return 0
