"""The daemon's task supervisor: a dying task is restarted with back-off, counted, and reported dead meanwhile."""
from __future__ import annotations

import asyncio

import pytest

from controller.supervisor import Supervisor


async def test_a_dying_task_is_restarted_with_backoff_and_counted():
    sup = Supervisor(backoff_min_s=0.01, backoff_max_s=0.04)
    runs: list[float] = []

    async def flaky() -> None:
        runs.append(asyncio.get_running_loop().time())
        if len(runs) <= 3:
            raise RuntimeError("boom")
        await asyncio.sleep(3600)

    sup.spawn("flaky", flaky)
    async with asyncio.timeout(5):
        while len(runs) < 4:
            await asyncio.sleep(0.005)
    assert sup.restarts["flaky"] == 3
    gaps = [b - a for a, b in zip(runs, runs[1:])]
    assert gaps[0] >= 0.01 and gaps[1] >= 0.02 and gaps[2] >= 0.04 * 0.99  # doubling, capped
    assert sup.dead() == []  # running again
    await sup.close()


async def test_a_task_in_backoff_is_reported_dead_and_a_finished_one_is_not_restarted():
    sup = Supervisor(backoff_min_s=0.2, backoff_max_s=0.2)
    done = asyncio.Event()

    async def broken() -> None:
        raise OSError("no")

    async def finishes() -> None:
        done.set()

    sup.spawn("broken", broken)
    sup.spawn("finishes", finishes)
    async with asyncio.timeout(5):
        await done.wait()
        while not sup.dead():
            await asyncio.sleep(0.005)
    assert sup.dead() == ["broken"]
    assert sup.restarts["finishes"] == 0
    with pytest.raises(ValueError):
        sup.spawn("broken", broken)
    await sup.close()
    assert sup.dead() == []


async def test_close_does_not_wait_forever_for_a_task_that_does_not_end(caplog):
    """A task whose clean-up awaits something that does not answer is left behind after the timeout, logged by name;
    the others are cancelled."""
    sup = Supervisor()
    release = asyncio.Event()

    async def stuck() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await release.wait()  # e.g. a goodbye to a peer that has gone

    stuck_task = sup.spawn("stuck", stuck)
    other = sup.spawn("other", lambda: asyncio.sleep(3600))
    await asyncio.sleep(0)  # both started
    t0 = asyncio.get_running_loop().time()
    async with asyncio.timeout(5):
        await sup.close(timeout_s=0.2)
    assert asyncio.get_running_loop().time() - t0 < 1.0
    assert other.cancelled() and not stuck_task.done()
    assert any("left behind: stuck" in r.getMessage() for r in caplog.records)
    release.set()
    async with asyncio.timeout(5):
        with pytest.raises(asyncio.CancelledError):
            await stuck_task
