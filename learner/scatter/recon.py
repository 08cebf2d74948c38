"""L1-regularised L-BFGS reconstruction batched over scans in torch (CPU or GPU), for training and evaluation.

The objective J is the edge's (controller/modes/scatter/recon.py: the data misfit over r ≤ s plus λ times the
smoothed |η|, divided by the data's energy), on batched.born (each scan's geometry gathered once), its gradient by
autograd. Every scan b has its own L-BFGS history (HISTORY pairs), its own step and its own line search; all scans
share the number of transceivers t and the iteration count. One iteration: the two-loop recursion gives the
direction (the steepest descent scaled to a first step of length FIRST_STEP when a scan has no history), then a
backtracking line search on the Armijo condition halves the step of the scans that fail it, evaluating only those,
at most LINE_SEARCH times (a scan that never passes keeps its point and stops for the rest of the call); a pair
with sᵀy ≤ 0 is not stored. A scan stops moving once it meets scipy's L-BFGS-B tests (relative decrease ≤ FTOL or max |∂J| ≤ GTOL),
so a run to convergence reaches the stationary point scipy's does.
"""
from __future__ import annotations

import torch

from controller.modes.scatter.recon import C_FLOOR, EPS, HISTORY, check_scan, mask
from learner.scatter.batched import Tables, born, geometry

ARMIJO = 1e-4  # sufficient-decrease constant c₁
LINE_SEARCH = 30  # halvings before a scan gives up on an iteration
FIRST_STEP = 1e-2  # length of a step without history (‖η‖₂ = 0.3 scatterers: a few % of one)
FTOL, GTOL = 2.220446049250313e-09, 1e-5  # scipy L-BFGS-B's defaults


