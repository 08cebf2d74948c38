"""The daemon's Channel Access PVs (controller/epics, docs/epics.md) against real daemon and emulator processes, read
and written with caproto's threading client. The EPICS environment is confined to 127.0.0.1 and a free port for
each daemon (set for the test only); every client call has a timeout."""
from __future__ import annotations

import math
import os
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("caproto")
from caproto import CaprotoTimeoutError  # noqa: E402
from caproto.threading.client import Context  # noqa: E402

from controller.config import EdgeConfig  # noqa: E402
from controller.link.auth import Gains  # noqa: E402
from controller.link.edge_udp import clamp_gains  # noqa: E402
from hil.stand import SimulatedStand, free_udp_port  # noqa: E402

pytestmark = pytest.mark.hil

P = "T"  # the PV prefix
WRITER = "beamline-ws"  # the host name allowed to write (the client claims it: nothing checks it)
TIMEOUT = 5.0  # every client call [s]
UP_S = 30.0  # daemon start-up on a loaded machine


@contextmanager
def epics_stand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, epics: dict[str, Any], device: str = "mems",
                **stand: Any) -> Iterator[tuple[SimulatedStand, int]]:
    """Emulator + daemon with [epics] on a free port; the EPICS client environment confined to it."""
    port = free_udp_port()
    for k, v in {"EPICS_CA_SERVER_PORT": str(port), "EPICS_CA_ADDR_LIST": "127.0.0.1", "EPICS_CA_AUTO_ADDR_LIST": "NO",
                 "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1"}.items():
        monkeypatch.setenv(k, v)
    config = stand.pop("config", {})
    s = SimulatedStand(tmp_path, device=device, config={**config, "epics": {"enabled": True, "port": port,
                                                                            "prefix": P, **epics}}, **stand)
    try:
        s.start_emulator()
        s.write_config()
        s.start_daemon()
        wait_for(lambda: s.daemon.poll() is not None or logged(s, "daemon up"), UP_S, "the daemon")
        assert s.daemon.poll() is None, (s.workdir / "daemon.log").read_text()[-2000:]
        yield s, port
    finally:
        s.terminate_daemon()
        if s.emulator is not None:
            s.emulator.terminate()
            s.emulator.wait(5)


@contextmanager
def client(host_name: str | None = None) -> Iterator[Context]:
    ctx = Context(host_name=host_name)
    try:
        yield ctx
    finally:
        ctx.disconnect()


def pv(ctx: Context, name: str, stand: SimulatedStand) -> Any:
    """The connected PV ``P:name`` (waits for the daemon to serve it)."""
    (p,) = ctx.get_pvs(f"{P}:{name}", timeout=TIMEOUT)
    deadline = time.monotonic() + UP_S
    while True:
        try:
            p.wait_for_connection(timeout=1.0)
            return p
        except (TimeoutError, CaprotoTimeoutError):
            if stand.daemon is not None and stand.daemon.poll() is not None:
                raise RuntimeError((stand.workdir / "daemon.log").read_text()[-2000:]) from None
            if time.monotonic() > deadline:
                raise


def get(ctx: Context, name: str, stand: SimulatedStand) -> Any:
    return pv(ctx, name, stand).read(timeout=TIMEOUT, data_type="native")


def value(ctx: Context, name: str, stand: SimulatedStand) -> Any:
    data = get(ctx, name, stand).data
    return data[0] if len(data) == 1 else data


def put(ctx: Context, name: str, values: list[float], stand: SimulatedStand, timeout: float = TIMEOUT) -> str:
    """Put with a callback (the client waits for the put's completion); the completion's status name."""
    return pv(ctx, name, stand).write(values, wait=True, timeout=timeout).status.name


def logged(stand: SimulatedStand, text: str) -> bool:
    return text in (stand.workdir / "daemon.log").read_text()


