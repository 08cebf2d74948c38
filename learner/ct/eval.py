"""Evaluation of CT angle-selection policies (paper §5.4, Table 1).

For each shape and noise model, on validation phantoms (rotations never seen in training): the
policy's angle count and PSNR (greedy: argmax angle, stop when π_ter ≥ 0.5), and the PSNR of
golden-ratio angles (snapped to the grid) at the same count on the same phantoms with the same noise
model. Optionally the angle counts of an Algorithm 1 (naive) policy at 5 % noise, and custom images
(a folder of .npy arrays: square, finite, within [0, 1], any size, resampled to the policy's size).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from controller.modes.ct import tomo
from firmware_sim.ct.phantoms import SHAPES
from learner.ct.env import CUSTOM, CTBatchEnv, CTEnvConfig
from learner.ct.train import run_episodes

NOISES = {"gaussian 3%": ("gaussian", 0.03), "gaussian 5%": ("gaussian", 0.05),
          "gaussian 7%": ("gaussian", 0.07), "poisson": ("poisson", 0.05)}


def load_custom(folder: Path, size: int) -> tuple[np.ndarray, list[str]]:
    """Images (M, size, size) float32 from folder/*.npy, and one message per file that was skipped."""
    from skimage.transform import resize

    images, skipped = [], []
    for f in sorted(Path(folder).glob("*.npy")):
        try:
            a = np.load(f, allow_pickle=False)
        except (OSError, ValueError) as exc:
            skipped.append(f"{f.name}: unreadable ({exc})")
            continue
        if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 3 or not np.issubdtype(a.dtype, np.floating):
            skipped.append(f"{f.name}: not a square float image (shape {a.shape}, dtype {a.dtype})")
        elif not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1:
            skipped.append(f"{f.name}: values must be finite and within [0, 1]")
        else:
            images.append(np.clip(resize(a, (size, size), anti_aliasing=True), 0, 1).astype(np.float32))
    return (np.stack(images) if images else np.zeros((0, size, size), np.float32)), skipped


def _stats(x: np.ndarray) -> tuple[float, float]:
    return float(np.mean(x)), float(np.std(x))


def _cell(agent, cfg: CTEnvConfig, n: int, seed: int, device: str | None, shape: str,
          noise: str, images: np.ndarray | None = None) -> dict:
    env = run_episodes(agent, CTBatchEnv(cfg, n, seed=seed, device=device, images=images))
    counts, rl = env.n_acquired.copy(), env.psnr.copy()
    gr_env = CTBatchEnv(cfg, n, seed=seed, device=device, images=images)  # same phantoms (same seed)
    gr = gr_env.scan([tomo.to_grid_index(tomo.golden_ratio_angles(max(int(k), 1)), cfg.n_angles) for k in counts])
    (am, asd), (rm, rsd), (gm, gsd) = _stats(counts), _stats(rl), _stats(gr)
    return {"shape": shape, "noise": noise, "angles_mean": am, "angles_std": asd, "rl_psnr_mean": rm,
            "rl_psnr_std": rsd, "gr_psnr_mean": gm, "gr_psnr_std": gsd, "episodes": n}


def markdown(result: dict) -> str:
    """The cells as a table (mean ± std over the phantoms), the custom images skipped, then Algorithm 1's
    angle counts if it ran."""
    lines = ["| shape | noise | angles | RL PSNR [dB] | golden ratio PSNR [dB] | RL − golden ratio [dB] |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {c['shape']} | {c['noise']} | {c['angles_mean']:.1f} ± {c['angles_std']:.1f} | "
              f"{c['rl_psnr_mean']:.2f} ± {c['rl_psnr_std']:.2f} | {c['gr_psnr_mean']:.2f} ± {c['gr_psnr_std']:.2f} | "
              f"{c['rl_psnr_mean'] - c['gr_psnr_mean']:+.2f} |" for c in result["cells"]]
    if result.get("custom_skipped"):
        lines += ["", "Skipped: " + "; ".join(result["custom_skipped"])]
    naive = result.get("naive", {})
    if "error" in naive:
        lines += ["", f"Algorithm 1: {naive['error']}"]
    elif naive:
        lines += ["", "Algorithm 1 (naive), gaussian 5 %: " + "; ".join(
            f"{shape} {n['angles_mean']:.1f} ± {n['angles_std']:.1f} angles, {100 * n['at_max_fraction']:.0f} % at the maximum"
            for shape, n in naive.items())]
    return "\n".join(lines) + "\n"


def evaluate(agent, meta: dict, per_shape: int = 30, seed: int = 1, device: str | None = None,
             naive=None, custom_dir: Path | None = None) -> dict:
    size, cost = int(meta["size"]), float(meta["cost"])
    base = dict(size=size, cost=cost, split="val")
    out: dict = {"policy": {k: meta[k] for k in ("algo", "size", "cost", "episodes")}, "cells": []}
    for shape in SHAPES:
        for name, (noise, frac) in NOISES.items():
            cfg = CTEnvConfig(shapes=(shape,), noise=noise, noise_frac=frac, **base)
            out["cells"].append(_cell(agent, cfg, per_shape, seed, device, shape, name))
    if custom_dir is not None:
        images, skipped = load_custom(custom_dir, size)
        out["custom_skipped"] = skipped
        for name, (noise, frac) in NOISES.items() if len(images) else ():
            cfg = CTEnvConfig(noise=noise, noise_frac=frac, **base)
            out["cells"].append(_cell(agent, cfg, len(images), seed, device, CUSTOM, name, images))
    if naive is not None:
        out["naive"] = {}
        for shape in SHAPES:
            env = run_episodes(naive, CTBatchEnv(CTEnvConfig(shapes=(shape,), **base), per_shape, seed=seed,
                                                 device=device))
            am, asd = _stats(env.n_acquired)
            out["naive"][shape] = {"noise": "gaussian 5%", "angles_mean": am, "angles_std": asd,
                                   "psnr_mean": float(env.psnr.mean()),
                                   "at_max_fraction": float(np.mean(env.n_acquired >= env.cfg.max_angles))}
    return out
