"""Evaluation of adaptive scan policies against scan layouts (issue #21 §4; paper Table I).

Samples: MoS₂ samples of a split (firmware_sim.ptycho.mos2.SPLITS "selection" or "report", never trained on), or
a user's own phase maps (`load_samples`). Per cell (positions P, sub-sequences T, probe focused / 20 Å
defocused) every method scans the same `per_cell` samples (the same Poisson counts: keyed per sample and
position): `adaptive` (each run's policy, its means, no sampling noise; only runs trained with the cell's P, T,
probe and iterations), and the layouts of learner/ptycho/layouts.py (`random`, `halton`, `subgrid`, `greedy`).
Each scan is scored twice: at the environment's iterations per sub-sequence (the paper's 5), and "at
convergence": the same positions, the reconstruction run on to reference.ITERATIONS iterations in all.

A row per (cell, probe, iterations) holds the mean SSIM of each method against the full-grid reconstruction
(learner/ptycho/reference.py, cached) and against the true phase, the resolution (metrics.resolution_A: the
finest reflection resolved in at least half the samples), Q_SSIM = (SSIM_adaptive − SSIM_random) / SSIM_random
and Q_best against the best non-adaptive layout (of NON_ADAPTIVE, by mean SSIM in that row) — per sample, with
95 % CI half-widths over samples (learner.stats.mean_ci95) — and `paired` (adaptive minus each method's SSIM).
With several runs the adaptive SSIM of a sample is the mean over the runs, and `spread` gives each run's Q.
`q_vs_random` gives every method's Q against random (the baselines' margins, also without a policy).
A run is scanned in every cell of its iterations and probe, whatever P and T it trained at (one network serves
every sub-sequence size: learner/ptycho/policy.py). Dose saving (per run and probe): the policy's scan of
DOSE_LADDER × P positions in the run's T sub-sequences (150, 175, 200, 225, 250 for 250 = 5 × 50), and the fewest
positions whose mean SSIM reaches the best non-adaptive layout's at the run's P, T.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from controller.modes.ptycho import recon
from controller.modes.ptycho.optics import DEFOCUSED_A, Optics
from firmware_sim.ptycho import mos2
from learner.algos.reinforce import Chooser
from learner.ptycho import layouts, metrics, reference
from learner.ptycho.env import PtychoBatchEnv, PtychoEnvConfig, Sampler, mos2_phase, run_scan
from learner.stats import mean_ci95

CELLS = ((250, 2), (250, 3), (250, 4), (250, 5), (335, 5), (420, 5), (500, 5))  # (positions, sub-sequences): Table I
DOSE_LADDER = (0.6, 0.7, 0.8, 0.9, 1.0)  # fractions of the run's P (module doc)
PROBES = {"focused": 0.0, "defocused": DEFOCUSED_A}
NON_ADAPTIVE = ("halton", "subgrid")
SPLITS = ("selection", "report")
CUSTOM_KEY0 = 1 << 31  # custom samples' keys (detector noise, reference cache) lie above every MoS₂ split


@dataclass(frozen=True)
class SampleSet:
    name: str  # the split, or "custom"
    keys: np.ndarray  # (n,) sample keys
    sampler: Sampler


def mos2_samples(split: str, n: int) -> SampleSet:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return SampleSet(split, np.array(mos2.keys(split, n), np.int64), mos2_phase)


def load_samples(folder: Path, optics: Optics = Optics()) -> SampleSet:
    """A user's phase maps: folder/*.npy (2-D, finite, radians; pixel centres at multiples of sampling.json's
    {"pixel_A": …}), resampled by cubic splines (scipy.ndimage.map_coordinates: zoom's interpolation, with the
    exact pixel ratio) to the object pixel over the map's centred object-sized square. A map that covers less
    than the object (object_px · pixel_A Å a side) is refused (ValueError), not tiled: tiling would invent
    structure at the seams. Downsampling does not low-pass: maps should be band-limited to the object's Nyquist."""
    from scipy.ndimage import map_coordinates

    folder = Path(folder)
    try:
        pixel_A = float(json.loads((folder / "sampling.json").read_text())["pixel_A"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{folder}: needs sampling.json with a positive number {{\"pixel_A\": …}} ({exc})") from exc
    if not pixel_A > 0:
        raise ValueError(f"{folder}/sampling.json: pixel_A must be positive, got {pixel_A}")
    files = sorted(folder.glob("*.npy"))
    if not files:
        raise ValueError(f"{folder}: no .npy phase maps")
    n, ratio, maps = optics.object_px, optics.pixel_A / pixel_A, {}
    for f in files:
        a = np.load(f, allow_pickle=False)
        if a.ndim != 2 or not np.issubdtype(a.dtype, np.number) or not np.all(np.isfinite(a)):
            raise ValueError(f"{f.name}: need a finite 2-D numeric phase map, got shape {a.shape}, dtype {a.dtype}")
        if (min(a.shape) - 1) < (n - 1) * ratio:
            raise ValueError(f"{f.name}: covers {a.shape[0] * pixel_A:.1f} × {a.shape[1] * pixel_A:.1f} Å, less than "
                             f"the object's {n * optics.pixel_A:.1f} Å a side (maps are not tiled)")
        axes = [(s - 1 - (n - 1) * ratio) / 2 + ratio * np.arange(n) for s in a.shape]  # input pixel coordinates
        out = map_coordinates(np.asarray(a, np.float64), np.meshgrid(*axes, indexing="ij"), order=3)
        maps[CUSTOM_KEY0 + int(hashlib.sha256(out.tobytes()).hexdigest()[:7], 16)] = out
    return SampleSet("custom", np.array(list(maps), np.int64), lambda key, _optics: maps[int(key)])


@dataclass
class Scored:
    ssim: np.ndarray  # (n,) against the full-grid reconstruction
    ssim_truth: np.ndarray  # (n,) against the true phase
    resolution_A: float | None
    positions: list[np.ndarray] | None = None  # per sub-sequence (n, M, 2), for the picture
    field: np.ndarray | None = None  # (n, G, G)


def _half_finest(values: list[float | None]) -> float | None:
    """The finest d [Å] that at least half the values reach (None counts as unresolved)."""
    ordered = sorted(math.inf if v is None else v for v in values)
    d = ordered[math.ceil(len(ordered) / 2) - 1]
    return None if d == math.inf else float(d)


def _resolution(phases: np.ndarray, optics: Optics) -> float | None:
    """The finest reflection resolved in at least half the samples (None: none is)."""
    return _half_finest([metrics.resolution_A(p, optics) for p in phases])


def _score(phases: np.ndarray, refs: np.ndarray, truth: np.ndarray, optics: Optics) -> Scored:
    return Scored(np.array([metrics.ssim(p, r, optics) for p, r in zip(phases, refs)]),
                  np.array([metrics.ssim(p, t, optics) for p, t in zip(phases, truth)]),
                  _resolution(phases, optics))


def scan(cfg: PtychoEnvConfig, samples: SampleSet, choose: Callable, refs: np.ndarray,
         converge: bool) -> tuple[Scored, Scored | None]:
    """Scan every sample with ``choose``; scored at cfg.iterations per sub-sequence and (``converge``) run on to
    reference.ITERATIONS iterations in all."""
    env = PtychoBatchEnv(cfg, len(samples.keys), device="cpu", sampler=samples.sampler)
    with torch.no_grad():
        result = run_scan(env, choose, samples.keys)
        at_budget = _score(env.phase.numpy(), refs, env.truth, env.optics)
        at_budget.positions, at_budget.field = result.positions, result.recon
        if not converge:
            return at_budget, None
        more = max(0, reference.ITERATIONS - cfg.iterations * cfg.subsequences)
        phase = recon.reconstruct(env.phase, env.probe_t, env.measured(), more)
    return at_budget, _score(phase.numpy(), refs, env.truth, env.optics)


def references(samples: SampleSet, optics: Optics, cache_dir: Path) -> np.ndarray:
    return np.stack([reference.reference(samples.sampler(int(k), optics), int(k), optics, cache_dir)
                     for k in samples.keys])


def _ci(x: np.ndarray) -> dict:
    """Mean and 95 % CI half-width over samples (None for one sample)."""
    mean, ci = mean_ci95(x)
    return {"mean": mean, "ci95": None if np.isnan(ci) else ci}


def _q(a: np.ndarray, b: np.ndarray) -> dict:
    """Q = (SSIM_a − SSIM_b) / SSIM_b per sample, its mean and CI."""
    return _ci((a - b) / b)


def row(cell: dict, scored: dict[str, Scored], runs: dict[str, Scored], sample_name: str) -> dict:
    """One row of the table (module doc) from each method's scores and each run's adaptive scores."""
    methods = dict(scored)
    if runs:
        methods["adaptive"] = Scored(np.mean([s.ssim for s in runs.values()], 0),
                                     np.mean([s.ssim_truth for s in runs.values()], 0),
                                     _half_finest([s.resolution_A for s in runs.values()]))
    best = max(NON_ADAPTIVE, key=lambda m: scored[m].ssim.mean())
    out = {**cell, "best_non_adaptive": best,
           "q_vs_random": {m: _q(s.ssim, scored["random"].ssim) for m, s in methods.items() if m != "random"},
           "ssim": {m: float(s.ssim.mean()) for m, s in methods.items()},
           "ssim_truth": {m: float(s.ssim_truth.mean()) for m, s in methods.items()},
           "resolution_A": {m: s.resolution_A for m, s in methods.items()}}
    if sample_name == "custom":
        out["samples"] = "custom"
    a = methods.get("adaptive")
    q, qb = (_q(a.ssim, scored["random"].ssim), _q(a.ssim, scored[best].ssim)) if a else ({}, {})
    out.update(q_ssim_mean=q.get("mean"), q_ssim_ci95=q.get("ci95"), q_best_mean=qb.get("mean"),
               q_best_ci95=qb.get("ci95"),
               paired={m: _ci(a.ssim - s.ssim) for m, s in scored.items()} if a else {})
    if runs:
        out["spread"] = {r: {"q_ssim": _q(s.ssim, scored["random"].ssim)["mean"],
                             "q_best": _q(s.ssim, scored[best].ssim)["mean"]} for r, s in runs.items()}
        qs = [v["q_ssim"] for v in out["spread"].values()]
        out["spread_q_ssim_std"] = float(np.std(qs, ddof=1)) if len(qs) > 1 else None
    return out


def run_config(meta: dict) -> tuple[int, int, int, float]:
    """(positions, sub-sequences, iterations, defocus) a policy was trained with."""
    c = meta["config"]
    return int(c["positions"]), int(c["subsequences"]), int(c["iterations"]), float(c["defocus_A"])


def evaluate(runs: dict[str, tuple[torch.nn.Module, dict]], samples: SampleSet, cache_dir: Path,
             cells: tuple[tuple[int, int], ...] = CELLS, probes: tuple[str, ...] = tuple(PROBES),
             iterations: int = 5, converge: bool = True, methods: tuple[str, ...] = layouts.METHODS,
             explore: float = 0.0, log: Callable[[str], None] = print) -> tuple[dict, dict]:
    """(the result JSON, per probe the scans of the first cell with the most sub-sequences, for `plot`).
    Rows' "iterations": per sub-sequence (``iterations``), or reference.ITERATIONS for the run-on ones."""
    for name in ("random", *NON_ADAPTIVE):
        if name not in methods:
            raise ValueError(f"methods must include {name} (Q_SSIM and Q_best need it)")
    rows, pictures, dose = [], {}, {}
    wanted = {(iterations, PROBES[name]) for name in probes}
    for r, (_, meta) in runs.items():
        if run_config(meta)[2:] not in wanted:
            log(f"run {r} (iterations, defocus = {run_config(meta)[2:]}) matches no probe: not evaluated")
    for probe_name in probes:
        optics = Optics(defocus_A=PROBES[probe_name])
        t0 = time.perf_counter()
        refs = references(samples, optics, cache_dir)
        log(f"{probe_name}: {len(refs)} full-grid references in {time.perf_counter() - t0:.0f} s")
        targets = {}
        for positions, subsequences in cells:
            t0 = time.perf_counter()
            cfg = PtychoEnvConfig(positions, subsequences, iterations, optics.defocus_A)
            scans = {m: scan(cfg, samples, layouts.make(m, optics, cfg, samples.keys, explore),
                             refs, converge) for m in methods}
            # one network serves every sub-sequence size: a run is scanned in every cell of its iterations and probe
            own = {r: (p, meta) for r, (p, meta) in runs.items()
                   if run_config(meta)[2:] == (iterations, optics.defocus_A)}
            adaptive = {r: scan(cfg, samples, Chooser(p, "greedy"), refs, converge) for r, (p, _) in own.items()}
            cell = {"positions": positions, "subsequences": subsequences, "probe": probe_name}
            rows.append(row({**cell, "iterations": iterations}, {m: s[0] for m, s in scans.items()},
                            {r: s[0] for r, s in adaptive.items()}, samples.name))
            if converge:
                rows.append(row({**cell, "iterations": reference.ITERATIONS}, {m: s[1] for m, s in scans.items()},
                                {r: s[1] for r, s in adaptive.items()}, samples.name))
            if subsequences == max(t for _, t in cells) and probe_name not in pictures:
                pictures[probe_name] = {**{m: s[0] for m, s in scans.items()},
                                        **{f"adaptive {r}": s[0] for r, s in adaptive.items()}}
            targets[positions, subsequences] = max(scans[m][0].ssim.mean() for m in NON_ADAPTIVE)
            log(f"{probe_name} {positions} × {subsequences}: {len(scans) + len(adaptive)} methods × "
                f"{len(samples.keys)} samples in {time.perf_counter() - t0:.0f} s")
        dose[probe_name] = dose_saving(runs, samples, optics, iterations, refs, targets)
    train = {r: {k: meta.get(k) for k in ("config", "policy_config", "updates", "provenance")} for r, (_, meta) in runs.items()}
    return {"rows": rows, "train": train, "dose_saving": dose}, pictures


def dose_saving(runs: dict, samples: SampleSet, optics: Optics, iterations: int, refs: np.ndarray,
                targets: dict[tuple[int, int], float]) -> dict:
    """Per run (trained with this probe and iterations): mean SSIM of its scans of DOSE_LADDER × P positions in its
    T sub-sequences, and the fewest positions reaching the best non-adaptive layout's SSIM at its P, T (module doc)."""
    out = {}
    for r, (policy, meta) in runs.items():
        positions, subsequences, its, defocus = run_config(meta)
        if its != iterations or defocus != optics.defocus_A or (positions, subsequences) not in targets:
            continue
        target = targets[positions, subsequences]
        ladder = {}
        for p in DOSE_LADDER:
            s, _ = scan(PtychoEnvConfig(round(p * positions), subsequences, iterations, defocus), samples,
                        Chooser(policy, "greedy"), refs, False)
            ladder[round(p * positions)] = float(s.ssim.mean())
        reached = [p for p, v in sorted(ladder.items()) if v >= target]
        out[r] = {"target_positions": positions, "target_ssim": target,
                  "adaptive_ssim": {str(p): v for p, v in ladder.items()},
                  "fewest_positions": reached[0] if reached else None,
                  "saving": 1 - reached[0] / positions if reached else None}
    return out


def plot(pictures: dict, png_dir: Path) -> list[Path]:
    """Per probe: the first sample's reconstruction by each method, positions coloured by sub-sequence
    (the paper's Fig. 4/5)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for probe_name, by_method in pictures.items():
        fig, axes = plt.subplots(1, len(by_method), figsize=(3.2 * len(by_method), 3.6), squeeze=False,
                                 layout="constrained")
        for ax, (method, s) in zip(axes[0], by_method.items()):
            ax.imshow(s.field[0], cmap="gray")
            colours = plt.cm.tab10(np.arange(len(s.positions)) % 10)
            for t, pos in enumerate(s.positions):
                ax.scatter(pos[0, :, 1], pos[0, :, 0], s=5, color=colours[t])
            ax.set_title(f"{method}: SSIM {s.ssim[0]:.3f}", fontsize=9)
            ax.set_axis_off()
        fig.suptitle(f"{probe_name} probe, positions coloured by sub-sequence (blue: the Halton first)", fontsize=10)
        path = png_dir / f"ptycho_eval_{probe_name}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def table(result: dict) -> str:
    """The rows as a markdown table: mean SSIM per method, Q vs random and vs the best non-adaptive layout."""
    methods = [m for m in ("adaptive", *layouts.METHODS) if any(m in r["ssim"] for r in result["rows"])]
    ci = lambda mean, half: "–" if mean is None else f"{100 * mean:+.1f} %" + ("" if half is None else f" ± {100 * half:.1f}")  # noqa: E731
    lines = ["| P | T | probe | iterations | " + " | ".join(f"SSIM {m}" for m in methods)
             + " | Q_SSIM (95 % CI) | Q_best | greedy vs random | subgrid vs random |", "|---" * (len(methods) + 8) + "|"]
    for r in result["rows"]:
        qr = r["q_vs_random"]
        lines.append(f"| {r['positions']} | {r['subsequences']} | {r['probe']} | {r['iterations']} | "
                     + " | ".join(f"{r['ssim'][m]:.3f}" if m in r["ssim"] else "–" for m in methods)
                     + f" | {ci(r['q_ssim_mean'], r['q_ssim_ci95'])} | {ci(r['q_best_mean'], r['q_best_ci95'])} | "
                     f"{ci(qr['greedy']['mean'], qr['greedy']['ci95']) if 'greedy' in qr else '–'} | "
                     f"{ci(qr['subgrid']['mean'], qr['subgrid']['ci95'])} |")
    for probe_name, runs in result["dose_saving"].items():
        for run, d in runs.items():
            lines.append(f"\ndose saving ({probe_name}, {run}): target SSIM {d['target_ssim']:.3f} at "
                         f"{d['target_positions']}; adaptive {d['adaptive_ssim']}; fewest {d['fewest_positions']}")
    return "\n".join(lines) + "\n"
