"""Channel Access process variables served by the daemon (docs/epics.md): ``snapshot`` (what the tick writes,
no caproto), ``pvs`` (the PV contract as caproto PVGroups) and ``server`` (the bounded caproto asyncio server,
its publisher and the set points' path into the daemon). Only ``snapshot`` is imported without the ``epics``
extra."""
from __future__ import annotations

from typing import TYPE_CHECKING

from controller.lifecycle import StartupError

if TYPE_CHECKING:
    from controller.daemon import Daemon
    from controller.epics.server import EpicsServer


def epics_server(daemon: Daemon) -> EpicsServer:
    """The daemon's PV server ([epics] enabled); a StartupError when caproto (the ``epics`` extra) is missing."""
    try:
        from controller.epics.server import EpicsServer
    except ModuleNotFoundError as e:
        if e.name != "caproto" and not (e.name or "").startswith("caproto."):
            raise
        raise StartupError("EPICS PVs ([epics] enabled = true): caproto is not installed "
                           "(pip install 'edgetune[epics]')") from e
    return EpicsServer(daemon)
