"""Serial faults, injected inside the firmware emulator through its control line protocol
(``firmware_sim.mems.emulator.MemsEmulator.control``; `edgetune sim mems --control-stdin --link PATH`).

garbage N    N random bytes on the wire         drop N      the next N frames lost
truncate N   the next N frames cut short        stall S     firmware frozen for S seconds
flip N       one bit flipped in each of the     dropbyte N  one byte lost from each of the next N frames
             next N frames
reboot       device reset mid-stream            unplug S    the pty vanishes for S s, then a new one
"""
from __future__ import annotations

from collections.abc import Callable

# kind -> what its value means (None: takes none)
SERIAL_FAULTS: dict[str, str | None] = {
    "garbage": "bytes", "drop": "frames", "truncate": "frames", "flip": "frames", "dropbyte": "frames",
    "stall": "seconds", "unplug": "seconds", "reboot": None,
}


def control_line(kind: str, value: float | None = None) -> str:
    """The emulator's control line for one fault; ValueError for an unknown kind or a missing value."""
    if kind not in SERIAL_FAULTS:
        raise ValueError(f"unknown serial fault {kind!r}; known: {', '.join(SERIAL_FAULTS)}")
    unit = SERIAL_FAULTS[kind]
    if unit is None:
        return kind
    if value is None or value < 0:
        raise ValueError(f"serial fault {kind} needs a value ≥ 0 ({unit})")
    return f"{kind} {int(value) if unit in ('bytes', 'frames') else float(value)}"


class SerialFaults:
    """Injects serial faults through ``send`` (a subprocess's stdin writer, or ``emulator.control``)."""

    def __init__(self, send: Callable[[str], None]) -> None:
        self.send = send
        self.injected: dict[str, int] = {}

    def inject(self, kind: str, value: float | None = None) -> None:
        self.send(control_line(kind, value))
        self.injected[kind] = self.injected.get(kind, 0) + 1
