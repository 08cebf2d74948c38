"""The CI soak (HIL issue §5): the daemon (rl-pid) at 1 kHz in process for 60 s, against the emulator
process, a fault every ~2 s (each kind at least once), model pushes and rollbacks included."""
from __future__ import annotations

import pytest

from hil.soak import soak


@pytest.mark.hil
def test_one_minute_soak_loses_no_record_and_handles_every_fault(tmp_path):
    rep = soak(1000.0, 60.0, tmp_path, fault_every_s=2.0, seed=2)
    assert rep["ticks"] > 15_000  # the loop never stopped (overruns on a loaded 2-core box are reported)
    assert rep["records_lost"] == 0 and rep["records_written"] == rep["records_expected"] == rep["ticks"]
    assert rep["max_command_ratio"] <= 1.0
    assert set(rep["faults_injected"]) >= {"model.swap", "serial.unplug", "net.partition", "command.nan"}, rep
    assert rep["faults_handled"] == rep["faults_injected"], rep
    swaps = rep["swaps"]  # per model.swap: good, bad, good accepted then rollback; the bad one refused
    assert swaps["attempted"] == 4 * rep["faults_injected"]["model.swap"] == swaps["accepted"] + swaps["rejected"]
    assert swaps["rejected"] == rep["faults_injected"]["model.swap"]
