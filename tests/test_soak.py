"""A short soak: the daemon at 1 kHz in process, against the emulator process, faults every ~2 s."""
from __future__ import annotations

import pytest

from hil.soak import soak


@pytest.mark.hil
def test_short_soak_loses_no_record_and_handles_every_fault(tmp_path):
    rep = soak(1000.0, 20.0, tmp_path, fault_every_s=2.0, seed=2)
    assert rep["ticks"] > 5_000  # the loop never stopped (overruns on a loaded 2-core box are reported)
    assert rep["records_lost"] == 0 and rep["records_written"] == rep["records_expected"] == rep["ticks"]
    assert rep["max_command_ratio"] <= 1.0
    assert sum(rep["faults_injected"].values()) >= 5
    assert rep["faults_handled"] == rep["faults_injected"], rep


@pytest.mark.slow
def test_one_minute_soak(tmp_path):
    rep = soak(1000.0, 60.0, tmp_path, fault_every_s=3.0, seed=3)
    assert rep["records_lost"] == 0 and rep["max_command_ratio"] <= 1.0
    assert rep["faults_handled"] == rep["faults_injected"], rep
