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
ROOT = Path(__file__).resolve().parents[2]


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
    """A row SQLite refuses is left out of its batch, and of what on_commit (the live documents) gets."""
    db = tmp_path / "rec.sqlite"
    committed: list[tuple] = []
    with Recorder.open(db, batch_rows=16, flush_ms=10) as rec:
        rec.on_commit = committed.extend
        _tick(rec, 0)
        rec.record_tick(1, 1, 0, object(), 0.0, 0.0, 0.0, 0.0, 0.0, GAINS, 0)  # type: ignore[arg-type]
        _tick(rec, 2)
        rec.flush()
        assert rec.bad == 1 and rec.written == 2
    assert [r["idx"] for r in read_ticks(db)] == [0, 2] == [r[2] for r in committed]


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


def _stall_writer(rec: Recorder) -> tuple[threading.Event, threading.Event]:
    """The writer stops inside its next batch (`entered` is set) until `release` is set."""
    entered, release = threading.Event(), threading.Event()
    insert = rec._insert_ticks

    def stuck(conn, rows) -> list:
        entered.set()
        assert release.wait(10.0)
        return insert(conn, rows)

    rec._insert_ticks = stuck
    return entered, release


def test_record_tick_never_waits_for_the_writer(tmp_path: Path) -> None:
    """With the writer stuck inside a SQLite batch, record_tick still stores every tick (no I/O, no lock on
    the tick path); they are committed once the writer goes on. Its cost is measured by `bench loop`."""
    with Recorder.open(tmp_path / "rec.sqlite", batch_rows=512, flush_ms=50) as rec:
        entered, release = _stall_writer(rec)
        rec.record_tick(0, 0, 0, 0.1, 0.2, 0.0, 0.0, 0.3, 0.4, GAINS, 0)
        assert entered.wait(5.0)
        n = 10_000  # below the ring's capacity
        assert all(rec.record_tick(i, i, 0, 0.1, 0.2, 0.0, 0.0, 0.3, 0.4, GAINS, 0) for i in range(1, n + 1))
        assert rec.written == 0 and rec.pending == n + 1
        release.set()
        rec.flush()
        assert rec.dropped == 0 and rec.written == n + 1


def test_flush_waits_for_the_events_of_the_batch_in_flight(tmp_path: Path) -> None:
    db = tmp_path / "rec.sqlite"
    with Recorder.open(db, flush_ms=50) as rec:
        entered, release = _stall_writer(rec)
        rec.record_event("fault", {"what": "in flight"})
        assert entered.wait(5.0)
        with pytest.raises(TimeoutError):
            rec.flush(timeout_s=0.2)  # the writer holds the event, uncommitted
        release.set()
        rec.flush()
        assert [e["kind"] for e in read_events(db)] == ["fault"]


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


def _session(db: Path, sid: int) -> sqlite3.Row:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute("SELECT * FROM sessions WHERE id=?", (sid,)).fetchone()


def test_a_full_store_drops_and_counts_raises_the_alarm_and_recovers(tmp_path: Path) -> None:
    """SQLITE_FULL (the store may not grow: PRAGMA max_page_count) drops whole batches, counted; the caller never
    sees an error; writing resumes, and the alarm clears, once there is room again."""
    db = tmp_path / "rec.sqlite"
    with Recorder.open(db, batch_rows=50, flush_ms=5) as rec:
        for i in range(100):
            _tick(rec, i)
        rec.flush()
        pages = rec._conn.execute("PRAGMA page_count").fetchone()[0]
        rec._conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full
        results = [_tick(rec, i) for i in range(100, 3100)]
        rec.record_event("fault", {"what": "lost: no page for it", "pad": "x" * 20_000})  # whichever batch it is in
        rec.flush()
        assert all(results) and rec.alarm and rec.write_failed > 0 and rec.events_failed >= 1
        assert rec.dropped == 0 and rec.pending == 0  # nothing piles up in the ring
        events_failed = rec.events_failed  # 1, or 2 where a small batch fitted and its "recorder" event did not
        rec._conn.execute("PRAGMA max_page_count = 1073741823")  # room again
        for i in range(3100, 3200):
            _tick(rec, i)
        rec.flush()
        assert not rec.alarm
        failed = rec.write_failed
        assert rec.written + failed == 3200
    idx = [r["idx"] for r in read_ticks(db)]
    assert idx[:100] == list(range(100)) and idx[-100:] == list(range(3100, 3200)) and len(idx) == 3200 - failed
    s = _session(db, 1)
    assert (s["write_failed"], s["ended_wall_ns"] > 0) == (failed, True)
    kinds = [e["kind"] for e in read_events(db)]
    assert "fault" not in kinds and kinds[-1] == "recorder"
    assert read_events(db)[-1]["details"] == {"alarm": False, "write_failed": failed, "events_failed": events_failed}


