"""Recorder: batched SQLite WAL writes, nothing lost on close, SIGKILL loses at most one batch."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from controller.recorder import SCHEMA_VERSION, Recorder, RecorderError, read_events, read_ticks

GAINS = (10.0, 5.0, 0.0, 16.0, 6.8, 2.5)
ROOT = Path(__file__).resolve().parents[1]


def _tick(rec: Recorder, i: int) -> bool:
    return rec.record_tick(i, 1_000_000 * i, 50_000 + i, 0.5 * i, -0.25 * i, 1.0, 2.0, 0.01 * i, -0.01 * i,
                           GAINS, i % 4)


def test_batches_write_and_read_back(tmp_path: Path) -> None:
    db = tmp_path / "rec.sqlite"
    with Recorder.open(db, batch_rows=64, flush_ms=20) as rec:
        for i in range(1000):
            _tick(rec, i)
        rec.record_event("gain_change", {"axis": "x", "P": 12.0}, tick=500)
        rec.flush()
        assert rec.pending == 0 and rec.written == 1000
        rows = read_ticks(db)  # readable while the writer is live (WAL)
        assert [r["idx"] for r in rows] == list(range(1000))
    r = rows[321]
    assert (r["t_ns"], r["lateness_ns"], r["x"], r["y"], r["cmd_x"], r["flags"]) == (321_000_000, 50_321, 160.5, -80.25,
                                                                                    3.21, 1)
    assert (r["kp_x"], r["ki_y"], r["kd_y"]) == (10.0, 6.8, 2.5)
    ev = read_events(db)
    assert ev[0]["kind"] == "gain_change" and ev[0]["details"] == {"axis": "x", "P": 12.0} and ev[0]["tick"] == 500
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_graceful_close_loses_nothing_and_numpy_scalars_bind(tmp_path: Path) -> None:
    db = tmp_path / "rec.sqlite"
    rec = Recorder.open(db, batch_rows=10_000, flush_ms=60_000)  # nothing would flush before close
    for i in range(5000):
        rec.record_tick(np.int64(i), i, 0, np.float32(1.5), np.float64(2.0), 0.0, 0.0, 0.0, 0.0, GAINS, 0)
    rec.record_event("fault", {"kind": "serial_timeout"})
    rec.close()
    assert len(read_ticks(db)) == 5000 and read_events(db)[0]["details"] == {"kind": "serial_timeout"}
    reopened = Recorder.open(db)
    assert reopened.recovery == [] and reopened.session == 2
    reopened.close()


def test_bad_row_is_counted_not_fatal(tmp_path: Path) -> None:
    db = tmp_path / "rec.sqlite"
    with Recorder.open(db, batch_rows=16, flush_ms=10) as rec:
        _tick(rec, 0)
        rec.record_tick(1, 1, 0, object(), 0.0, 0.0, 0.0, 0.0, 0.0, GAINS, 0)  # type: ignore[arg-type]
        _tick(rec, 2)
        rec.flush()
        assert rec.bad == 1 and rec.written == 2
    assert [r["idx"] for r in read_ticks(db)] == [0, 2]


def test_full_ring_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    db = tmp_path / "rec.sqlite"
    with Recorder.open(db, batch_rows=8, flush_ms=60_000, capacity=8) as rec:
        rec._wake.set = lambda: None  # type: ignore[method-assign]  # stall the writer: it never wakes
        results = [_tick(rec, i) for i in range(20)]
        assert results.count(False) == 12 and rec.dropped == 12
        del rec._wake.set  # let close() wake the writer again
    rows = read_ticks(db)
    assert [r["seq"] for r in rows] == list(range(8))


def test_schema_version_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "rec.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(RecorderError, match="schema version 99"):
        Recorder.open(db)


def test_record_tick_never_waits_for_the_writer(tmp_path: Path) -> None:
    """With the writer stuck inside a SQLite batch, record_tick still stores every tick (no I/O, no lock on
    the tick path); they are committed once the writer goes on. Its cost is measured by `bench loop`."""
    with Recorder.open(tmp_path / "rec.sqlite", batch_rows=512, flush_ms=50) as rec:
        entered, release = threading.Event(), threading.Event()
        insert = rec._insert_ticks

        def stuck(conn, rows) -> None:
            entered.set()
            assert release.wait(10.0)
            insert(conn, rows)

        rec._insert_ticks = stuck
        rec.record_tick(0, 0, 0, 0.1, 0.2, 0.0, 0.0, 0.3, 0.4, GAINS, 0)
        assert entered.wait(5.0)
        n = 10_000  # below the ring's capacity
        assert all(rec.record_tick(i, i, 0, 0.1, 0.2, 0.0, 0.0, 0.3, 0.4, GAINS, 0) for i in range(1, n + 1))
        assert rec.written == 0 and rec.pending == n + 1
        release.set()
        rec.flush()
        assert rec.dropped == 0 and rec.written == n + 1


CHILD = textwrap.dedent("""
    import sys, time
    from controller.recorder import Recorder
    rec = Recorder.open(sys.argv[1], batch_rows=int(sys.argv[2]), flush_ms=50)
    rec.record_event("link_state", {"up": True})
    g = (10.0, 5.0, 0.0, 16.0, 6.8, 2.5)
    i = 0
    while True:
        rec.record_tick(i, time.monotonic_ns(), 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, g, 0)
        sys.stdout.write(f"{i}\\n"); sys.stdout.flush()
        i += 1
        time.sleep(0.0005)
""")


def test_sigkill_loses_at_most_one_batch_and_reopen_reports_it(tmp_path: Path) -> None:
    db, batch = tmp_path / "rec.sqlite", 100
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(batch)], stdout=subprocess.PIPE,
                             text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if int(line) >= 700:  # well past several commits
                break
        os.kill(child.pid, signal.SIGKILL)
        rest = child.stdout.read()
    finally:
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    last_submitted = int(rest.split()[-1]) if rest.split() else int(line)
    stored = [r["idx"] for r in read_ticks(db)]
    assert stored == list(range(len(stored)))  # a contiguous prefix: no torn batch, no gaps
    lost = last_submitted + 1 - len(stored)
    assert 0 <= lost <= batch + 25, (lost, len(stored))  # the batch in flight (+ rows during its commit)
    with Recorder.open(db) as rec:
        (report,) = rec.recovery
    assert report.integrity == "ok" and report.written == len(stored) and report.missing_in_range == 0
    assert report.last_idx == stored[-1] and 0 <= report.lost_at_least <= lost
    kinds = [e["kind"] for e in read_events(db)]
    assert kinds == ["recovery"]
    assert read_events(db, session=report.session)[0]["kind"] == "link_state"
