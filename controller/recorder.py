"""Tick telemetry and events to SQLite (WAL), written in batches by a thread, off the tick path.

`record_tick` stores one tuple in a preallocated ring slot (O(1), no I/O, no lock); a writer thread
commits what is pending every `batch_rows` rows or `flush_ms`, whichever first. Each commit also
updates the session row (rows submitted so far, rows written, last tick), so after a crash
(SIGKILL, power loss of the process) at most the batch in flight is missing, and the next `open`
reports it (`Recorder.recovery`) and checks the store's integrity. Every row carries a per-session
sequence number: rows dropped because the ring was full (the writer fell behind) are gaps in it.

A batch that cannot be written (disk full, I/O error, or anything else) is dropped and counted
(`write_failed` rows, `events_failed`) instead of piling up or being retried forever: the loop goes on,
`alarm` is set while writes fail (logged once when it starts and once when writing works again) and
clears with the next batch that commits. An event whose details cannot be encoded as JSON (a circular
structure, keys that are not strings) is dropped alone when it is recorded and counted (`events_bad`),
as a tick row SQLite refuses is (`bad`): neither takes its batch with it.

`close()` waits for the writer's last batch at most `CLOSE_TIMEOUT_S` (storage that hangs, e.g. a failing
SD card, must not hang the daemon's shutdown); if it gives up, the writer thread, should it finish later,
still marks the session ended, else the next `open` reports it.

Retention (a small SD card): with `max_bytes` and/or `max_age_days`, the writer thread deletes the
oldest sessions — never the current one — while the store holds more than `max_bytes` of data or a
session ended more than `max_age_days` ago; it checks every `retention_check_s`, deletes at most
`PRUNE_ROWS` rows per transaction (flushing in between), and then gives the freed pages back to the
file system (new stores are created with `auto_vacuum = INCREMENTAL`; an older store reuses them).

If the writer thread dies all the same (a bug outside a batch), `keep_writing`, supervised by the daemon,
starts a new one; what was submitted meanwhile waits in the ring.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: sessions.write_failed
PRUNE_ROWS = 20_000  # tick rows deleted per retention transaction
CLOSE_TIMEOUT_S = 5.0  # how long close() waits for the writer's last batch
TICK_COLUMNS = ("session", "seq", "idx", "t_ns", "lateness_ns", "x", "y", "target_x", "target_y",
                "cmd_x", "cmd_y", "kp_x", "ki_x", "kd_x", "kp_y", "ki_y", "kd_y", "flags")
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    pid INTEGER NOT NULL,
    started_wall_ns INTEGER NOT NULL,
    last_commit_wall_ns INTEGER,
    ended_wall_ns INTEGER,              -- NULL: the process never closed the recorder
    submitted INTEGER NOT NULL DEFAULT 0,   -- record_tick calls when the last batch was committed
    written INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0,     -- ring full: the writer fell behind
    bad INTEGER NOT NULL DEFAULT 0,         -- rows SQLite refused (bad values)
    last_idx INTEGER,
    write_failed INTEGER NOT NULL DEFAULT 0 -- rows in batches SQLite could not write (disk full, I/O error)
);
CREATE TABLE IF NOT EXISTS ticks (
    session INTEGER NOT NULL REFERENCES sessions(id),
    seq INTEGER NOT NULL,        -- per-session record number: gaps are dropped rows
    idx INTEGER NOT NULL,        -- scheduler tick index (period number)
    t_ns INTEGER NOT NULL,       -- monotonic wake time
    lateness_ns INTEGER NOT NULL,
    x REAL, y REAL,              -- measured spot [px]
    target_x REAL, target_y REAL,  -- [px]
    cmd_x REAL, cmd_y REAL,      -- command written [V]
    kp_x REAL, ki_x REAL, kd_x REAL, kp_y REAL, ki_y REAL, kd_y REAL,
    flags INTEGER NOT NULL,
    PRIMARY KEY (session, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    session INTEGER NOT NULL REFERENCES sessions(id),
    t_ns INTEGER NOT NULL,
    tick INTEGER,
    kind TEXT NOT NULL,          -- gain_change | fault | link_state | model_swap | recovery | ...
    details TEXT NOT NULL        -- JSON
);
PRAGMA user_version = {SCHEMA_VERSION};
"""
_MIGRATE = {1: "ALTER TABLE sessions ADD COLUMN write_failed INTEGER NOT NULL DEFAULT 0"}  # from version n
RUN_EVENTS = frozenset({"scan", "episode"})  # events that are runs of their own as Bluesky documents (documents.py)
_INSERT_TICK = f"INSERT INTO ticks VALUES ({','.join('?' * len(TICK_COLUMNS))})"

