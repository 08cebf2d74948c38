"""Metrics: µs lateness buckets, counters pulled from scheduler stats, served over real HTTP."""
from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np
import pytest

from controller.latency import LatencyRing
from controller.metrics import Metrics
from controller.scheduler import SchedulerStats


def _value(m: Metrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    return m.registry.get_sample_value(name, labels or {})


def test_update_exports_lateness_histogram_and_counter_deltas() -> None:
    stats = SchedulerStats(lateness=LatencyRing(16))
    m = Metrics(stats)
    for ns in (5_000, 10_000, 40_000, 120_000, 20_000_000):  # 5, 10, 40, 120 µs and 20 ms
        stats.lateness.add(ns)
    stats.ticks, stats.overruns, stats.missed_periods = 5, 1, 3
    m.update()
    bucket = "edgetune_tick_lateness_seconds_bucket"
    assert _value(m, bucket, {"le": "1e-05"}) == 2  # 5 µs and exactly 10 µs
    assert _value(m, bucket, {"le": "5e-05"}) == 3
    assert _value(m, bucket, {"le": "0.00025"}) == 4
    assert _value(m, bucket, {"le": "0.01"}) == 4
    assert _value(m, bucket, {"le": "+Inf"}) == 5
    assert _value(m, "edgetune_tick_lateness_seconds_sum") == pytest.approx(0.020175)
    stats.lateness.add(7_000)
    stats.ticks = 6
    m.update()  # only the new sample and the deltas
    assert _value(m, bucket, {"le": "1e-05"}) == 3
    assert _value(m, "edgetune_tick_lateness_seconds_count") == 6
    assert (_value(m, "edgetune_ticks_total"), _value(m, "edgetune_overruns_total"),
            _value(m, "edgetune_missed_periods_total")) == (6, 1, 3)
    for _ in range(20):  # more than the ring holds between two updates: the loss is counted
        stats.lateness.add(1)
    m.update()
    assert _value(m, "edgetune_lateness_samples_lost_total") == 4


def test_faults_are_cumulative_totals_by_kind() -> None:
    m = Metrics(SchedulerStats())
    m.update(faults={"device": 2, "bad_tag": 0})
    m.update(faults={"device": 5, "bad_tag": 1})
    assert _value(m, "edgetune_faults_total", {"kind": "device"}) == 5
    m.update(faults={"device": 1})  # the source counter was reset: its new total is new faults
    assert _value(m, "edgetune_faults_total", {"kind": "device"}) == 6
    assert _value(m, "edgetune_faults_total", {"kind": "bad_tag"}) == 1


def test_http_endpoint_serves_its_own_registry_and_stops() -> None:
    m = Metrics(SchedulerStats())
    m.update(link_up=True, gains=np.array([[10.0, 5.0, 0.0], [16.0, 6.8, 2.5]]))
    m.model_swapped()
    with pytest.raises(ValueError):
        m.update(gains=[1.0, 2.0])
    port = m.start("127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}/metrics"
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    assert 'edgetune_gain{axis="y",term="I"} 6.8' in body
    assert "edgetune_link_up 1.0" in body and "edgetune_model_swaps_total 1.0" in body
    assert 'edgetune_tick_lateness_seconds_bucket{le="0.0001"} 0.0' in body
    assert "python_gc" not in body  # its own registry, not the process-global one
    m.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)


def test_observe_is_vectorised() -> None:
    m = Metrics(SchedulerStats())
    m.lateness.observe_ns(np.full(100_000, 30_000, dtype=np.int64))
    assert _value(m, "edgetune_tick_lateness_seconds_bucket", {"le": "2.5e-05"}) == 0
    assert _value(m, "edgetune_tick_lateness_seconds_bucket", {"le": "5e-05"}) == 100_000


def test_every_metric_is_documented_in_docs_metrics_md() -> None:
    """Metric names are part of the interface: each one the daemon exports is in the docs' table."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    documented = {line.split("`")[1] for line in doc.splitlines() if line.startswith("| `edgetune_")}
    m = Metrics(SchedulerStats())
    m.update(link_up=True, gains=np.zeros(6), faults={"device": 1}, held=False, recorder_alarm=False)
    m.model_swapped()
    m.policy_period(0.1, 0.0)
    exported = {metric.name + ("_total" if metric.type == "counter" else "") for metric in m.registry.collect()}
    assert exported == documented


def test_every_push_refusal_reason_is_documented_in_docs_metrics_md() -> None:
    """The reasons controller/link/edge_push.py's docstring lists for ``refused:<reason>`` are exactly those of the
    ``push_refused:<reason>`` fault kind in the docs."""
    import re
    from pathlib import Path

    from controller.link import edge_push as push

    listed = re.search(r'counters\["refused:<reason>"\]``: ([a-z_,\s]+)\)', push.__doc__ or "")
    assert listed is not None, "edge_push.py's docstring lists the refusal reasons"
    reasons = set(listed.group(1).replace(",", " ").split())
    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    row = next(line for line in doc.splitlines() if line.startswith("| `push_refused:<reason>`"))
    assert reasons == set(re.findall(r"`([a-z_]+)`", row.split("|")[3])), row
    assert len(reasons) >= 9


def test_hold_and_recorder_alarm_gauges_and_a_daemon_without_ticks() -> None:
    m = Metrics(None)  # the angles daemon
    m.update(held=True, recorder_alarm=True, faults={"push_refused:bad_magic": 3})
    assert (_value(m, "edgetune_hold"), _value(m, "edgetune_recorder_alarm")) == (1, 1)
    assert _value(m, "edgetune_faults_total", {"kind": "push_refused:bad_magic"}) == 3
    assert _value(m, "edgetune_ticks_total") == 0
    m.update(held=False, recorder_alarm=False)
    assert (_value(m, "edgetune_hold"), _value(m, "edgetune_recorder_alarm")) == (0, 0)


async def test_a_dead_metrics_server_is_restarted_under_supervision_on_the_same_port() -> None:
    import asyncio

    from controller.supervisor import Supervisor

    m = Metrics(SchedulerStats())
    port = m.start("127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}/metrics"
    sup = Supervisor(backoff_min_s=0.01, backoff_max_s=0.05)
    sup.spawn("metrics-server", lambda: m.keep_serving(check_s=0.01))
    await asyncio.sleep(0.05)
    m._server.shutdown()  # its thread ends: the endpoint is gone
    async with asyncio.timeout(5):
        while sup.restarts["metrics-server"] == 0:
            await asyncio.sleep(0.01)
        while not m.serving:
            await asyncio.sleep(0.01)
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert "edgetune_ticks_total" in body and sup.dead() == []
    await sup.close()
    m.stop()
