"""The MEMS daemon in-process (no device: it ticks on, commanding the safe value): supervised tasks are restarted
and counted while the loop runs, the tick loop dying ends the daemon in one log line, and a failing shutdown step
does not keep the recorder session open; at shutdown the push port closes first and its last refusals are
recorded."""
from __future__ import annotations

import asyncio
import gc
import logging
import sqlite3
import sys
import urllib.request
from pathlib import Path

import pytest

from controller.config import parse_config
from controller.daemon import Daemon
from controller.link.auth import write_keyfile
from controller.recorder import read_events


@pytest.fixture
def daemon(tmp_path: Path):
    """A stabilize-mode daemon on a timer, its device unplugged; the process-wide tuning of Scheduler.run undone."""
    write_keyfile(tmp_path / "keys")
    cfg = parse_config({
        "device": {"port": str(tmp_path / "no-device"), "reconnect_backoff_max_s": 0.2},
        "loop": {"pacing": "timer", "rate_hz": 100.0},
        "hostlink": {"port": 0, "key_file": str(tmp_path / "keys"), "state_file": str(tmp_path / "state.json")},
        "recorder": {"path": str(tmp_path / "run.sqlite"), "flush_ms": 20.0},
        "metrics": {"port": 0},
        "policy": {"push_port": 0, "dir": str(tmp_path / "policies")},
    })
    switch = sys.getswitchinterval()
    yield Daemon(cfg)
    gc.unfreeze()
    sys.setswitchinterval(switch)


def _sessions(path: Path) -> list[tuple[int, int | None]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT id, ended_wall_ns FROM sessions").fetchall()


async def _until(cond, timeout_s: float = 5.0) -> None:  # noqa: ANN001
    async with asyncio.timeout(timeout_s):
        while not cond():
            await asyncio.sleep(0.01)


def _scrape_fault(port: int, kind: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    line = f'edgetune_faults_total{{kind="{kind}"}} '
    return next((float(x.removeprefix(line)) for x in text.splitlines() if x.startswith(line)), 0.0)


async def _until_exported(port: int, expect: dict[str, float], timeout_s: float = 5.0) -> None:
    """Poll the metrics until these fault counts read ``expect`` (housekeeping exports them once a second)."""
    seen: dict[str, float] = {}
    try:
        async with asyncio.timeout(timeout_s):
            while (seen := {k: await asyncio.to_thread(_scrape_fault, port, k) for k in expect}) != expect:
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"the metrics read {seen}, expected {expect}") from None


async def test_dying_tasks_are_restarted_counted_and_exported_while_the_loop_ticks(daemon: Daemon, caplog) -> None:
    run = asyncio.create_task(daemon.run())
    await _until(lambda: daemon.scheduler.stats.ticks > 10)
    assert daemon.metrics is not None
    port = daemon.metrics._address[1]
    daemon.metrics._server.shutdown()  # the metrics HTTP thread ends
    backoff = daemon.driver._backoff

    async def broken(seconds: float) -> None:
        daemon.driver._backoff = backoff
        raise RuntimeError("a bug in the reconnect loop")

    daemon.driver._backoff = broken  # the device task dies once
    sup = daemon.supervisor
    await _until(lambda: sup.restarts["metrics-server"] == 1 and sup.restarts["device"] == 1)
    ticks = daemon.scheduler.stats.ticks
    await _until(lambda: daemon.metrics.serving and sup.dead() == [])
    await _until_exported(port, {"task_restart:metrics-server": 1.0, "task_restart:device": 1.0})
    await _until(lambda: daemon.scheduler.stats.ticks > ticks + 50)  # the loop ticks on meanwhile
    assert not run.done()

    def failing_close() -> None:
        raise OSError(28, "No space left on device")

    daemon.metrics._close_server = failing_close  # a shutdown step fails: the others, the recorder's, still run
    daemon.stop()
    async with asyncio.timeout(10):
        await run
    assert all(ended and ended > 0 for _, ended in _sessions(daemon.cfg.recorder.path))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and "shutdown" in r.getMessage()] \
        == ["shutdown: metrics server failed: OSError: [Errno 28] No space left on device (at test_daemon_lifecycle.py:"
            f"{failing_close.__code__.co_firstlineno + 1} in failing_close)"]


async def test_the_tick_loop_dying_ends_the_daemon_in_one_line_and_closes_the_recorder(daemon: Daemon, caplog) -> None:
    from controller.lifecycle import Fatal

    safe, calls = daemon.mode.safe, []

    def failing():  # noqa: ANN202
        calls.append(1)
        if len(calls) == 20:
            raise ZeroDivisionError("a bug in the mode")
        return safe()

    daemon.mode.safe = failing  # type: ignore[method-assign]
    with pytest.raises(Fatal):
        async with asyncio.timeout(10):
            await daemon.run()
    critical = [r.getMessage() for r in caplog.records if r.levelno >= logging.CRITICAL]
    assert len(critical) == 1 and "the tick loop died" in critical[0] and "ZeroDivisionError: a bug in the mode" \
        in critical[0] and "\n" not in critical[0]
    assert not any(r.exc_info for r in caplog.records)  # no traceback in the log
    path = daemon.cfg.recorder.path
    assert [ended > 0 for _, ended in _sessions(path)] == [True]
    assert read_events(path)[-1]["kind"] == "stop" and read_events(path)[-1]["details"]["ticks"] == 20


