"""A training run's folder, shared by the applications' `train` commands: policy.pt, checkpoint.pt and
provenance.json written atomically, the sittings of a resumed run, a resumed run's settings check, and its CSV log
cut back to the rows the checkpoint holds.

provenance.json: the last sitting's command, code commit, threads, device and torch version, the seed at the top,
every sitting (a resumed run has several), the progress counter, wall time and the sha256 of policy.pt (of the
run's artefact: `provenance` also serves runs that write something else, e.g. BAL's table.npz).
"""
from __future__ import annotations

import csv
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Iterable

import torch

from controller.policy.manifest import file_sha256


def commit() -> str:
    """The code's git commit (+ "-dirty" with uncommitted changes), or "unknown" outside a checkout."""
    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def sitting(device: torch.device | str, start: int, counter: str) -> dict:
    """One sitting of a run (taken when it starts): command, commit, threads, device, torch, where it began."""
    argv = ["edgetune", *sys.argv[1:]] if Path(sys.argv[0]).name == "edgetune" else sys.argv
    return {"command": shlex.join(argv), "commit": commit(), "threads": torch.get_num_threads(),
            "device": str(device), "torch": torch.__version__, f"from_{counter}": start}


def save(out: Path, policy: dict, checkpoint: dict, seed: int, counter: str, done: int, wall_s: float,
         sittings: list[dict]) -> None:
    """policy.pt, checkpoint.pt (+ the sittings and wall time) and provenance.json, each replaced atomically."""
    torch.save(policy, out / "policy.tmp")
    torch.save({**checkpoint, "wall_s": wall_s, "sittings": sittings}, out / "checkpoint.tmp")
    (out / "policy.tmp").replace(out / "policy.pt")
    (out / "checkpoint.tmp").replace(out / "checkpoint.pt")
    provenance(out, out / "policy.pt", seed, counter, done, wall_s, sittings)


def provenance(out: Path, artefact: Path, seed: int, counter: str, done: int, wall_s: float,
               sittings: list[dict]) -> None:
    """provenance.json (replaced atomically), with the sha256 of the run's artefact as "<stem>_sha256"."""
    prov = {**{k: v for k, v in sittings[-1].items() if not k.startswith("from_")}, "seed": seed, counter: done,
            "wall_s": round(wall_s, 1), f"{artefact.stem}_sha256": file_sha256(artefact), "sittings": sittings}
    (out / "provenance.tmp").write_text(json.dumps(prov, indent=1) + "\n")
    (out / "provenance.tmp").replace(out / "provenance.json")


def check_resumable(saved: dict, now: dict, resumable: Iterable[str]) -> None:
    """A resumed run keeps its settings except those in ``resumable``: ValueError naming what changed."""
    keys = [k for k in now if k not in set(resumable)]
    diff = [f"{k} {saved.get(k)!r} → {now[k]!r}" for k in sorted(keys) if saved.get(k) != now[k]]
    if diff:
        raise ValueError(f"a resumed run must keep its settings (changed: {', '.join(diff)})")


def keep_rows(path: Path, fields: tuple[str, ...], counter: str, done: int) -> None:
    """Keep the complete rows 1 … ``done`` of the CSV log (those the checkpoint holds; a killed run may have left
    half a row, and a resumed run writes the later ones again), replaced atomically."""
    rows = []
    for r in csv.DictReader(path.open(newline="")):
        if None in r.values() or "" in r.values() or int(r[counter]) != len(rows) + 1 or len(rows) == done:
            break
        rows.append(r)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def plot_log(log: Path, png: Path, columns: tuple[tuple[str, str], ...], x: str = "update") -> None:
    """One panel per (CSV column, axis label) of a run's log against ``x``: each row and a running mean of 20."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = list(csv.DictReader(Path(log).open()))
    xs = np.array([int(r[x]) for r in rows])
    fig, axes = plt.subplots(1, len(columns), figsize=(5 * len(columns), 3.5), layout="constrained", squeeze=False)
    for ax, (key, label) in zip(axes[0], columns):
        y = np.array([float(r[key]) for r in rows])
        ax.plot(xs, y, ".", ms=3, color="tab:blue", label=f"per {x}")
        w = min(20, len(y))
        if w:
            ax.plot(xs[w - 1:], np.convolve(y, np.ones(w) / w, "valid"), color="tab:blue", lw=1, label=f"mean of {w}")
        ax.set(xlabel=x, ylabel=label)
        ax.legend(fontsize=8)
    fig.savefig(png, dpi=100)
    plt.close(fig)
