"""`edgetune bench loop` and `bench swap`: short real runs of the daemon's own tick give the documented JSON fields."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
import typer
from typer.testing import CliRunner

from hil.bench.cli import bench_loop
from hil.bench.loop import affinity, pin
from hil.bench.swap import bench as bench_swap


@pytest.fixture
def restore_affinity() -> Iterator[None]:
    """A pinned benchmark pins this (the test) process: give it back its CPUs afterwards."""
    cpus = os.sched_getaffinity(0)
    yield
    pin(cpus)


def test_bench_loop_json_short_run_pinned(restore_affinity: None) -> None:
    app = typer.Typer()
    app.command()(bench_loop)
    app.command("unused")(lambda: None)  # two commands: typer keeps the subcommand name
    res = CliRunner().invoke(app, ["bench-loop", "--rate", "500", "--seconds", "1", "--json", "--cpus", "0"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert r["rate_hz"] == 500 and set(r) >= {"ticks", "ours", "floor", "p99_ratio"}
    assert 0 < r["ticks"] <= 500  # overruns skip periods, never add ticks
    for side in ("ours", "floor"):
        s = r[side]
        assert set(s) == {"p50_us", "p99_us", "p999_us", "max_us", "overruns"}
        assert s["p50_us"] <= s["p99_us"] <= s["p999_us"] <= s["max_us"]
    ran = r["ticks"] + r["warm_up_ticks"]  # measured, and the unmeasured ticks before each chunk
    assert 0 < r["warm_up_ticks"] <= 50 and r["recorder"]["written"] + r["recorder"]["dropped"] == ran
    assert r["recorder"]["dropped"] == 0
    # the daemon's own tick ran: every tick wrote the driver, decimated ticks sent sealed telemetry to the host
    assert r["driver_writes"] == ran and r["telemetry_sent"] >= ran // 4
    assert r["cpus"] == {"bench": [0]} == {"bench": affinity()}  # every thread, read back at the end


def test_bench_swap_short_run_swaps_every_model_pinned(restore_affinity: None) -> None:
    r = bench_swap(rate_hz=500.0, swaps=4, chunks=2, chunk_s=0.3, cpus={0})
    assert (r["swaps"], r["accepted"], r["rejected"], r["non_finite_outputs"]) == (4, 4, [], 0)
    assert r["extra_overruns"] == r["with_swaps"]["overruns"] - r["baseline"]["overruns"]
    assert 0 < r["swap_latency_ms"]["p50"] <= r["swap_latency_ms"]["max"] and r["decisions"] > 0
    assert r["cpus"] == {"bench": [0], "validator": [0], "pusher": [0]}  # the child processes inherited it
