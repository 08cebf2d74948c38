"""deepinv's 2-D scattering physics, the peer of `edgetune bench scatter`, run in its own venv (make deepinv-env) as
`python deepinv_peer.py IN.npz OUT.npz`: numpy, torch and deepinv only (not the project).

deepinv.physics.Scattering (deepinv 0.5.0) models the same medium: a contrast x = η on an n × n grid over
[−L/2, L/2]² (linspace, L = 1: our grid points), plane waves, the scattered field at receivers with the same
k²·(i/4)H₀⁽¹⁾ kernel. Its conventions (read in its source) and how ours map onto them:
- a plane wave travels along its transmitter's angle (outward): our transceiver at a sends along a + 180°, so its
  transmitter is placed at a + 180° (only the direction matters);
- its image rows run from y = +L/2 down (y_domain = −linspace): it gets our η flipped upside down;
- one wavenumber per operator: one Scattering per frequency present, its transmitters that frequency's sources,
  its receivers all t transceivers (full (t, t) data, masked by the caller);
- its quadrature weight is (L/n)², ours h² = (1/(n − 1))²: the caller rescales; its Born data (BornOperator with
  the incident field) are then our order 1 exactly, its full-wave data come from an iterative LSQR solve of the
  Lippmann–Schwinger equation with Vico et al.'s truncated kernel (spacing L/n), against our dense solve.
IN: eta (B, n, n) ours, angles (t,) and transmitter angles (t,) [degrees], freqs (t,) indices, wavenumbers (F,),
radius, threads, repeats, tol, max_iter; for the reconstruction iterations, lam, eps, weight (the rescaling) and
start (B, n, n). OUT: born, full (B, t, t) in deepinv's units, born_s, full_s (seconds per evaluation of the
batch), recon (B, n, n, ours orientation: torch.optim.LBFGS, strong Wolfe, on the objective of
controller/modes/scatter/recon.py with the weighted Born operator and its own weighted Born data, from start,
one scan after the other),
recon_s (seconds for all), setup_s, deepinv_version.
"""
from __future__ import annotations

import sys
import time
import timeit
from importlib.metadata import version
from typing import Any

import numpy as np
import torch


def _ring(angles_deg: np.ndarray, radius: float) -> torch.Tensor:
    t = np.deg2rad(angles_deg)
    return torch.from_numpy(radius * np.stack([np.cos(t), np.sin(t)]))


def _operators(d: Any) -> list[tuple[np.ndarray, Any]]:
    """(source indices, deepinv Scattering) per frequency present."""
    from deepinv.physics import Scattering

    n = int(d["eta"].shape[-1])
    config = Scattering.SolverConfig(tol=float(d["tol"]), max_iter=int(d["max_iter"]))
    ops = []
    for f in np.unique(d["freqs"]):
        src = np.flatnonzero(d["freqs"] == f)
        ops.append((src, Scattering(n, _ring(d["angles"], float(d["radius"])),
                                    _ring(d["transmitter_angles"][src], float(d["radius"])),
                                    background_wavenumber=float(d["wavenumbers"][f]), solver_config=config,
                                    wave_type="plane_wave", dtype=torch.complex128)))
    return ops


def _data(ops: list[tuple[np.ndarray, Any]], x: torch.Tensor, born: bool) -> torch.Tensor:
    """(B, t, t) data of x (B, 1, n, n) in deepinv's orientation."""
    t = sum(len(src) for src, _ in ops)
    out = torch.zeros(x.shape[0], t, t, dtype=torch.complex128)
    for src, op in ops:
        if born:  # its full-wave A leaves its total field in the Born operator: put the incident one back
            op.born_operator.register_buffer("total_field", op.incident_field)
        out[:, src] = op.born_operator.A(x) if born else op.A(x)
    return out


def _reconstruct(ops: list[tuple[np.ndarray, Any]], data: torch.Tensor, start: torch.Tensor, d: Any) -> torch.Tensor:
    """One scan (1, 1, n, n) by torch.optim.LBFGS on the module doc's objective; ``data`` in our units."""
    t = data.shape[-1]
    mask = torch.tril(torch.ones(t, t, dtype=torch.bool))
    target = data * mask
    c = max(float((target.abs() ** 2).sum()), 1e-30)
    lam, eps, weight = float(d["lam"]), float(d["eps"]), float(d["weight"])
    x = start.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=int(d["iterations"]), history_size=10, tolerance_grad=1e-5,
                            tolerance_change=2.220446049250313e-09, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        model = weight * _data(ops, x.to(torch.complex128), born=True) * mask
        value = ((model - target).abs() ** 2).sum() + lam * (torch.sqrt(x**2 + eps**2) - eps).sum()
        (value / c).backward()
        return value / c

    opt.step(closure)
    return x.detach()


def main(inp: str, out: str) -> None:
    t0 = time.perf_counter()
    d = dict(np.load(inp))
    torch.set_num_threads(int(d["threads"]))
    x = torch.from_numpy(d["eta"][:, None, ::-1].copy())  # ours → deepinv's orientation
    ops = _operators(d)
    setup_s = time.perf_counter() - t0
    repeats = int(d["repeats"])
    born, full = _data(ops, x.to(torch.complex128), born=True), _data(ops, x.to(torch.complex128), born=False)
    born_s = timeit.timeit(lambda: _data(ops, x.to(torch.complex128), born=True), number=repeats) / repeats
    full_s = timeit.timeit(lambda: _data(ops, x.to(torch.complex128), born=False), number=repeats) / repeats
    starts = torch.from_numpy(d["start"][:, None, ::-1].copy())
    t1 = time.perf_counter()
    recon = torch.cat([_reconstruct(ops, float(d["weight"]) * born[b:b + 1], starts[b:b + 1], d)
                       for b in range(x.shape[0])])
    recon_s = time.perf_counter() - t1
    np.savez(out, born=born.detach().numpy(), full=full.detach().numpy(), born_s=born_s, full_s=full_s,
             recon=torch.flip(recon[:, 0], dims=[1]).numpy(), recon_s=recon_s, setup_s=setup_s,
             deepinv_version=version("deepinv"))


if __name__ == "__main__":
    main(*sys.argv[1:3])
