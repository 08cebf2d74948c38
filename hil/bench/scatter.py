"""`edgetune bench scatter`: our scattering forward model and reconstruction vs deepinv's scattering physics
(hil/bench/deepinv_peer.py, in its own venv: make deepinv-env), on the same grid, scatterers and transceivers.

Why deepinv (deepinv.physics.Scattering) and not regpy (regpy.operators.mediumscattering): deepinv's model is ours
(contrast η on the same linspace grid, plane waves, the scattered field at receivers at a finite radius with the
same k²·(i/4)H₀⁽¹⁾ kernel, a Born operator and a full-wave Lippmann–Schwinger solve, torch); regpy's returns
far-field patterns of a periodised Vainikko solve (numpy), further from our data's convention.

A batch of `samples` scatterers (the "ellipses" family: ellipses and triangles at ‖η‖₂ = spec.NORM) and one
scan of `transceivers` distinct random angles, each with a random frequency index (seeded); the same cores
(N torch threads) on both sides, set-up timed apart. Measured:
- forward evaluations per second (one evaluation = one scan's t × t data of one scatterer, the batch at once):
  ours batched in torch (learner/scatter/batched.py, complex128 like the peer's), orders 1 and 2; deepinv's
  Born operator (= our order 1) and its full-wave LSQR solve (tolerance `tol`);
- relative differences (the largest over the batch, lower triangle r ≤ s, relative to the peer): its Born data × w
  against our order 1, w = (n/(n − 1))² its quadrature weight (1/n)² → our h² (module doc of the peer); its
  full-wave data × w against our exact dense solve and our orders 1–3 (the Born truncation error, seen by an
  independent solver; its Vico kernel assumes spacing 1/n where the grid has 1/(n − 1), part of the difference);
- reconstructions per second: `iterations` L-BFGS iterations on the same objective (controller/modes/scatter/
  recon.py, order 1, λ = `lam`) from zero on each side's own order-1 data: ours batched in torch (the whole batch)
  and the edge's scipy L-BFGS-B one scatterer after the other (its cached tables built before); the peer
  torch.optim.LBFGS (strong Wolfe) on deepinv's Born operator, one after the other; `recon_rel_diff` the largest relative difference of the results
  (different line searches: equal only at convergence).
`episode` (optional): seconds per 10-step episode of the training env's reconstruction (warm-started, `iterations`
per step and 20 final, order 2) for B = 1 and B = 16, batched torch float32.

`python -m hil.bench.scatter OUT.npz` writes the peer reference that tests/integration/test_bench_scatter.py checks
ours against without deepinv (REFERENCE: its data for the first scatterer and the scan).
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import numpy as np
import torch

from controller.modes.scatter import physics, spec
from controller.modes.scatter import recon as edge
from controller.modes.scatter.recon import EPS
from firmware_sim.scatter.scatterers import batch as scatterer_batch
from learner.scatter import recon
from learner.scatter.batched import Tables, forward

DEEPINV_PYTHON = Path(__file__).resolve().parents[2] / ".venv-deepinv" / "bin" / "python"
PEER = Path(__file__).with_name("deepinv_peer.py")
PEER_TIMEOUT_S = 3600.0
FAMILY = "ellipses"  # ellipses and triangles
REFERENCE = {"n": 32, "transceivers": 10, "seed": 0, "tol": 1e-8, "max_iter": 2000}  # the committed peer reference


def scatterers(n: int, count: int) -> np.ndarray:
    """(count, n, n): the first scatterers of the "ellipses" family's "report" split (firmware_sim/scatter)."""
    return scatterer_batch(FAMILY, "report", range(count), n)


