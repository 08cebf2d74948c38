"""Choose the run to ship among training seeds, on the selection split only, and bundle it.

Each run is scored on the selection split (its own training families × the four noise models,
`per_cell` samples each at SELECTION_SEED; never the report or private samples) by the objective it was
trained for, the paper's reward PSNR − b·angles, averaged over the cells: this ranks Algorithm 2 and
Algorithm 1 runs alike (a run that never acquires an angle has no golden-ratio count to pair with). Only
finished runs of one kind (algorithm, training set, size, cost) compete, each with a policy.pt that still
matches its provenance.json. The bundle folder is built beside the destination and swapped in whole: it
holds the best run's policy.pt, provenance.json (command, commit, seed, threads, sha256) and PNGs, and
selection.json (every run's score and which one was chosen). `edgetune eval ct` and `edgetune export`
read it like any run folder.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from controller.policy.manifest import file_sha256
from learner.ct.env import CTBatchEnv
from learner.ct.eval import split_cells
from learner.ct.train import load_policy, run_episodes

BUNDLED_FILES = ("policy.pt", "provenance.json", "angles.png", "reconstructions.png")
KIND = ("algo", "families", "size", "cost")


def selection_reward(agent, meta: dict, per_cell: int, device: str | None = None) -> float:
    """Mean over the selection cells of the greedy policy's mean reward PSNR − b·angles."""
    rewards = [np.mean(env.psnr - cfg.cost * env.n_acquired)
               for _, _, cfg, seed in split_cells("selection", meta)
               for env in [run_episodes(agent, CTBatchEnv(cfg, per_cell, seed=seed, device=device))]]
    return float(np.mean(rewards))


def _check_run(run: Path, meta: dict) -> None:
    prov = json.loads((run / "provenance.json").read_text())
    if file_sha256(run / "policy.pt") != prov["policy_sha256"]:
        raise ValueError(f"{run}/policy.pt does not match its provenance.json (changed after training?)")
    if meta["episodes"] < meta["config"]["episodes"]:
        raise ValueError(f"{run} is unfinished: {meta['episodes']} of {meta['config']['episodes']} episodes")
    missing = [f for f in BUNDLED_FILES if not (run / f).exists()]
    if missing:
        raise ValueError(f"{run} lacks {', '.join(missing)}")


def select_and_bundle(runs: list[Path], dest: Path, per_cell: int = 30, device: str | None = None) -> dict:
    """Score `runs` on the selection split, bundle the best in `dest`; returns selection.json's content."""
    loaded = {str(r): load_policy(Path(r) / "policy.pt", device) for r in runs}
    kinds = {tuple(meta.get(k) for k in KIND) for _, meta in loaded.values()}
    if len(kinds) > 1:
        raise ValueError(f"runs of different kinds ({', '.join(KIND)}: {sorted(map(str, kinds))}) cannot compete")
    for r, (_, meta) in loaded.items():
        _check_run(Path(r), meta)
    scores = {r: selection_reward(agent, meta, per_cell, device) for r, (agent, meta) in loaded.items()}
    best = max(scores, key=scores.get)
    summary = {"chosen": best, "score": "mean reward PSNR − b·angles over the selection cells [dB]",
               "per_cell": per_cell, "scores": scores}
    dest = Path(dest)
    new, old = dest.with_name(dest.name + ".new"), dest.with_name(dest.name + ".old")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    for f in BUNDLED_FILES:
        shutil.copy2(Path(best) / f, new / f)
    (new / "selection.json").write_text(json.dumps(summary, indent=1) + "\n")
    if dest.exists():
        dest.replace(old)
    new.replace(dest)
    shutil.rmtree(old, ignore_errors=True)
    return summary
