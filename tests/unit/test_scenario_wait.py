"""A scenario step never waits without a deadline: `wait_until` fails naming what it waited for, even when the
probe itself hangs."""
from __future__ import annotations

import asyncio
import time

import pytest

from hil.scenario.model import StepTimeout, wait_until


async def test_wait_until_times_out_naming_what_it_waited_for():
    async def never() -> bool:
        return False

    t0 = time.monotonic()
    with pytest.raises(StepTimeout, match="waiting for the daemon's metrics"):
        await wait_until("the daemon's metrics", never, 0.3)
    assert time.monotonic() - t0 < 2.0


async def test_a_hanging_probe_is_bounded_by_the_same_deadline():
    async def hangs() -> bool:
        await asyncio.Event().wait()
        return True

    with pytest.raises(StepTimeout, match="a ping"):
        await wait_until("a ping", hangs, 0.3)


async def test_wait_until_returns_once_the_probe_holds():
    calls = []

    async def third() -> bool:
        calls.append(1)
        return len(calls) >= 3

    await wait_until("the third call", third, 5.0, poll_s=0.01)
    assert len(calls) == 3