def scan(transceivers: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct random integer angles and random frequency indices (seeded)."""
    rng = np.random.default_rng(seed)
    return (rng.choice(spec.N_ANGLES, transceivers, replace=False),
            rng.integers(0, len(spec.FREQUENCY_FACTORS), transceivers))


def numpy_data(eta: np.ndarray, angles: np.ndarray, freqs: np.ndarray, order: physics.Order) -> np.ndarray:
    """(t, t) data d[s, r] of one scatterer from physics.py (order "exact": the dense solve)."""
    n, out = eta.shape[0], np.zeros((angles.size,) * 2, dtype=complex)
    for f in np.unique(freqs):
        src = np.flatnonzero(freqs == f)
        out[src] = physics.data(eta, spec.wavenumbers(n)[f], spec.incident_direction_deg(angles[src]),
                                angles.astype(float), order)
    return out


def rel_diff(ours: np.ndarray, ref: np.ndarray) -> float:
    """Largest relative L2 difference over the batch (…, t, t), lower triangle only (ref the reference)."""
    m = edge.mask(ours.shape[-1])
    return max(float(np.linalg.norm((a - b)[m]) / np.linalg.norm(b[m]))
               for a, b in zip(ours.reshape(-1, *m.shape), ref.reshape(-1, *m.shape)))


def weight(n: int) -> float:
    """deepinv's quadrature weight (1/n)² → ours h² (peer module doc)."""
    return (n / (n - 1)) ** 2


def peer(eta: np.ndarray, angles: np.ndarray, freqs: np.ndarray, threads: int, *, lam: float, iterations: int,
         repeats: int, tol: float, max_iter: int) -> dict[str, Any]:
    """deepinv on the batch in its venv (peer module doc)."""
    if not DEEPINV_PYTHON.exists():
        raise FileNotFoundError(f"{DEEPINV_PYTHON} is missing: run `make deepinv-env`")
    n = eta.shape[-1]
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(inp, eta=eta, angles=angles.astype(float), transmitter_angles=spec.incident_direction_deg(angles),
                 freqs=freqs, wavenumbers=spec.wavenumbers(n), radius=physics.RECEIVER_RADIUS, threads=threads,
                 repeats=repeats, tol=tol, max_iter=max_iter, iterations=iterations, lam=lam, eps=EPS,
                 weight=weight(n), start=np.zeros_like(eta))
        t0 = time.perf_counter()
        subprocess.run([str(DEEPINV_PYTHON), str(PEER), str(inp), str(out)], check=True, capture_output=True,
                       timeout=PEER_TIMEOUT_S)
        wall_s = time.perf_counter() - t0
        r = dict(np.load(out))
    r["wall_s"], r["deepinv_version"] = wall_s, str(r["deepinv_version"])
    return r


def episode(n: int, batch: int, iterations: int, seed: int, final: int = 20, lam: float = 1e-6) -> float:
    """Seconds per 10-step episode (module doc): `batch` episodes at once, each its own scatterer and scan."""
    tables = Tables(n)
    eta = torch.from_numpy(scatterers(n, batch)).float()
    scans = [scan(spec.BUDGET, seed + b) for b in range(batch)]
    angles = torch.from_numpy(np.stack([a for a, _ in scans]))
    freqs = torch.from_numpy(np.stack([f for _, f in scans]))
    data = forward(tables, eta, angles, freqs, 2)
    t0 = time.perf_counter()
    x = torch.zeros_like(eta)
    for t in range(1, spec.BUDGET + 1):
        x = recon.reconstruct(tables, x, angles[:, :t], freqs[:, :t], data[:, :t, :t], order=2, lam=lam,
                              iterations=iterations)
    recon.reconstruct(tables, x, angles, freqs, data, order=2, lam=lam, iterations=final)
    return (time.perf_counter() - t0) / batch


def run(n: int = 32, samples: int = 4, transceivers: int = 10, iterations: int = 50, lam: float = 1e-6,
        seed: int = 0, threads: int | None = None, repeats: int = 3, tol: float = 1e-8, max_iter: int = 2000,
        with_peer: bool = True, with_episode: bool = False) -> dict[str, Any]:
    """The benchmark's report (module doc); without the deepinv venv, ours only (and `deepinv.error`)."""
    if threads:
        torch.set_num_threads(threads)
    cores = torch.get_num_threads()
    eta = scatterers(n, samples)
    angles, freqs = scan(transceivers, seed)
    t0 = time.perf_counter()
    tables = Tables(n, dtype=torch.complex128)
    setup_s = time.perf_counter() - t0
    e, a, f = torch.from_numpy(eta), torch.from_numpy(angles)[None].repeat(samples, 1), \
        torch.from_numpy(freqs)[None].repeat(samples, 1)
    data = {}
    side: dict[str, Any] = {"setup_s": setup_s}
    for order in (1, 2):
        data[order] = forward(tables, e, a, f, order).numpy()  # (and a warm-up)
        side[f"forward_order{order}_per_s"] = samples * repeats / timeit.timeit(
            lambda: forward(tables, e, a, f, order), number=repeats)
    t0 = time.perf_counter()
    x = recon.reconstruct(tables, torch.zeros_like(e), a, f, torch.from_numpy(data[1]), order=1, lam=lam,
                          iterations=iterations)
    side["recon_per_s"] = samples / (time.perf_counter() - t0)
    edge.Problem(n, angles, freqs, data[1][0], 1, lam)  # set-up: the edge caches its incident fields and receiver rows
    t0 = time.perf_counter()
    for b in range(samples):
        edge.reconstruct(np.zeros((n, n)), angles, freqs, data[1][b], order=1, lam=lam, iterations=iterations)
    side["recon_numpy_per_s"] = samples / (time.perf_counter() - t0)
    out: dict[str, Any] = {"n": n, "samples": samples, "transceivers": transceivers, "iterations": iterations,
                           "lam": lam, "seed": seed, "threads": cores, "device": "cpu", "angles": angles.tolist(),
                           "freqs": freqs.tolist(), "ours": side}
    if with_episode:
        out["episode_s"] = {f"B{b}_it{i}": episode(n, b, i, seed) for b in (1, 16) for i in (20, 60)}
    try:
        if not with_peer:
            raise FileNotFoundError("skipped (--no-peer)")
        r = peer(eta, angles, freqs, cores, lam=lam, iterations=iterations, repeats=repeats, tol=tol,
                 max_iter=max_iter)
    except (FileNotFoundError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", None)
        out.update(deepinv={"error": f"{exc}" + (f": {detail.decode()[-500:]}" if detail else "")}, rel_diff=None)
        return out
    w = weight(n)
    exact = np.stack([numpy_data(eta[b], angles, freqs, "exact") for b in range(samples)])
    out["deepinv"] = {"version": r["deepinv_version"], "setup_s": float(r["setup_s"]),
                      "born_per_s": samples / float(r["born_s"]), "full_per_s": samples / float(r["full_s"]),
                      "recon_per_s": samples / float(r["recon_s"]), "tol": tol}
    full3 = np.stack([numpy_data(eta[b], angles, freqs, 3) for b in range(samples)])
    out["rel_diff"] = {"born_vs_order1": rel_diff(data[1], w * r["born"]),
                       **{f"full_vs_{k}": rel_diff(v, w * r["full"]) for k, v in
                          (("exact", exact), ("order1", data[1]), ("order2", data[2]), ("order3", full3))},
                       "exact_vs_order2": rel_diff(data[2], exact)}
    out["recon_rel_diff"] = max(float(np.linalg.norm(p - q) / np.linalg.norm(q)) for p, q in zip(x.numpy(), r["recon"]))
    out["speedup"] = {"forward_order1": side["forward_order1_per_s"] / out["deepinv"]["born_per_s"],
                      "recon": side["recon_per_s"] / out["deepinv"]["recon_per_s"]}
    return out


def write_reference(path: Path) -> None:
    """The peer reference (module doc): its Born and full-wave data (complex128, deepinv's units) of the first
    scatterer, with the configuration."""
    torch.set_num_threads(1)
    cfg = REFERENCE
    eta = scatterers(cfg["n"], 1)
    angles, freqs = scan(cfg["transceivers"], cfg["seed"])
    r = peer(eta, angles, freqs, 1, lam=0.0, iterations=1, repeats=1, tol=cfg["tol"], max_iter=cfg["max_iter"])
    np.savez_compressed(path, born=r["born"][0], full=r["full"][0], angles=angles, freqs=freqs,
                        deepinv_version=r["deepinv_version"], **cfg)


if __name__ == "__main__":
    write_reference(Path(sys.argv[1]))
