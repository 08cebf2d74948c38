"""The daemon's model-push server: authenticated TCP (controller/link/push_wire.py) into the policy slot.

Per connection, one request. Before anything else the fixed-size preamble is read (within
``preauth_timeout_s``), authenticated and checked by the replay guard; a connection that fails there
is closed without a reply (but bad_version: answered with this edge's magic, its version) and counted
(``counters["refused:<reason>"]``: bad_version, bad_magic, unknown_key,
bad_signature, stale, replayed, preauth_timeout, incomplete, too_many_unauthenticated,
too_many_connections), and refusals are logged and recorded as one summary (recorder event
"push_refused") at most every ``REFUSAL_REPORT_S``. The pre-authentication budget: at most
``max_unauthenticated`` connections wait for their preamble (a new one evicts the oldest of those whose
preamble has not fully arrived yet, so a fresh client gets through a flood), at most ``max_connections``
are open (file descriptors stay bounded), and each connection's read buffer pauses the socket beyond
``BUFFER_LIMIT``. The listen backlog is an ordinary ``BACKLOG``, so a key holder's SYN is not dropped
during a flood (the admission above bounds what the accepted connections cost).

Then: header (authenticated against the preamble) → push: sha256, atomic install, validation (the
slot's validator process, then its worker thread), swap at the next tick boundary; rollback: previous
policy at the next tick boundary. The active version is remembered in the policy directory, and
`restore()` brings it back when the daemon restarts. Pushes and rollbacks are served one at a time, and
a push's model is read only once its turn has come (one model in memory at a time); the daemon's `ops`
(status, hold, resume, and in angles mode scan, abort) carry no model and are served beside them. Every
authenticated request gets an authenticated reply; one that is refused says why, and is logged, counted
(``rejected:<reason>``, ``internal_error`` for an unexpected error, logged with its traceback) and recorded.
The server also takes the slot's quarantines (controller/policy/slot.py, `[policy] runtime_*`): each is recorded,
and in the slot's worker thread listed in the policy directory's `quarantine.json` before `active` is
rewritten, so a restart never brings a quarantined version back (`restore()` refuses one). `status()` lists
them. Pushing a quarantined artifact again is the operator's explicit decision: it is validated as any push,
and once swapped in its quarantine is lifted (logged, recorded).
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import Counter
from typing import Any, Awaitable, Callable

from controller.config import PolicyConfig
from controller.link.auth import TAG_LEN, HostLinkError, Keyring, ReplayGuard
from controller.policy.signature import SignatureRefused, TrustedKeys
from controller.policy.slot import (LoadedPolicy, PolicyRejected, PolicySlot, Quarantine, install, read_quarantine, remember,
                               remembered_active)
from controller.policy.guard import RuntimeLimits
from controller.link.push_wire import (
    MAGIC, PREAMBLE, Preamble, PushHeader, PushRefused, check_sizes, encode_reply, verify_header, verify_preamble,
)
from controller.ratelog import Summary

log = logging.getLogger(__name__)

DRIFT_WARN = 0.05  # relative decision-period mismatch that is logged as a warning
BUFFER_LIMIT = 4096  # StreamReader limit: a socket nobody reads from is paused beyond 2× this (+ one recv)
SLOT_OPS = ("push", "rollback")  # served by the policy slot; every other op by a handler in `ops`
BACKLOG = 128  # the kernel's accept queue (and asyncio's accepts per loop iteration)
REFUSAL_REPORT_S = 10.0  # at most one log line and one recorder event about refused connections per this


def period_drift(achieved_s: float, manifest_s: float) -> float:
    """Relative decision-period drift: achieved / trained − 1 (a policy trained at 20 ms run at 16 ms: −0.2)."""
    return achieved_s / manifest_s - 1.0


class PushServer:
    """``await start()`` (binds); ``serve_forever()`` (supervised); ``address``; ``stop_listening()`` (first
    thing at shutdown); ``await close()``. ``slot`` is None in modes that run no policy."""

    def __init__(self, cfg: PolicyConfig, keyring: Keyring, slot: PolicySlot | None, *,
                 nominal_period_s: float, max_clock_skew_s: float, replay_window: int,
                 record: Callable[[str, dict[str, Any]], None],
                 ops: dict[str, Callable[[PushHeader], Awaitable[dict[str, Any]]]] | None = None) -> None:
        self.cfg, self.keyring, self.slot, self.record = cfg, keyring, slot, record
        self.ops = ops or {}  # op → handler, served outside the one-at-a-time lock; raise PushRefused to refuse
        self.nominal_period_s = nominal_period_s  # the decision period this daemon is configured for
        self.guard = ReplayGuard(replay_window, max_clock_skew_s)
        self.trusted = TrustedKeys.load(cfg.trusted_keys, cfg.allow_unsigned)  # artifact signatures (push)
        self.counters: Counter[str] = Counter()
        self.refusals = Summary(self._report_refusals, REFUSAL_REPORT_S)
        self._lock = asyncio.Lock()
        self._server: asyncio.Server | None = None
        self._closed = False
        self._open: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()  # close() waits for them
        # waiting for their preamble, oldest first, with their readers (what they have sent so far)
        self._unauthenticated: dict[asyncio.StreamWriter, asyncio.StreamReader] = {}
        if slot is not None:
            self._hook_slot(slot)

    async def start(self) -> None:
        """Bind and listen, once (start-up errors, e.g. the port in use, raise OSError here)."""
        assert self._server is None, "started twice"
        self._server = await asyncio.start_server(self._serve, self.cfg.push_host, self.cfg.push_port,
                                                  limit=BUFFER_LIMIT, backlog=BACKLOG)
        if self._closed:  # close() ran while binding: no socket is left listening
            self._server.close()

    async def serve_forever(self) -> None:
        """Report the refusals gathered (at most every ``REFUSAL_REPORT_S``) until stopped. The asyncio server
        itself listens from ``start()`` to ``stop_listening()``; it never stops on its own."""
        while not self._closed:
            self.refusals.tick()
            await asyncio.sleep(1.0)

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None, "start() first"
        return self._server.sockets[0].getsockname()[:2]

    @property
    def connections(self) -> tuple[int, int]:
        """(open connections, of which waiting for their preamble)."""
        return len(self._open), len(self._unauthenticated)

    def stop_listening(self) -> None:
        """Stop accepting and cut every open connection (their handlers end soon after; a request already
        being served finishes and its reply is lost)."""
        self._closed = True
        if self._server is not None:
            self._server.close()
        for writer in list(self._open):
            writer.transport.abort()

    async def close(self) -> None:
        """``stop_listening()``, wait (≤ 2 s) for the handlers, report the last refusals."""
        self.stop_listening()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2.0)
        self.refusals.flush()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        t0 = time.monotonic_ns()
        if not self._admit(reader, writer):
            return
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            if (pre := await self._authenticate(reader, writer)) is None:
                writer.transport.abort()  # no reply before authentication
            else:
                await self._answer(pre, reader, writer, t0)
        finally:
            self._open.discard(writer)
            self._handlers.discard(handler)
            writer.close()

    def _admit(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Room for one more connection: evict an unauthenticated one if needed, else refuse."""
        if self._closed:  # accepted just before stop_listening()
            writer.transport.abort()
            return False
        full = len(self._open) >= self.cfg.max_connections
        if full or len(self._unauthenticated) >= self.cfg.max_unauthenticated:
            if not self._unauthenticated:  # every open connection is authenticated
                self._refuse_connection("too_many_connections")
                writer.transport.abort()
                return False
            victim = self._eviction_victim()
            del self._unauthenticated[victim]
            self._open.discard(victim)
            self._refuse_connection("too_many_unauthenticated")
            victim.transport.abort()  # its reader sees EOF; its task ends
        self._open.add(writer)
        self._unauthenticated[writer] = reader
        return True

    def _eviction_victim(self) -> asyncio.StreamWriter:
        """The oldest unauthenticated connection whose preamble has not fully arrived; if every one's has (their
        handlers have not run yet), the oldest."""
        # StreamReader keeps what has arrived and was not read yet in ``_buffer`` (no public accessor)
        return next((w for w, r in self._unauthenticated.items() if len(r._buffer) < PREAMBLE.size),
                    next(iter(self._unauthenticated)))

    async def _authenticate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Preamble | None:
        """The authenticated, fresh preamble, or None (refusal counted; the caller closes without a reply)."""
        try:
            async with asyncio.timeout(self.cfg.preauth_timeout_s):
                data = await reader.readexactly(PREAMBLE.size)
            if writer not in self._unauthenticated:  # evicted (and counted) while its preamble waited to be read
                return None
            pre = verify_preamble(self.keyring, data)
            self.guard.check(pre.key_id, pre.seq, pre.timestamp_us, peer="push")
            return pre
        except PushRefused as e:
            reason = e.reason
            if reason == "bad_version":  # tell it which version this edge speaks (4 bytes: no amplification)
                writer.write(MAGIC)
        except HostLinkError as e:  # stale, replayed
            reason = e.kind
        except TimeoutError:
            reason = "preauth_timeout"
        except (asyncio.IncompleteReadError, ConnectionError):
            reason = "incomplete"
        finally:
            evicted = writer not in self._unauthenticated  # and counted then
            self._unauthenticated.pop(writer, None)
        if not evicted:
            self._refuse_connection(reason)
        return None

    def _refuse_connection(self, reason: str) -> None:
        self.counters[f"refused:{reason}"] += 1
        self.refusals.add(reason)

    def _report_refusals(self, counts: dict[str, int], seconds: float) -> None:
        log.warning("push port: %d connection(s) refused before authentication in %.0f s (%s)", sum(counts.values()),
                    seconds, ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        self.record("push_refused", {"counts": counts, "seconds": round(seconds, 3)})

    async def _answer(self, pre: Preamble, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      t0: int) -> None:
        """Read, serve and answer an authenticated request."""
        try:
            async with asyncio.timeout(self.cfg.io_timeout_s):
                check_sizes(pre, self.cfg.max_model_bytes)
                body = await reader.readexactly(pre.header_len)
                header = verify_header(pre, body, await reader.readexactly(TAG_LEN))
            if header.op != "push" and pre.model_len:
                raise PushRefused("bad_frame", f"only a push carries a model, not {header.op!r}")
            if (handler := self.ops.get(header.op)) is not None:
                reply = await handler(header)
            elif header.op not in SLOT_OPS:
                raise PushRefused("unsupported_op", f"op {header.op!r} is not served in this mode")
            else:
                async with self._lock:  # one push at a time: its model is read only now
                    async with asyncio.timeout(self.cfg.io_timeout_s):
                        model = await reader.readexactly(pre.model_len)
                    reply = await self._dispatch(header, model, t0)
        except PushRefused as e:
            reply = self._refuse(e.reason, e.detail)
        except PolicyRejected as e:  # already counted by the slot
            reply = self._refuse(e.reason, e.detail, count=False)
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError) as e:
            self.counters["rejected:bad_frame"] += 1
            log.warning("model push (key %d): connection dropped: %r", pre.key_id, e)
            return
        except Exception as e:  # a bug: the key holder is told, the traceback logged once
            log.exception("push-channel request (key %d) failed", pre.key_id)
            reply = self._refuse("internal_error", repr(e), logged=True)
        try:
            writer.write(encode_reply(reply, pre))
            async with asyncio.timeout(self.cfg.io_timeout_s):
                await writer.drain()
        except (ConnectionError, TimeoutError):
            self.counters["reply_lost"] += 1
            return
        if not reply["accepted"]:  # maybe refused early: drain what the pusher still sends, so the reply is not reset
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(self.cfg.io_timeout_s):
                    while await reader.read(1 << 16):
                        pass

    def _refuse(self, reason: str, detail: str, count: bool = True, logged: bool = False) -> dict[str, Any]:
        if count:
            self.counters[f"rejected:{reason}"] += 1
        if not logged:
            log.warning("push-channel request refused (%s): %s", reason, detail)
        self.record("policy", {"action": "rejected", "reason": reason, "detail": detail[:500]})
        return {"accepted": False, "reason": reason, "detail": detail}

    async def _dispatch(self, header: PushHeader, model: bytes, t0_ns: int) -> dict[str, Any]:
        slot = self.slot
        if slot is None:
            raise PushRefused("no_policy_mode", "this daemon's mode runs no policy")
        if header.op == "rollback":
            policy, t_ns = await self._at_boundary(slot.request_rollback())
            await self._remember(slot)
            return self._done("rolled_back", policy, t0_ns, t_ns)
        if header.manifest is None or header.model_sha256 is None:
            raise PushRefused("bad_frame", "a push needs manifest and model_sha256")
        if hashlib.sha256(model).hexdigest() != header.model_sha256:
            raise PushRefused("sha256_mismatch", "model bytes do not match the signed sha256")
        try:
            self.trusted.verify(header.manifest.encode(), model, header.signature)
        except SignatureRefused as e:
            raise PushRefused(e.reason, e.detail) from None
        try:
            directory = await slot.off_loop(install, self.cfg.dir, header.manifest.encode(), model)
        except PolicyRejected as e:
            slot.counters["attempted"] += 1
            slot.reject(e)
            raise
        policy = await slot.load(directory)
        policy, t_ns = await self._at_boundary(slot.request_swap(policy))
        if (lifted := slot.lift_quarantine(directory.name)) is not None:
            log.warning("policy %s pushed again: its quarantine (%s, %s) is lifted", lifted.version, lifted.reason,
                        lifted.at)
            self.record("policy", {"action": "quarantine_lifted", "version": lifted.version})
        await self._remember(slot)
        return self._done("swapped", policy, t0_ns, t_ns)

    async def restore(self) -> None:
        """At start-up: validate the version that was active when the daemon last ran and swap it in at the
        next tick boundary. Pushes wait during the validation; one that came first wins (nothing is
        restored over it). If the artifact is quarantined or fails validation the mode's fallback runs; why
        is logged and recorded."""
        slot = self.slot
        if slot is None:
            return
        t0_ns = time.monotonic_ns()
        async with self._lock:
            directory = await slot.off_loop(remembered_active, self.cfg.dir)
            if directory is None or slot.active is not None or slot.previous is not None:
                return
            try:
                if q := next((q for q in slot.quarantined if q.name == directory.name), None):
                    raise PolicyRejected("quarantined", f"quarantined at {q.at}: {q.reason}")
                done = slot.request_swap(await slot.load(directory))
            except Exception as e:  # PolicyRejected, or anything else: the fallback runs, the daemon goes on
                reason, detail = (e.reason, e.detail) if isinstance(e, PolicyRejected) else ("error", repr(e))
                log.warning("policy %s not restored (%s): %s", directory.name, reason, detail)
                self.record("policy", {"action": "restore_failed", "reason": reason, "detail": detail[:500]})
                return
        await asyncio.wait([done], timeout=self.cfg.swap_timeout_s)
        if not done.done():  # no tick boundary came: cancelled, so no later tick applies it
            done.cancel()
            log.warning("policy %s not restored: no tick boundary within %s s", directory.name,
                        self.cfg.swap_timeout_s)
            self.record("policy", {"action": "restore_failed", "reason": "swap_timeout"})
        elif not done.cancelled():  # else superseded by a push
            policy, t_ns = done.result()
            self._done("restored", policy, t0_ns, t_ns)

    async def _remember(self, slot: PolicySlot) -> None:
        """Record the slot's state for a restart as it is now, in one job of the worker thread (jobs run in the
        order they were posted, so the last one written is the latest state)."""
        try:
            await slot.off_loop(remember, self.cfg.dir, slot.active, list(slot.quarantined))
        except OSError as e:  # the swap stands; only a restart would not bring it back
            log.warning("cannot record the active policy in %s: %s", self.cfg.dir, e)

    def _hook_slot(self, slot: PolicySlot) -> None:
        """The slot's run-time limits from the config, the quarantines recorded by earlier runs (read before any
        push can rewrite the list), and its quarantine events."""
        slot.limits = RuntimeLimits(self.cfg.runtime_max_failures, self.cfg.runtime_failure_window_s,
                                    self.cfg.runtime_terminate_factor)
        slot.quarantined = read_quarantine(self.cfg.dir)
        slot.on_quarantine = self._quarantined
        self._persisting: set[asyncio.Task] = set()

    def _quarantined(self, q: Quarantine) -> None:
        """A quarantine (on the tick in rl-pid): recorded now, written to disk by the slot's worker thread."""
        slot = self.slot
        assert slot is not None
        self.record("policy", {"action": "quarantined", "version": q.version, "reason": q.reason})
        task = asyncio.get_running_loop().create_task(self._remember(slot))
        self._persisting.add(task)
        task.add_done_callback(self._persisting.discard)

    async def _at_boundary(self, done: asyncio.Future[tuple[LoadedPolicy | None, int]]
                           ) -> tuple[LoadedPolicy | None, int]:
        try:
            return await asyncio.wait_for(done, self.cfg.swap_timeout_s)
        except TimeoutError:  # wait_for cancelled the request: no later tick applies it
            raise PushRefused("swap_timeout", f"no tick boundary within {self.cfg.swap_timeout_s} s") from None

    def _done(self, action: str, policy: LoadedPolicy | None, t0_ns: int, t_ns: int) -> dict[str, Any]:
        latency_ms = round((t_ns - t0_ns) / 1e6, 3)
        if policy is None:  # rolled back past the first push: the mode's fallback runs
            log.info("policy %s: no policy active, the mode's fallback runs, %.1f ms after the request", action,
                     latency_ms)
            self.record("policy", {"action": action, "version": None, "swap_latency_ms": latency_ms})
            return {"accepted": True, "reason": action, "version": None, "swap_latency_ms": latency_ms}
        m = policy.manifest
        drift = period_drift(self.nominal_period_s, m.decision_period_s)
        reply = {"accepted": True, "reason": action, "version": m.version, "sha256": m.sha256,
                 "swap_latency_ms": latency_ms, "inference_us": round(policy.latency_us, 1),
                 "decision_period_s": {"manifest": m.decision_period_s, "nominal": self.nominal_period_s,
                                       "drift": round(drift, 4)}}
        log.info("policy %s: version %s (%s), %.1f ms after the %s", action, m.version, policy.path, latency_ms,
                 "restore began" if action == "restored" else "request")
        if abs(drift) > DRIFT_WARN:
            log.warning("policy %s was trained at a decision period of %.4g s; this daemon decides every %.4g s "
                        "(drift %+.1f%%)", m.version, m.decision_period_s, self.nominal_period_s, 100 * drift)
        self.record("policy", {"action": action, "version": m.version, "sha256": m.sha256,
                               "swap_latency_ms": latency_ms, "nominal_drift": reply["decision_period_s"]["drift"]})
        return reply

    def status(self) -> dict[str, Any]:
        """The policy part of the daemon's ``status`` op (no policy in modes without a slot)."""
        slot = self.slot
        return {"active": slot.active.version if slot and slot.active else None,
                "previous": slot.previous.version if slot and slot.previous else None,
                "quarantined": [q.public() for q in slot.quarantined] if slot else [],
                "counters": dict(slot.counters) if slot else {}, "push_counters": dict(self.counters)}
