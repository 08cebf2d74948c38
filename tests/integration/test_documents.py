"""`edgetune export-docs` and the converter on recorder stores made in process (controller/documents.py): clear
errors with a non-zero exit status and nothing half-written for a missing, foreign, corrupt or unknown input; a
session that ended without close is a failed run; without the `docs` extra a daemon configured for documents
refuses to start and says what to install."""
from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from controller import document_stream, documents
from controller.config import parse_config
from controller.link.auth import write_keyfile
from controller.recorder import Recorder
from documents_util import load, runs
from hil.cli import app

GAINS = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def store(path: Path, ticks: int, close: bool = True) -> Recorder:
    """A store with one session: the daemon's session event, ``ticks`` rows (the first spot lost: NaN) and a
    failed scan event."""
    rec = Recorder.open(path, batch_rows=64, flush_ms=5.0)
    rec.record_event("session", {"wall_ns": time.time_ns(), "mode": "rl-pid"}, t_ns=time.monotonic_ns())
    for i in range(ticks):
        rec.record_tick(i, time.monotonic_ns(), 1000, math.nan if i == 0 else float(i), 0.0, 5.0, 0.0, 0.1, 0.0, GAINS)
    rec.record_event("scan", {"error": "stage not in position within 2 s"})
    rec.flush()
    if close:
        rec.close()
    return rec


def export(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["export-docs", *map(str, args)])
    return result.exit_code, result.output


def leftovers(parent: Path) -> list[str]:
    """What is in ``parent`` besides SQLite's own -wal/-shm files of the store (a reader of a WAL store makes them)."""
    return sorted(p.name for p in parent.iterdir() if not p.name.endswith(("-wal", "-shm")))


def test_a_store_exports_a_valid_run_per_session_and_scan(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(documents, "PAGE_ROWS", 128)  # several pages
    store(tmp_path / "run.sqlite", 300)
    code, output = export(tmp_path / "run.sqlite", tmp_path / "out")
    assert code == 0, output
    got = runs(tmp_path / "out")
    assert set(got) == {"ticks", "scan-1"}
    ticks = got["ticks"]
    assert ticks.events == {"primary": 300} and ticks.stop_doc["exit_status"] == "success"
    assert math.isnan(ticks.data["primary"]["x"][0]) and ticks.data["primary"]["x"][1:3] == [1.0, 2.0]
    assert ticks.data["primary"]["kd_y"][0] == 6.0 and ticks.start_doc["plan_name"] == "edgetune_rl-pid_session"
    failed = got["scan-1"]
    assert failed.events == {} and failed.stop_doc["exit_status"] == "fail"
    assert failed.stop_doc["reason"] == "stage not in position within 2 s"
    # run again: the same uids (derived from the session), the files replaced
    assert export(tmp_path / "run.sqlite", tmp_path / "out")[0] == 0
    assert len(list((tmp_path / "out").glob("*.jsonl"))) == 2


def test_a_session_that_ended_without_close_is_a_failed_run(tmp_path) -> None:
    first = store(tmp_path / "run.sqlite", 100, close=False)
    second = Recorder.open(tmp_path / "run.sqlite")  # reports the first as not closed (a SIGKILL)
    second.close()
    code, output = export(tmp_path / "run.sqlite", tmp_path / "out", "--session", first.session)
    first.close()
    assert code == 0, output
    ticks = runs(tmp_path / "out")["ticks"]
    assert ticks.events == {"primary": 100} and ticks.stop_doc["exit_status"] == "fail"
    assert "without close" in ticks.stop_doc["reason"]


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_bytes(b"not a database at all" * 100), "not a readable recorder store (file is not a database)"),
    (lambda p: sqlite3.connect(p).execute("CREATE TABLE other (x)").connection.close(), "not a readable recorder store (no such table: sessions)"),
])
def test_a_missing_or_foreign_file_is_refused_and_nothing_is_written(tmp_path, make, message) -> None:
    make(tmp_path / "run.sqlite")
    before = leftovers(tmp_path)
    code, output = export(tmp_path / "run.sqlite", tmp_path / "out")
    assert code == 2 and f"edgetune export-docs: {tmp_path / 'run.sqlite'}: {message}" in output
    assert leftovers(tmp_path) == before  # no OUT, no temporary directory


