"""`edgetune bench sirt`: batched torch SIRT (ours) vs ASTRA's CPU SIRT, same data, same run.

Each episode reconstructs a 239 × 239 phantom from its own random set of grid angles; ours runs
the whole batch at once, ASTRA one episode at a time (its 'linear' = Joseph projector, the same
model as controller.modes.ct.tomo, so the reconstructions should agree to float rounding).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from controller.modes.ct import tomo
from firmware_sim.ct.phantoms import make_phantoms
from learner.ct.sirt_torch import BatchSIRT


def astra_sirt(sinogram: np.ndarray, angles_deg: np.ndarray, size: int, iterations: int) -> np.ndarray:
    """ASTRA CPU SIRT with the box constraint [0, 1] (same geometry and angle convention as ours)."""
    import astra

    vol = astra.create_vol_geom(size, size)
    proj = astra.create_proj_geom("parallel", 1.0, size, np.deg2rad(angles_deg))
    pid = astra.create_projector("linear", proj, vol)
    sid = astra.data2d.create("-sino", proj, sinogram)
    rid = astra.data2d.create("-vol", vol, 0.0)
    cfg = astra.astra_dict("SIRT")
    cfg.update(ProjectorId=pid, ProjectionDataId=sid, ReconstructionDataId=rid,
               option={"MinConstraint": 0.0, "MaxConstraint": 1.0})
    aid = astra.algorithm.create(cfg)
    try:
        astra.algorithm.run(aid, iterations)
        return astra.data2d.get(rid)
    finally:
        astra.algorithm.delete(aid)
        astra.data2d.delete([sid, rid])
        astra.projector.delete(pid)


def run(size: int = 239, angles: int = 20, iterations: int = 150, batch: int = 32,
        device: str | None = None, astra_episodes: int = 2, seed: int = 0, threads: int | None = None) -> dict:
    if threads:
        torch.set_num_threads(threads)  # 1 avoids OpenMP spin contention on a busy, small machine
    rng = np.random.default_rng(seed)
    solver = BatchSIRT(size, device=device)
    images = torch.from_numpy(make_phantoms(batch, size, seed=seed).images)
    mask = np.zeros((batch, solver.n_angles), bool)
    for b in range(batch):
        mask[b, rng.choice(solver.n_angles, angles, replace=False)] = True
    sino = solver.project(images)
    if solver.device.type == "cuda":
        solver.reconstruct(sino[:1], torch.from_numpy(mask[:1]), iterations=2)  # warm-up (CUDA init)
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    ops = solver.operators(torch.from_numpy(mask))
    t_build = time.perf_counter() - t0
    ours = solver.reconstruct(sino, ops, iterations)
    if solver.device.type == "cuda":
        torch.cuda.synchronize()
    t_ours = time.perf_counter() - t0  # operator build included
    out = {"size": size, "angles": angles, "iterations": iterations, "batch": batch,
           "device": str(solver.device), "threads": torch.get_num_threads(), "ours": {"recon_per_s": batch / t_ours, "build_s": t_build}}
    try:
        import astra  # noqa: F401
    except ImportError as exc:
        out.update(astra={"error": f"astra-toolbox unavailable: {exc}"}, speedup=None, rel_diff=None)
        return out
    grid = tomo.angle_grid(solver.n_angles)
    n = min(astra_episodes, batch)
    diffs, t_astra = [], 0.0
    for b in range(n):
        s = sino[b].cpu().numpy()[mask[b]]
        t0 = time.perf_counter()
        ref = astra_sirt(s, grid[mask[b]], size, iterations)
        t_astra += time.perf_counter() - t0
        diffs.append(float(np.linalg.norm(ours[b].cpu().numpy() - ref) / np.linalg.norm(ref)))
    out["astra"] = {"recon_per_s": n / t_astra, "episodes_timed": n}
    out["speedup"] = out["ours"]["recon_per_s"] / out["astra"]["recon_per_s"]
    out["rel_diff"] = max(diffs)
    return out
