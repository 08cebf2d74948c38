"""Evaluation of CT angle-selection policies (paper §5.4, Table 1) on fixed, seeded sample sets.

Splits (each cell's samples are fixed by the split's seed, the family and the noise model):
- "selection": the policy's own training families (`learner.ct.train.TRAINING_SETS`) at SELECTION_SEED —
  every choice (which run to ship, budgets) is made here;
- "report": Table 1's shapes (validation rotations, never trained on) and the held-out families
  (`firmware_sim.ct.objects.HELD_OUT`, never trained on) at REPORT_SEED — the published numbers;
- "private": the private held-out families (`objects.PRIVATE`), evaluated once, at the end;
and custom images (a folder of .npy arrays: square, finite, within [0, 1], any size, resampled to the
policy's size) as family "custom" in any split.

Each cell (family × noise model, `per_cell` samples) runs the policy greedily (argmax angle, stop when
π_ter ≥ 0.5) and golden-ratio angles (snapped to the grid) at every fixed count k = 0 … max_angles on the
same samples. Reported per cell and run:
- the paired difference RL − golden ratio at the same count, per sample, with its 95 % CI half-width
  (Student t; `rl_minus_gr_mean`, `rl_minus_gr_ci95`); the cell is `won` only when the CI is clear of zero;
- the stopping rule apart from the angle choice: golden ratio at the policy's mean count (rounded) and at
  the best fixed count k* = argmax_k mean PSNR_gr(k) − b·k (chosen on these samples: an upper bound for
  any fixed-count rule), each with its PSNR and reward (PSNR − b·angles) beside the policy's reward;
- `gr_psnr_by_count`: golden ratio's mean PSNR at k = 0 … max_angles (the marginal gain of an angle), and
  per run `p_stop_on_gr_by_count`: its stop head's mean probability on those golden-ratio reconstructions
  (how the stopping rule reads each noise level, on the same samples and angles).
With several runs (training seeds), `training_spread` gives per cell the mean and std over runs of
`rl_minus_gr_mean` and how many runs won the cell. Optionally the angle counts of Algorithm 1 (naive)
runs at 5 % noise on the paper's shapes (REPORT_SEED samples).
"""
from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from controller.modes.ct import tomo
from firmware_sim.ct.objects import HELD_OUT, PRIVATE
from firmware_sim.ct.phantoms import SHAPES
from learner.ct.env import CUSTOM, CTBatchEnv, CTEnvConfig
from learner.ct.train import TRAINING_SETS, run_episodes
from learner.stats import mean_ci95

NOISES = {"gaussian 3%": ("gaussian", 0.03), "gaussian 5%": ("gaussian", 0.05),
          "gaussian 7%": ("gaussian", 0.07), "poisson": ("poisson", 0.05)}
SELECTION_SEED, REPORT_SEED, PRIVATE_SEED = 7000, 9000, 11000
SPLITS = ("selection", "report", "private")


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
        elif a.max() == 0:
            skipped.append(f"{f.name}: empty (all zero)")
        else:
            images.append(np.clip(resize(a, (size, size), anti_aliasing=True), 0, 1).astype(np.float32))
    return (np.stack(images) if images else np.zeros((0, size, size), np.float32)), skipped


def split_families(split: str, training_set: str) -> tuple[int, tuple[str, ...]]:
    """(base seed, families) of a split."""
    if split == "selection":
        return SELECTION_SEED, tuple(dict.fromkeys(TRAINING_SETS[training_set]))
    if split == "report":
        return REPORT_SEED, SHAPES + HELD_OUT
    if split == "private":
        return PRIVATE_SEED, PRIVATE
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def cell_seed(base: int, family: str, noise: str) -> int:
    """The fixed seed of one cell's samples and noise (stable when families are added)."""
    ss = np.random.SeedSequence([base, zlib.crc32(family.encode()), zlib.crc32(noise.encode())])
    return int(ss.generate_state(1)[0])


