"""The bundled HIL scenarios against real processes (emulator on a pty, daemon, host over UDP), plus
the harness's own parts: scenario validation and the UDP fault proxy."""
from __future__ import annotations

import asyncio
import json
import re

import pytest

from hil.faults.net import NetFaults, UdpProxy
from hil.scenario.run import ScenarioError, bundled, load_scenario, run_scenario

BUNDLED = {"bad_config", "bad_models", "link_loss", "network_chaos", "recorder_sigkill", "replay_attack", "serial_garbage",
           "serial_unplug"}


def test_the_bundled_scenarios_are_all_there_and_valid():
    assert {p.stem for p in bundled()} == BUNDLED
    for p in bundled():
        assert load_scenario(p).name == p.stem


def test_every_bundled_scenario_asserts_what_the_readme_promises():
    """README, HIL scenarios: each asserts the loop keeps ticking and commands stay within limits (and that no
    exception escaped), and injects at least one fault that a check of its own asserts on."""
    generic = {"loop_alive", "commands_within_limits", "no_traceback"}
    for p in bundled():
        sc = load_scenario(p)
        checks = {c.check for c in sc.checks}
        assert generic <= checks, f"{p.name} lacks {sorted(generic - checks)}"
        assert sc.faults and checks - generic, f"{p.name}: no fault, or no check of its own"


@pytest.mark.parametrize("text, key", [
    ('name="x"\nduration_s=1\n[[assert]]\ncheck="loop_alive"\n[[faults]]\nat_s=0\nkind="net.meteor"', "faults.0.kind"),
    ('name="x"\nduration_s=1\ncolour="red"\n[[assert]]\ncheck="loop_alive"', "colour"),
    ('name="x"\nduration_s=1\n[[assert]]\ncheck="feels_fine"', "assert.0.check"),
    ('name="x"\nduration_s=-1\n[[assert]]\ncheck="loop_alive"', "duration_s"),
])
def test_bad_scenarios_are_refused_naming_the_key(tmp_path, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=key):
        load_scenario(path)


async def test_proxy_forwards_both_ways_and_counts_what_it_breaks():
    loop = asyncio.get_running_loop()
    got: list[bytes] = []

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, t):
            self.t = t

        def datagram_received(self, data, addr):
            got.append(data)
            self.t.sendto(data[::-1], addr)

    edge, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    proxy = await UdpProxy(edge.get_extra_info("sockname"), NetFaults(corrupt=1.0), seed=1).start()
    replies: list[bytes] = []

    class Host(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            replies.append(data)

    host, _ = await loop.create_datagram_endpoint(Host, remote_addr=proxy.address)
    host.sendto(b"hello world")
    await asyncio.sleep(0.1)
    assert len(got) == 1 and got[0] != b"hello world" and len(got[0]) == 11  # one bit flipped
    assert len(replies) == 1
    assert proxy.counters["to_edge.corrupt"] == 1 and proxy.counters["to_host.corrupt"] == 1
    proxy.faults = NetFaults()
    proxy.partition(0.2)
    host.sendto(b"lost")
    await asyncio.sleep(0.05)
    assert len(got) == 1 and proxy.counters["to_edge.partitioned"] == 1
    await asyncio.sleep(0.2)
    host.sendto(b"back")
    await asyncio.sleep(0.05)
    assert got[-1] == b"back" and replies[-1] == b"kcab"
    for t in (host, edge):
        t.close()
    proxy.close()


def test_the_report_table_keeps_its_columns_when_a_detail_has_a_pipe():
    from hil.scenario.report import markdown

    rep = {"scenario": "x", "passed": True, "ticks": 1, "sessions": 1, "overruns": 0, "telemetry_received": 0,
           "checks": [{"check": "commands_clamped", "ok": True, "detail": "max |cmd|/limit 0.98\nof 1"}],
           "faults": [{"t_s": 1.0, "kind": "serial.garbage", "bytes": "a|b"}]}
    rows = [line for line in markdown(rep, False).splitlines() if line.startswith("| ")]
    assert len(rows) == 4 and all(len(re.findall(r"(?<!\\)\|", row)) == 4 for row in rows), rows


@pytest.mark.hil
@pytest.mark.parametrize("name", sorted(BUNDLED))
async def test_bundled_scenario_passes(tmp_path, name):
    from hil.scenario.run import SCENARIO_DIR

    rep = await run_scenario(load_scenario(SCENARIO_DIR / f"{name}.toml"), tmp_path / name)
    failed = [r for r in rep["checks"] if not r["ok"]]
    assert not failed, json.dumps(failed, indent=1)
    assert (tmp_path / name / "report.json").exists() and (tmp_path / name / "report.md").exists()
    assert (tmp_path / name / "timeline.png").stat().st_size > 10_000