# numpy scalars a mode may hand over; float64 is already a float.
for _t, _f in ((np.int64, int), (np.int32, int), (np.float32, float), (np.bool_, int)):
    sqlite3.register_adapter(_t, _f)


class RecorderError(RuntimeError):
    pass


@dataclass(frozen=True)
class RecoveryReport:
    """A previous session that ended without `close()`."""

    session: int
    pid: int
    written: int  # tick rows in the store
    last_idx: int | None
    missing_in_range: int  # sequence gaps among the stored rows (dropped when the ring was full)
    lost_at_least: int  # rows submitted before the last commit that never reached the store
    last_commit_wall_ns: int | None  # ticks after this moment are unaccounted for
    integrity: str  # PRAGMA integrity_check

    def __str__(self) -> str:
        return (f"session {self.session} (pid {self.pid}) ended without close: {self.written} ticks stored "
                f"(last idx {self.last_idx}), ≥{self.lost_at_least} lost in the unflushed batch, "
                f"{self.missing_in_range} dropped earlier, integrity {self.integrity}")


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect only in a new store (before its first table)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a process crash loses no committed batch
    except sqlite3.Error:
        conn.close()
        raise
    return conn


class Recorder:
    """Use `Recorder.open(path)`; `record_tick`/`record_event` from the loop; `close()` flushes all."""

    def __init__(self, conn: sqlite3.Connection, session: int, recovery: list[RecoveryReport],
                 batch_rows: int, flush_ms: float, capacity: int, max_bytes: int = 0, max_age_days: float = 0.0,
                 retention_check_s: float = 60.0) -> None:
        self._conn = conn
        self.session = session
        self.recovery = recovery
        self.batch_rows = batch_rows
        self.flush_s = flush_ms / 1e3
        self.max_bytes, self.max_age_ns = max_bytes, int(max_age_days * 86400e9)
        self.retention_check_s = retention_check_s
        self._cap = capacity
        self._slots: list[tuple | None] = [None] * capacity  # the preallocated ring
        self._head = 0  # slots filled (tick path only)
        self._tail = 0  # slots committed or dropped (writer only)
        self._seq = 0  # record_tick calls
        self.dropped = 0  # ring full
        self.bad = 0
        self.written = 0
        self.write_failed = 0  # rows in batches SQLite could not write
        self.events_failed = 0  # events in batches SQLite could not write
        self.events_bad = 0  # events whose details cannot be encoded (dropped when recorded)
        self.write_errors = 0  # batches SQLite could not write
        self.alarm = False  # the last batch could not be written
        self.pruned_sessions = 0
        self.writer_error: BaseException | None = None  # what ended the last writer thread that died
        self._events: deque[tuple[int, int | None, str, str]] = deque()  # details encoded
        self._runs: dict[str, int] = {}  # RUN_EVENTS recorded, by kind
        self._wake = threading.Event()
        self._closing = False
        self._next_retention = 0.0  # monotonic time of the next retention check
        self._pruning: int | None = None  # the session being deleted
        self._pruned = False  # sessions deleted since the last vacuum
        self._alone_warned = False
        self.started_wall_ns = 0  # the session row's (open)
        # called by the writer thread with the tick rows of each batch it committed, those SQLite refused left out
        # (documents.py); must not block
        self.on_commit: Callable[[list[tuple]], None] | None = None
        self._writer = self._start_writer()

    @classmethod
    def open(cls, path: str | os.PathLike[str], batch_rows: int = 256, flush_ms: float = 100.0,
             capacity: int = 16384, max_bytes: int = 0, max_age_days: float = 0.0,
             retention_check_s: float = 60.0) -> Recorder:
        """Open (or create) the store and start a session. ``max_bytes``/``max_age_days``: retention (0: none)."""
        if not 0 < batch_rows <= capacity:
            raise ValueError(f"need 0 < batch_rows ({batch_rows}) <= capacity ({capacity})")
        path = Path(path)
        conn = _connect(path)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, *_MIGRATE, SCHEMA_VERSION):
                raise RecorderError(f"{path}: schema version {version}, this recorder writes {SCHEMA_VERSION}")
            for v in range(version, SCHEMA_VERSION) if version else ():  # 0: a new store, created at SCHEMA_VERSION
                conn.execute(_MIGRATE[v])
            conn.executescript(_SCHEMA)
            recovery = _recover(conn)
            started = time.time_ns()
            session = conn.execute("INSERT INTO sessions (pid, started_wall_ns) VALUES (?, ?)",
                                   (os.getpid(), started)).lastrowid
        except BaseException:
            conn.close()
            raise
        for r in recovery:
            log.warning("recorder: %s", r)
        rec = cls(conn, session, recovery, batch_rows, flush_ms, capacity, max_bytes, max_age_days, retention_check_s)
        rec.started_wall_ns = started
        for r in recovery:
            rec.record_event("recovery", r.__dict__)
        return rec

    # --- tick path ----------------------------------------------------------------------------
    def record_tick(self, idx: int, t_ns: int, lateness_ns: int, x: float, y: float,
                    target_x: float, target_y: float, cmd_x: float, cmd_y: float,
                    gains: Sequence[float], flags: int = 0) -> bool:
        """O(1): one tuple into a ring slot. `gains` = (kp_x, ki_x, kd_x, kp_y, ki_y, kd_y).
        Returns False (and counts it) when the ring is full."""
        h = self._head
        seq = self._seq
        self._seq = seq + 1
        if h - self._tail >= self._cap:
            self.dropped += 1
            return False
        self._slots[h % self._cap] = (self.session, seq, idx, t_ns, lateness_ns, x, y, target_x, target_y,
                                      cmd_x, cmd_y, *gains, flags)
        self._head = h = h + 1
        if h - self._tail == self.batch_rows:
            self._wake.set()
        return True

    def record_event(self, kind: str, details: dict[str, Any] | None = None, tick: int | None = None,
                     t_ns: int | None = None) -> dict[str, Any] | None:
        """Queue an event (gain change, fault, link state, model swap...); details become JSON now: details that
        cannot be encoded drop this event alone (counted, logged; returns None). Returns the details as recorded:
        a scan's or episode's (RUN_EVENTS) with ``run``, its number among this session's accepted ones of its kind
        (what its documents' uid derives from, live and exported alike: documents.py)."""
        details = details or {}
        if kind in RUN_EVENTS:  # a copy: the caller's dict is left as it was
            details = {**details, "run": self._runs.get(kind, 0) + 1}
        try:
            encoded = json.dumps(details, default=str)
        except (TypeError, ValueError) as e:  # circular, keys json refuses
            self.events_bad += 1
            log.error("recorder: %s event refused, its details cannot be encoded: %s", kind, e)
            return None
        if kind in RUN_EVENTS:
            self._runs[kind] = details["run"]
        self._events.append((time.monotonic_ns() if t_ns is None else t_ns, tick, kind, encoded))
        return details

    # --- writer thread ------------------------------------------------------------------------
    def _start_writer(self) -> threading.Thread:
        self.writer_error = None
        self._writer = threading.Thread(target=self._run, name="recorder-writer", daemon=True)
        self._writer.start()
        return self._writer

    async def keep_writing(self, check_s: float = 0.5) -> None:
        """Supervised by the daemon (controller/supervisor.py): start a new writer thread if the last one died,
        then watch it; raises when it has died, so the supervisor logs, counts and restarts it."""
        if not self._writer.is_alive() and not self._closing:
            self._start_writer()
        while self._writer.is_alive():
            await asyncio.sleep(check_s)
        if not self._closing:
            raise RecorderError(f"the writer thread died: {self.writer_error!r}")

    def _run(self) -> None:
        try:
            if self._conn.in_transaction:  # left open by a writer that died inside a batch
                self._conn.execute("ROLLBACK")
            while not self._closing:
                self._wake.wait(self.flush_s)
                self._wake.clear()
                self._flush()
                self._retain()
            self._flush()
        except Exception as e:  # noqa: BLE001 — reported to keep_writing, which restarts the thread
            self.writer_error = e
            log.error("recorder: the writer thread died: %r", e)
            return
        self._end_session()  # closing: the writer's last act, also when close() has stopped waiting for it

    def _flush(self) -> None:
        head, tail, cap = self._head, self._tail, self._cap
        events = list(self._events)  # left queued until settled (flush() waits); the copy is one step under the GIL
        if head == tail and not events:
            return
        a, b = tail % cap, (tail % cap) + (head - tail)
        rows = self._slots[a:b] if b <= cap else self._slots[a:] + self._slots[:b - cap]
        conn = self._conn
        try:
            conn.execute("BEGIN")
            rows = self._insert_ticks(conn, rows)
            conn.executemany("INSERT INTO events (session, t_ns, tick, kind, details) VALUES (?, ?, ?, ?, ?)",
                             [(self.session, *e) for e in events])
            conn.execute("UPDATE sessions SET submitted=?, written=?, dropped=?, bad=?, write_failed=?, last_idx=?, "
                         "last_commit_wall_ns=? WHERE id=?",
                         (self._seq, self.written + len(rows), self.dropped, self.bad, self.write_failed,
                          rows[-1][2] if rows else None, time.time_ns(), self.session))
            conn.execute("COMMIT")
        except Exception as e:  # noqa: BLE001 — disk full, I/O error, anything else: drop, count, alarm
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            self._tail = head
            self.write_errors += 1
            self.write_failed += len(rows)
            self.events_failed += len(events)
            if not self.alarm:
                self.alarm = True
                log.error("recorder: cannot write (%s): dropping records (counted) until it can", e)
            return
        finally:
            for _ in events:
                self._events.popleft()
        self.written += len(rows)
        self._tail = head
        if rows and self.on_commit is not None:
            self.on_commit(rows)
        if self.alarm:
            self.alarm = False
            log.warning("recorder: writing again; %d rows and %d events were dropped", self.write_failed,
                        self.events_failed)
            self.record_event("recorder", {"alarm": False, "write_failed": self.write_failed,
                                           "events_failed": self.events_failed})

    def _insert_ticks(self, conn: sqlite3.Connection, rows: list) -> list:
        """Insert the batch's rows; returns those inserted (a row SQLite refuses is counted, logged and left out)."""
        conn.execute("SAVEPOINT batch")
        try:
            conn.executemany(_INSERT_TICK, rows)
            conn.execute("RELEASE batch")
            return rows
        except (sqlite3.InterfaceError, sqlite3.ProgrammingError, sqlite3.IntegrityError):
            conn.execute("ROLLBACK TO batch")  # a bad value in the batch: find it row by row, keep the rest
            conn.execute("RELEASE batch")
        inserted = []
        for row in rows:
            try:
                conn.execute(_INSERT_TICK, row)
                inserted.append(row)
            except (sqlite3.InterfaceError, sqlite3.ProgrammingError, sqlite3.IntegrityError) as e:
                self.bad += 1
                log.error("recorder: tick row %s refused: %s", row[1:3], e)
        return inserted

    # --- retention (writer thread) ------------------------------------------------------------
    @property
    def data_bytes(self) -> int:
        """Bytes the store's data takes (its pages less the free ones)."""
        pages, free, size = (_one(self._conn, f"PRAGMA {p}")[0] for p in ("page_count", "freelist_count", "page_size"))
        return (pages - free) * size

    def _retain(self) -> None:
        """One bounded step of retention when it is due (module doc)."""
        if not (self.max_bytes or self.max_age_ns) or self._closing:
            return
        now = time.monotonic()
        if self._pruning is None and now < self._next_retention:
            return
        conn = self._conn
        try:
            if self._pruning is None and (victim := self._expired()) is not None:
                self._pruning = victim
            if self._pruning is None:
                self._next_retention = now + self.retention_check_s
                if self._pruned:  # give the freed pages back to the file system
                    self._pruned = False
                    conn.executescript("PRAGMA incremental_vacuum;")
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                return
            self._delete_step(self._pruning)
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            log.warning("recorder: retention step failed (%s); next try in %.0f s", e, self.retention_check_s)
            self._pruning, self._next_retention = None, now + self.retention_check_s

    def _expired(self) -> int | None:
        """The oldest session (never this one) if it is older than max_age or the store is over max_bytes."""
        oldest = _one(self._conn, "SELECT id, COALESCE(last_commit_wall_ns, started_wall_ns) FROM sessions "
                                  "WHERE id != ? ORDER BY id LIMIT 1", self.session)
        over = self.max_bytes and self.data_bytes > self.max_bytes
        if oldest is None:
            if over and not self._alone_warned:
                self._alone_warned = True
                log.warning("recorder: this session alone holds more than max_bytes (%d); nothing older to delete",
                            self.max_bytes)
            return None
        sid, last_ns = oldest
        return sid if over or (self.max_age_ns and time.time_ns() - last_ns > self.max_age_ns) else None

    def _delete_step(self, sid: int) -> None:
        """Delete up to PRUNE_ROWS tick rows of session ``sid``; with its last rows, the session itself."""
        conn = self._conn
        bound = _one(conn, "SELECT seq FROM ticks WHERE session=? ORDER BY seq LIMIT 1 OFFSET ?", sid, PRUNE_ROWS)
        conn.execute("BEGIN")
        if bound is not None:
            conn.execute("DELETE FROM ticks WHERE session=? AND seq<?", (sid, bound[0]))
            conn.execute("COMMIT")
            return
        for sql in ("DELETE FROM ticks WHERE session=?", "DELETE FROM events WHERE session=?",
                    "DELETE FROM sessions WHERE id=?"):
            conn.execute(sql, (sid,))
        conn.execute("COMMIT")
        self._pruning, self._pruned = None, True
        self.pruned_sessions += 1
        log.info("recorder: deleted session %d (retention: max_bytes %d, max_age_days %g)", sid, self.max_bytes,
                 self.max_age_ns / 86400e9)
        self.record_event("retention", {"deleted_session": sid})

    # --- lifecycle ----------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return self._head - self._tail

    def flush(self, timeout_s: float = 5.0) -> None:
        """Block until everything submitted so far is committed or dropped (tests, shutdown)."""
        target = self._head
        deadline = time.monotonic() + timeout_s
        while self._tail < target or self._events:
            if time.monotonic() > deadline:
                raise TimeoutError(f"recorder: {self._head - self._tail} rows and {len(self._events)} events still "
                                   "pending")
            self._wake.set()
            time.sleep(0.001)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Flush everything, mark the session ended and close the store (also after the writer died); wait for
        the writer at most ``timeout_s`` (module doc)."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        self._writer.join(timeout_s)
        if self._writer.is_alive():  # stuck in the store's I/O: the connection is its until it returns
            log.error("recorder: the writer did not finish within %g s (storage not responding); giving up on "
                      "%d pending rows, session %d is closed only if the writer finishes later", timeout_s,
                      self.pending, self.session)
            return
        if self.writer_error is not None:  # it died: no writer flushed on the way out nor ended the session
            self._flush()
            self._end_session()

    def _end_session(self) -> None:
        """Mark the session ended and close the store (the writer's last act, or close()'s when it died)."""
        try:
            self._conn.execute("UPDATE sessions SET ended_wall_ns=? WHERE id=?", (time.time_ns(), self.session))
        except sqlite3.Error as e:  # the next open reports the session as not closed
            log.error("recorder: cannot mark session %d closed: %s", self.session, e)
        self._conn.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _one(conn: sqlite3.Connection, sql: str, *args: Any) -> Any:
    """The first row or None, the statement run to its end (a statement left open locks its table)."""
    rows = conn.execute(sql, args).fetchall()
    return rows[0] if rows else None


