"""Property-based fuzzing of every decoder (a few hundred cases each here; `edgetune bench fuzz` runs 10 000)."""
from __future__ import annotations

import pytest

from hil.bench import fuzz


@pytest.mark.parametrize("name", sorted(fuzz.DECODERS))
def test_nothing_but_the_decoders_own_error_escapes(name):
    res = fuzz.fuzz(name, cases=150, seed=1)
    assert res["status"] == "ok", res
    assert res["cases"] >= 150


def test_the_harness_reports_an_escape(monkeypatch):
    """An honest property: a decoder that leaks a foreign exception is caught and named."""

    def leaky(data: bytes) -> None:
        if len(data) > 30:
            raise KeyError("leaked")

    monkeypatch.setitem(fuzz.DECODERS, "leaky", (leaky, fuzz.DATAGRAMS))
    res = fuzz.fuzz("leaky", cases=200, seed=1)
    assert res["status"].startswith("FAIL: KeyError"), res


def test_serial_fault_lines_are_checked():
    from firmware_sim.mems.emulator import MemsEmulator
    from hil.faults.serial import control_line

    assert control_line("garbage", 12.7) == "garbage 12"
    assert control_line("reboot") == "reboot"
    with pytest.raises(ValueError, match="unknown serial fault"):
        control_line("meteor", 1)
    emu = MemsEmulator()
    for bad in ("stall", "stall x", "unplug -1", "explode 3", ""):
        with pytest.raises(ValueError):
            emu.control(bad)
