"""`edgetune bench filter` (hil/bench/filter.py): one JSON object with the filter's update times per particle
count against the tick budget; bad input is a clean error."""
from __future__ import annotations

import json

import pytest

from typer.testing import CliRunner

from hil.cli import app


def test_bench_filter_reports_percentiles_against_the_tick() -> None:
    result = CliRunner().invoke(app, ["bench", "filter", "--particles", "100,400", "--updates", "40", "--warmup", "5",
                                      "--rate", "1000", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["problem"] == "forge" and out["tick_us"] == 1000.0 and out["updates"] == 40
    small, large = out["filter"]
    assert (small["particles"], large["particles"]) == (100, 400)
    for row in (small, large):
        assert 0 < row["p50_us"] <= row["p99_us"] <= row["max_us"]
        assert row["p99_of_tick"] == pytest.approx(row["p99_us"] / 1000.0)
    assert out["goal_p99_under_half_1khz_tick_at_1000"] is None  # 1 000 particles were not measured


def test_bench_filter_refuses_bad_counts() -> None:
    result = CliRunner().invoke(app, ["bench", "filter", "--particles", "1", "--updates", "5"])
    assert result.exit_code == 2 and "particle counts" in result.output