def _recover(conn: sqlite3.Connection) -> list[RecoveryReport]:
    unclean = conn.execute("SELECT id, pid, submitted, dropped, last_idx, last_commit_wall_ns FROM sessions "
                           "WHERE ended_wall_ns IS NULL").fetchall()
    if not unclean:
        return []
    integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    reports = []
    for sid, pid, submitted, dropped, last_idx, last_commit in unclean:
        n, max_seq = conn.execute("SELECT count(*), max(seq) FROM ticks WHERE session=?", (sid,)).fetchone()
        span = 0 if max_seq is None else max_seq + 1
        reports.append(RecoveryReport(session=sid, pid=pid, written=n, last_idx=last_idx,
                                      missing_in_range=span - n, lost_at_least=max(0, submitted - span),
                                      last_commit_wall_ns=last_commit, integrity=integrity))
        conn.execute("UPDATE sessions SET ended_wall_ns=? WHERE id=?", (-1, sid))  # -1: recovered, not closed
    return reports


def read_ticks(path: str | os.PathLike[str], session: int | None = None) -> list[sqlite3.Row]:
    """Tick rows of one session (the latest when None), in record order."""
    with reader(path) as conn:
        sid = session or conn.execute("SELECT max(id) FROM sessions").fetchone()[0]
        return conn.execute("SELECT * FROM ticks WHERE session=? ORDER BY seq", (sid,)).fetchall()


def read_events(path: str | os.PathLike[str], session: int | None = None) -> list[dict[str, Any]]:
    with reader(path) as conn:
        sid = session or conn.execute("SELECT max(id) FROM sessions").fetchone()[0]
        rows = conn.execute("SELECT * FROM events WHERE session=? ORDER BY id", (sid,)).fetchall()
        return [{**dict(r), "details": json.loads(r["details"])} for r in rows]


def reader(path: str | os.PathLike[str]) -> contextlib.closing[sqlite3.Connection]:
    """A read-only connection to the store (rows as sqlite3.Row)."""
    conn = sqlite3.connect(f"file:{os.fspath(path)}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    return contextlib.closing(conn)
