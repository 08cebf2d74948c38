"""Network faults and attacks on real loopback sockets (asyncio).

``UdpProxy``: a UDP fault proxy between the host and the edge. The host sends to ``proxy.address``; the
proxy forwards to the edge from its own socket and relays the edge's replies back to the host. Each
datagram, in either direction, meets the current ``NetFaults`` (seeded RNG): loss, delay (+ uniform or
normal jitter), duplication, reordering (held back one extra delay), one flipped bit, truncation;
``partition(seconds)`` drops everything for a while. Every fault applied is counted per direction
(``counters``), so handlers can be checked against it.

``push_flood``: an intruder without a key on the model-push port (connection churn, slowloris, fake
1 MiB header lengths); it counts what it opened and every byte the edge sent back.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from controller.link.push_wire import MAGIC, MAX_HEADER

Direction = Literal["to_edge", "to_host"]


class NetFaults(BaseModel):
    """Fault rates (probabilities per datagram) and delays [ms]; all zero: a clean wire."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    loss: float = Field(0.0, ge=0, le=1)
    delay_ms: float = Field(0.0, ge=0)
    jitter_ms: float = Field(0.0, ge=0)
    jitter: Literal["uniform", "normal"] = "uniform"
    duplicate: float = Field(0.0, ge=0, le=1)
    reorder: float = Field(0.0, ge=0, le=1)
    corrupt: float = Field(0.0, ge=0, le=1)
    truncate: float = Field(0.0, ge=0, le=1)


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, on_datagram) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable while the edge is down
        pass


