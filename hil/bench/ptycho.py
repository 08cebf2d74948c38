"""`edgetune bench ptycho`: our probe-known reconstruction (controller.modes.ptycho.recon) vs pty-chi's
autodiff engine (hil/bench/ptychi_peer.py, in its own venv: make ptychi-env), on the same data.

A batch of MoS₂ samples (firmware_sim.ptycho.mos2, the "report" split's first keys), each with its own random
grid positions and Poisson counts (keyed by the sample's key); the same positions, iterations and cores (N torch threads) on both
sides. Ours reconstructs the batch at once (torch, float32) and, as the edge does, one sample at a time
(numpy); pty-chi reconstructs one sample after the other in a subprocess of its venv's python, which times
its own set-up (import, task building) apart from its work. `speedup` is the ratio of reconstructions per
second of work alone; `rel_diff` the largest relative L2 difference of the phases over the scanned field
(means removed); `ssim_truth` each side's mean SSIM to the true phase (learner.ptycho.metrics).

pty-chi's step (`peer_steps`) is ours, converted, not tuned. Its loss is the MEAN of (√I_model − √I)² over the
K·N² detector pixels in counts, i.e. dose/(K·N²) × our L; its forward model then rescales the object's gradient
like ePIE (forward_models.scale_gradients: × K·N²/max|P_peer|², and ÷ N² for its unnormalised FFT), and an SGD step
η on a complex object of modulus 1 moves the phase by −η × the gradient's tangential part. Together its step moves
φ by −η/max|P|² · ∂L/∂φ, ours by −α/max_r(Σ_p|P(r − R_p)|²) · ∂L/∂φ: η = α · max|P|² / max_r(Σ_p|P|²) takes
our α = recon.STEP. `conventions` checks it on noise-free data of a "selection" key (never a reported one): from
the true object the loss is ≈ 0 and the phase stays put; from zero phase, η × 0.5, 1 and 2 show that × 1 is the
one that follows ours.

`python -m hil.bench.ptycho OUT.npz` writes the peer reference that tests/integration/test_bench_ptycho.py checks
ours against without pty-chi (REFERENCE: the first "report" key, its positions, the peer's scanned field).
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from controller.modes.ptycho import recon
from controller.modes.ptycho.optics import DEFOCUSED_A, Optics, pattern, probe, window_at
from firmware_sim.ptycho.detector import counts
from learner.ptycho import metrics
from firmware_sim.ptycho import mos2

PTYCHI_PYTHON = Path(__file__).resolve().parents[2] / ".venv-ptychi" / "bin" / "python"
PEER = Path(__file__).with_name("ptychi_peer.py")
PEER_TIMEOUT_S = 3600.0
REFERENCE = {"positions": 250, "iterations": 5, "defocus_A": DEFOCUSED_A, "seed": 0}  # the committed peer reference


def batch(optics: Optics, keys: list[int], positions: int, seed: int, noise: bool = True) -> dict[str, np.ndarray]:
    """MoS₂ samples' true phases (B, n, n), positions (B, K, 2) and centred counts (B, K, N, N): Poisson counts
    keyed by the sample's key, or (``noise`` False) their expectation."""
    rng = np.random.default_rng(seed)
    wave = probe(optics)
    truths, where, patterns = [], [], []
    for key in keys:
        truth = mos2.draw_phase(key, optics)
        flat = rng.choice(optics.grid ** 2, positions, replace=False)
        pos = np.stack(np.unravel_index(flat, (optics.grid, optics.grid)), 1)
        truths.append(truth)
        where.append(pos)
        patterns.append(np.stack([counts(wave, truth, (int(i), int(j)), optics.dose, key) if noise else
                                  pattern(wave, window_at(truth, (int(i), int(j)), optics.window), optics.dose)
                                  for i, j in pos]))
    return {"keys": np.array(keys), "truth": np.stack(truths), "positions": np.stack(where),
            "patterns": np.stack(patterns)}


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


def peer_steps(optics: Optics, positions: np.ndarray, step: float = recon.STEP) -> np.ndarray:
    """pty-chi's SGD step per sample that is our step α = ``step`` (module doc): (B,)."""
    intensity = np.abs(probe(optics)) ** 2
    size = optics.object_px ** 2
    peaks = [np.bincount(recon.window_indices(p, optics.object_px, optics.window).ravel(),
                         weights=np.tile(intensity.ravel(), len(p)), minlength=size).max() for p in positions]
    return step * intensity.max() / np.array(peaks)


