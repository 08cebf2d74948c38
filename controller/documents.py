"""Bluesky event-model documents from what the recorder keeps: one converter, for past runs and live.

A *run* (a RunStart … RunStop with its streams) is
- a tick session (stabilize, rl-pid, forge: one recorder session): stream ``primary``, one event per tick row
  (the ``ticks`` table's columns, in record order; gaps in ``seq`` are rows the recorder dropped), sent as
  ``event_page`` documents;
- a scan (angles, ptycho, transceiver: one "scan" recorder event) or a forge episode (one "episode" event):
  stream ``primary``, one event per acquired step (angle, position, transceiver, forge step), and stream
  ``reconstruction`` with one event holding the final reconstruction. Images (CT projections, ptycho diffraction
  patterns, reconstructions) are external: an HDF5 file per image key in the area-detector layout
  (``/entry/data/data``, one frame per point: Resource spec ``AD_HDF5``), referenced by Datum documents; the
  descriptor's shape is (1, *frame), what the standard AD_HDF5 handler returns for a point.

Each run is a JSON-lines file ``<start uid>.jsonl`` of ``[name, doc]`` pairs (the layout suitcase-jsonl writes and
databroker/Tiled ingest), its images ``<start uid>_<key>.h5`` beside it. Documents are composed with event_model's
own composers (valid by construction). Run uids are derived from the session (its start time, pid and id) and the
run's number, which the recorder puts into the run's event (``details["run"]``, counting the events it accepted), so a
run emitted live and exported later has the same uid, whatever either side dropped (a stalled writer, a batch the
store could not write). A store from before that number: the runs counted in the store.

Times: the recorder stamps ticks and events on the monotonic clock; the daemon's "session" event (wall time and
monotonic time together, at start-up) converts them to the UNIX epoch. A store from before that event: the
session's wall start minus its first record's monotonic time (off by the start-up delay, about a second).
Scan steps have no time stamps of their own: step k is placed at the scan's start plus the recorded move and
acquire times of steps 0 … k (forge episode steps: at the episode's end).

`export` writes every run of a recorder store (`edgetune export-docs`); `DocumentStream`
(controller/document_stream.py, light to import: the daemon's side) emits them live from the daemon
(``[recorder] documents = "DIR"``) through `write_documents` in a process of its own, fed from the recorder's writer thread (tick rows
as each batch commits) and from the loop when a scan or episode ends. Nothing of it runs on the tick path, and the
composing, validating and writing run in that process (a thread of the daemon's doing them: at 1 kHz its p99
lateness went from 0.7 to 1.8–3.5 ms). What stays in the daemon: the queue's feeder thread pickles each item into
the pipe, holding the daemon's GIL meanwhile (a batch of 256 tick rows: about 0.13 ms; a scan's images: a copy of
their bytes). The queue is bounded in items and in image bytes (``MAX_PENDING_BYTES``): a writer that falls behind
(a slow SD card) makes it drop and count, never grow. Needs the optional extra ``docs`` (event-model, h5py); the
edge install does not.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

try:
    import event_model as em
    import h5py
except ImportError as e:  # the optional extra
    raise ImportError(f"event-model documents need the optional extra `docs` (pip install -e '.[docs]' in a "
                      f"checkout): {e}") from e

from controller.document_stream import Session
from controller.recorder import RUN_EVENTS, TICK_COLUMNS, RecorderError, reader

log = logging.getLogger(__name__)

Doc = tuple[str, dict[str, Any]]
PAGE_ROWS = 1000  # tick rows per event_page (export)
LIVE_PAGE_ROWS = 16  # live: pages of a committed batch (a reader following the file sees them sooner)
IMAGE_SPEC = "AD_HDF5"  # the area-detector HDF5 layout: databroker's and Tiled's handlers read it
IMAGE_DATASET = "/entry/data/data"
INTEGER_KEYS = frozenset({"seq", "idx", "t_mono_ns", "lateness_ns", "flags"})  # of a tick run; the others: REAL
# the six per-tick mode columns (recorder.TICK_COLUMNS kp_x … kd_y) by mode: the forge keeps θ̂ there
MODE_COLUMNS = {"forge": tuple(f"theta_hat_{i}" for i in range(6))}
UNITS = {"x": "px", "y": "px", "target_x": "px", "target_y": "px", "cmd_x": "V", "cmd_y": "V", "kp_x": "V/px",
         "ki_x": "V/(px s)", "kd_x": "V s/px", "kp_y": "V/px", "ki_y": "V/(px s)", "kd_y": "V s/px",
         "t_mono_ns": "ns", "lateness_ns": "ns", "angle_deg": "deg", "measured_deg": "deg"}


def _key(value: Any, units: str | None = None) -> dict[str, Any]:
    """A descriptor's DataKey for a sample value (a list of numbers: an array of its length)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        key = {"dtype": "array", "shape": list(np.shape(value))}
    else:
        key = {"dtype": "string" if isinstance(value, str) else "integer" if isinstance(value, (int, np.integer))
               else "number", "shape": []}
    return {"source": "edgetune", **key, **({"units": units} if units else {})}