async def test_shutdown_closes_the_push_port_first_and_records_its_last_refusals(daemon: Daemon) -> None:
    """Once the actuators go safe, nothing can arrive on the push port; the refusals gathered till then reach the
    recorder before its session closes."""
    async def refused_connection() -> None:
        reader, writer = await asyncio.open_connection(*daemon.push.address)
        writer.write(b"GET / HTTP/1.1\r\n" * 8)
        async with asyncio.timeout(2):
            await reader.read()
        writer.close()

    port_open_at_safe: list[bool] = []

    async def actuators_safe() -> None:
        try:
            _, writer = await asyncio.open_connection(*address)
            writer.close()
            port_open_at_safe.append(True)
        except OSError:
            port_open_at_safe.append(False)

    daemon._actuators_safe = actuators_safe  # type: ignore[method-assign]
    run = asyncio.create_task(daemon.run())
    await _until(lambda: daemon.recorder is not None)
    address = daemon.push.address
    for _ in range(2):  # the first is reported at once, the second gathered for the next summary
        await refused_connection()
    daemon.stop()
    async with asyncio.timeout(10):
        await run
    assert port_open_at_safe == [False]
    with pytest.raises(OSError):
        await asyncio.open_connection(*address)
    kinds = [(e["kind"], e["details"].get("counts")) for e in read_events(daemon.cfg.recorder.path)]
    assert kinds[-3:] == [("push_refused", {"bad_magic": 1}), ("push_refused", {"bad_magic": 1}), ("stop", None)]


async def test_a_validator_that_cannot_be_spawned_is_a_one_line_startup_error(tmp_path: Path, monkeypatch) -> None:
    """Spawning the policy validator fails (out of processes or memory): a StartupError naming the step (the CLI's
    one line, exit status 2), not Fatal; the recorder session is closed."""
    from controller.lifecycle import StartupError
    from controller.policy.slot import PolicySlot

    write_keyfile(tmp_path / "keys")
    cfg = parse_config({
        "device": {"port": str(tmp_path / "no-device")},
        "loop": {"mode": "rl-pid", "pacing": "timer", "rate_hz": 100.0},
        "hostlink": {"port": 0, "key_file": str(tmp_path / "keys"), "state_file": str(tmp_path / "state.json")},
        "recorder": {"path": str(tmp_path / "run.sqlite")},
        "metrics": {"port": 0},
        "policy": {"push_port": 0, "dir": str(tmp_path / "policies")},
    })

    def cannot_fork(self: PolicySlot) -> None:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(PolicySlot, "start_validator", cannot_fork)
    with pytest.raises(StartupError, match="^policy validator process: .*Resource temporarily unavailable"):
        async with asyncio.timeout(10):
            await Daemon(cfg).run()
    assert [ended > 0 for _, ended in _sessions(cfg.recorder.path)] == [True]


def _scrape(port: int, name: str) -> float | None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return next((float(x.split()[-1]) for x in text.splitlines() if x.startswith(name + " ")), None)


async def test_the_angles_mode_runs_in_the_same_daemon_with_host_link_metrics_and_watchdog(tmp_path: Path) -> None:
    """One daemon for every mode: in angles mode the host link answers pings (link up in the metrics), a MEMS
    command it does not take is counted, not applied, and the watchdog pings while housekeeping runs."""
    from controller.link.auth import Gains, load_keyring
    from controller.link.host_udp import HostClient
    from controller.sdnotify import Watchdog

    write_keyfile(tmp_path / "keys")
    daemon = Daemon(parse_config({
        "device": {"port": str(tmp_path / "no-device")},
        "loop": {"mode": "angles"},
        "hostlink": {"port": 0, "key_file": str(tmp_path / "keys"), "state_file": str(tmp_path / "state.json")},
        "recorder": {"path": str(tmp_path / "run.sqlite"), "flush_ms": 20.0},
        "metrics": {"port": 0},
        "policy": {"push_port": 0, "dir": str(tmp_path / "policies")},
    }))
    assert daemon.scheduler is None and set(daemon.push.ops) >= {"scan", "abort", "hold", "status"}
    pings: list[str] = []
    daemon.watchdog = Watchdog(None, interval_s=0.5, dead=daemon.supervisor.dead,
                               notifier=type("N", (), {"notify": lambda self, *m: pings.extend(m)})())
    run = asyncio.create_task(daemon.run())
    try:
        await _until(lambda: daemon.recorder is not None and daemon.hostlink.address[1] != 0)
        ring = load_keyring(tmp_path / "keys")
        async with HostClient(daemon.hostlink.address, ring, key_id=ring.newest) as client:
            assert await client.ping() >= 0.0
            await client.set_gains(Gains.from_rows([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
        port = daemon.metrics._address[1]
        async with asyncio.timeout(5):
            while await asyncio.to_thread(_scrape, port, "edgetune_link_up") != 1.0:
                await asyncio.sleep(0.05)
        await _until(lambda: daemon.hostlink.counters["unsupported"] == 1 and "WATCHDOG=1" in pings)
    finally:
        daemon.stop()
        async with asyncio.timeout(10):
            await run
    assert [e["details"] for e in read_events(tmp_path / "run.sqlite") if e["kind"] == "link"][0] == {"up": True}
