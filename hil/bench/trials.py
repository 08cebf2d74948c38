"""`edgetune bench trials APP N [TRAIN OPTIONS …]`: N training seeds one after another (one thread each) against the
same N as Ray Tune trials (`train … --train-seeds N`: an embedded Ray, or RAY_ADDRESS's cluster), wall time of each,
in one run.

The Ray side is timed as a user sees it: the `train … --train-seeds N` command, Ray's start and stop included.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _timed(cmd: list[str], log: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    with log.open("w") as fh:
        subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, check=True, timeout=3600)
    return time.perf_counter() - t0


def bench_trials(app: str, seeds: int, options: list[str]) -> dict:
    """Wall seconds of `edgetune train APP OPTIONS --seed k` for k < seeds in sequence and of the same seeds with
    --train-seeds; the ratio sequential / Ray."""
    base = [sys.executable, "-m", "hil.cli", "train", app, *options]
    with tempfile.TemporaryDirectory(prefix="bench-trials-") as tmp:
        root = Path(tmp)
        load0 = os.getloadavg()
        each = [_timed([*base, "--seed", str(k), "--out", str(root / "seq" / f"seed{k}")], root / f"seq{k}.log")
                for k in range(seeds)]
        ray_s = _timed([*base, "--seed", "0", "--train-seeds", str(seeds), "--out", str(root / "ray")], root / "ray.log")
        load1 = os.getloadavg()
    sequential = sum(each)
    return {"command": ["edgetune", "train", app, *options], "seeds": seeds, "cpus": os.cpu_count(),
            "ray_address": os.environ.get("RAY_ADDRESS"), "sequential_s": round(sequential, 1),
            "sequential_each_s": [round(t, 1) for t in each], "ray_s": round(ray_s, 1),
            "speedup": round(sequential / ray_s, 2), "loadavg_before": load0, "loadavg_after": load1}