def _stop_status(details: dict[str, Any]) -> tuple[str, str]:
    """(exit_status, reason) of a scan or episode."""
    if "error" in details:
        return "fail", str(details["error"])
    stopped = str(details.get("stopped_by"))
    if stopped in ("aborted", "held"):
        return "abort", stopped
    if stopped in ("lost_reply", "timeout"):
        return "fail", stopped
    return "success", stopped


# --- tick sessions ------------------------------------------------------------------------------------------

class TickRun:
    """A tick session as one run: ``start()``, ``page(rows)`` per batch of tick rows (TICK_COLUMNS tuples), ``stop``.

    Only the first page is validated against the schema: the next ones have the same keys and types by
    construction, and jsonschema takes about 0.7 ms a row (in Python, holding the GIL the tick loop needs)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.names = ("seq", "idx", "t_mono_ns", "lateness_ns", *TICK_COLUMNS[5:11],
                      *MODE_COLUMNS.get(session.mode or "", TICK_COLUMNS[11:17]), "flags")
        self.run = em.compose_run(uid=session.uid("ticks"), time=session.started_wall_ns / 1e9,
                                  metadata={"plan_name": f"edgetune_{session.mode or 'tick'}_session",
                                            "scan_id": session.id, **session.metadata("ticks")})
        self.descriptor: em.ComposeDescriptorBundle | None = None
        self.paged = False

    def start(self) -> list[Doc]:
        keys = {n: _key(0 if n in INTEGER_KEYS else 0.0, UNITS.get(n) if self.session.mode != "forge" else None)
                for n in self.names}
        self.descriptor = self.run.compose_descriptor(name="primary", data_keys=keys,
                                                      time=self.session.started_wall_ns / 1e9,
                                                      hints={"edgetune": {"fields": ["x", "y"]}})
        return [("start", self.run.start_doc), ("descriptor", self.descriptor.descriptor_doc)]

    def page(self, rows: list[tuple]) -> list[Doc]:
        """One event_page of rows in the ticks table's column order (the session column first)."""
        assert self.descriptor is not None
        cols = list(zip(*rows))[1:]  # without the session column
        data = {n: list(c) if n in INTEGER_KEYS else [math.nan if v is None else v for v in c]  # SQLite: NaN → NULL
                for n, c in zip(self.names, cols)}
        times = [self.session.wall(t) for t in data["t_mono_ns"]]
        page = self.descriptor.compose_event_page(data=data, timestamps={n: times for n in data}, time=times,
                                                  validate=not self.paged)
        self.paged = True  # the first page is validated; the next ones are made alike (see the class doc)
        return [("event_page", page)]

    def stop(self, exit_status: str, reason: str, time: float | None = None) -> list[Doc]:
        return [("stop", self.run.compose_stop(exit_status=exit_status, reason=reason, time=time))]


# --- scans and episodes -------------------------------------------------------------------------------------

