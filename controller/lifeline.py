"""A child process that ends with its parent (Linux): `die_with_parent`, and `python -m controller.lifeline PPID
MODULE ARGS…`, which runs MODULE as `python -m MODULE ARGS…` would, in a process that ends with PPID. Also the
priority of off-loop threads and processes: `off_loop_priority`.

The runner is how a process with threads (a Ray worker, an asyncio loop) starts a child that must not outlive it:
the child itself asks the kernel, first thing, instead of a `preexec_fn` between fork and exec (unsafe with threads:
the forked child can deadlock on a lock another thread held). Stdlib only, so that the child starts quickly.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import runpy
import signal
import sys
import threading

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> None:
    """Have the kernel send this process ``sig`` when its parent ends, however it ends (SIGKILL included):
    prctl(PR_SET_PDEATHSIG). The signal comes when the parent's thread that started this process ends; the
    daemon starts its validator from the loop's (main) thread. A parent already gone before the call (the
    process was reparented) ends this process here."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    except (OSError, AttributeError) as e:  # AttributeError: no prctl (not Linux)
        log.warning("this process will not end with its parent: %s", e)
    if os.getppid() != parent_pid:
        os._exit(0)


def off_loop_priority(nice: int) -> None:
    """The calling thread in the normal scheduling class (not a real-time one inherited from a loop run under
    chrt or --rt) at ``nice``, so off-loop work never preempts the loop."""
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: no sched_* outside Linux
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))  # 0: this thread
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)  # Linux: per-thread niceness


def main() -> None:
    """`python -m controller.lifeline PPID MODULE ARGS…` (SIGTERM when PPID ends: the module may clean up)."""
    parent, module, *args = sys.argv[1:]
    die_with_parent(int(parent), signal.SIGTERM)
    sys.argv = [module, *args]  # run_module sets argv[0] to the module's file
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
