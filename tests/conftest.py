"""Shared fixtures: a whole simulated installation (emulator on a pty + daemon process + host client)."""
from __future__ import annotations

import pytest

from hil.stand import SimulatedStand


@pytest.fixture
async def mems_stand(tmp_path):
    """Emulator + daemon as real processes in real time, the host client connected."""
    async with SimulatedStand(tmp_path / "stand") as stand:
        yield stand
