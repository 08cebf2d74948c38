"""`make demo`: the main job on the simulated MEMS stand, end to end over the real interfaces.

  1. train DDPG on the fast simulator (paper settings) and export the actor to ONNX;
  2. emulator on a pty + edge daemon in rl-pid mode (baseline PID until a policy arrives) + this
     host over UDP: a 100 px target step (settling time);
  3. the paper's test, a Wiener disturbance on M1 for 1000 frames, with the baseline gains, with
     Ziegler–Nichols gains (set over the host link), then with the RL policy pushed to the edge
     (validated and hot-swapped at a tick boundary; it re-tunes the PID on the edge);
  4. the same methods on the simulator over 8 test seeds; tables and PNGs.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from controller.protocol.mems import Disturbance
from firmware_sim.mems.disturbance import WIENER_SIGMA_PX_SQRT_S
from hil.stand import SimulatedStand
from hil.telemetry import collect, settling_time_s
from learner.mems.closed_loop import deviation_stats

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


def plot_trajectory(step: np.ndarray, tests: dict[str, np.ndarray], path: Path) -> None:
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
    for name, test in tests.items():
        t = test[:, 0] - test[0, 0]
        axes[1].plot(t, np.hypot(test[:, 1] - test[:, 3], test[:, 2] - test[:, 4]), lw=0.7, label=name)
        axes[2].plot(test[:, 1], test[:, 2], lw=0.5, label=name)
    axes[1].set(title="Wiener disturbance: |spot − target| (HIL)", xlabel="time [s]", ylabel="Δ [px]")
    axes[1].legend()
    axes[2].plot(0, 0, "k+", ms=14, label="target")
    axes[2].set(title="spot on the sensor", xlabel="x [px]", ylabel="y [px]", aspect="equal")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def wiener_run(client, seed: int) -> np.ndarray:
    """One HIL Wiener test: disturbance off and settle, then WIENER_FRAMES frames of telemetry."""
    await client.set_disturbance(Disturbance.NONE)
    await collect(client, 1.0)
    seconds = WIENER_FRAMES / FRAME_RATE_HZ
    await client.set_disturbance(Disturbance.WIENER, seed, seconds + 1.0, WIENER_SIGMA_PX_SQRT_S)
    return (await collect(client, seconds + 0.2))[:WIENER_FRAMES]


def train_policy(out: Path, steps: int, console: Console) -> Path:
    """Train DDPG on the fast simulator and export it; returns the artifact directory."""
    from learner.mems.export import export_mems
    from learner.mems.train import MemsTrainConfig, train_mems

    run = out / "run"
    cfg = MemsTrainConfig()
    cfg.ddpg.total_steps = steps
    console.rule("1. train DDPG on the simulator")
    train_mems(run, cfg)
    manifest = export_mems(run, out / "policy")
    console.print(f"exported {out / 'policy' / 'model.onnx'} (sha256 {manifest.sha256[:12]}…)")
    return run


async def run_demo(out: Path, seed: int, steps: int, run: Path | None = None) -> dict:
    from controller.link.host_push import PushClient
    from controller.modes.mems.pid import PAPER_A_TEST_GAINS
    from learner.mems.eval import evaluate_mems, test_seeds
    from learner.mems.ziegler_nichols import ziegler_nichols_gains
    from controller.link.auth import Gains

    out.mkdir(parents=True, exist_ok=True)
    console = Console()
    if run is None:
        run = train_policy(out, steps, console)
    else:
        from learner.mems.export import export_mems

        export_mems(run, out / "policy")
    console.rule("2. emulator + daemon (rl-pid mode, no policy yet: baseline PID)")
    async with SimulatedStand(out / "stand", seed=seed, config={"loop": {"mode": "rl-pid"}}) as stand:
        client = stand.client
        console.print(f"emulator on [bold]{stand.port}[/], host link {stand.edge_addr}, model push {stand.push_addr}")
        await collect(client, 0.5)
        await client.set_target(100.0, 0.0)
        step = await collect(client, 2.0)
        settle = settling_time_s(step, 2.0)
        console.print(f"100 px step settled within 2 px in [bold]{settle * 1e3:.0f} ms[/]")
        await client.set_target(0.0, 0.0)
        console.rule("3. Wiener test: baseline, the paper's a_test gains, Ziegler–Nichols, then the pushed RL policy")
        tests = {"baseline": await wiener_run(client, seed)}
        for name, gains in (("paper_a_test", PAPER_A_TEST_GAINS), ("ziegler_nichols", ziegler_nichols_gains())):
            await client.set_gains(Gains.from_rows(gains))
            tests[name] = await wiener_run(client, seed)
        reply = await asyncio.to_thread(PushClient(stand.push_addr, stand.keyring, stand.keyring.newest).push,
                                        out / "policy")
        console.print(f"push: accepted={reply['accepted']} swap latency {reply.get('swap_latency_ms', float('nan')):.1f} ms "
                      f"({reply.get('reason') or 'validated, swapped at a tick boundary'})")
        if not reply["accepted"]:
            raise RuntimeError(f"the edge refused the policy: {reply}")
        tests["rl_pid"] = await wiener_run(client, seed)
    hil = {f"{name}, HIL": deviation_stats(t[:, 1:3], t[:, 3:5]) for name, t in tests.items()}
    console.rule("4. the same methods on the simulator, 8 report-set test seeds")
    sim = evaluate_mems([run], "wiener", test_seeds("report"), out=out)
    sim_rows = {f"{name}, simulator": {"delta_mean": m["mean_px"], "delta_std": m["std_px"],
                                       "delta_x_mean": m["mean_x_px"], "delta_x_std": m["std_x_px"],
                                       "delta_y_mean": m["mean_y_px"], "delta_y_std": m["std_y_px"]}
                for name, m in sim["methods"].items()}
    rows = {"paper Table 2, a_baseline": PAPER_BASELINE, **hil, **sim_rows}
    console.print(stats_table(f"Wiener test, {WIENER_FRAMES} frames [px]", rows))
    base = hil["baseline, HIL"]["delta_mean"]
    hil_red = {k: 100 * (base - v["delta_mean"]) / base for k, v in hil.items() if not k.startswith("baseline")}
    console.print("reduction vs baseline on the HIL stand: " + ", ".join(f"{k} {v:+.1f} %" for k, v in hil_red.items()))
    plot_trajectory(step, tests, out / "trajectory.png")
    (out / "table.md").write_text(markdown_table(rows))
    result = {"step_settling_s": settle, "wiener": rows, "hil_reduction_pct": hil_red,
              "simulator_reduction_pct": sim["reduction_pct"], "sensitivity": sim["sensitivity"],
              "push": reply}
    (out / "demo.json").write_text(json.dumps(result, indent=2))
    console.print(f"wrote {out / 'trajectory.png'}, {out / 'table.md'}, {out / 'demo.json'}, {run / 'reward.png'}, "
                  f"{out / 'sensitivity_wiener.png'} (where each method's gains amplify vibration)")
    return result