def _steps(kind: str, d: dict[str, Any]) -> dict[str, list]:
    """The per-step columns of a scan or episode summary (as the recorder keeps it), by what the mode records."""
    if kind == "episode":  # the forge
        n = len(d.get("commands", []))
        pos = d["positions"][:n]
        return {"x": [p[0] for p in pos], "y": [p[1] for p in pos], "theta_hat": d["theta_hat"][:n],
                "force": d["commands"][:n], "source": d["sources"][:n]}
    if "angles_deg" in d:  # angles (CT)
        return {"angle_deg": d["angles_deg"], "measured_deg": d["measured_deg"],
                "policy": [v or "" for v in d["policy_versions"]]}
    if "subsequences" in d:  # ptycho
        sub, src = [], []
        for i, s in enumerate(d["subsequences"]):
            sub += [i] * len(s["positions"])
            src += [s["source"]] * len(s["positions"])
        n = len(d["positions"])
        return {"row": [p[0] for p in d["positions"]], "col": [p[1] for p in d["positions"]],
                "subsequence": sub[:n], "source": src[:n]}
    if "frequencies" in d:  # transceiver
        return {"angle": d["angles"], "frequency": d["frequencies"], "wavenumber": d["wavenumbers"],
                "source": d["sources"], "reason": d["reasons"], "policy": [v or "" for v in d["policy_versions"]],
                "data_re": d["data"]["re"], "data_im": d["data"]["im"]}
    return {}  # a failed scan: no steps


def _step_times(session: Session, t_ns: int, d: dict[str, Any], n: int) -> list[float]:
    """Step k's time (module doc)."""
    end = session.wall(t_ns)
    timings = d.get("timings") or {}
    move, acquire = timings.get("move", []), timings.get("acquire", [])
    if "total_s" not in d or len(move) < n or len(acquire) < n:
        return [end] * n
    start = end - d["total_s"]
    return [min(end, start + t) for t in np.cumsum(np.add(move[:n], acquire[:n])).tolist()]


def run_docs(session: Session, kind: str, n: int, details: dict[str, Any], t_ns: int,
             images: dict[str, np.ndarray], directory: Path, root: Path) -> list[Doc]:
    """The documents of the ``n``-th scan or episode of ``session`` (``details``: its recorder event, recorded at
    ``t_ns``). ``images``: per-step stacks (first axis: the step) and ``reconstruction`` (one image); written as HDF5
    files into ``directory``, referenced from ``root`` (where they will be read)."""
    steps = _steps(kind, details)
    count = len(next(iter(steps.values()))) if steps else 0
    times = _step_times(session, t_ns, details, count)
    scalars = {k: v for k, v in details.items() if isinstance(v, (str, int, float, bool)) or v is None}
    run = em.compose_run(uid=session.uid(kind, n), time=session.wall(t_ns) - float(details.get("total_s", 0.0)),
                         metadata={"plan_name": f"edgetune_{session.mode or kind}_{kind}",
                                   "scan_id": int(details.get("scan", details.get("episode", n))),
                                   **session.metadata(kind), "summary": scalars})
    docs: list[Doc] = [("start", run.start_doc)]

    def external(key: str, frames: np.ndarray) -> tuple[dict[str, Any], list[str]]:
        name = f"{run.start_doc['uid']}_{key}.h5"
        with h5py.File(directory / name, "w") as f:
            f.create_dataset(IMAGE_DATASET, data=frames)
        res = run.compose_resource(spec=IMAGE_SPEC, root=str(root), resource_path=name,
                                   resource_kwargs={"frame_per_point": 1})
        docs.append(("resource", res.resource_doc))
        ids = []
        for k in range(len(frames)):
            datum = res.compose_datum(datum_kwargs={"point_number": k})
            docs.append(("datum", datum))
            ids.append(datum["datum_id"])
        return {"source": f"edgetune:{key}", "dtype": "array", "shape": [1, *frames.shape[1:]],  # as the handler reads
                "external": "FILESTORE:", "dtype_numpy": frames.dtype.str}, ids

    per_step = {k: np.asarray(v) for k, v in images.items() if k != "reconstruction" and len(v) == count and count}
    if count:
        keys = {k: _key(v[0], UNITS.get(k)) for k, v in steps.items()}
        data: dict[str, list] = dict(steps)
        for key, frames in per_step.items():
            keys[key], data[key] = external(key, frames)
        desc = run.compose_descriptor(name="primary", data_keys=keys, time=times[0])
        docs.append(("descriptor", desc.descriptor_doc))
        docs.append(("event_page", desc.compose_event_page(
            data=data, timestamps={k: times for k in data}, time=times,
            filled={k: [False] * count for k in per_step})))
    if (image := images.get("reconstruction")) is not None:
        key, ids = external("reconstruction", np.asarray(image)[None])
        desc = run.compose_descriptor(name="reconstruction", data_keys={"reconstruction": key},
                                      time=session.wall(t_ns))
        docs.append(("descriptor", desc.descriptor_doc))
        docs.append(("event", desc.compose_event(data={"reconstruction": ids[0]},
                                                 timestamps={"reconstruction": session.wall(t_ns)},
                                                 time=session.wall(t_ns), filled={"reconstruction": False})))
    status, reason = _stop_status(details)
    docs.append(("stop", run.compose_stop(exit_status=status, reason=reason, time=session.wall(t_ns))))
    return docs


