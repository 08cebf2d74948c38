"""Channel Access process variables served by the daemon (docs/epics.md): ``snapshot`` (what the tick writes),
``server`` (the daemon side: the process, its publisher and the set points' path into the daemon) and ``pipe``
(between the two processes), none of which imports caproto; ``child`` (the caproto server, in a process of its
own) and ``pvs`` (the PV contract as caproto PVGroups) need the ``epics`` extra."""
from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controller.daemon import Daemon
    from controller.epics.server import EpicsServer

MAX_SUMMARY = 4000  # ScanSummary-RB: characters (a CHAR waveform)


def epics_server(daemon: Daemon) -> EpicsServer:
    """The daemon's PV server ([epics] enabled); a StartupError when caproto (the ``epics`` extra) is missing."""
    from controller.lifecycle import StartupError

    if importlib.util.find_spec("caproto") is None:
        raise StartupError("EPICS PVs ([epics] enabled = true): caproto is not installed "
                           "(pip install -e '.[epics]' in a checkout)")
    from controller.epics.server import EpicsServer

    return EpicsServer(daemon)
