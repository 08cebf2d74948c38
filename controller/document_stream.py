"""The daemon's side of live Bluesky documents (controller/documents.py, ``[recorder] documents``): the run
identity (`Session`) and `DocumentStream`, which feeds the documents process. Stdlib and numpy only: event-model
and h5py are imported by that process, never into the daemon's (measured here: 0.2–1 s and 17 MB more at start-up).
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("controller.documents")

NAMESPACE = uuid.UUID("6b3c1f9e-2f1d-4a57-9a43-5d0c2b8e7a11")  # run uids: uuid5 of the session and the run
MAX_PENDING_BYTES = 64 << 20  # live: image bytes queued for the documents process at most (DocumentStream)


@dataclass(frozen=True)
class Session:
    """One recorder session: what run uids and event times derive from."""

    id: int
    pid: int
    started_wall_ns: int
    offset_ns: int  # wall clock − monotonic clock
    mode: str | None = None

    def wall(self, t_ns: int) -> float:
        return (t_ns + self.offset_ns) / 1e9

    def uid(self, *run: object) -> str:
        return str(uuid.uuid5(NAMESPACE, ":".join(map(str, (self.started_wall_ns, self.pid, self.id, *run)))))

    def metadata(self, kind: str) -> dict[str, Any]:
        """What every run's start carries (``plan_type``: Bluesky's callbacks, e.g. LiveTable, expect one)."""
        return {"plan_type": "edgetune", "edgetune": {"session": self.id, "pid": self.pid, "mode": self.mode,
                                                      "run": kind}}


class DocumentStream:
    """The daemon's live emission (controller/documents.py's module doc) into ``directory``: a process of its own (spawned; it ends with the
    daemon) behind a queue bounded in items (``max_pending``) and in image bytes (``max_bytes``), so that composing,
    validating and writing never hold the daemon's GIL, which the tick loop needs. ``ticks`` (from the recorder's
    writer thread) and ``run`` (from the loop) only enqueue; what does not fit drops and counts (``dropped``), what
    cannot be written is logged and counted (``failed``): the daemon goes on."""

    def __init__(self, directory: Path, session: Session, max_pending: int = 256,
                 max_bytes: int = MAX_PENDING_BYTES) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.max_bytes = max_bytes
        self.dropped = 0
        self._failed = ctx.Value("q", 0)
        self._pending = ctx.Value("q", 0)  # image bytes queued, not yet taken by the documents process
        self._queue = ctx.Queue(max_pending)
        self._process = ctx.Process(target=_documents_process, name="edgetune-documents", daemon=True,
                                    args=(directory, session, self._queue, self._failed, self._pending, os.getpid()))
        self._process.start()

    @property
    def failed(self) -> int:
        return int(self._failed.value)

    @property
    def pending_bytes(self) -> int:
        return int(self._pending.value)

    def ticks(self, rows: list[tuple]) -> None:
        self._put("ticks", rows)

    def run(self, kind: str, details: dict[str, Any], t_ns: int, images: dict[str, np.ndarray]) -> None:
        """A scan or episode as the recorder recorded it (``details["run"]``: its number, module doc)."""
        self._put("run", (kind, details, t_ns, images), sum(np.asarray(v).nbytes for v in images.values()))

    def _put(self, what: str, item: Any, nbytes: int = 0) -> None:
        with self._pending.get_lock():  # two threads put (the recorder's writer, the loop): the lock serializes them
            if self._pending.value + nbytes <= self.max_bytes:
                try:
                    self._queue.put_nowait((what, item, nbytes))
                    self._pending.value += nbytes
                    return
                except queue.Full:
                    pass
            self.dropped += 1
            if self.dropped == 1:
                log.error("documents: the writer falls behind; dropping (counted)")

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued and the tick run's stop; wait at most ``timeout_s``, then end the process."""
        with contextlib.suppress(queue.Full):
            self._queue.put(("close", None, 0), timeout=timeout_s)
        self._process.join(timeout_s)
        if self._process.is_alive():
            log.error("documents: the writer did not finish within %g s; ending it", timeout_s)
            self._process.kill()
            self._process.join(timeout_s)
        elif self._process.exitcode != 0:
            log.error("documents: the writer had ended (exit code %s); what was queued is not written",
                      self._process.exitcode)
        # after a clean "close" the process took everything; else what it did not take stays unwritten and the
        # queue's feeder thread must not hold this process's exit waiting for a reader that is gone
        self._queue.cancel_join_thread()
        self._queue.close()


def _documents_process(*args: Any) -> None:
    """The documents process's target: a name the daemon pickles without importing event-model."""
    from controller.documents import write_documents

    write_documents(*args)
