"""`edgetune bench ptycho`: our probe-known reconstruction (controller.modes.ptycho.recon) vs pty-chi's
autodiff engine (hil/bench/ptychi_peer.py, in its own venv: make ptychi-env), on the same data.

A batch of samples (the lattice stand-in, learner.ptycho.lattice, each rotated and shifted), each with its own
random grid positions and Poisson counts; the same positions, iterations and cores (N torch threads) on both
sides. Ours reconstructs the batch at once (torch, float32) and, as the edge does, one sample at a time
(numpy); pty-chi reconstructs one sample after the other in a subprocess of its venv's python, which times
its own set-up (import, task building) apart from its work. `speedup` is the ratio of reconstructions per
second of work alone; `rel_diff` the largest relative L2 difference of the phases over the scanned field
(means removed); `ssim_truth` each side's mean SSIM to the true phase (learner.ptycho.metrics).
"""
from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from controller.modes.ptycho import recon
from controller.modes.ptycho.optics import DEFOCUSED_A, Optics, probe
from firmware_sim.ptycho.detector import counts
from learner.ptycho import metrics
from learner.ptycho.lattice import lattice

PTYCHI_PYTHON = Path(__file__).resolve().parents[2] / ".venv-ptychi" / "bin" / "python"
PEER = Path(__file__).with_name("ptychi_peer.py")
PEER_STEP = 1.0  # pty-chi's SGD step on its object (measured: hil/bench/ptycho.py's module doc in docs)
PEER_TIMEOUT_S = 3600.0


def batch(optics: Optics, samples: int, positions: int, seed: int) -> dict[str, np.ndarray]:
    """Samples' true phases (B, n, n), positions (B, K, 2) and centred counts (B, K, N, N)."""
    rng = np.random.default_rng(seed)
    wave = probe(optics)
    truths, where, patterns = [], [], []
    for b in range(samples):
        truth = lattice(optics, angle=rng.uniform(0, np.pi / 3), shift_A=tuple(rng.uniform(0, 3.16, 2)))
        flat = rng.choice(optics.grid ** 2, positions, replace=False)
        pos = np.stack(np.unravel_index(flat, (optics.grid, optics.grid)), 1)
        truths.append(truth)
        where.append(pos)
        patterns.append(np.stack([counts(wave, truth, (int(i), int(j)), optics.dose, seed * 1000 + b)
                                  for i, j in pos]))
    return {"truth": np.stack(truths), "positions": np.stack(where), "patterns": np.stack(patterns)}


def measured(optics: Optics, positions: np.ndarray, patterns: np.ndarray) -> recon.Measured:
    """A batch's numpy float64 data (every sample has all its positions)."""
    size = optics.object_px ** 2
    idx = np.stack([recon.window_indices(p, optics.object_px, optics.window) + b * size
                    for b, p in enumerate(positions)])
    return recon.Measured(idx, recon.amplitudes(patterns.astype(np.float64), optics.dose),
                          np.ones(positions.shape[:2]))


def ours(optics: Optics, data: recon.Measured, iterations: int) -> tuple[np.ndarray, dict[str, float]]:
    """Torch float32, the whole batch at once: (phases (B, n, n), timings)."""
    t0 = time.perf_counter()
    t = recon.Measured(torch.from_numpy(data.indices), torch.from_numpy(data.amplitudes).float(),
                       torch.from_numpy(data.weights).float())
    wave = torch.from_numpy(probe(optics)).to(torch.complex64)
    start = torch.zeros(len(data.weights), optics.object_px ** 2)
    t1 = time.perf_counter()
    out = recon.reconstruct(start, wave, t, iterations)
    t2 = time.perf_counter()
    return out.numpy().reshape(-1, optics.object_px, optics.object_px), {"setup_s": t1 - t0, "work_s": t2 - t1}