def golden_ratio_curve(cfg: CTEnvConfig, n: int, seed: int, device: str | None, images: np.ndarray | None = None,
                       probes: dict[str, object] | None = None) -> tuple[np.ndarray, dict[str, list[float]]]:
    """PSNR (n, max_angles + 1) of golden-ratio scans with k = 0 … max_angles angles on the cell's n samples
    (k = 0: the empty reconstruction, where a policy that stops at once ends), and for each Algorithm 2 agent
    in `probes` its mean stop probability π_ter on those reconstructions per k: the stop head's reading of
    the same data at each noise level, apart from its own angle choice (a stop on x̂ from k angles still
    acquires the angle chosen with it: that scan ends with k + 1)."""
    env = CTBatchEnv(cfg, n, seed=seed, device=device, images=images)
    out, stop = np.empty((n, cfg.max_angles + 1)), {name: [] for name in probes or {}}
    out[:, 0] = env.reset().psnr
    for k in range(cfg.max_angles + 1):
        if k:
            out[:, k] = env.scan([tomo.to_grid_index(tomo.golden_ratio_angles(k), cfg.n_angles)] * n, new_samples=False)
        for name, agent in (probes or {}).items():
            with torch.no_grad():
                stop_logit = agent.net(env.recon[:, None].to(agent.device))[2]
            stop[name].append(round(float(torch.sigmoid(stop_logit).mean()), 4))
    return out, stop


def _policy_cell(agent, cfg: CTEnvConfig, gr: np.ndarray, seed: int, device: str | None,
                 images: np.ndarray | None) -> dict:
    env = run_episodes(agent, CTBatchEnv(cfg, len(gr), seed=seed, device=device, images=images))
    counts, rl = env.n_acquired.copy(), env.psnr.copy()
    paired = gr[np.arange(len(gr)), counts]
    diff_mean, diff_ci = mean_ci95(rl - paired)
    mean_k = int(np.rint(counts.mean()))
    b = cfg.cost
    return {"angles_mean": float(counts.mean()), "angles_std": float(counts.std()),
            "rl_psnr_mean": float(rl.mean()), "rl_psnr_std": float(rl.std()),
            "gr_psnr_mean": float(paired.mean()), "gr_psnr_std": float(paired.std()),
            "rl_minus_gr_mean": diff_mean, "rl_minus_gr_ci95": None if np.isnan(diff_ci) else diff_ci,
            "won": bool(diff_mean - diff_ci > 0),
            "rl_reward_mean": float(np.mean(rl - b * counts)),
            "gr_at_mean_count": {"angles": mean_k, "psnr_mean": float(gr[:, mean_k].mean()),
                                 "reward_mean": float(gr[:, mean_k].mean() - b * mean_k)}}


def _gr_summary(gr: np.ndarray, cost: float) -> dict:
    curve = gr.mean(axis=0)  # k = 0 … max_angles
    k = int(np.argmax(curve - cost * np.arange(len(curve))))
    return {"gr_psnr_by_count": [round(float(v), 4) for v in curve],
            "gr_best_fixed": {"angles": k, "psnr_mean": float(curve[k]), "reward_mean": float(curve[k] - cost * k)}}


def env_settings(meta: dict) -> dict:
    """The CTEnvConfig settings a policy was trained with (evaluation samples use validation rotations)."""
    return dict(size=int(meta["size"]), cost=float(meta["cost"]),
                max_angles=int(meta.get("config", {}).get("max_angles", CTEnvConfig.max_angles)), split="val")


def split_cells(split: str, meta: dict) -> list[tuple[str, str, CTEnvConfig, int]]:
    """(family, noise, environment config, seed) of every cell of a split for a policy with metadata `meta`."""
    base_seed, families = split_families(split, meta.get("families", "paper"))
    return [(family, name, CTEnvConfig(families=(family,), noise=noise, noise_frac=frac, **env_settings(meta)),
             cell_seed(base_seed, family, name)) for family in families for name, (noise, frac) in NOISES.items()]