def test_a_store_corrupt_halfway_leaves_nothing_behind(tmp_path, monkeypatch) -> None:
    """The first session exports, the second's pages are damaged: the error names the store, and neither the
    runs written so far nor their temporary directory remain."""
    path = tmp_path / "run.sqlite"
    store(path, 100)
    store(path, 8_000)
    with sqlite3.connect(path) as conn:  # the ticks' leaf pages in key order: the second session's are the last
        leaves = [p for (p,) in conn.execute("SELECT pageno FROM dbstat WHERE name='ticks' AND pagetype='leaf' "
                                             "ORDER BY path")]
        page = conn.execute("PRAGMA page_size").fetchone()[0]
    with open(path, "r+b") as f:
        for p in leaves[len(leaves) // 2:]:
            f.seek((p - 1) * page)
            f.write(b"\xff" * page)
    before = leftovers(tmp_path)
    removed: list[list[str]] = []
    rmtree = documents.shutil.rmtree
    monkeypatch.setattr(documents.shutil, "rmtree", lambda p, **kw: (removed.append(leftovers(Path(p))), rmtree(p, **kw)))
    code, output = export(path, tmp_path / "out")
    assert code == 2 and "not a readable recorder store (database disk image is malformed)" in output
    assert len(removed) == 1 and len(removed[0]) >= 2  # the first session's runs (and part of the next) were written
    assert leftovers(tmp_path) == before


def test_an_unknown_session_is_refused(tmp_path) -> None:
    store(tmp_path / "run.sqlite", 10)
    code, output = export(tmp_path / "run.sqlite", tmp_path / "out", "--session", 7)
    assert code == 2 and "no session 7 in the store" in output and not (tmp_path / "out").exists()


def test_documents_without_the_extra_refuse_to_start(tmp_path, monkeypatch) -> None:
    from controller.daemon import Daemon
    from controller.lifecycle import StartupError

    monkeypatch.setitem(sys.modules, "event_model", None)  # import event_model raises ImportError
    monkeypatch.delitem(sys.modules, "controller.documents", raising=False)
    write_keyfile(tmp_path / "keys")
    cfg = parse_config({"device": {"port": str(tmp_path / "no-device")},
                        "hostlink": {"key_file": str(tmp_path / "keys"), "state_file": str(tmp_path / "state.json")},
                        "recorder": {"path": str(tmp_path / "run.sqlite"), "documents": str(tmp_path / "docs")},
                        "policy": {"dir": str(tmp_path / "policies")}})
    with pytest.raises(StartupError, match=r"\[recorder\] documents: .*optional extra `docs` "
                                           r"\(pip install -e '\.\[docs\]' in a checkout\): no module event_model"):
        Daemon(cfg)
    assert not (tmp_path / "run.sqlite").exists() and "controller.documents" not in sys.modules


def test_the_runs_drive_bluesky_callbacks(tmp_path, capsys) -> None:
    """Live plots and tables take the documents unchanged (bluesky's callbacks, where bluesky is installed: the
    `bluesky` extra)."""
    callbacks = pytest.importorskip("bluesky.callbacks")
    store(tmp_path / "run.sqlite", 30)
    assert export(tmp_path / "run.sqlite", tmp_path / "out")[0] == 0
    table = callbacks.LiveTable(["x", "target_x"])
    ticks = next(p for p in (tmp_path / "out").glob("*.jsonl") if runs(tmp_path / "out")["ticks"].start_doc["uid"] in p.name)
    for name, doc in load(ticks):
        table(name, doc)
    out = capsys.readouterr().out
    assert "edgetune edgetune_rl-pid_session" in out and out.count("|      5.000 |") == 30


def test_the_live_stream_never_blocks_and_counts_what_it_cannot_write(tmp_path) -> None:
    """Its inputs only enqueue: with the documents process stopped (SIGSTOP: slow storage, a starved CPU) a full
    queue drops and counts instead of blocking the recorder's writer; once it runs again it writes what it took. A
    directory that is gone makes writes fail, counted, and the process goes on to the end."""
    session = document_stream.Session(1, 1, time.time_ns(), 0, "stabilize")
    rows = [(1, i, i, time.monotonic_ns(), 0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, *GAINS, 0) for i in range(10)]
    (tmp_path / "docs").mkdir()
    stream = document_stream.DocumentStream(tmp_path / "docs", session, max_pending=2)
    os.kill(stream._process.pid, signal.SIGSTOP)
    try:
        started = time.perf_counter()
        for _ in range(10):
            stream.ticks(rows)
        assert time.perf_counter() - started < 0.1 and stream.dropped == 8  # two queued
    finally:
        os.kill(stream._process.pid, signal.SIGCONT)
    stream.close()
    ticks = runs(tmp_path / "docs")["ticks"]
    assert ticks.events["primary"] == 20 and stream.failed == 0 and not stream._process.is_alive()

    (tmp_path / "gone").mkdir()
    stream = document_stream.DocumentStream(tmp_path / "gone", session)
    (tmp_path / "gone").rmdir()
    stream.ticks(rows)
    stream.run("scan", {"error": "x", "run": 1}, time.monotonic_ns(), {})
    stream.ticks(rows)
    stream.close()
    assert stream.failed == 3 and stream.dropped == 0  # the tick run's start (twice: no pages without it), the scan
    assert stream._process.exitcode == 0


def test_the_live_stream_bounds_the_image_bytes_it_holds(tmp_path) -> None:
    """With the documents process stopped (a slow SD card), scans' images queue up to ``max_bytes`` in the daemon;
    the next scan is dropped and counted (its images too), not held; once it runs again the queue empties."""
    session = document_stream.Session(1, 1, time.time_ns(), 0, "angles")
    image = np.zeros((300, 128), np.float64)  # 300 KiB
    stream = document_stream.DocumentStream(tmp_path, session, max_bytes=1 << 20)
    os.kill(stream._process.pid, signal.SIGSTOP)
    try:
        for n in range(1, 6):
            stream.run("scan", {"scan": n, "run": n}, time.monotonic_ns(), {"reconstruction": image})
        assert stream.dropped == 2 and stream.pending_bytes == 3 * image.nbytes
    finally:
        os.kill(stream._process.pid, signal.SIGCONT)
    stream.close()
    assert stream.pending_bytes == 0 and stream.failed == 0
    assert sorted(runs(tmp_path)) == ["scan-1", "scan-2", "scan-3"]


def test_a_run_dropped_live_or_refused_leaves_the_later_uids_alone(tmp_path) -> None:
    """Live and exported, a run has one uid: a scan the live stream drops (over its image bytes) still takes its
    number in the store, one the recorder refuses (details not JSON) takes none and is not sent live."""
    from controller.lifecycle import EdgeDaemon

    rec = Recorder.open(tmp_path / "run.sqlite", flush_ms=5.0)
    wall, mono = time.time_ns(), time.monotonic_ns()
    rec.record_event("session", {"wall_ns": wall, "mode": "angles"}, t_ns=mono)
    (tmp_path / "live").mkdir()
    stream = document_stream.DocumentStream(tmp_path / "live", document_stream.Session(rec.session, os.getpid(),
                                                                           rec.started_wall_ns, wall - mono, "angles"),
                                      max_bytes=1 << 20)
    daemon = SimpleNamespace(recorder=rec, documents=stream)  # what EdgeDaemon.record uses
    circular: dict = {}
    circular["self"] = circular
    small, big = {"reconstruction": np.zeros((8, 8))}, {"reconstruction": np.zeros((512, 512))}  # big: 2 MiB
    for n, images in ((1, small), (2, big), (3, small), (None, small), (4, small)):
        EdgeDaemon.record(daemon, "scan", {"scan": n, "stopped_by": "done"} if n else {"bad": circular},
                          images=images)
    rec.close()
    stream.close()
    assert (stream.dropped, stream.failed, rec.events_bad) == (1, 0, 1)
    live, exported = runs(tmp_path / "live"), runs_of(tmp_path / "run.sqlite", tmp_path / "out")
    assert sorted(live) == ["scan-1", "scan-3", "scan-4"] and sorted(exported) == ["scan-1", "scan-2", "scan-3", "scan-4"]
    assert all(live[k].start_doc["uid"] == exported[k].start_doc["uid"] for k in live)
    assert len({c.start_doc["uid"] for c in exported.values()}) == 4


def runs_of(store_path: Path, out: Path) -> dict:
    code, output = export(store_path, out)
    assert code == 0, output
    return runs(out)


def test_a_documents_process_that_died_does_not_hold_the_daemons_exit(tmp_path: Path) -> None:
    """Killed (out of memory, a crash): what is queued after it is lost, and neither close() nor the interpreter's
    exit waits for the queue's feeder thread (it would, for a reader that is gone)."""
    script = f"""
import os, signal, time
from pathlib import Path
from controller import document_stream
stream = document_stream.DocumentStream(Path({str(tmp_path)!r}), document_stream.Session(1, 1, time.time_ns(), 0, "stabilize"))
os.kill(stream._process.pid, signal.SIGKILL)
stream._process.join(10)
rows = [(1, i, i, time.monotonic_ns(), 0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.5, 20.0, 0.0, 0.5, 20.0, 0.0, 0) for i in range(256)]
for _ in range(200):
    stream.ticks(rows)
stream.close(timeout_s=2.0)
print("closed")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0 and done.stdout.strip() == "closed", done.stderr[-2000:]
