"""Choose the run to ship among training seeds, on the selection split only, and bundle it.

Each run is scored on the selection split (its own training families × the four noise models,
`per_cell` samples each at SELECTION_SEED; never the report or private samples) by the objective it was
trained for, the paper's reward PSNR − b·angles, averaged over the samples: this ranks Algorithm 2
and Algorithm 1 runs alike (a run that never acquires an angle has no golden-ratio count to pair with). The
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

from learner.ct.env import CTBatchEnv, CTEnvConfig
from learner.ct.eval import NOISES, SELECTION_SEED, cell_seed, split_families
from learner.ct.train import load_policy, run_episodes

BUNDLED_FILES = ("policy.pt", "provenance.json", "angles.png", "reconstructions.png")


def selection_reward(agent, meta: dict, per_cell: int, device: str | None = None) -> float:
    """Mean reward PSNR − b·angles of the greedy policy over the selection cells."""
    _, families = split_families("selection", meta.get("families", "paper"))
    rewards = []
    for family in families:
        for name, (noise, frac) in NOISES.items():
            cfg = CTEnvConfig(size=int(meta["size"]), cost=float(meta["cost"]), split="val", families=(family,),
                              noise=noise, noise_frac=frac)
            env = run_episodes(agent, CTBatchEnv(cfg, per_cell, seed=cell_seed(SELECTION_SEED, family, name), device=device))
            rewards.append(np.mean(env.psnr - cfg.cost * env.n_acquired))
    return float(np.mean(rewards))


def select_and_bundle(runs: list[Path], dest: Path, per_cell: int = 30, device: str | None = None) -> dict:
    """Score `runs` on the selection split, copy the best to `dest`; returns selection.json's content."""
    names = [str(r) for r in runs]
    scores = {n: selection_reward(*load_policy(Path(n) / "policy.pt", device), per_cell, device) for n in names}
    best = max(scores, key=scores.get)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for f in BUNDLED_FILES:
        shutil.copy2(Path(best) / f, dest / f)
    prov = json.loads((dest / "provenance.json").read_text())
    if hashlib.sha256((dest / "policy.pt").read_bytes()).hexdigest() != prov["policy_sha256"]:
        raise ValueError(f"{best}/policy.pt does not match its provenance.json (changed after training?)")
    summary = {"chosen": best, "score": "mean reward PSNR − b·angles over the selection cells [dB]",
               "per_cell": per_cell, "scores": scores}
    (dest / "selection.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
