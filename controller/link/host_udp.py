"""The host end of the host link (used by the CLI, the learner and the HIL harness).

    async with HostClient(("127.0.0.1", 9750), load_keyring(path), key_id=1) as c:
        ack = await c.set_gains(Gains.from_rows([[10, 5, 0], [16, 6.8, 2.5]]))
        rtt_s = await c.ping()
        async for t in c.telemetry(): ...

Commands are retried (each try a fresh seq) until acknowledged; no reply raises ``TimeoutError`` (the
edge answers only fresh, authenticated commands and drops everything else without a word: a wrong key or
a clock off by more than its ``max_clock_skew_s`` looks like silence; its drop counters say which). An edge
that speaks another protocol version answers with its version (controller/link/auth.py), and the request
raises ``VersionMismatch`` naming both.
Telemetry is buffered in a bounded queue (oldest dropped).
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections import Counter
from typing import Any, AsyncIterator

import asyncio_dgram

from controller.link.auth import (
    VERSION, Ack, Gains, HostLinkError, Keyring, Ping, Pong, ReplayGuard, SetDisturbance, SetGains, SetTarget, Signer,
    Telemetry, VersionMismatch, decode, notice_version,
)


class HostClient:
    def __init__(self, edge_addr: tuple[str, int], keyring: Keyring, key_id: int, *,
                 timeout_s: float = 0.5, retries: int = 2, telemetry_buffer: int = 1024,
                 max_clock_skew_s: float = 5.0) -> None:
        self.edge_addr, self.keyring = edge_addr, keyring
        self.timeout_s, self.retries = timeout_s, retries
        self.signer = Signer(keyring, key_id)
        self.guard = ReplayGuard(max_skew_s=max_clock_skew_s)
        self.counters: Counter[str] = Counter()
        self._pending: dict[Any, asyncio.Future] = {}  # ("ack", seq) or ("pong", nonce) -> reply
        self._telemetry: asyncio.Queue[Telemetry] = asyncio.Queue(telemetry_buffer)
        self._nonces = itertools.count(int.from_bytes(os.urandom(4), "little"))
        self._stream: asyncio_dgram.DatagramClient | None = None
        self._reader: asyncio.Task | None = None

    async def open(self) -> HostClient:
        self._stream = await asyncio_dgram.connect(self.edge_addr)  # connected: other sources are filtered
        self._reader = asyncio.create_task(self._read())
        return self

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._stream is not None:
            self._stream.close()

    async def __aenter__(self) -> HostClient:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def set_gains(self, gains: Gains) -> Ack:
        """Returns the Ack, whose ``gains`` are what the edge applied after clamping."""
        return await self._command(SetGains(gains))

    async def set_target(self, x_px: float, y_px: float) -> Ack:
        return await self._command(SetTarget(float(x_px), float(y_px)))

    async def set_disturbance(self, profile: int, seed: int = 0, *params: float) -> Ack:
        """Test stands: the edge forwards the disturbance-mirror profile to the device."""
        p = tuple(float(v) for v in params) + (0.0,) * (4 - len(params))
        return await self._command(SetDisturbance(int(profile), int(seed), p))

    async def ping(self) -> float:
        """Round-trip time in seconds."""
        nonce = next(self._nonces) & 0xFFFFFFFF
        t0 = time.perf_counter()
        await self._request(Ping(nonce), lambda _seq: ("pong", nonce))
        return time.perf_counter() - t0

    async def telemetry(self) -> AsyncIterator[Telemetry]:
        """Telemetry as it arrives (the edge sends it once it has heard from this client)."""
        while True:
            yield await self._telemetry.get()

    async def _command(self, msg: Any) -> Ack:
        return await self._request(msg, lambda seq: ("ack", seq))

    async def _request(self, msg: Any, reply_key: Any) -> Any:
        assert self._stream is not None, "open() first"
        loop = asyncio.get_running_loop()
        for _ in range(self.retries + 1):
            data = self.signer.seal(msg)
            key = reply_key(self.signer.last_seq)
            fut = self._pending[key] = loop.create_future()
            try:
                await self._stream.send(data)
                return await asyncio.wait_for(fut, self.timeout_s)
            except VersionMismatch:
                raise
            except TimeoutError:
                self.counters["timeouts"] += 1
            except OSError:  # e.g. ICMP port unreachable: the edge is not (yet) listening
                self.counters["socket_error"] += 1
                await asyncio.sleep(self.timeout_s)
            finally:
                self._pending.pop(key, None)
        raise TimeoutError(f"no reply from {self.edge_addr} to {type(msg).__name__} after {self.retries + 1} tries "
                           "(the edge drops what it cannot authenticate: check the key and the clocks)")

    async def _read(self) -> None:
        assert self._stream is not None
        while True:
            try:
                data, _ = await self._stream.recv()
            except asyncio_dgram.TransportClosed:
                return
            except OSError:  # ICMP port unreachable while the edge is down
                self.counters["socket_error"] += 1
                continue
            if (version := notice_version(data)) is not None:  # the edge speaks another version
                self.counters["bad_version"] += 1
                error = VersionMismatch(f"host link version mismatch: this host speaks version {VERSION}, the edge at "
                                        f"{self.edge_addr[0]}:{self.edge_addr[1]} speaks version {version}")
                for fut in self._pending.values():
                    if not fut.done():
                        fut.set_exception(error)
                continue
            try:
                msg = decode(data, self.keyring, self.guard, expect="to_host").msg
            except HostLinkError as e:
                self.counters[e.kind] += 1
                continue
            self.counters["rx_ok"] += 1
            if isinstance(msg, Telemetry):
                if self._telemetry.full():
                    self._telemetry.get_nowait()
                    self.counters["telemetry_overflow"] += 1
                self._telemetry.put_nowait(msg)
                continue
            key = ("pong", msg.nonce) if isinstance(msg, Pong) else ("ack", msg.ack_seq)
            fut = self._pending.get(key)
            if fut is not None and not fut.done():
                fut.set_result(msg)