def ours_numpy(optics: Optics, data: recon.Measured, iterations: int) -> dict[str, float]:
    """The edge's numpy float64, one sample after the other: timings."""
    wave = probe(optics)
    size = optics.object_px ** 2
    t0 = time.perf_counter()
    for b in range(len(data.weights)):
        one = recon.Measured(data.indices[b:b + 1] - b * size, data.amplitudes[b:b + 1], data.weights[b:b + 1])
        recon.reconstruct(np.zeros((1, size)), wave, one, iterations)
    return {"setup_s": 0.0, "work_s": time.perf_counter() - t0}


def peer(optics: Optics, sample: dict[str, np.ndarray], iterations: int, threads: int,
         step: float = PEER_STEP) -> dict[str, Any]:
    """pty-chi on the batch in its venv (module doc); positions given as probe centres in object pixels."""
    if not PTYCHI_PYTHON.exists():
        raise FileNotFoundError(f"{PTYCHI_PYTHON} is missing: run `make ptychi-env`")
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(inp, patterns=sample["patterns"], positions=sample["positions"] + optics.window // 2,
                 probe=probe(optics), dose=optics.dose, object_px=optics.object_px, origin=0.0,
                 iterations=iterations, step=step, threads=threads)
        t0 = time.perf_counter()
        subprocess.run([str(PTYCHI_PYTHON), str(PEER), str(inp), str(out)], check=True, capture_output=True,
                       timeout=PEER_TIMEOUT_S)
        wall_s = time.perf_counter() - t0
        r = np.load(out)
        return {"phase": r["phase"], "setup_s": float(r["setup_s"]), "work_s": float(r["work_s"]),
                "wall_s": wall_s, "version": str(r["ptychi_version"])}


def rel_diff(a: np.ndarray, b: np.ndarray, optics: Optics) -> float:
    """Largest relative L2 difference of the scanned fields over the batch, means removed (b the reference)."""
    def f(x: np.ndarray) -> np.ndarray:
        x = metrics.field(x, optics)
        return x - x.mean()
    return max(float(np.linalg.norm(f(x) - f(y)) / np.linalg.norm(f(y))) for x, y in zip(a, b))


def _side(timing: dict[str, float], samples: int, **detail: Any) -> dict[str, Any]:
    return {"recon_per_s": samples / timing["work_s"], **timing, **detail}


def run(samples: int = 4, positions: int = 250, iterations: int = 5, defocus_A: float = DEFOCUSED_A,
        seed: int = 0, threads: int | None = None, with_peer: bool = True) -> dict[str, Any]:
    """The benchmark's report (module doc); without the pty-chi venv, ours only (and `ptychi.error`)."""
    if threads:
        torch.set_num_threads(threads)
    n = torch.get_num_threads()
    optics = Optics(defocus_A=defocus_A)
    sample = batch(optics, samples, positions, seed)
    data = measured(optics, sample["positions"], sample["patterns"])
    phases, t = ours(optics, data, iterations)
    out: dict[str, Any] = {
        "samples": samples, "positions": positions, "iterations": iterations, "defocus_A": defocus_A,
        "threads": n, "seed": seed, "device": "cpu",
        "ours": _side(t, samples, ssim_truth=float(np.mean([metrics.ssim(p, s, optics)
                                                             for p, s in zip(phases, sample["truth"])]))),
        "ours_numpy": _side(ours_numpy(optics, data, iterations), samples),
    }
    try:
        if not with_peer:
            raise FileNotFoundError("skipped (--no-peer)")
        r = peer(optics, sample, iterations, n)
    except (FileNotFoundError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", None)
        out.update(ptychi={"error": f"{exc}" + (f": {detail.decode()[-500:]}" if detail else "")},
                   speedup=None, rel_diff=None)
        return out
    out["ptychi"] = _side({"setup_s": r["setup_s"], "work_s": r["work_s"]}, samples, version=r["version"],
                          step=PEER_STEP, ssim_truth=float(np.mean([metrics.ssim(p, s, optics)
                                                                   for p, s in zip(r["phase"], sample["truth"])])))
    out["speedup"] = out["ours"]["recon_per_s"] / out["ptychi"]["recon_per_s"]
    out["rel_diff"] = rel_diff(phases, r["phase"], optics)
    return out
