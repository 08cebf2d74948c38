"""Process helpers for tests: a simulator process serving a pty (`pty_server`), and checks that a daemon's
children die with it (Linux /proc)."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def pty_server(argv: list[str], timeout_s: float = 20.0) -> Iterator[str]:
    """Start ``argv`` (an `edgetune sim …` process, which prints its pty's path first) and yield the path (read
    within ``timeout_s``); on leaving the block without an error, SIGTERM must end it with exit code 0 within
    3 s; it is killed in any case."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        assert ready, f"{argv} printed no pty path within {timeout_s} s"
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/pts/"), path
        yield path
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=3) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


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
