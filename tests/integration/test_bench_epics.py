"""hil/bench/epics.py's monitoring client: a client that is not ready in time is killed and reaped, and a client
whose parent (the benchmark) is gone does not run."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from hil.bench import epics
from hil.stand import free_udp_port
from proc_util import children


def test_a_client_not_ready_in_time_is_killed_and_reaped(monkeypatch) -> None:
    pytest.importorskip("caproto")
    monkeypatch.setattr(epics, "CLIENT_READY_S", 1.0)
    before = set(children(os.getpid()))
    with pytest.raises(TimeoutError):  # no server on this port: the client waits for its PV
        asyncio.run(epics._start_client(["NOBODY:X-RB"], free_udp_port()))
    assert set(children(os.getpid())) == before  # not running, and no zombie either


def test_a_client_whose_parent_is_gone_does_not_run() -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True, timeout=30).stdout.strip()
    client = subprocess.run([sys.executable, "-m", "hil.bench.epics", gone, "NOBODY:X-RB"], capture_output=True,
                            text=True, timeout=30)
    assert client.returncode == 0 and client.stdout == ""
