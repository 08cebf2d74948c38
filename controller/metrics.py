"""Prometheus metrics of the edge daemons, on their own registry and HTTP port (docs/metrics.md lists every
metric: the names are part of the interface).

Nothing here runs per tick: `Metrics.update`, called about once a second from a housekeeping task,
pulls what is new from the scheduler's stats — lateness samples from its ring, binned in one
vectorised call (~tens of µs), and counter deltas — so the tick path pays nothing. The angles daemon
has no tick loop (``stats`` None): its tick metrics stay at zero.
The HTTP server runs in a thread; ``keep_serving`` (supervised by the daemon) restarts it if it died.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Iterator, Mapping, Sequence
from wsgiref.simple_server import WSGIServer

import numpy as np
from numpy.typing import ArrayLike
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.registry import Collector

from controller.scheduler import SchedulerStats

# The library's default buckets start at 5 ms; tick lateness lives in tens to hundreds of µs.
LATENESS_BUCKETS_US = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
GAIN_LABELS = (("x", "P"), ("x", "I"), ("x", "D"), ("y", "P"), ("y", "I"), ("y", "D"))  # recorder order


class BatchHistogram(Collector):
    """A cumulative histogram fed with arrays of samples (ns), exposed in seconds."""

    def __init__(self, name: str, documentation: str, buckets_us: Sequence[float]) -> None:
        self.name, self.documentation = name, documentation
        self._edges_ns = np.asarray(buckets_us, dtype=np.float64) * 1e3
        self._le = [f"{b * 1e-6:g}" for b in buckets_us] + ["+Inf"]
        self._counts = np.zeros(len(buckets_us) + 1, dtype=np.int64)
        self._sum_s = 0.0
        self._lock = threading.Lock()  # scrapes come from the HTTP server's thread

    def observe_ns(self, samples_ns: np.ndarray) -> None:
        if samples_ns.size == 0:
            return
        counts = np.bincount(np.searchsorted(self._edges_ns, samples_ns, side="left"),
                             minlength=self._counts.size)
        with self._lock:
            self._counts += counts
            self._sum_s += float(samples_ns.sum()) / 1e9

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            cum, total = np.cumsum(self._counts), self._sum_s
        yield HistogramMetricFamily(self.name, self.documentation, sum_value=total,
                                    buckets=[(le, float(c)) for le, c in zip(self._le, cum)])


class Metrics:
    """The edge's metrics; `update` (from a once-a-second task) exports what changed since the last call."""

    def __init__(self, stats: SchedulerStats | None, registry: CollectorRegistry | None = None) -> None:
        self.stats = stats
        r = self.registry = registry or CollectorRegistry()
        self.lateness = BatchHistogram("edgetune_tick_lateness_seconds", "Tick wake time minus its deadline.",
                                       LATENESS_BUCKETS_US)
        r.register(self.lateness)
        self.ticks = Counter("edgetune_ticks", "Ticks run.", registry=r)
        self.overruns = Counter("edgetune_overruns", "Ticks after which periods had to be skipped.", registry=r)
        self.missed_periods = Counter("edgetune_missed_periods", "Periods skipped after overruns.", registry=r)
        self.lateness_lost = Counter("edgetune_lateness_samples_lost",
                                     "Lateness samples overwritten before the metrics task read them.", registry=r)
        self.link_state = Gauge("edgetune_link_up", "Host link state (1 up, 0 down).", registry=r)
        self.gains = Gauge("edgetune_gain", "Active PID gains.", ["axis", "term"], registry=r)
        self.faults = Counter("edgetune_faults", "Faults by kind.", ["kind"], registry=r)
        self.model_swaps = Counter("edgetune_model_swaps", "Policy models swapped in.", registry=r)
        self.decision_period = Gauge("edgetune_policy_decision_period_seconds",
                                     "Achieved policy decision period (mean since the last update).", registry=r)
        self.decision_drift = Gauge("edgetune_policy_decision_period_drift",
                                    "Achieved / manifest decision period − 1.", registry=r)
        self.hold = Gauge("edgetune_hold", "Operator hold (1: actuators held at the safe command).", registry=r)
        self.recorder_alarm = Gauge("edgetune_recorder_alarm", "1 while the recorder cannot write (disk full, I/O "
                                    "error): records are dropped and counted.", registry=r)
        self._seen = SchedulerStats()  # scheduler counters already exported
        self._seen_lateness = 0
        self._seen_faults: dict[str, int] = {}
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._address: tuple[str, int] | None = None

    def start(self, host: str, port: int) -> int:
        """Serve /metrics from a daemon thread; returns the bound port (port 0: any free one)."""
        self._server, self._thread = start_http_server(port, host, registry=self.registry)
        self._address = (host, self._server.server_port)
        return self._server.server_port

    @property
    def serving(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def keep_serving(self, check_s: float = 1.0) -> None:
        """Supervised: serve again (on the same address) if the server is down, then watch its thread;
        raises when the thread has died, so the supervisor logs, counts and restarts it."""
        assert self._address is not None, "start() first"
        if not self.serving:
            self._close_server()
            self.start(*self._address)
        while self.serving:
            await asyncio.sleep(check_s)
        raise RuntimeError("the metrics HTTP server thread died")

    def stop(self) -> None:
        if self._server is not None and self.serving:
            self._server.shutdown()
        self._close_server()

    def _close_server(self) -> None:
        if self._server is not None:
            self._server.server_close()
            self._server = self._thread = None

    def update(self, link_up: bool | None = None, gains: ArrayLike | None = None,
               faults: Mapping[str, int] | None = None, held: bool | None = None,
               recorder_alarm: bool | None = None) -> None:
        """Export the scheduler's news, and the link state, active gains ([axis][P, I, D] or the 6
        recorder-order values), cumulative fault counts by kind, the operator hold and the recorder's
        alarm, where given."""
        if self.stats is not None:
            self._pull_scheduler()
        for gauge, value in ((self.link_state, link_up), (self.hold, held), (self.recorder_alarm, recorder_alarm)):
            if value is not None:
                gauge.set(1 if value else 0)
        if gains is not None:
            for (axis, term), g in zip(GAIN_LABELS, np.ravel(gains), strict=True):
                self.gains.labels(axis=axis, term=term).set(g)
        for kind, total in (faults or {}).items():
            seen = self._seen_faults.get(kind, 0)
            self.faults.labels(kind=kind).inc(total - seen if total >= seen else total)  # total < seen: source reset
            self._seen_faults[kind] = total

    def model_swapped(self) -> None:
        self.model_swaps.inc()

    def policy_period(self, achieved_s: float, drift: float) -> None:
        self.decision_period.set(achieved_s)
        self.decision_drift.set(drift)

    def _pull_scheduler(self) -> None:
        st, seen = self.stats, self._seen
        assert st is not None
        samples, lost = st.lateness.since(self._seen_lateness)
        self._seen_lateness = st.lateness.count
        self.lateness.observe_ns(samples)
        self.lateness_lost.inc(lost)
        self.ticks.inc(st.ticks - seen.ticks)
        self.overruns.inc(st.overruns - seen.overruns)
        self.missed_periods.inc(st.missed_periods - seen.missed_periods)
        seen.ticks, seen.overruns, seen.missed_periods = st.ticks, st.overruns, st.missed_periods