def evaluate(runs: dict[str, tuple], split: str = "report", per_cell: int = 100, device: str | None = None,
             naive: dict[str, tuple] | None = None, custom_dir: Path | None = None,
             on_cell: Callable[[int, int], None] | None = None) -> dict:
    """runs (and naive, Algorithm 1 runs): name -> (agent, metadata) from `load_policy`, all with the same
    environment settings (and, on the selection split, training set). on_cell(done, total) reports progress.
    See the module docstring."""
    metas = [m for _, m in runs.values()]
    if any(env_settings(m) != env_settings(metas[0]) for m in metas):
        raise ValueError("runs evaluated together must share image size, cost and maximum angle count")
    if split == "selection" and len({m.get("families", "paper") for m in metas}) > 1:
        raise ValueError("the selection split is each run's own training set: evaluate runs of one training set together")
    settings = env_settings(metas[0])
    cells = [(f, noise, cfg, seed, per_cell, None) for f, noise, cfg, seed in split_cells(split, metas[0])]
    out: dict = {"split": split, "per_cell": per_cell,
                 "runs": {r: {k: m.get(k) for k in ("algo", "size", "cost", "families", "episodes")}
                          for r, (_, m) in runs.items()}}
    if custom_dir is not None:
        images, out["custom_skipped"] = load_custom(custom_dir, settings["size"])
        for name, (noise, frac) in NOISES.items() if len(images) else ():
            cfg = CTEnvConfig(noise=noise, noise_frac=frac, **settings)
            cells.append((CUSTOM, name, cfg, cell_seed(REPORT_SEED, CUSTOM, name), len(images), images))
    out["cells"] = []
    for family, noise, cfg, seed, n, images in cells:
        probes = {r: agent for r, (agent, meta) in runs.items() if meta["algo"] == "terminal"}
        gr, stop = golden_ratio_curve(cfg, n, seed, device, images, probes)
        cell = {"family": family, "noise": noise, "episodes": n, **_gr_summary(gr, cfg.cost), "runs": {
            r: {**_policy_cell(agent, cfg, gr, seed, device, images), "p_stop_on_gr_by_count": stop.get(r)}
            for r, (agent, _) in runs.items()}}
        diffs = np.array([c["rl_minus_gr_mean"] for c in cell["runs"].values()])
        cell["training_spread"] = {"rl_minus_gr_mean": float(diffs.mean()),
                                   "rl_minus_gr_std": float(diffs.std(ddof=1)) if len(diffs) > 1 else None,
                                   "runs_won": sum(c["won"] for c in cell["runs"].values()), "runs": len(diffs)}
        out["cells"].append(cell)
        if on_cell:
            on_cell(len(out["cells"]), len(cells))
    if naive:
        out["naive"] = {name: _naive_counts(agent, settings, per_cell, device) for name, (agent, _) in naive.items()}
    return out


def _naive_counts(agent, settings: dict, n: int, device: str | None) -> dict:
    """Algorithm 1's angle counts on the paper's shapes at 5 % Gaussian noise (REPORT_SEED samples)."""
    out = {}
    for shape in SHAPES:
        env = run_episodes(agent, CTBatchEnv(CTEnvConfig(families=(shape,), **settings), n,
                                             seed=cell_seed(REPORT_SEED, shape, "naive"), device=device))
        out[shape] = {"noise": "gaussian 5%", "angles_mean": float(env.n_acquired.mean()),
                      "angles_std": float(env.n_acquired.std()), "psnr_mean": float(env.psnr.mean()),
                      "at_max_fraction": float(np.mean(env.n_acquired >= env.cfg.max_angles))}
    return out


def _diff(run_cell: dict) -> str:
    """RL − golden ratio with its CI half-width (none with a single sample)."""
    ci = run_cell["rl_minus_gr_ci95"]
    return f"{run_cell['rl_minus_gr_mean']:+.2f}" + ("" if ci is None else f" ± {ci:.2f}")