class UdpProxy:
    """``proxy = await UdpProxy(edge_addr, seed=1).start()``; point the host at ``proxy.address``."""

    def __init__(self, edge_addr: tuple[str, int], faults: NetFaults | None = None, *, seed: int = 0,
                 host: str = "127.0.0.1") -> None:
        self.edge_addr, self.faults, self.bind_host = edge_addr, faults or NetFaults(), host
        self.rng = random.Random(seed)
        self.counters: Counter[str] = Counter()  # "<direction>.<fault>", e.g. to_edge.corrupt, to_host.sent
        self._partition_until = 0.0
        self._host_addr: tuple[str, int] | None = None
        self._front: asyncio.DatagramTransport | None = None
        self._back: asyncio.DatagramTransport | None = None

    async def start(self) -> UdpProxy:
        loop = asyncio.get_running_loop()
        self._front, _ = await loop.create_datagram_endpoint(
            lambda: _Endpoint(self._from_host), local_addr=(self.bind_host, 0))
        self._back, _ = await loop.create_datagram_endpoint(
            lambda: _Endpoint(self._from_edge), remote_addr=self.edge_addr)
        return self

    @property
    def address(self) -> tuple[str, int]:
        assert self._front is not None, "start() first"
        return self._front.get_extra_info("sockname")[:2]

    def partition(self, seconds: float) -> None:
        """Drop every datagram, both ways, for ``seconds`` from now."""
        self._partition_until = time.monotonic() + seconds
        self.counters["partitions"] += 1

    @property
    def partitioned(self) -> bool:
        return time.monotonic() < self._partition_until

    def close(self) -> None:
        for t in (self._front, self._back):
            if t is not None:
                t.close()

    # -- forwarding ---------------------------------------------------------------------------

    def _from_host(self, data: bytes, addr: tuple[str, int]) -> None:
        self._host_addr = addr
        self._forward(data, "to_edge")

    def _from_edge(self, data: bytes, _addr: tuple[str, int]) -> None:
        if self._host_addr is not None:
            self._forward(data, "to_host")

    def _forward(self, data: bytes, direction: Direction) -> None:
        f, rng, c = self.faults, self.rng, self.counters
        c[f"{direction}.received"] += 1
        if self.partitioned:
            c[f"{direction}.partitioned"] += 1
            return
        if rng.random() < f.loss:
            c[f"{direction}.loss"] += 1
            return
        damaged = False
        if data and rng.random() < f.corrupt:
            i = rng.randrange(len(data) * 8)
            data = data[:i // 8] + bytes([data[i // 8] ^ (1 << (i % 8))]) + data[i // 8 + 1:]
            c[f"{direction}.corrupt"] += 1
            damaged = True
        elif len(data) > 1 and rng.random() < f.truncate:
            data = data[:rng.randrange(1, len(data))]
            c[f"{direction}.truncate"] += 1
            damaged = True
        copies = 2 if rng.random() < f.duplicate else 1
        c[f"{direction}.duplicate"] += copies - 1
        for copy in range(copies):
            delay = self._delay_s()
            if rng.random() < f.reorder:  # held back behind the datagrams that follow
                delay += max(f.delay_ms, 5.0) * 2e-3
                c[f"{direction}.reorder"] += 1
            bad = damaged or copy > 0  # a duplicate is a replay: the edge must drop it too
            if delay > 0:
                asyncio.get_running_loop().call_later(delay, self._send, data, direction, bad)
            else:
                self._send(data, direction, bad)

    def _delay_s(self) -> float:
        f = self.faults
        if f.jitter == "normal":
            jitter = self.rng.gauss(0.0, f.jitter_ms)
        else:
            jitter = self.rng.uniform(-f.jitter_ms, f.jitter_ms)
        return max(0.0, f.delay_ms + jitter) * 1e-3

    def _send(self, data: bytes, direction: Direction, damaged: bool = False) -> None:
        if self.partitioned:  # still in flight when the partition began
            self.counters[f"{direction}.partitioned"] += 1
            return
        if damaged:  # counted when it is actually delivered (a delayed one may never be)
            self.counters[f"{direction}.delivered_damaged"] += 1
        if direction == "to_edge" and self._back is not None:
            self._back.sendto(data)
        elif direction == "to_host" and self._front is not None and self._host_addr is not None:
            self._front.sendto(data, self._host_addr)
        self.counters[f"{direction}.sent"] += 1


# --- push port ----------------------------------------------------------------------------------

FAT_HEAD = MAGIC + struct.pack("<BII", 1, MAX_HEADER, 0)  # magic, key id, header_len, model_len: any wire version
CHUNK = 64 * 1024


async def push_flood(addr: tuple[str, int], *, seconds: float, fat: int = 400, slow: int = 100,
                     rate: float = 2000.0, seed: int = 0) -> Counter[str]:
    """Keep ``fat`` + ``slow`` unauthenticated connections to the push port open for ``seconds``, each
    re-opened as soon as it closes (at most ``rate`` connections a second in all). A fat one declares a
    header of MAX_HEADER bytes and sends that much junk; a slow one (slowloris) sends a byte every 0.3 s.
    Returns counts: opened, connect_failed, closed_by_edge, bytes_written (into the intruder's sockets;
    the edge reads what it wants of them), bytes_received (the edge must send none)."""
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    junk = rng.randbytes(CHUNK)
    start = loop.time()
    deadline = start + seconds
    tickets = itertools.count()  # connection n opens at start + n / rate
    c: Counter[str] = Counter()

    async def fat_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(FAT_HEAD + junk[:CHUNK - len(FAT_HEAD)])
        for _ in range(MAX_HEADER // CHUNK):
            await w.drain()
            c["bytes_written"] += CHUNK
            w.write(junk)
        await w.drain()
        await drain_replies(r)

    async def slow_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for b in FAT_HEAD:
            w.write(bytes([b]))
            c["bytes_written"] += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.3):
                    if not await count_reply(r):
                        return
        await drain_replies(r)

    async def count_reply(r: asyncio.StreamReader) -> bool:
        """Read what the edge sent (counted); False at EOF."""
        data = await r.read(CHUNK)
        c["bytes_received"] += len(data)
        return bool(data)

    async def drain_replies(r: asyncio.StreamReader) -> None:
        while await count_reply(r):
            pass

    async def keep_open(run: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> None:
        while (due := start + next(tickets) / rate) < deadline:
            await asyncio.sleep(due - loop.time())
            try:
                async with asyncio.timeout(deadline - loop.time()):
                    r, w = await asyncio.open_connection(*addr)
            except (OSError, TimeoutError):
                c["connect_failed"] += 1
                await asyncio.sleep(0.01)
                continue
            c["opened"] += 1
            try:
                async with asyncio.timeout(max(deadline - loop.time(), 0.001)):
                    await run(r, w)
                c["closed_by_edge"] += 1
            except (OSError, asyncio.IncompleteReadError):
                c["closed_by_edge"] += 1
            except TimeoutError:
                pass
            finally:
                w.transport.abort()

    await asyncio.gather(*(keep_open(fat_conn) for _ in range(fat)), *(keep_open(slow_conn) for _ in range(slow)))
    return c