def wait_for(pred: Any, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def faults(stand: SimulatedStand) -> dict[str, float]:
    """The daemon's fault counters from its metrics endpoint (edgetune_faults_total{kind=...})."""
    url = f"http://127.0.0.1:{stand.edge_config['metrics']['port']}/metrics"
    text = urllib.request.urlopen(url, timeout=TIMEOUT).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("edgetune_faults_total{"):
            kind = line.split('kind="', 1)[1].split('"', 1)[0]
            out[kind] = float(line.rsplit(" ", 1)[1])
    return out


WRITABLE = {"writes": True, "write_hosts": [WRITER], "settle_tolerance_px": 1.0, "settle_ticks": 6,
            "settle_timeout_s": 1.5, "handshake_timeout_s": 1.0, "rate_hz": 50}


def test_mems_pvs_read_and_set_points_settle_clamp_and_time_out(tmp_path, monkeypatch) -> None:
    with epics_stand(tmp_path, monkeypatch, WRITABLE) as (stand, port), client(WRITER) as ctx:
        assert value(ctx, "Mode-RB", stand) == b"stabilize"
        wait_for(lambda: value(ctx, "TickRate-RB", stand) > 100.0, what="the tick rate published")
        assert value(ctx, "Held-RB", stand) == 0 and value(ctx, "PolicyVersion-RB", stand) == b""
        assert value(ctx, "Overruns-RB", stand) >= 0 and value(ctx, "LatenessP99-RB", stand) >= 0.0
        baseline = pytest.approx([10.0, 600.0, 0.0, 16.0, 816.0, 2.5 / 120.0])
        assert list(value(ctx, "Gains-RB", stand)) == baseline and list(value(ctx, "Gains-SP", stand)) == baseline

        # a target put completes once the loop has settled there; the read-backs were posted before its completion
        t0 = time.monotonic()
        assert put(ctx, "TargetX-SP", [4.0], stand) == "ECA_NORMAL"
        assert time.monotonic() - t0 < 1.5
        assert value(ctx, "TargetX-RB", stand) == 4.0 and value(ctx, "Settled-RB", stand) == 1
        assert abs(value(ctx, "X-RB", stand) - 4.0) < 1.5 and value(ctx, "Error-RB", stand) < 1.0

        # a target the spot cannot reach: the put fails after settle_timeout_s, the target stays in force
        t0 = time.monotonic()
        assert put(ctx, "TargetY-SP", [1e6], stand) == "ECA_PUTFAIL"
        assert 1.4 < time.monotonic() - t0 < 4.0 and logged(stand, "not settled within 1.5 s")
        assert value(ctx, "Settled-RB", stand) == 0 and value(ctx, "Error-RB", stand) > 1000.0
        assert put(ctx, "TargetY-SP", [math.nan], stand) == "ECA_PUTFAIL"  # the host link's validation
        assert logged(stand, "finite number") and put(ctx, "TargetY-SP", [0.0], stand) == "ECA_NORMAL"

        # gains outside the host link's envelope are clamped by the host link's own clamp_gains (the gain set's
        # I_max(P) and the box: kp ≤ 60, kd ≤ 0.5), applied at a tick
        asked = [100.0, 500.0, 0.0, -3.0, 800.0, 3.0]
        assert put(ctx, "Gains-SP", asked, stand) == "ECA_NORMAL"
        expected, _ = clamp_gains(Gains.from_rows([asked[:3], asked[3:]]), EdgeConfig().hostlink.envelope)
        clamped = pytest.approx([v for row in expected.rows() for v in row])
        assert clamped != asked
        assert list(value(ctx, "Gains-SP", stand)) == clamped and list(value(ctx, "Gains-RB", stand)) == clamped

        # a connection that opens no channel is closed after handshake_timeout_s, never answered
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
            t0 = time.monotonic()
            assert raw.recv(100) == b"" and 0.8 < time.monotonic() - t0 < 4.0
        wait_for(lambda: faults(stand).get("epics_handshake_timeout") == 1, 3.0, "the handshake refusal counted")
        assert faults(stand).get("epics_target_failed") == 2 and stand.daemon.poll() is None


def test_writes_refused_unless_enabled_for_the_host_and_connections_capped(tmp_path, monkeypatch) -> None:
    epics = {"writes": False, "max_connections": 3, "handshake_timeout_s": 30.0}
    with epics_stand(tmp_path, monkeypatch, epics) as (stand, port), client(WRITER) as ctx:
        assert put(ctx, "TargetX-SP", [3.0], stand) == "ECA_NOWTACCESS"
        assert put(ctx, "Gains-SP", [1.0] * 6, stand) == "ECA_NOWTACCESS"
        assert put(ctx, "X-RB", [1.0], stand) == "ECA_NOWTACCESS"  # a read-back is read-only to everyone
        # nothing changed (NaN read-backs until the first tick after start-up: waited for)
        wait_for(lambda: value(ctx, "TargetX-RB", stand) == 0.0 and value(ctx, "Gains-RB", stand)[0] == 10.0, 3.0)
        wait_for(lambda: faults(stand).get("epics_write_refused") == 2, 3.0, "the refused writes counted")

        # the client above is one connection; two more fill the cap; the next is closed at once, unanswered
        held = [socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) for _ in range(2)]
        try:
            time.sleep(0.2)
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as refused:
                assert refused.recv(100) == b""
            wait_for(lambda: faults(stand).get("epics_connection_refused") == 1, 3.0, "the connection refusal")
        finally:
            for s in held:
                s.close()
        assert value(ctx, "Mode-RB", stand) == b"stabilize" and stand.daemon.poll() is None