def markdown(result: dict) -> str:
    """Per run: the cells as a table (paired RL − golden ratio with its 95 % CI; the stopping rule against
    golden ratio at the same mean count and at the best fixed count), then the spread over runs, the custom
    images skipped and Algorithm 1's angle counts if it ran."""
    lines = []
    for run in result["runs"]:
        lines += [f"### {run} ({result['split']} set, {result['per_cell']} samples per cell)", "",
                  "| family | noise | angles | RL PSNR | GR PSNR (same count) | RL − GR [dB] (95 % CI) | won | "
                  "reward RL | GR at mean count | GR best fixed count |", "|---|---|---|---|---|---|---|---|---|---|"]
        for c in result["cells"]:
            r, m, f = c["runs"][run], c["runs"][run]["gr_at_mean_count"], c["gr_best_fixed"]
            lines.append(
                f"| {c['family']} | {c['noise']} | {r['angles_mean']:.1f} ± {r['angles_std']:.1f} | "
                f"{r['rl_psnr_mean']:.2f} | {r['gr_psnr_mean']:.2f} | {_diff(r)} | "
                f"{'yes' if r['won'] else 'no'} | {r['rl_reward_mean']:.2f} | {m['angles']}: {m['psnr_mean']:.2f} dB, "
                f"reward {m['reward_mean']:.2f} | {f['angles']}: {f['psnr_mean']:.2f} dB, reward {f['reward_mean']:.2f} |")
        lines.append("")
    if len(result["runs"]) > 1:
        lines += ["### Over the runs", "", "| family | noise | angles per run | RL − GR per run [dB] (95 % CI) | "
                  "runs won | mean ± std over runs | reward per run | GR best fixed count: angles, reward |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in result["cells"]:
            rs, s, f = list(c["runs"].values()), c["training_spread"], c["gr_best_fixed"]
            lines.append(
                f"| {c['family']} | {c['noise']} | {' / '.join(format(r['angles_mean'], '.1f') for r in rs)} | "
                f"{' / '.join(_diff(r) for r in rs)} | {s['runs_won']}/{s['runs']} | "
                f"{s['rl_minus_gr_mean']:+.2f} ± {s['rl_minus_gr_std']:.2f} | "
                f"{' / '.join(format(r['rl_reward_mean'], '.2f') for r in rs)} | {f['angles']}, {f['reward_mean']:.2f} |")
        lines.append("")
    if result.get("custom_skipped"):
        lines += ["Skipped: " + "; ".join(result["custom_skipped"]), ""]
    naive = result.get("naive", {})
    if "error" in naive:
        lines += [f"Algorithm 1: {naive['error']}"]
    for run, counts in ({} if "error" in naive else naive).items():
        lines += [f"Algorithm 1 (naive) {run}, gaussian 5 %: " + "; ".join(
            f"{shape} {n['angles_mean']:.1f} ± {n['angles_std']:.1f} angles, {100 * n['at_max_fraction']:.0f} % at the maximum"
            for shape, n in counts.items())]
    return "\n".join(lines) + "\n"


def plot_stopping(result: dict, png: Path) -> None:
    """Per noise model (means over the families): left, golden ratio's reward PSNR − b·k over k with its best
    fixed count (dot) and each run's mean angle count (dotted); right, the runs' stop probability on those
    golden-ratio reconstructions — why a stopping rule takes fewer or more angles as the noise grows."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cost = float(next(iter(result["runs"].values()))["cost"])
    fig, (ax, ax_stop) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, noise in enumerate(NOISES):
        cells = [c for c in result["cells"] if c["noise"] == noise]
        if not cells:
            continue
        reward = np.mean([c["gr_psnr_by_count"] for c in cells], axis=0) - cost * np.arange(len(cells[0]["gr_psnr_by_count"]))
        colour = f"C{i}"
        ax.plot(reward, color=colour, label=noise)
        ax.plot(np.argmax(reward), reward.max(), "o", color=colour)
        stops = [c["runs"][r]["p_stop_on_gr_by_count"] for c in cells for r in result["runs"]]
        if any(stops):  # Algorithm 2 runs only
            ax_stop.plot(np.mean([p for p in stops if p], axis=0), color=colour, label=noise)
        for run in result["runs"]:
            ax.axvline(np.mean([c["runs"][run]["angles_mean"] for c in cells]), color=colour, ls=":", lw=1)
    ax.set(xlabel="angles k", ylabel=f"golden ratio: mean PSNR − {cost:g}·k [dB]",
           title=f"{result['split']} set: best fixed count (dots), runs' mean counts (dotted)")
    ax_stop.set(xlabel="k golden-ratio angles in the reconstruction (a stop there ends with k + 1)",
                ylabel="mean π_ter (stop probability)", ylim=(0, 1),
                title="the runs' stop head on golden-ratio reconstructions")
    ax.legend(fontsize=8)
    ax_stop.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
