"""The EPICS server's parts without a network: the [epics] section, the settle semantics of the tick's snapshot,
the scan summary's size limit, the start-up error without caproto, the pipe between the processes and the order
in which the CA process applies a put's reply (controller/epics)."""
from __future__ import annotations

import asyncio
import json
import math
import sys

import numpy as np
import pytest

from controller.config import ConfigError, EpicsConfig, parse_config
from controller.epics import epics_server
from controller.epics.snapshot import LoopSnapshot
from controller.lifecycle import StartupError


def test_epics_section_defaults_and_refusals() -> None:
    e = parse_config({}).epics
    assert not e.enabled and e.host == "127.0.0.1" and e.prefix == "EDGE" and not e.writes and e.rate_hz <= 50
    for bad, key in (({"writes": True}, "write_hosts"), ({"rate_hz": 51}, "rate_hz"), ({"prefix": "EDGE:"}, "prefix"),
                     ({"settle_ticks": 0}, "settle_ticks"), ({"max_connections": 0}, "max_connections")):
        with pytest.raises(ConfigError, match=key):
            parse_config({"epics": bad})
    assert parse_config({"epics": {"writes": True, "write_hosts": ["ws1"]}}).epics.write_hosts == ("ws1",)


async def test_settled_after_n_ticks_within_tolerance_restarting_on_a_new_target() -> None:
    s = LoopSnapshot(tolerance_px=1.0, ticks=3)
    woken = asyncio.ensure_future(s.next_tick())
    await asyncio.sleep(0)
    for x in (5.0, 0.5, 0.4):
        s.update(x, 0.0, 0.0, 0.0, held=False)
    await asyncio.wait_for(woken, 1.0)  # the first update woke the waiter
    assert not s.settled and s.error == pytest.approx(0.4)
    s.update(0.3, 0.0, 0.0, 0.0, held=False)
    assert s.settled
    s.update(0.3, 0.0, 0.5, 0.0, held=False)  # a new target: counted again from this tick
    assert s.within == 1 and not s.settled
    s.update(math.nan, 0.0, 0.5, 0.0, held=False)  # a lost spot never counts
    assert s.within == 0 and math.isnan(s.error)
    for _ in range(4):
        s.update(0.5, 0.0, 0.5, 0.0, held=True)  # nor does a held loop
    assert s.within == 0


def test_scan_summary_fits_the_waveform() -> None:
    pytest.importorskip("caproto")
    from controller.epics.server import compact_summary

    small = {"scan": 1, "stopped_by": "policy", "angles_deg": [1.0, 2.0]}
    assert json.loads(compact_summary(small)) == small
    big = {"scan": 2, "stopped_by": "max_steps", "angles_deg": [0.123456789] * 500, "stage": {"moving": False}}
    out = json.loads(compact_summary(big))
    assert out == {"scan": 2, "stopped_by": "max_steps", "angles_deg": "<500 items>", "stage": {"moving": False}}
    huge = {"scan": 3, "stopped_by": "policy", "detail": {"k": "x" * 5000}}
    assert json.loads(compact_summary(huge)) == {"scan": 3, "stopped_by": "policy"}


def test_without_caproto_enabling_epics_is_a_startup_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "caproto", None)  # `import caproto` fails as if it were not installed
    monkeypatch.delitem(sys.modules, "controller.epics.server", raising=False)
    with pytest.raises(StartupError, match=r"caproto is not installed \(pip install -e '\.\[epics\]' in a checkout\)"):
        epics_server(None)  # type: ignore[arg-type]


async def test_pipe_carries_messages_in_order_and_reports_the_other_end_closing() -> None:
    """controller/epics/pipe.py over a real socket pair, as between the daemon and its CA process."""
    import socket

    from controller.epics.pipe import backlog, receive, send

    a, b = socket.socketpair()
    _, wa = await asyncio.open_connection(sock=a)
    rb, wb = await asyncio.open_connection(sock=b)
    send(wa, ("values", {"x": 1.5, "gains": [1.0] * 6, "mode": "stabilize"}))
    send(wa, ("reply", 7, None, 4.0, {"target_x": 4.0}))
    assert await asyncio.wait_for(receive(rb), 1.0) == ("values", {"x": 1.5, "gains": [1.0] * 6, "mode": "stabilize"})
    assert await asyncio.wait_for(receive(rb), 1.0) == ("reply", 7, None, 4.0, {"target_x": 4.0})
    await wa.drain()
    assert backlog(wa) == 0
    wa.close()
    assert await asyncio.wait_for(receive(rb), 1.0) is None  # the other end is gone
    wb.close()


async def test_pipe_parses_json_only_and_refuses_what_is_not_a_message() -> None:
    """The daemon never unpickles what the network-facing CA process sends: JSON, checked for its shape."""
    import pickle
    import socket

    from controller.epics.pipe import LENGTH, receive, send

    a, b = socket.socketpair()
    _, wa = await asyncio.open_connection(sock=a)
    rb, wb = await asyncio.open_connection(sock=b)
    send(wa, ("values", {"gains": np.arange(3.0)}))  # numpy values go as JSON lists
    assert await asyncio.wait_for(receive(rb), 1.0) == ("values", {"gains": [0.0, 1.0, 2.0]})
    for bad in (pickle.dumps(("put", 1)), b'{"kind": "put"}', b"[]"):
        wa.write(LENGTH.pack(len(bad)) + bad)
        with pytest.raises(ValueError):
            await asyncio.wait_for(receive(rb), 1.0)
    wa.close()
    wb.close()


async def test_a_puts_reply_writes_its_read_backs_before_the_put_callback_completes() -> None:
    """controller/epics/child.py: the daemon's reply carries the read-backs as the put ends; the CA process writes
    them into the PVs before it completes the put, so a client reading right after its put-callback sees them."""
    import socket

    pytest.importorskip("caproto")
    from controller.epics.child import ChildBridge, _follow
    from controller.epics.pipe import receive, send
    from controller.epics.pvs import MemsPVs

    daemon_end, child_end = socket.socketpair()
    dr, dw = await asyncio.open_connection(sock=daemon_end)
    cr, cw = await asyncio.open_connection(sock=child_end)
    bridge = ChildBridge(EpicsConfig(), cw)
    group = MemsPVs("T", bridge)
    pvs = group.attr_pvdb
    at_completion: list[tuple[float, str]] = []
    complete = bridge.reply
    bridge.reply = lambda *a: (at_completion.append((pvs["target_x"].value, pvs["settled"].value)), complete(*a))
    following = asyncio.get_running_loop().create_task(_follow(cr, group, bridge))
    try:
        put = asyncio.get_running_loop().create_task(bridge.move_target(x=4.0))
        kind, put_id, what, kwargs = await asyncio.wait_for(receive(dr), 2.0)
        assert (kind, what, kwargs) == ("put", "move_target", {"x": 4.0, "y": None})
        send(dw, ("reply", put_id, None, 4.0, {"target_x": 4.0, "settled": "Yes"}))
        assert await asyncio.wait_for(put, 2.0) == 4.0
        assert at_completion == [(4.0, "Yes")]
    finally:
        following.cancel()
        cw.close()
        dw.close()