# --- files --------------------------------------------------------------------------------------------------

def write_jsonl(path: Path, docs: Iterable[Doc], mode: str = "w") -> None:
    """``[name, doc]`` per line (suitcase-jsonl's layout)."""
    with open(path, mode, encoding="utf-8") as f:
        for name, doc in docs:
            f.write(json.dumps([name, doc]) + "\n")


def _saved_reconstruction(details: dict[str, Any], store: Path) -> dict[str, np.ndarray]:
    """The reconstruction the daemon saved for a scan (its path as recorded, else beside the store in scans/)."""
    if not (recorded := details.get("reconstruction")):
        return {}
    for path in (Path(recorded), store.parent / "scans" / Path(recorded).name):
        if path.is_file():
            return {"reconstruction": np.load(path)}
    log.warning("export: %s not found: the scan's run has no reconstruction stream", recorded)
    return {}


def _sessions(conn: sqlite3.Connection, only: int | None) -> Iterator[tuple[Session, sqlite3.Row]]:
    rows = conn.execute("SELECT * FROM sessions" + (" WHERE id=?" if only is not None else "") + " ORDER BY id",
                        () if only is None else (only,)).fetchall()
    if only is not None and not rows:
        raise RecorderError(f"no session {only} in the store")
    for row in rows:
        anchor = conn.execute("SELECT t_ns, details FROM events WHERE session=? AND kind='session' ORDER BY id LIMIT 1",
                              (row["id"],)).fetchone()
        if anchor is not None:
            info = json.loads(anchor["details"])
            offset, mode = info["wall_ns"] - anchor["t_ns"], info.get("mode")
        else:  # before the session event (module doc)
            first = conn.execute("SELECT min(t) FROM (SELECT min(t_ns) t FROM ticks WHERE session=:s UNION ALL "
                                 "SELECT min(t_ns) FROM events WHERE session=:s)", {"s": row["id"]}).fetchone()[0]
            offset, mode = row["started_wall_ns"] - (first or 0), None
        yield Session(row["id"], row["pid"], row["started_wall_ns"], offset, mode), row


