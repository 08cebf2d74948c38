"""sd_notify over a real unix datagram socket; the watchdog pings only while the loop is healthy."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from controller.scheduler import SchedulerStats
from controller import sdnotify
from controller.sdnotify import Notifier, Watchdog, watchdog_interval_s


@pytest.fixture
def notify_socket(tmp_path: Path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def test_messages_are_single_datagrams(notify_socket, monkeypatch) -> None:
    path, sock = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    n = Notifier()
    assert n.ready("ticking at 120 Hz")
    assert sock.recv(4096) == b"READY=1\nSTATUS=ticking at 120 Hz"
    assert n.watchdog() and sock.recv(4096) == b"WATCHDOG=1"
    assert n.stopping() and sock.recv(4096) == b"STOPPING=1"
    n.close()


def test_abstract_namespace_socket() -> None:
    name = f"edgetune-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        n = Notifier("@" + name)
        assert n.status("ok") and sock.recv(4096) == b"STATUS=ok"
    finally:
        sock.close()


def test_no_socket_is_a_noop_and_a_vanished_socket_is_counted(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert Notifier().ready() is False
    gone = Notifier(str(tmp_path / "nobody-listens"))
    assert gone.watchdog() is False and gone.errors == 1


def test_watchdog_interval_from_env(monkeypatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval_s() == 1.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert watchdog_interval_s() is None


def test_watchdog_pings_only_while_deadlines_are_met(notify_socket) -> None:
    path, sock = notify_socket
    stats = SchedulerStats()
    wd = Watchdog(stats, interval_s=0.5, notifier=Notifier(path), max_overruns=3, max_silence_s=0.1)
    now = 10_000_000_000
    assert not wd.maybe_ping(now)  # no tick yet
    stats.ticks, stats.last_tick_ns = 100, now + 400_000_000
    assert not wd.maybe_ping(now + 400_000_000)  # healthy, but within the interval: no check
    now += 500_000_000
    stats.last_tick_ns = now - 1_000_000
    assert wd.maybe_ping(now) and sock.recv(4096) == b"WATCHDOG=1"
    now += 500_000_000
    stats.last_tick_ns, stats.overruns = now, 3  # 3 overruns in this interval: at the threshold
    assert not wd.maybe_ping(now)
    now += 500_000_000
    stats.last_tick_ns, stats.overruns = now, 4  # 1 in this interval
    assert wd.maybe_ping(now) and sock.recv(4096) == b"WATCHDOG=1"
    now += 500_000_000  # loop stalled: last tick 0.5 s ago
    assert not wd.maybe_ping(now)
    assert (wd.pings, wd.withheld) == (2, 3)
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)  # nothing else was sent


def test_watchdog_without_interval_is_inert(monkeypatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    stats = SchedulerStats(ticks=1, last_tick_ns=1)
    assert Watchdog(stats).maybe_ping(2) is False


def test_module_notify_uses_env(notify_socket, monkeypatch) -> None:
    path, sock = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setattr(sdnotify, "_default", None)
    assert sdnotify.notify("READY=1", "STATUS=running") and sock.recv(4096) == b"READY=1\nSTATUS=running"


def test_watchdog_is_withheld_while_a_supervised_task_is_dead(notify_socket) -> None:
    path, sock = notify_socket
    dead: list[str] = []
    stats = SchedulerStats(ticks=1)
    wd = Watchdog(stats, interval_s=0.5, notifier=Notifier(path), dead=lambda: list(dead))
    now = 10_000_000_000
    stats.last_tick_ns = now
    assert wd.maybe_ping(now) and sock.recv(4096) == b"WATCHDOG=1"
    dead.append("metrics-server")  # the tick loop is fine, a task is waiting for its restart
    now += 500_000_000
    stats.last_tick_ns = now
    assert not wd.maybe_ping(now) and wd.problem(now) == "supervised task dead: metrics-server"
    dead.clear()
    now += 500_000_000
    stats.last_tick_ns = now
    assert wd.maybe_ping(now) and sock.recv(4096) == b"WATCHDOG=1"
    angles = Watchdog(None, interval_s=0.5, notifier=Notifier(path), dead=lambda: list(dead))  # no tick loop
    assert angles.maybe_ping(now) and sock.recv(4096) == b"WATCHDOG=1"
