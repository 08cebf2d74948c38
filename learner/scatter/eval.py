"""Evaluation of transceiver designs (issue #22 §3; paper Table 1), the non-learned part.

A cell is (dataset, Born order). Its scatterer sets (`scatterer_sets`):
- report: the scatterers every method is scored on, the same for all (paired): the family's "report" split, or
  a user's folder of .npy maps (dataset "custom", firmware_sim/scatter/scatterers.load_folder);
- selection: where every choice is made — each method's λ and its variant (the fixed frequency of random_angle
  and uniform_angle): the family's "selection" split; for the private family and custom maps, which have no
  selection split of their own, the training families' selection splits in equal shares;
- train: where best_fixed picks its plan (the family's "train" split; the training families' otherwise).
Per method the grid LAM_GRID × variants is run on the selection set and the pair of least mean final MSE kept
(the whole table is in the cell's "tuning"); then the method runs once on the report set. best_fixed scores its
candidates at uniform_cycling's tuned λ (itself a candidate), then tunes its own λ. The oracle (best of N random
designs by the true η) uses random_both's tuned λ: its candidates are random_both designs. d_optimal_weighted
(gains per scan and step: the costliest design) takes d_optimal's tuned λ and candidate angles every 2°.

Methods plug in by name (`Method`): the baselines here (random_angle, uniform_angle, uniform_cycling,
random_both, d_optimal, d_optimal_weighted, best_fixed, oracle) and the learned designers the caller passes
(learn_both, learn_angle, learn_frequency). A method's designer is made per run from the recipe and its variant.

A cell (JSON): {"dataset", "order", "n", "budget", "scatterers", "iterations", "final_iterations",
"mse": {method: mean}, "mse_ci95": {method: 95 % CI half-width}, "psnr": {method: mean PSNR, MAX = 4096},
"paired_reference", "paired": {method: {mean, ci95}} (reference minus method, per scatterer: learn_both when
present, else uniform_cycling), "lam": {method: λ}, "variant": {method: variant}, "tuning": {method: {"f=…,
lam=…": selection MSE}}, "best_fixed_plan", "seconds": {method: report-run CPU/GPU wall time},
"paper_setting": the paper's own setting — the Table 1 methods present at λ = PAPER_LAM, untuned (each at its
tuned variant) — {"lam", "mse", "mse_ci95", "psnr"}}. "zero" is the zero image (η̂ ≡ 0): MSE = mean η².
"""
from __future__ import annotations

import hashlib
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from controller.policy.manifest import file_sha256
from firmware_sim.scatter import scatterers as S
from learner.scatter import designs as D
from learner.scatter.batched import Tables
from learner.scatter.episode import Designer, Recipe, run
from learner.scatter.metrics import paired, psnr, summary

LAM_GRID = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
PAPER_LAM = 1e-3  # the authors' λ
TABLE1 = ("learn_both", "random_angle", "uniform_angle", "learn_angle", "learn_frequency")
FREQ_VARIANTS = tuple({"freq": f} for f in range(D.N_FREQ))
WEIGHTED_STRIDE = 2  # the re-weighted D-optimal design's candidate angles [deg] (its gains are per scan: costly)


@dataclass(frozen=True)
class Method:
    """A design by name: ``make(recipe, **variant)`` builds its designer for one run."""

    name: str
    make: Callable[..., Designer]
    variants: tuple[dict, ...] = ({},)
    identity: str = ""  # what else fixes its designs (a policy's sha256, a frozen plan): part of the cache key
    lam_from: str | None = None  # take this earlier method's tuned λ instead of tuning its own (costly designs)


def baselines(tables: Tables) -> list[Method]:
    """The non-learned designs tuned on the selection set (best_fixed and the oracle are added by evaluate_cell)."""
    return [Method("random_angle", lambda r, freq: D.random_angle(freq), FREQ_VARIANTS),
            Method("uniform_angle", lambda r, freq: D.uniform_angle(freq), FREQ_VARIANTS),
            Method("uniform_cycling", lambda r: D.uniform_cycling()),
            Method("random_both", lambda r: D.random_both()),
            Method("d_optimal", lambda r: D.DOptimal(tables, "flat")),
            Method("d_optimal_weighted", lambda r: D.DOptimal(tables, "weighted", stride=WEIGHTED_STRIDE),
                   identity=f"stride {WEIGHTED_STRIDE}", lam_from="d_optimal")]