def export(store: str | os.PathLike[str], out: str | os.PathLike[str], session: int | None = None) -> list[Path]:
    """Write every run of the recorder ``store`` (or of one ``session``) into ``out``; returns the JSON-lines files.
    All is written into a temporary directory beside ``out`` and moved in at the end: an error leaves nothing
    behind (``out`` itself is created at the end). Raises RecorderError for a file that is missing or not a recorder store."""
    store, out = Path(store), Path(out)
    if not store.is_file():
        raise RecorderError(f"{store}: no such file")
    out.parent.mkdir(parents=True, exist_ok=True)
    root = out.resolve()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.part-", dir=out.parent))
    try:
        with reader(store) as conn:
            try:
                _export(conn, store, tmp, root, session)
            except sqlite3.DatabaseError as e:
                raise RecorderError(f"{store}: not a readable recorder store ({e})") from None
        written = sorted(tmp.iterdir())
        out.mkdir(exist_ok=True)
        for path in written:
            os.replace(path, out / path.name)
        return [out / p.name for p in written if p.suffix == ".jsonl"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _export(conn: sqlite3.Connection, store: Path, tmp: Path, root: Path, only: int | None) -> None:
    for s, row in _sessions(conn, only):
        ticks = conn.execute("SELECT * FROM ticks WHERE session=? ORDER BY seq", (s.id,))
        if rows := ticks.fetchmany(PAGE_ROWS):
            run = TickRun(s)
            path = tmp / f"{run.run.start_doc['uid']}.jsonl"
            write_jsonl(path, run.start())
            while rows:
                write_jsonl(path, run.page([tuple(r) for r in rows]), "a")
                rows = ticks.fetchmany(PAGE_ROWS)
            ended = row["ended_wall_ns"]
            status, reason = (("success", "") if ended and ended > 0 else
                              ("fail", "ended without close (recovered at the next start)") if ended == -1 else
                              ("fail", "not closed: still running, or the process was killed"))
            last = row["last_commit_wall_ns"] if ended is None or ended < 0 else ended
            write_jsonl(path, run.stop(status, reason, time=last / 1e9 if last else None), "a")
        counts: dict[str, int] = {}
        for ev in conn.execute("SELECT t_ns, kind, details FROM events WHERE session=? AND kind IN (%s) ORDER BY id"
                               % ",".join("?" * len(RUN_EVENTS)), (s.id, *sorted(RUN_EVENTS))).fetchall():
            counted = counts[ev["kind"]] = counts.get(ev["kind"], 0) + 1
            details = json.loads(ev["details"])
            n = details.get("run", counted)  # the recorder's number (module doc)
            docs = run_docs(s, ev["kind"], n, details, ev["t_ns"], _saved_reconstruction(details, store), tmp, root)
            write_jsonl(tmp / f"{docs[0][1]['uid']}.jsonl", docs)


def write_documents(directory: Path, session: Session, items: Any, failed: Any, pending: Any, parent: int) -> None:
    """The documents process (controller/document_stream.py starts it): write what ``items`` brings until "close"
    (module doc)."""
    from controller.lifeline import die_with_parent

    die_with_parent(parent)
    writer, what = _Writer(directory, session), ""
    while what != "close":
        what, item, nbytes = items.get()
        if nbytes:  # out of the daemon's memory now
            with pending.get_lock():
                pending.value -= nbytes
        try:
            writer.write(what, item)
        except Exception as e:  # noqa: BLE001 — disk full, a summary that does not fit: counted, logged
            with failed.get_lock():
                failed.value += 1
            log.error("documents: cannot write %s: %r", what, e)


class _Writer:
    """The documents process's state: the tick session's run (started with its first rows) and the runs so far."""

    def __init__(self, directory: Path, session: Session) -> None:
        self.dir, self.session = directory, session
        self.root = directory.resolve()
        self._ticks: TickRun | None = None

    def write(self, what: str, item: Any) -> None:
        if what == "close":
            if self._ticks is not None:
                self._append(self._ticks, self._ticks.stop("success", ""))
        elif what == "ticks":
            if self._ticks is None:
                run = TickRun(self.session)
                self._append(run, run.start())
                self._ticks = run  # its start is written: pages may follow
            for i in range(0, len(item), LIVE_PAGE_ROWS):
                self._append(self._ticks, self._ticks.page(item[i:i + LIVE_PAGE_ROWS]))
        else:
            kind, details, t_ns, images = item
            self._write_run(kind, details["run"], details, t_ns, images)

    def _append(self, run: TickRun, docs: list[Doc]) -> None:
        write_jsonl(self.dir / f"{run.run.start_doc['uid']}.jsonl", docs, "a")

    def _write_run(self, kind: str, n: int, details: dict[str, Any], t_ns: int, images: dict[str, np.ndarray]) -> None:
        """The run's files under temporary names, renamed when complete (a reader never sees half a run)."""
        tmp = Path(tempfile.mkdtemp(prefix=".run-", dir=self.dir))
        try:
            docs = run_docs(self.session, kind, n, details, t_ns, images, tmp, self.root)
            write_jsonl(tmp / f"{docs[0][1]['uid']}.jsonl", docs)
            for path in sorted(tmp.iterdir(), key=lambda p: p.suffix == ".jsonl"):  # the images first
                os.replace(path, self.dir / path.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
