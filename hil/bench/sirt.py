"""`edgetune bench sirt`: batched torch SIRT (ours) vs ASTRA's CPU SIRT, the same episodes on the same cores.

Each episode reconstructs a phantom from its own random set of grid angles (ASTRA's 'linear' = Joseph
projector is the model of controller.modes.ct.tomo, so the reconstructions agree to float rounding).
Both sides get the same batch and the same cores, in two runs:
  - N cores (N = torch's thread count): ours with N threads, ASTRA (single-threaded) in N worker processes;
  - one core: ours with 1 thread, ASTRA in 1 process.
Each side's set-up is timed apart from its work and reported as `setup_s`: ours the system matrix
(all grid angles) and the batch's operators (learner.ct.sirt_torch), ASTRA the worker pool's start and
its geometries, projectors and data objects (hil.bench.astra_sirt). `speedup` and `speedup_1thread`
are ratios of reconstructions per second of work alone.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from controller.modes.ct import tomo
from firmware_sim.ct.phantoms import make_phantoms
from hil.bench import astra_sirt
from learner.ct.sirt_torch import BatchSIRT


def _ours(solver: BatchSIRT, sino: torch.Tensor, mask: torch.Tensor, iterations: int,
          threads: int) -> tuple[np.ndarray, dict[str, float]]:
    """Our reconstructions of the batch with `threads` torch threads: (recons, timings)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        ops = solver.operators(mask)
        _sync(solver)
        t1 = time.perf_counter()
        recons = solver.reconstruct(sino, ops, iterations)
        _sync(solver)
        t2 = time.perf_counter()
    finally:
        torch.set_num_threads(saved)
    return recons.cpu().numpy(), {"operators_s": t1 - t0, "work_s": t2 - t1}


def _sync(solver: BatchSIRT) -> None:
    if solver.device.type == "cuda":
        torch.cuda.synchronize()


def _side(setup_s: float, work_s: float, batch: int, **detail: Any) -> dict[str, Any]:
    return {"recon_per_s": batch / work_s, "setup_s": setup_s, "work_s": work_s, **detail}


def _rel_diff(ours: np.ndarray, ref: np.ndarray) -> float:
    """Largest relative L2 difference over the batch."""
    return max(float(np.linalg.norm(a - b) / np.linalg.norm(b)) for a, b in zip(ours, ref))


def run(size: int = 239, angles: int = 20, iterations: int = 150, batch: int = 8,
        device: str | None = None, seed: int = 0, threads: int | None = None) -> dict[str, Any]:
    """The benchmark's report (see the module doc); without astra-toolbox, ours only."""
    if threads:
        torch.set_num_threads(threads)
    n = torch.get_num_threads()
    if batch < n:
        raise ValueError(f"batch {batch} < {n} threads: ASTRA would get fewer processes than we get threads")
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    solver = BatchSIRT(size, device=device)  # builds (or takes from the cache) the system matrix
    matrix_s = time.perf_counter() - t0
    cpu = solver if solver.device.type == "cpu" else BatchSIRT(size, device="cpu")
    mask = np.zeros((batch, solver.n_angles), bool)
    for b in range(batch):
        mask[b, rng.choice(solver.n_angles, angles, replace=False)] = True
    sino = solver.project(torch.from_numpy(make_phantoms(batch, size, seed=seed).images))
    if solver.device.type == "cuda":
        solver.reconstruct(sino[:1], torch.from_numpy(mask[:1]), iterations=2)  # warm-up (CUDA init)
    ours, t = _ours(solver, sino, torch.from_numpy(mask), iterations, n)
    _, t1 = _ours(cpu, sino.cpu(), torch.from_numpy(mask), iterations, 1)
    out: dict[str, Any] = {
        "size": size, "angles": angles, "iterations": iterations, "batch": batch, "device": str(solver.device),
        "threads": n, "seed": seed,
        "ours": _side(matrix_s + t["operators_s"], t["work_s"], batch, system_matrix_s=matrix_s,
                      operators_s=t["operators_s"]),
        "ours_1thread": _side(matrix_s + t1["operators_s"], t1["work_s"], batch, system_matrix_s=matrix_s,
                              operators_s=t1["operators_s"], device="cpu"),
    }
    try:
        import astra  # noqa: F401
    except ImportError as exc:
        out.update(astra={"error": f"astra-toolbox unavailable: {exc}"}, astra_1process=None, speedup=None,
                   speedup_1thread=None, rel_diff=None)
        return out
    grid = tomo.angle_grid(solver.n_angles)
    sinos = [s[m] for s, m in zip(sino.cpu().numpy(), mask)]
    angle_sets = [grid[m] for m in mask]
    for key, procs in (("astra", n), ("astra_1process", 1)):
        r = astra_sirt.sirt_batch(sinos, angle_sets, size, iterations, procs)
        out[key] = _side(r.setup_s, r.work_s, batch, processes=procs, **r.detail)
        if key == "astra":
            out["rel_diff"] = _rel_diff(ours, r.recons)
    out["speedup"] = out["ours"]["recon_per_s"] / out["astra"]["recon_per_s"]
    out["speedup_1thread"] = out["ours_1thread"]["recon_per_s"] / out["astra_1process"]["recon_per_s"]
    return out