def peer(optics: Optics, sample: dict[str, np.ndarray], iterations: int, threads: int, step: float = recon.STEP,
         phase_only: bool = True, start: np.ndarray | None = None) -> dict[str, Any]:
    """pty-chi on the batch in its venv (module doc, ptychi_peer.py); ``start`` the initial phases (default 0)."""
    if not PTYCHI_PYTHON.exists():
        raise FileNotFoundError(f"{PTYCHI_PYTHON} is missing: run `make ptychi-env`")
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        extra = {} if start is None else {"start": start}
        np.savez(inp, patterns=sample["patterns"], positions=sample["positions"], probe=probe(optics),
                 dose=optics.dose, object_px=optics.object_px, iterations=iterations,
                 steps=peer_steps(optics, sample["positions"], step), phase_only=phase_only, threads=threads, **extra)
        t0 = time.perf_counter()
        subprocess.run([str(PTYCHI_PYTHON), str(PEER), str(inp), str(out)], check=True, capture_output=True,
                       timeout=PEER_TIMEOUT_S)
        wall_s = time.perf_counter() - t0
        r = np.load(out)
        return {"phase": r["phase"], "magnitude": r["magnitude"], "loss": r["loss"], "setup_s": float(r["setup_s"]),
                "work_s": float(r["work_s"]), "wall_s": wall_s, "version": str(r["ptychi_version"])}


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
    sample = batch(optics, mos2.keys("report", samples), positions, seed)
    data = measured(optics, sample["positions"], sample["patterns"])
    phases, t = ours(optics, data, iterations)
    out: dict[str, Any] = {
        "samples": samples, "positions": positions, "iterations": iterations, "defocus_A": defocus_A,
        "threads": n, "seed": seed, "device": "cpu", "keys": sample["keys"].tolist(),
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
                          steps=peer_steps(optics, sample["positions"]).tolist(), ssim_truth=float(np.mean([metrics.ssim(p, s, optics)
                                                                   for p, s in zip(r["phase"], sample["truth"])])))
    out["speedup"] = out["ours"]["recon_per_s"] / out["ptychi"]["recon_per_s"]
    out["rel_diff"] = rel_diff(phases, r["phase"], optics)
    return out


def conventions(defocus_A: float = DEFOCUSED_A, positions: int = 250, iterations: int = 5, seed: int = 7,
                factors: tuple[float, ...] = (0.5, 1.0, 2.0)) -> dict[str, Any]:
    """The peer's check on noise-free data of the first "selection" key (module doc), 1 thread: its loss (in our
    units, per iteration) and drift from the true object; from zero, each step factor's phase difference to ours
    and both SSIMs to the truth."""
    torch.set_num_threads(1)
    optics = Optics(defocus_A=defocus_A)
    sample = batch(optics, mos2.keys("selection", 1), positions, seed, noise=False)
    truth = sample["truth"]
    ph, _ = ours(optics, measured(optics, sample["positions"], sample["patterns"]), iterations)
    still = peer(optics, sample, iterations, 1, start=truth)
    per_pixel = positions * optics.window ** 2 / optics.dose  # the peer's mean loss [counts] → our L
    sweep = {}
    for f in factors:
        r = peer(optics, sample, iterations, 1, step=f * recon.STEP)
        sweep[f] = {"rel_diff_to_ours": rel_diff(r["phase"], ph, optics),
                    "ssim_truth": metrics.ssim(r["phase"][0], truth[0], optics)}
    return {"from_truth": {"loss": (still["loss"][0] * per_pixel).tolist(),
                           "rel_drift": rel_diff(still["phase"], truth, optics)},
            "ours_ssim_truth": metrics.ssim(ph[0], truth[0], optics), "step_factor": sweep}


def write_reference(path: Path) -> None:
    """The peer reference (module doc): key, positions, iterations, defocus and pty-chi's scanned field (float32)."""
    torch.set_num_threads(1)
    optics = Optics(defocus_A=REFERENCE["defocus_A"])
    sample = batch(optics, mos2.keys("report", 1), REFERENCE["positions"], REFERENCE["seed"])
    r = peer(optics, sample, REFERENCE["iterations"], 1)
    np.savez_compressed(path, key=sample["keys"][0], positions=sample["positions"][0].astype(np.int16),
                        iterations=REFERENCE["iterations"], defocus_A=REFERENCE["defocus_A"],
                        phase=metrics.field(r["phase"][0], optics).astype(np.float32), ptychi_version=r["version"])


if __name__ == "__main__":
    write_reference(Path(sys.argv[1]))
