"""ASTRA's CPU SIRT, the peer of `edgetune bench sirt`: one episode per call, or a batch over worker processes.

ASTRA's CPU SIRT is single-threaded, so N cores are given to it as N spawned worker processes, each
reconstructing its share of the batch one episode after the other. Set-up and work are timed apart:
set-up is the pool's start (spawn, `import astra`) and, in each worker, the creation of the geometries,
'linear' (Joseph) projectors and data objects of its share; work is `astra.algorithm.run` alone. A
barrier lines the workers up after creation, so the work's wall time (first start to last end, on the
system-wide monotonic clock) covers only reconstructions running side by side.

This module imports numpy and astra only (a worker starts without torch). `write_reference` keeps a
small ASTRA result for the test that runs without ASTRA (tests/unit/test_sirt.py).
"""
from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BARRIER_TIMEOUT_S = 600.0  # a worker waits at most this for the others (start-up, creation, its share)
_barrier: Any = None  # the pool's barrier, in each worker


@dataclass(frozen=True)
class Timed:
    """A batch's reconstructions with the wall times of set-up and work [s]."""

    recons: np.ndarray  # (B, N, N)
    setup_s: float
    work_s: float
    detail: dict[str, float]


def _create(sinogram: np.ndarray, angles_deg: np.ndarray, size: int) -> dict[str, int]:
    """ASTRA objects for one SIRT reconstruction with the box constraint [0, 1], the geometry and angle
    convention of controller.modes.ct.tomo."""
    import astra

    vol = astra.create_vol_geom(size, size)
    proj = astra.create_proj_geom("parallel", 1.0, size, np.deg2rad(angles_deg))
    ids = {"projector": astra.create_projector("linear", proj, vol),
           "sino": astra.data2d.create("-sino", proj, sinogram), "recon": astra.data2d.create("-vol", vol, 0.0)}
    cfg = astra.astra_dict("SIRT")
    cfg.update(ProjectorId=ids["projector"], ProjectionDataId=ids["sino"], ReconstructionDataId=ids["recon"],
               option={"MinConstraint": 0.0, "MaxConstraint": 1.0})
    ids["algorithm"] = astra.algorithm.create(cfg)
    return ids


def _delete(ids: dict[str, int]) -> None:
    import astra

    astra.algorithm.delete(ids["algorithm"])
    astra.data2d.delete([ids["sino"], ids["recon"]])
    astra.projector.delete(ids["projector"])


def sirt(sinogram: np.ndarray, angles_deg: np.ndarray, size: int, iterations: int) -> np.ndarray:
    """One ASTRA CPU SIRT reconstruction (size, size) from `sinogram` (angles, size)."""
    import astra

    ids = _create(sinogram, angles_deg, size)
    try:
        astra.algorithm.run(ids["algorithm"], iterations)
        return astra.data2d.get(ids["recon"])
    finally:
        _delete(ids)


def _init(barrier: Any) -> None:
    global _barrier
    _barrier = barrier
    import astra  # noqa: F401  (start-up cost, paid here)


def _ready() -> None:
    _barrier.wait(BARRIER_TIMEOUT_S)


def _share(episodes: list[tuple[np.ndarray, np.ndarray]], size: int, iterations: int) -> dict[str, Any]:
    """One worker's episodes: create all, wait for every worker, run all; times on the monotonic clock."""
    import astra

    t0 = time.monotonic()
    ids = [_create(s, a, size) for s, a in episodes]
    created = time.monotonic()
    _barrier.wait(BARRIER_TIMEOUT_S)
    start = time.monotonic()
    for i in ids:
        astra.algorithm.run(i["algorithm"], iterations)
    end = time.monotonic()
    recons = [astra.data2d.get(i["recon"]) for i in ids]
    for i in ids:
        _delete(i)
    return {"recons": recons, "create_s": created - t0, "start": start, "end": end}


def sirt_batch(sinograms: list[np.ndarray], angles_deg: list[np.ndarray], size: int, iterations: int,
               processes: int) -> Timed:
    """ASTRA SIRT of every episode in `processes` spawned workers (episode b to worker b mod processes).

    setup_s = pool start (every worker up, astra imported) + the slowest worker's object creation;
    work_s = first `algorithm.run` start to last end."""
    n = min(processes, len(sinograms))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(n)
    t0 = time.monotonic()
    with ctx.Pool(n, _init, (barrier,)) as pool:
        pool.starmap_async(_ready, [()] * n).get(BARRIER_TIMEOUT_S)  # one call per worker: all must be up
        pool_s = time.monotonic() - t0
        shares = [pool.apply_async(_share, ([(sinograms[b], angles_deg[b]) for b in range(w, len(sinograms), n)],
                                            size, iterations)) for w in range(n)]
        done = [s.get(BARRIER_TIMEOUT_S * 2) for s in shares]
    recons = np.empty((len(sinograms), size, size), np.float32)
    for w, d in enumerate(done):
        recons[w::n] = d["recons"]
    create_s = max(d["create_s"] for d in done)
    return Timed(recons, pool_s + create_s, max(d["end"] for d in done) - min(d["start"] for d in done),
                 {"pool_start_s": pool_s, "create_s": create_s})


def write_reference(path: Path, size: int = 63, n_angles: int = 12, iterations: int = 150, seed: int = 0) -> None:
    """A small ASTRA result for CI (no ASTRA there): one phantom, `n_angles` golden-ratio angles on the 1°
    grid, ASTRA's forward projection of it and ASTRA's SIRT of that sinogram (float32, .npz)."""
    import astra

    from controller.modes.ct import tomo
    from firmware_sim.ct.phantoms import make_phantoms

    phantom = make_phantoms(1, size, seed=seed).images[0].astype(np.float32)
    angles = np.sort(tomo.angle_grid()[tomo.to_grid_index(tomo.golden_ratio_angles(n_angles))])
    vol = astra.create_vol_geom(size, size)
    pid = astra.create_projector("linear", astra.create_proj_geom("parallel", 1.0, size, np.deg2rad(angles)), vol)
    try:
        sid, sino = astra.create_sino(phantom, pid)
        astra.data2d.delete(sid)
    finally:
        astra.projector.delete(pid)
    sino = sino.astype(np.float32)
    np.savez_compressed(path, phantom=phantom, angles_deg=angles, sinogram=sino, iterations=iterations,
                        recon=sirt(sino, angles, size, iterations).astype(np.float32),
                        astra_version=astra.__version__)