def _fill(db: Path, sessions: int, rows: int) -> None:
    for _ in range(sessions):
        with Recorder.open(db, batch_rows=1000, flush_ms=5) as rec:
            for i in range(rows):
                _tick(rec, i)
                if i % 10_000 == 0:
                    rec.flush()  # the ring holds 16384


def test_retention_deletes_the_oldest_sessions_never_the_current_one_and_shrinks_the_file(tmp_path: Path) -> None:
    db = tmp_path / "rec.sqlite"
    _fill(db, 4, 30_000)  # ≈ 2.9 MB each
    size_before = db.stat().st_size
    with Recorder.open(db, batch_rows=1000, flush_ms=5, max_bytes=7_000_000, retention_check_s=0.05) as rec:
        for i in range(30_000):
            _tick(rec, i)
            if i % 10_000 == 0:
                rec.flush()  # the ring holds 16384
        rec.flush()
        deadline = time.monotonic() + 20  # data_bytes is re-read at the writer's next retention check
        while rec.pruned_sessions < 3 or rec._pruned or rec._pruning is not None or rec.data_bytes > 7_000_000:
            assert time.monotonic() < deadline, f"retention did not finish: {rec.data_bytes} bytes"
            time.sleep(0.02)
    with sqlite3.connect(db) as conn:
        left = [r[0] for r in conn.execute("SELECT id FROM sessions ORDER BY id")]
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    assert left == [4, 5]  # the two newest: the current one (5) and the one that fits beside it
    assert len(read_ticks(db, 5)) == 30_000 and len(read_ticks(db, 4)) == 30_000
    assert db.stat().st_size < 0.65 * size_before
    assert [e["details"] for e in read_events(db, 5) if e["kind"] == "retention"] == [
        {"deleted_session": 1}, {"deleted_session": 2}, {"deleted_session": 3}]


def test_retention_by_age(tmp_path: Path) -> None:
    db = tmp_path / "rec.sqlite"
    _fill(db, 2, 10)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE sessions SET last_commit_wall_ns = last_commit_wall_ns - ? WHERE id=1", (3 * 86400 * 10**9,))
    with Recorder.open(db, flush_ms=5, max_age_days=2.0, retention_check_s=0.05) as rec:
        deadline = time.monotonic() + 10
        while rec.pruned_sessions < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.2)
        assert rec.pruned_sessions == 1  # session 2 is younger than 2 days
    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("SELECT id FROM sessions")] == [2, 3]


def test_a_version_1_store_is_migrated(tmp_path: Path) -> None:
    db = tmp_path / "rec.sqlite"
    with sqlite3.connect(db) as conn:
        conn.executescript("CREATE TABLE sessions (id INTEGER PRIMARY KEY, pid INTEGER NOT NULL, started_wall_ns "
                           "INTEGER NOT NULL, last_commit_wall_ns INTEGER, ended_wall_ns INTEGER, submitted INTEGER NOT "
                           "NULL DEFAULT 0, written INTEGER NOT NULL DEFAULT 0, dropped INTEGER NOT NULL DEFAULT 0, "
                           "bad INTEGER NOT NULL DEFAULT 0, last_idx INTEGER); PRAGMA user_version = 1;")
        conn.execute("INSERT INTO sessions (pid, started_wall_ns, ended_wall_ns) VALUES (1, 1, 2)")
    with Recorder.open(db, flush_ms=5) as rec:
        _tick(rec, 0)
    assert _session(db, 1)["write_failed"] == 0 and _session(db, 2)["written"] == 1