def test_writes_allowed_only_for_the_listed_host_name(tmp_path, monkeypatch) -> None:
    """The allowed host is the client's own claim: any client may claim it (docs/hostlink.md threat model)."""
    with epics_stand(tmp_path, monkeypatch, WRITABLE) as (stand, _), client("elsewhere") as other:
        assert put(other, "TargetX-SP", [2.0], stand) == "ECA_NOWTACCESS"
        with client(WRITER) as spoofed:
            assert put(spoofed, "TargetX-SP", [2.0], stand) == "ECA_NORMAL"
        assert value(other, "TargetX-RB", stand) == 2.0


ANGLES = {"size": 63, "n_angles": 180, "max_angles": 12, "sirt_iterations": 5, "poll_s": 0.002}


def start_scan(ctx: Context, stand: SimulatedStand) -> None:
    """Put ScanStart-SP = 1 and wait for the scan's end; retried while the daemon has not reached its device yet."""
    deadline = time.monotonic() + UP_S
    while True:
        status = put(ctx, "ScanStart-SP", [1], stand, timeout=30.0)
        if status == "ECA_NORMAL":
            return
        assert logged(stand, "scan refused: device_down") and time.monotonic() < deadline, status
        time.sleep(0.2)


def test_ct_scan_started_and_aborted_by_pv(tmp_path, monkeypatch) -> None:
    with epics_stand(tmp_path, monkeypatch, {"writes": True, "write_hosts": [WRITER], "rate_hz": 50}, device="ct",
                     speed=2.0, seed=3, emulator_args=("--tick-hz", "100"),
                     config={"loop": {"mode": "angles"}, "angles": ANGLES}) as (stand, _), client(WRITER) as ctx:
        assert value(ctx, "Mode-RB", stand) == b"angles" and value(ctx, "ScanState-RB", stand) == 0  # Idle
        start_scan(ctx, stand)  # the put completes when the scan has ended
        assert value(ctx, "ScanState-RB", stand) == 2  # Done
        assert value(ctx, "ScanProgress-RB", stand) == 1.0 and value(ctx, "ScanPoints-RB", stand) == 12
        summary = bytes(get(ctx, "ScanSummary-RB", stand).data).rstrip(b"\0").decode()
        assert '"scan":1' in summary and '"stopped_by"' in summary

        done: list[Any] = []
        pv(ctx, "ScanStart-SP", stand).write([1], wait=False, callback=done.append)
        wait_for(lambda: value(ctx, "ScanState-RB", stand) == 1, 10.0, "Running")
        wait_for(lambda: value(ctx, "ScanPoints-RB", stand) >= 1, 10.0, "a point of the new scan")
        assert put(ctx, "ScanAbort-SP", [1], stand, timeout=30.0) == "ECA_NORMAL"  # the stage rests
        wait_for(lambda: bool(done), 10.0, "the scan put's completion")
        assert done[0].status.name == "ECA_NORMAL"  # an aborted scan has ended ...
        assert value(ctx, "ScanState-RB", stand) == 3  # ... Aborted, posted before that completion
        assert 0.0 < value(ctx, "ScanProgress-RB", stand) < 1.0
        summary = bytes(get(ctx, "ScanSummary-RB", stand).data).rstrip(b"\0").decode()
        assert '"stopped_by":"aborted"' in summary


def _ca_processes(daemon_pid: int) -> list[int]:
    """The daemon's CA process (multiprocessing's spawned child; not its resource tracker)."""
    children = Path(f"/proc/{daemon_pid}/task/{daemon_pid}/children").read_text().split()
    return [int(p) for p in children if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_ca_process_is_restarted_when_it_dies_and_ends_with_the_daemon(tmp_path, monkeypatch) -> None:
    with epics_stand(tmp_path, monkeypatch, {"rate_hz": 50}) as (stand, _), client() as ctx:
        assert value(ctx, "Mode-RB", stand) == b"stabilize"
        (first,) = _ca_processes(stand.daemon.pid)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: faults(stand).get("task_restart:epics") == 1, 30.0, "the restart counted")
        wait_for(lambda: len(_ca_processes(stand.daemon.pid)) == 1, UP_S, "a new CA process")
        (second,) = _ca_processes(stand.daemon.pid)
        assert second != first and value(ctx, "Mode-RB", stand) == b"stabilize"  # the client reconnects to it
        assert value(ctx, "TickRate-RB", stand) > 100.0 and stand.daemon.poll() is None  # the loop ran on
        stand.daemon.kill()  # however the daemon ends, its CA process ends with it
        stand.daemon.wait(TIMEOUT)
        wait_for(lambda: not _running(second), TIMEOUT, "the CA process gone")
