"""Shared fixtures: a whole simulated installation (emulator on a pty + daemon process + host client).

Tests live by kind, and the folder sets the marker (`pytest -m unit`, `pytest tests/unit`: the fast loop):
    unit/         fast, in-process, one component
    integration/  several components in-process: sockets, ptys, child processes, short training runs
    hil/          real daemon and emulator processes (SimulatedStand, subprocess daemons), scenarios, soak
"""
from __future__ import annotations

from pathlib import Path

import pytest

from hil.stand import SimulatedStand

KINDS = ("unit", "integration", "hil")
TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its folder's kind."""
    for item in items:
        kind = item.path.relative_to(TESTS).parts[0]
        if kind in KINDS:
            item.add_marker(kind)


@pytest.fixture
async def mems_stand(tmp_path):
    """Emulator + daemon as real processes in real time, the host client connected."""
    async with SimulatedStand(tmp_path / "stand") as stand:
        yield stand
