"""Scenario reports: report.json, report.md and timeline.png (spot, command and gains against time,
faults shaded, link/device events marked)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hil.scenario.model import RunData


def summary(data: RunData, results: list[dict[str, Any]]) -> dict[str, Any]:
    t0 = data.t0_ns
    return {
        "scenario": data.scenario.name,
        "passed": all(r["ok"] for r in results),
        "checks": results,
        "ticks": int(data.ticks["t_ns"].size),
        "sessions": len(data.sessions),
        "overruns": data.overruns(),
        "telemetry_received": int(data.telemetry_ns.size),
        "faults": [{"kind": f["kind"], "t_s": round((f["t_ns"] - t0) / 1e9, 3), "seconds": f["seconds"],
                    "count": f["count"], **f["details"]} for f in data.faults],
        "host": data.host,
        "edge": data.edge,
        "events": [{"t_s": round((e["t_ns"] - t0) / 1e9, 3), "kind": e["kind"], "details": e["details"]}
                   for e in data.events if e["kind"] in ("link", "device", "recovery", "gains", "target", "stop")],
        "config_results": data.config_results,
    }


def write_report(out: Path, data: RunData, results: list[dict[str, Any]]) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    rep = summary(data, results)
    (out / "report.json").write_text(json.dumps(rep, indent=2, default=str))
    if rep["ticks"]:
        plot_timeline(data, out / "timeline.png")
    (out / "report.md").write_text(markdown(rep, (out / "timeline.png").exists()))
    rep["dir"] = str(out)
    return rep


def markdown(rep: dict[str, Any], with_png: bool) -> str:
    lines = [f"# HIL scenario `{rep['scenario']}`: {'PASS' if rep['passed'] else 'FAIL'}", "",
             f"{rep['ticks']} ticks over {rep['sessions']} daemon session(s), {rep['overruns']} overruns, "
             f"{rep['telemetry_received']} telemetry datagrams at the host.", "",
             "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {r['check']} | {'ok' if r['ok'] else '**FAIL**'} | {_cell(r['detail'])} |" for r in rep["checks"]]
    lines += ["", "| t [s] | fault | details |", "|---|---|---|"]
    lines += [f"| {f['t_s']:.2f} | {f['kind']} | "
              + _cell(", ".join(f"{k}={v}" for k, v in f.items() if k not in ("kind", "t_s", "stderr"))) + " |"
              for f in rep["faults"]]
    if with_png:
        lines += ["", "![timeline](timeline.png)"]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text for one markdown table cell: pipes escaped, on one line."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def plot_timeline(data: RunData, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tk, t0 = data.ticks, data.t0_ns
    t = (tk["t_ns"] - t0) / 1e9
    fig, axes = plt.subplots(3, 1, figsize=(11, 7.5), sharex=True)
    ax = axes[0]
    ax.plot(t, tk["x"], lw=0.7, label="x")
    ax.plot(t, tk["y"], lw=0.7, label="y")
    ax.plot(t, tk["target_x"], "k--", lw=0.6, label="target x")
    ax.set_ylabel("spot [px]")
    axes[1].plot(t, tk["cmd_x"], lw=0.7, label="cmd x")
    axes[1].plot(t, tk["cmd_y"], lw=0.7, label="cmd y")
    lim = data.cfg.device.voltage_limits_v
    for v in (lim.x.min, lim.x.max):
        axes[1].axhline(v, color="r", lw=0.5, ls=":")
    axes[1].set_ylabel("command [V]")
    axes[2].plot(t, tk["kp_x"], lw=0.9, label="P x")
    axes[2].plot(t, tk["kp_y"], lw=0.9, label="P y")
    axes[2].set_ylabel("gain P [V/px]")
    axes[2].set_xlabel("time since scenario start [s]")
    for f in data.faults:
        a, b = (f["t_ns"] - t0) / 1e9, (f["end_ns"] - t0) / 1e9
        for x in axes:
            if b > a:
                x.axvspan(a, b, color="tab:red", alpha=0.15)
            else:
                x.axvline(a, color="tab:red", lw=1.0)
        axes[0].annotate(f["kind"], (a, 1.0), xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                         va="top", ha="right", color="tab:red")
    colours = {"link": "tab:blue", "device": "tab:purple", "recovery": "tab:green"}
    for e in data.events:
        if e["kind"] in colours:
            for x in axes:
                x.axvline((e["t_ns"] - t0) / 1e9, color=colours[e["kind"]], lw=0.6, ls="--")
    for x in axes:
        x.legend(loc="upper right", fontsize=7)
        x.grid(alpha=0.3)
    fig.suptitle(f"{data.scenario.name}: faults shaded red; link (blue), device (purple), recovery (green) events")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
