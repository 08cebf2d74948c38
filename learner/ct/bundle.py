"""Choose the run to ship among training seeds, on the selection split only, and bundle it.

Each run is scored on `eval ct --split selection` (its own training families, SELECTION_SEED; never the
report or private samples): the mean over the cells of the paired RL − golden ratio difference [dB]. The
best run's policy.pt, provenance.json (command, commit, seed, threads, sha256) and PNGs are copied to the
bundle folder with selection.json (every run's score and which one was chosen). `edgetune eval ct`
and `edgetune export` read the bundle like any run folder.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from learner.ct.eval import evaluate
from learner.ct.train import load_policy

BUNDLED_FILES = ("policy.pt", "provenance.json", "angles.png", "reconstructions.png")


def select_and_bundle(runs: list[Path], dest: Path, per_cell: int = 30, device: str | None = None) -> dict:
    """Score `runs` on the selection split, copy the best to `dest`; returns selection.json's content."""
    names = [str(r) for r in runs]
    result = evaluate({n: load_policy(Path(n) / "policy.pt", device) for n in names}, split="selection",
                      per_cell=per_cell, device=device)
    scores = {n: float(np.mean([c["runs"][n]["rl_minus_gr_mean"] for c in result["cells"]])) for n in names}
    best = max(scores, key=scores.get)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for f in BUNDLED_FILES:
        shutil.copy2(Path(best) / f, dest / f)
    prov = json.loads((dest / "provenance.json").read_text())
    if hashlib.sha256((dest / "policy.pt").read_bytes()).hexdigest() != prov["policy_sha256"]:
        raise ValueError(f"{best}/policy.pt does not match its provenance.json (changed after training?)")
    summary = {"chosen": best, "score": "mean over the selection cells of RL − golden ratio at the same count [dB]",
               "per_cell": per_cell, "scores": scores}
    (dest / "selection.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
