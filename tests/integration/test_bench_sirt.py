"""`edgetune bench sirt` on a tiny problem: the JSON fields without ASTRA (as in CI), and with ASTRA in worker
processes where astra-toolbox is installed."""
from __future__ import annotations

import sys

import pytest

from hil.bench.sirt import run

SIDE = {"recon_per_s", "setup_s", "work_s"}
TINY = {"size": 31, "angles": 5, "iterations": 5, "batch": 3, "threads": 2}


def test_bench_sirt_without_astra_reports_ours_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "astra", None)  # import astra raises ImportError
    r = run(**TINY)
    assert (r["batch"], r["threads"], r["device"]) == (3, 2, "cpu")
    for side in ("ours", "ours_1thread"):
        assert set(r[side]) >= SIDE | {"system_matrix_s", "operators_s"}
        assert r[side]["recon_per_s"] == pytest.approx(3 / r[side]["work_s"])
        assert r[side]["setup_s"] == pytest.approx(r[side]["system_matrix_s"] + r[side]["operators_s"])
    assert "unavailable" in r["astra"]["error"]
    assert r["speedup"] is r["speedup_1thread"] is r["rel_diff"] is r["astra_1process"] is None


def test_bench_sirt_with_astra_processes_agrees() -> None:
    pytest.importorskip("astra")
    r = run(**TINY)
    assert (r["astra"]["processes"], r["astra_1process"]["processes"]) == (2, 1)
    for side in ("astra", "astra_1process"):
        assert set(r[side]) >= SIDE | {"pool_start_s", "create_s"}
        assert r[side]["setup_s"] == pytest.approx(r[side]["pool_start_s"] + r[side]["create_s"])
    assert r["speedup"] == pytest.approx(r["ours"]["recon_per_s"] / r["astra"]["recon_per_s"])
    assert r["speedup_1thread"] == pytest.approx(r["ours_1thread"]["recon_per_s"] / r["astra_1process"]["recon_per_s"])
    assert r["rel_diff"] < 1e-4  # the same reconstructions: ASTRA's in the right order, from the same episodes
