"""HIL: a telemetry datagram captured on the way to the host is replayed to the real daemon from another
socket at 20 Hz. The edge must drop it without a word: the reflector receives nothing (no reply, no
telemetry), and the real host keeps receiving its telemetry at the rate of a quiet window of the same run.
"""
from __future__ import annotations

import asyncio
import time

import asyncio_dgram
import pytest

from controller.link.auth import HostLinkError, Ping, Signer, Telemetry, decode
from hil.stand import SimulatedStand

pytestmark = [pytest.mark.hil, pytest.mark.timeout(60)]

WINDOW_S, REPLAY_HZ = 2.5, 20.0


async def test_a_reflected_telemetry_datagram_gets_nothing_and_moves_nothing(tmp_path):
    async with SimulatedStand(tmp_path / "stand") as stand:
        await stand.client.close()  # the test is the host: raw datagrams, so it can capture one
        stand.client = None
        ring = stand.keyring
        signer = Signer(ring, ring.newest)
        host = await asyncio_dgram.connect(stand.edge_addr)
        reflector = await asyncio_dgram.connect(stand.edge_addr)
        got = {"host": 0, "reflector": 0}
        captured: list[bytes] = []

        async def listen(name: str, sock) -> None:  # noqa: ANN001
            while True:
                data, _ = await sock.recv()
                got[name] += 1
                try:
                    if isinstance(decode(data, ring, expect="to_host").msg, Telemetry) and not captured:
                        captured.append(data)
                except HostLinkError:
                    pass

        async def keep_alive() -> None:  # the host pings every 0.25 s (silence timeout 2 s)
            while True:
                await host.send(signer.seal(Ping(1)))
                await asyncio.sleep(0.25)

        tasks = [asyncio.create_task(listen("host", host)), asyncio.create_task(listen("reflector", reflector)),
                 asyncio.create_task(keep_alive())]
        try:
            async with asyncio.timeout(10):
                while not captured:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            quiet0 = got["host"]
            await asyncio.sleep(WINDOW_S)
            quiet = got["host"] - quiet0
            host0 = got["host"]
            end, sent = time.monotonic() + WINDOW_S, 0
            while time.monotonic() < end:
                await reflector.send(captured[0])
                sent += 1
                await asyncio.sleep(1 / REPLAY_HZ)
            during = got["host"] - host0
            await asyncio.sleep(0.3)  # replies to the last replays would be here by now
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            host.close()
            reflector.close()
    print(f"\nreflection: {sent} replays; reflector received {got['reflector']}; host received {during} "
          f"datagrams during the replay, {quiet} in as long a quiet window")
    assert sent >= 0.8 * WINDOW_S * REPLAY_HZ
    assert got["reflector"] == 0
    assert during >= 0.9 * quiet > 0
