"""`make demo`: the main job on the simulated MEMS stand, end to end over the real interfaces.

Emulator on a pty + edge daemon (baseline PID) + this host over UDP:
  1. a 100 px target step (settling time);
  2. the paper's test: a Wiener disturbance on M1 for 1000 frames, tracking error table
     (mean and σ of Δ, Δx, Δy in px) next to the same gains in the in-process simulator;
  3. PNGs of the spot trajectory against the target.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from controller.protocol import Disturbance
from firmware_sim.disturbance import WIENER_SIGMA_PX_SQRT_S, wiener
from firmware_sim.mems import MemsStand
from hil.stand import SimulatedStand
from hil.telemetry import collect, settling_time_s
from learner.closed_loop import deviation_stats, simulate, tracking_stats
from controller.pid import BASELINE_GAINS

PAPER_BASELINE = {"delta_mean": 7.83, "delta_std": 5.48, "delta_x_mean": 4.96, "delta_x_std": 5.16,
                  "delta_y_mean": 4.97, "delta_y_std": 3.9}
WIENER_FRAMES = 1000
FRAME_RATE_HZ = 120.0


def stats_table(title: str, rows: dict[str, dict[str, float]]) -> Table:
    table = Table(title=title)
    for col in ("method", "Δ mean", "σΔ", "Δx mean", "σΔx", "Δy mean", "σΔy"):
        table.add_column(col, justify="right" if col != "method" else "left")
    for name, s in rows.items():
        table.add_row(name, *(f"{s[k]:.2f}" for k in ("delta_mean", "delta_std", "delta_x_mean", "delta_x_std",
                                                       "delta_y_mean", "delta_y_std")))
    return table


def markdown_table(rows: dict[str, dict[str, float]]) -> str:
    lines = ["| method | Δ mean | σΔ | Δx mean | σΔx | Δy mean | σΔy |", "|---|---|---|---|---|---|---|"]
    for name, s in rows.items():
        vals = (s[k] for k in ("delta_mean", "delta_std", "delta_x_mean", "delta_x_std", "delta_y_mean", "delta_y_std"))
        lines.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    return "\n".join(lines) + "\n"


def plot_trajectory(step: np.ndarray, test: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    t = step[:, 0] - step[0, 0]
    axes[0].plot(t, step[:, 1], label="spot x")
    axes[0].plot(t, step[:, 3], "k--", label="target x")
    axes[0].axhspan(step[-1, 3] - 2, step[-1, 3] + 2, color="g", alpha=0.2, label="±2 px")
    axes[0].set(title="100 px target step (baseline PID)", xlabel="time [s]", ylabel="x [px]")
    axes[0].legend()
    t = test[:, 0] - test[0, 0]
    axes[1].plot(t, test[:, 1] - test[:, 3], label="Δx")
    axes[1].plot(t, test[:, 2] - test[:, 4], label="Δy")
    axes[1].set(title="Wiener disturbance: spot − target", xlabel="time [s]", ylabel="error [px]")
    axes[1].legend()
    axes[2].plot(test[:, 1], test[:, 2], lw=0.6)
    axes[2].plot(test[:, 3], test[:, 4], "r+", ms=12, label="target")
    axes[2].set(title="spot on the sensor", xlabel="x [px]", ylabel="y [px]", aspect="equal")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def run_demo(out: Path, seed: int = 1) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    console = Console()
    async with SimulatedStand(out / "stand", seed=seed) as stand:
        client = stand.client
        console.print(f"emulator on [bold]{stand.port}[/], daemon host link {stand.edge_addr}")
        await collect(client, 0.5)
        await client.set_target(100.0, 0.0)
        step = await collect(client, 2.0)
        settle = settling_time_s(step, 2.0)
        console.print(f"100 px step settled within 2 px in [bold]{settle * 1e3:.0f} ms[/]")
        await client.set_target(0.0, 0.0)
        await collect(client, 1.0)
        seconds = WIENER_FRAMES / FRAME_RATE_HZ
        await client.set_disturbance(Disturbance.WIENER, seed, seconds + 1.0, WIENER_SIGMA_PX_SQRT_S)
        test = (await collect(client, seconds + 0.2))[:WIENER_FRAMES]
    hil = deviation_stats(test[:, 1:3], test[:, 3:5])
    sim = tracking_stats(simulate(MemsStand(), BASELINE_GAINS, wiener(16, WIENER_FRAMES, seed)))
    rows = {"paper Table 2, a_baseline": PAPER_BASELINE, "baseline PID, HIL (1 run)": hil,
            "baseline PID, simulator (16 seeds)": sim}
    console.print(stats_table(f"Wiener test, {WIENER_FRAMES} frames [px]", rows))
    plot_trajectory(step, test, out / "trajectory.png")
    (out / "table.md").write_text(markdown_table(rows))
    result = {"step_settling_s": settle, "wiener": rows}
    (out / "demo.json").write_text(json.dumps(result, indent=2))
    console.print(f"wrote {out / 'trajectory.png'}, {out / 'table.md'}, {out / 'demo.json'}")
    return result