class Objective:
    """J per scan (B,) and its gradient, for a batch of scans with the same t (module doc)."""

    def __init__(self, tables: Tables, angles: torch.Tensor, freqs: torch.Tensor, data: torch.Tensor, order: int,
                 lam: torch.Tensor) -> None:
        self.tables, self.order, self.lam = tables, order, lam
        self.geometry = geometry(tables, angles, freqs)
        self.mask = torch.as_tensor(mask(angles.shape[1]), device=data.device)
        self.data = torch.where(self.mask, data, torch.zeros((), dtype=data.dtype, device=data.device))
        self.c = (self.data.abs() ** 2).sum(dim=(1, 2)).clamp_min(C_FLOOR)

    def __call__(self, x: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """J and ∂J/∂x at flat x (len(rows), n²) for the scans ``rows``."""
        n = self.tables.n
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            model = born(self.tables, x.reshape(-1, n, n), self.geometry[rows], self.order)
            misfit = ((model - self.data[rows]).abs() ** 2 * self.mask).sum(dim=(1, 2))
            l1 = (torch.sqrt(x**2 + EPS**2) - EPS).sum(dim=1)
            value = (misfit + self.lam[rows] * l1) / self.c[rows]
            (grad,) = torch.autograd.grad(value.sum(), x)
        return value.detach(), grad


def _direction(g: torch.Tensor, s: torch.Tensor, y: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """−H·g by the two-loop recursion over each scan's valid pairs (oldest first along dim 1)."""
    rho = torch.where(valid, 1.0 / (s * y).sum(-1).where(valid, torch.ones_like(valid, dtype=g.dtype)),
                      torch.zeros((), dtype=g.dtype, device=g.device))
    q, alpha = g.clone(), []
    for i in range(s.shape[1] - 1, -1, -1):
        a = rho[:, i] * (s[:, i] * q).sum(-1)
        q -= a[:, None] * y[:, i]
        alpha.append(a)
    newest = valid[:, -1]
    yy = (y[:, -1] ** 2).sum(-1)
    gamma = torch.where(newest, (s[:, -1] * y[:, -1]).sum(-1) / yy.where(newest, torch.ones_like(yy)),
                        FIRST_STEP / g.norm(dim=1).clamp_min(torch.finfo(g.dtype).tiny))
    r = gamma[:, None] * q
    for i, a in zip(range(s.shape[1]), reversed(alpha)):
        b = rho[:, i] * (y[:, i] * r).sum(-1)
        r += (a - b)[:, None] * s[:, i]
    return -r


def _push(buf: torch.Tensor, new: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """Append ``new`` as the newest entry of ``buf`` (dim 1) for the scans ``where``."""
    shifted = torch.cat([buf[:, 1:], new[:, None]], dim=1)
    return torch.where(where.reshape(-1, *[1] * (buf.dim() - 1)), shifted, buf)


def lbfgs(objective: Objective, x: torch.Tensor, iterations: int) -> torch.Tensor:
    """``iterations`` batched L-BFGS iterations on ``objective`` from flat x (B, N) (module doc)."""
    b, size = x.shape
    every = torch.arange(b, device=x.device)
    f, g = objective(x, every)
    s = torch.zeros(b, HISTORY, size, dtype=x.dtype, device=x.device)
    y = torch.zeros_like(s)
    valid = torch.zeros(b, HISTORY, dtype=torch.bool, device=x.device)
    active = g.abs().amax(dim=1) > GTOL
    for _ in range(iterations):
        if not active.any():
            break
        d = _direction(g, s, y, valid)
        slope = (g * d).sum(-1)
        uphill = slope >= 0  # a stale history: restart from steepest descent
        if uphill.any():
            valid = valid & ~uphill[:, None]
            d = torch.where(uphill[:, None], _direction(g, s, y, valid), d)
            slope = (g * d).sum(-1)
        step = torch.ones(b, dtype=x.dtype, device=x.device)
        f_new, g_new, x_new = f.clone(), g.clone(), x.clone()
        pending = active.clone()
        for _ in range(LINE_SEARCH):
            rows = pending.nonzero().flatten()
            if rows.numel() == 0:
                break
            trial = x[rows] + step[rows, None] * d[rows]
            ft, gt = objective(trial, rows)
            ok = ft <= f[rows] + ARMIJO * step[rows] * slope[rows]
            done = rows[ok]
            x_new[done], f_new[done], g_new[done] = trial[ok], ft[ok], gt[ok]
            pending[done] = False
            step[rows[~ok]] *= 0.5
        moved = active & ~pending
        valid = valid & ~pending[:, None]  # a failed line search drops the history
        sk, yk = x_new - x, g_new - g
        store = moved & ((sk * yk).sum(-1) > 0)
        s, y, valid = _push(s, sk, store), _push(y, yk, store), _push(valid, store, store)
        decrease = (f - f_new) / torch.maximum(torch.maximum(f.abs(), f_new.abs()), torch.ones_like(f))
        active = moved & (decrease > FTOL) & (g_new.abs().amax(dim=1) > GTOL)
        x, f, g = x_new, f_new, g_new
    return x


def reconstruct(tables: Tables, eta0: torch.Tensor, angles: torch.Tensor, freqs: torch.Tensor, data: torch.Tensor,
                *, order: int, lam: float | torch.Tensor, iterations: int) -> torch.Tensor:
    """η (B, n, n) after ``iterations`` batched L-BFGS iterations on J from ``eta0`` (B, n, n); ``angles``,
    ``freqs`` (B, t) long; ``data`` (B, t, t) complex d[b, s, r], used for r ≤ s; ``lam`` one λ or one per scan.
    Computes in the tables' precision on their device."""
    n, real = tables.n, tables.k.dtype
    if eta0.dim() != 3 or eta0.shape[1:] != (n, n):
        raise ValueError(f"eta0 must be (B, {n}, {n}) for these tables, got {tuple(eta0.shape)}")
    if angles.dim() != 2 or angles.shape != freqs.shape or angles.shape[0] != eta0.shape[0]:
        raise ValueError(f"angles and freqs must be (B, t) with B = {eta0.shape[0]}, got {tuple(angles.shape)}, "
                         f"{tuple(freqs.shape)}")
    check_scan(n, angles.cpu().numpy().ravel(), freqs.cpu().numpy().ravel(), order, iterations)  # all rows at once
    t = angles.shape[1]
    if data.shape != (eta0.shape[0], t, t) or not torch.is_complex(data):
        raise ValueError(f"data must be complex (B, t, t) = {(eta0.shape[0], t, t)}, got {data.dtype} "
                         f"{tuple(data.shape)}")
    lam_t = torch.as_tensor(lam, dtype=real, device=tables.device).expand(eta0.shape[0])
    if not torch.isfinite(eta0).all() or not torch.isfinite(torch.view_as_real(data)).all():
        raise ValueError("eta0 and data must be finite")
    if not torch.isfinite(lam_t).all() or (lam_t < 0).any():
        raise ValueError(f"lam must be finite and >= 0, got {lam!r}")
    dev = tables.device
    objective = Objective(tables, angles.to(dev), freqs.to(dev), data.to(dev, tables.dtype), order, lam_t)
    x = lbfgs(objective, eta0.to(dev, real).reshape(eta0.shape[0], -1), iterations)
    return x.reshape(-1, n, n)
