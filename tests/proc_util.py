"""Process helpers for tests that check a daemon's children die with it (Linux /proc)."""
from __future__ import annotations

import time
from pathlib import Path


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (every thread's)."""
    return [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]


def running(pid: int) -> bool:
    """Alive and not a zombie (nothing may reap an orphan here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def still_running(pids: list[int], timeout_s: float = 5.0) -> list[int]:
    """Wait up to ``timeout_s`` for ``pids`` to end; those still running then."""
    deadline = time.monotonic() + timeout_s
    while any(map(running, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if running(p)]