async def test_a_dead_writer_thread_is_restarted_under_supervision(tmp_path: Path) -> None:
    """A writer thread that dies (here: a bug in its retention step) is restarted by the daemon's supervisor,
    counted, and what was submitted meanwhile is written."""
    import asyncio

    from controller.supervisor import Supervisor

    db = tmp_path / "rec.sqlite"
    rec = Recorder.open(db, batch_rows=10, flush_ms=5)
    sup = Supervisor(backoff_min_s=0.01, backoff_max_s=0.05)
    sup.spawn("recorder-writer", lambda: rec.keep_writing(check_s=0.01))
    retain = rec._retain

    def buggy() -> None:
        rec._retain = retain
        raise KeyError("a bug")

    rec._retain = buggy
    async with asyncio.timeout(5):
        while sup.restarts["recorder-writer"] == 0:
            await asyncio.sleep(0.01)
        for i in range(30):
            _tick(rec, i)
        while rec.written < 30:
            await asyncio.sleep(0.01)
    assert sup.restarts["recorder-writer"] == 1 and sup.dead() == []
    await sup.close()
    rec.close()
    assert [r["idx"] for r in read_ticks(db)] == list(range(30))
    assert _session(db, 1)["ended_wall_ns"] > 0


def test_an_event_that_cannot_be_encoded_is_dropped_alone(tmp_path: Path) -> None:
    """Details json cannot encode drop that event only (counted), not the batch of ticks and events around it."""
    db = tmp_path / "rec.sqlite"
    circular: dict = {}
    circular["self"] = circular
    with Recorder.open(db, batch_rows=100, flush_ms=5) as rec:
        for i in range(10):
            _tick(rec, i)
        rec.record_event("fault", circular)
        rec.record_event("fault", {(1, 2): "a key json refuses"})
        rec.record_event("gain_change", {"axis": "x"})
        rec.flush()
        assert (rec.events_bad, rec.events_failed, rec.alarm, rec.written) == (2, 0, False, 10)
    assert [r["idx"] for r in read_ticks(db)] == list(range(10))
    assert [(e["kind"], e["details"]) for e in read_events(db)] == [("gain_change", {"axis": "x"})]


def test_scans_and_episodes_are_numbered_among_the_accepted_ones(tmp_path: Path) -> None:
    """A scan's or episode's event carries its number (``run``: the live documents' and the export's uid), counted
    per kind among the events the recorder took: one refused takes no number."""
    db = tmp_path / "rec.sqlite"
    circular: dict = {}
    circular["self"] = circular
    with Recorder.open(db, flush_ms=5) as rec:
        got = [rec.record_event("scan", {"scan": 1}), rec.record_event("scan", {"scan": 2, "bad": circular}),
               rec.record_event("episode", {}), rec.record_event("scan", {"scan": 3}), rec.record_event("fault", {})]
        rec.flush()
    assert got == [{"scan": 1, "run": 1}, None, {"run": 1}, {"scan": 3, "run": 2}, {}]
    assert [e["details"] for e in read_events(db)] == [d for d in got if d is not None]


def test_close_gives_up_on_a_stuck_store_and_the_writer_ends_the_session_later(tmp_path: Path) -> None:
    """Storage that does not answer (here: another connection holds the write lock, so the writer's last batch
    waits in SQLite's busy handler) must not hang close(): it returns after its timeout; the writer, once the
    store answers again, commits what was pending and marks the session ended."""
    db = tmp_path / "rec.sqlite"
    rec = Recorder.open(db, batch_rows=100, flush_ms=5)
    rec.flush()
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the store stops taking writes
    try:
        for i in range(10):
            _tick(rec, i)
        t0 = time.monotonic()
        rec.close(timeout_s=0.3)
        took = time.monotonic() - t0
        assert took < 2.0, took  # unbounded, it waits out SQLite's 5 s busy timeout
        assert rec._writer.is_alive() and _session(db, 1)["ended_wall_ns"] is None
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    rec._writer.join(10)
    assert not rec._writer.is_alive()
    assert _session(db, 1)["ended_wall_ns"] > 0 and len(read_ticks(db)) == 10
