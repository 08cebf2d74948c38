"""Collecting edge telemetry on the host into arrays (demo, tests, HIL reports)."""
from __future__ import annotations

import asyncio
import time

import numpy as np

from controller.link.host_udp import HostClient

# columns of a collected telemetry array
COLUMNS = ("t_s", "x_px", "y_px", "target_x_px", "target_y_px", "cmd_x_v", "cmd_y_v")


async def collect(client: HostClient, seconds: float) -> np.ndarray:
    """Telemetry received during ``seconds`` as an (N, 7) array with COLUMNS (t_s: edge clock)."""
    rows: list[tuple[float, ...]] = []

    async def read() -> None:
        async for t in client.telemetry():
            rows.append((t.t_ns * 1e-9, t.x_px, t.y_px, t.target_x_px, t.target_y_px, t.cmd_x_v, t.cmd_y_v))

    task = asyncio.create_task(read())
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # keep the link alive (the edge drops to baseline on silence)
        await asyncio.sleep(min(0.5, max(0.0, end - time.monotonic())))
        await client.ping()
    task.cancel()
    return np.array(rows, dtype=np.float64).reshape(-1, len(COLUMNS))


def settling_time_s(tel: np.ndarray, band_px: float) -> float:
    """Time from the first sample at the final target until the error stays within ``band_px``."""
    tx, ty = tel[-1, 3], tel[-1, 4]
    at_target = np.flatnonzero((tel[:, 3] == tx) & (tel[:, 4] == ty))
    seg = tel[at_target[0]:]
    err = np.hypot(seg[:, 1] - tx, seg[:, 2] - ty)
    outside = np.flatnonzero(~(err <= band_px))
    if outside.size and outside[-1] == len(seg) - 1:
        return float("inf")
    last_out = outside[-1] + 1 if outside.size else 0
    return float(seg[last_out, 0] - seg[0, 0])