@dataclass(frozen=True)
class Sets:
    """A cell's scatterers (module doc), each (B, n, n)."""

    dataset: str
    report: torch.Tensor
    selection: torch.Tensor
    train: torch.Tensor
    names: list[str] = field(default_factory=list)  # custom maps' file names


def _mix(split: str, count: int, n: int) -> np.ndarray:
    """``count`` scatterers of the training families' ``split``, in equal shares (family f takes indices f, f + F, …)."""
    fams = S.FAMILIES
    return np.stack([S.scatterer(fams[i % len(fams)], split, i // len(fams), n) for i in range(count)])


def scatterer_sets(dataset: str, n: int, *, report: int, selection: int, train: int,
                   custom_dir: str | Path | None = None) -> Sets:
    """The report, selection and train sets of a dataset: a family of scatterers.ALL_FAMILIES or "custom"."""
    names: list[str] = []
    if dataset == "custom":
        if custom_dir is None:
            raise ValueError("the custom dataset needs a folder of .npy maps (--scatterers DIR)")
        names, rep = S.load_folder(custom_dir, n)
    elif dataset in S.ALL_FAMILIES:
        rep = S.batch(dataset, "report", range(report), n)
    else:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {S.ALL_FAMILIES + ('custom',)}")
    own = dataset in S.FAMILIES + S.HELD_OUT
    sel = S.batch(dataset, "selection", range(selection), n) if own else _mix("selection", selection, n)
    trn = S.batch(dataset, "train", range(train), n) if own else _mix("train", train, n)
    as_t = lambda a: torch.as_tensor(a)  # noqa: E731
    return Sets(dataset, as_t(rep), as_t(sel), as_t(trn), names)


def _rng(seed: int, name: str) -> np.random.Generator:
    """The designer randomness of a method: the same for every λ and variant (paired comparisons)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _final_mse(method: Method, variant: dict, eta: torch.Tensor, cfg: "CellConfig", lam: float) -> np.ndarray:
    """(B,) final MSE of one method's scans of ``eta`` at a λ (from ``cfg.cache`` when it was run before with
    the same scatterers, recipe, method, variant, seed and grid)."""
    recipe = replace(cfg.recipe, lam=lam)
    path = None
    if cfg.cache is not None:
        key = hashlib.sha256(eta.double().cpu().numpy().tobytes())
        key.update(repr((recipe, method.name, method.identity, sorted(variant.items()), cfg.seed, cfg.budget,
                         cfg.tables.n, str(cfg.tables.dtype), cfg.oracle_designs)).encode())
        path = Path(cfg.cache) / f"{method.name}-{key.hexdigest()[:24]}.npy"
        if path.exists():
            return np.load(path)
    _, errors = run(method.make(recipe, **variant), eta, tables=cfg.tables, recipe=recipe,
                    rng=_rng(cfg.seed, method.name), budget=cfg.budget)
    final = errors[:, -1].double().cpu().numpy()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path.with_suffix(".tmp.npy"), final)
        path.with_suffix(".tmp.npy").replace(path)
    return final


@dataclass(frozen=True)
class CellConfig:
    """How a cell is run: the tables (grid, device), the recipe (order, iterations; its λ is tuned), the λ grid."""

    tables: Tables
    recipe: Recipe
    lam_grid: tuple[float, ...] = LAM_GRID
    budget: int = D.spec.BUDGET
    seed: int = 0
    fixed_candidates: int = 16  # random candidates of best_fixed (besides the uniform and cycling ones)
    oracle_designs: int = D.ORACLE_DESIGNS
    cache: Path | None = None  # folder of per-run results (`_final_mse`)


def _key(variant: dict, lam: float) -> str:
    return ", ".join([f"{k}={v}" for k, v in variant.items()] + [f"lam={lam:g}"])


def tune(method: Method, selection: torch.Tensor, cfg: CellConfig) -> tuple[dict, float, dict[str, float]]:
    """(variant, λ) of least mean final MSE on the selection set, and the whole table {key: mean MSE}."""
    if not method.variants or not cfg.lam_grid:
        raise ValueError(f"{method.name}: tuning needs at least one variant and one λ")
    table, best = {}, (np.inf, method.variants[0], cfg.lam_grid[0])
    for variant in method.variants:
        for lam in cfg.lam_grid:
            m = float(_final_mse(method, variant, selection, cfg, lam).mean())
            table[_key(variant, lam)] = m
            if m < best[0]:
                best = (m, variant, lam)
    return best[1], best[2], table


def _scores(final: dict[str, np.ndarray]) -> dict:
    return {"mse": {m: float(v.mean()) for m, v in final.items()},
            "mse_ci95": {m: summary(v)["ci95"] for m, v in final.items()},
            "psnr": {m: float(psnr(v).mean()) for m, v in final.items()}}


def evaluate_cell(methods: list[Method], sets: Sets, cfg: CellConfig) -> dict:
    """One cell (module doc): tune every method on the selection set, add best_fixed and the oracle, score all
    on the report set."""
    names = [m.name for m in methods]
    if len(set(names)) != len(names) or {"best_fixed", "oracle", "zero"} & set(names):
        raise ValueError(f"method names must be unique and not best_fixed, oracle or zero: {names}")
    chosen: dict[str, tuple[Method, dict, float]] = {}
    tuning: dict[str, dict[str, float]] = {}
    for method in methods:
        if method.lam_from is not None:
            chosen[method.name] = (method, method.variants[0], chosen[method.lam_from][2])
            continue
        variant, lam, tuning[method.name] = tune(method, sets.selection, cfg)
        chosen[method.name] = (method, variant, lam)
    lam_of = lambda name: chosen[name][2] if name in chosen else cfg.recipe.lam  # noqa: E731
    plan = D.select_fixed(sets.train.to(cfg.tables.device), tables=cfg.tables,
                          recipe=replace(cfg.recipe, lam=lam_of("uniform_cycling")),
                          rng=_rng(cfg.seed, "best_fixed"), n_random=cfg.fixed_candidates, budget=cfg.budget)
    best_fixed = Method("best_fixed", lambda r: D.fixed(plan.angles, plan.freqs),
                        identity=repr((plan.angles.tolist(), plan.freqs.tolist())))
    _, lam, tuning["best_fixed"] = tune(best_fixed, sets.selection, cfg)
    chosen["best_fixed"] = (best_fixed, {}, lam)
    oracle = Method("oracle", lambda r: D.Oracle(cfg.tables, r, cfg.oracle_designs))
    chosen["oracle"] = (oracle, {}, lam_of("random_both"))

    final, seconds = {}, {}
    for name, (method, variant, lam) in chosen.items():
        start = time.perf_counter()
        final[name] = _final_mse(method, variant, sets.report, cfg, lam)
        seconds[name] = time.perf_counter() - start
    final["zero"] = sets.report.double().pow(2).mean(dim=(1, 2)).cpu().numpy()
    reference = "learn_both" if "learn_both" in final else "uniform_cycling"
    paper = {name: _final_mse(method, variant, sets.report, cfg, PAPER_LAM)
             for name, (method, variant, _) in chosen.items() if name in TABLE1}
    cell = {"dataset": sets.dataset, "order": cfg.recipe.order, "n": cfg.tables.n, "budget": cfg.budget,
            "scatterers": int(sets.report.shape[0]), "iterations": cfg.recipe.iterations,
            "final_iterations": cfg.recipe.final_iterations, **_scores(final),
            "paired_reference": reference,
            "paired": {m: paired(final[reference], v) for m, v in final.items() if m != reference}
            if reference in final else {},
            "lam": {m: c[2] for m, c in chosen.items()}, "variant": {m: c[1] for m, c in chosen.items()},
            "tuning": tuning,
            "best_fixed_plan": {"angles": plan.angles.tolist(), "freqs": plan.freqs.tolist(),
                                "train_mse": plan.scores.tolist()},
            "seconds": seconds,
            "paper_setting": {"lam": PAPER_LAM, **_scores(paper)}}
    if sets.names:
        cell["names"] = sets.names
    return cell


def learned_methods(policies: list[Path], tables: Tables) -> list[Method]:
    """One method per learned mode (learn_both, learn_angle, learn_frequency) whose variants are its runs
    ({"run": i, "policy": sha256 prefix of its policy.pt}, e.g. training seeds): the selection set picks the run to
    ship, as it picks λ."""
    from learner.scatter.policy import PolicyDesigner
    from learner.scatter.train import load_policy

    runs: dict[str, list[tuple]] = {}
    for path in policies:
        actor, meta = load_policy(path, str(tables.device))
        cfg = meta["config"]
        runs.setdefault(f"learn_{cfg['mode']}", []).append((actor.to(tables.device), cfg["mode"], cfg["fixed_freq"],
                                                             file_sha256(path)))

    def maker(entries: list[tuple]) -> Callable[..., Designer]:
        return lambda recipe, run, policy: PolicyDesigner(entries[run][0], tables, entries[run][1], entries[run][2])

    return [Method(name, maker(entries), tuple({"run": i, "policy": e[3][:16]} for i, e in enumerate(entries)))
            for name, entries in sorted(runs.items())]


def run_spread(cell: dict, methods: list[Method], sets: Sets, cfg: CellConfig) -> dict:
    """The report MSE of every run of each learned method with several runs, at the λ its tuning chose: the
    spread over training seeds beside the shipped run's row."""
    spread = {}
    for method in methods:
        if len(method.variants) > 1:
            per_run = [float(_final_mse(method, v, sets.report, cfg, cell["lam"][method.name]).mean())
                       for v in method.variants]
            spread[method.name] = {"per_run": per_run, **summary(np.asarray(per_run))}
    return spread


def evaluate(datasets: list[str], orders: list[int], policies: list[Path], cfg: CellConfig, *, report: int,
             selection: int, train: int, custom_dir: Path | None = None, png: Path | None = None,
             log: Callable[[str], None] = lambda msg: None) -> dict:
    """Every (dataset, order) cell with the baselines and the learned runs: {"cells": [...]}; with ``png`` the
    shipped learned design's and uniform_cycling's scans of three report scatterers per cell."""
    from learner.scatter import plots

    learned = learned_methods(policies, cfg.tables)
    cells = []
    for dataset in datasets:
        sets = scatterer_sets(dataset, cfg.tables.n, report=report, selection=selection, train=train,
                              custom_dir=custom_dir)
        for order in orders:
            c = replace(cfg, recipe=replace(cfg.recipe, order=order))
            start = time.perf_counter()
            methods = [*baselines(c.tables), *learned]
            cell = evaluate_cell(methods, sets, c)
            cell["run_spread"] = run_spread(cell, learned, sets, c)
            cell["wall_s"] = round(time.perf_counter() - start, 1)
            cells.append(cell)
            log(f"{dataset} order {order}: " + ", ".join(f"{m} {v:.2e}" for m, v in cell["mse"].items())
                + f" ({cell['wall_s']} s)")
            if png is not None:
                png.mkdir(parents=True, exist_ok=True)
                shown = [m for m in methods if m.name in ("learn_both", "uniform_cycling")]
                for m in shown:
                    recipe = replace(c.recipe, lam=cell["lam"][m.name])
                    path = png / f"scans-{dataset}-order{order}-{m.name}.png"
                    plots.scans(m.make(recipe, **cell["variant"][m.name]), sets.report[:3], c.tables, recipe, path)
                    log(f"wrote {path}")
    return {"cells": cells}


def table(result: dict) -> str:
    """A plain-text view: MSE ± CI per method and cell, the zero image last."""
    lines = []
    for cell in result["cells"]:
        lines.append(f"{cell['dataset']}, Born order {cell['order']} ({cell['scatterers']} scatterers)")
        for m, v in sorted(cell["mse"].items(), key=lambda kv: kv[1]):
            ci = cell["mse_ci95"][m]
            lines.append(f"  {m:20s} {v:.3e} ± {ci if ci is not None else float('nan'):.1e}  PSNR {cell['psnr'][m]:.1f}")
    return "\n".join(lines)
