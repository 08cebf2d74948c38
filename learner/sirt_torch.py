"""Batched SIRT in torch (CPU or CUDA) for many episodes with different angle sets.

The system matrix is controller.tomo's (Joseph model, all `n_angles` grid angles), converted once per
geometry to torch CSR (int32 indices). For a batch, each episode's angle mask (B, A) selects its rows
of W and columns of Wᵀ (cost ∝ selected entries, once per batch), and the episodes are stacked into
one block-diagonal CSR matrix, so every SIRT iteration is one sparse mat-vec forward and one backward
for the whole batch — the work of one ASTRA reconstruction per episode, without a Python loop. Update (ASTRA's SIRT, as controller.tomo):
    x ← clip(x + C_b·W_bᵀ·R·(p − W_b·x), lo, hi)
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from controller import tomo


def pick_device(device: str | None = None) -> torch.device:
    """`device` if given, else cuda when available, else cpu."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _csr(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow.int(), col.int(), val, size=shape, check_invariants=False)


@dataclass(frozen=True)
class BatchOperators:
    """Block-diagonal operators for one batch of angle masks."""

    w: torch.Tensor  # (B·A·N, B·N²) CSR
    wt: torch.Tensor  # (B·N², B·A·N) CSR
    r: torch.Tensor  # (B·A·N,) inverse row sums (0 for unselected angles)
    c: torch.Tensor  # (B·N²,) inverse column sums over the selected angles
    mask: torch.Tensor  # (B, A) bool


class BatchSIRT:
    def __init__(self, size: int, n_angles: int = 180, device: str | None = None) -> None:
        self.size, self.n_angles = size, n_angles
        self.device = pick_device(device)
        w = tomo.system_matrix(size, tomo.angle_grid(n_angles))  # float32 CSR, cached per geometry
        as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.device)  # noqa: E731
        self._w = (as_t(w.indptr.astype(np.int64)), as_t(w.indices), as_t(w.data))
        self._angle_off = self._w[0][::size]  # (A+1,) first entry of each angle's rows
        # Per-angle transposed blocks W_aᵀ (N² × N): row pointers (A, N²+1) local to each block.
        blocks = [w[a * size:(a + 1) * size].T.tocsr() for a in range(n_angles)]
        self._t_ptr = as_t(np.stack([b.indptr for b in blocks]).astype(np.int64))
        rows = [np.repeat(np.arange(size * size), np.diff(b.indptr)) for b in blocks]
        # Per block: entry arrays (pixel row, position within that row's segment, bin, value).
        self._t = [(as_t(r.astype(np.int32)), as_t((np.arange(b.nnz) - b.indptr[r]).astype(np.int32)),
                    as_t(b.indices), as_t(b.data)) for r, b in zip(rows, blocks)]
        self._r = as_t(tomo.sirt_weights(w)[0])
        self._full = _csr(*self._w, w.shape)

    def project(self, images: torch.Tensor) -> torch.Tensor:
        """Noise-free sinograms of all grid angles: (B, N, N) -> (B, A, N)."""
        x = images.reshape(len(images), -1).to(self.device, torch.float32)
        return (self._full @ x.T).T.reshape(len(images), self.n_angles, self.size)

    def operators(self, mask: torch.Tensor) -> BatchOperators:
        """Build the block-diagonal W_b, W_bᵀ, R, C_b for angle masks (B, A) (bool); cost ∝ selected entries."""
        mask = torch.as_tensor(mask, dtype=torch.bool, device=self.device)
        if mask.ndim != 2 or mask.shape[1] != self.n_angles or not bool(mask.any(1).all()):
            raise ValueError(f"mask must have shape (B, {self.n_angles}) with an angle per episode")
        npix, nrow = self.size**2, self.n_angles * self.size
        parts = [(self._rows(sel, b * npix), self._cols(sel, b * nrow))
                 for b, sel in enumerate(torch.nonzero(m).ravel() for m in mask)]
        nb = len(mask)
        if sum(len(p[0][1]) for p in parts) >= 2**31:
            raise ValueError("batch too large for int32 sparse indices; split it")
        w = _csr(*self._stack([p[0] for p in parts]), (nb * nrow, nb * npix))
        wt = _csr(*self._stack([p[1] for p in parts]), (nb * npix, nb * nrow))
        colsum = torch.mv(wt, torch.ones(nb * nrow, device=self.device))
        c = torch.where(colsum > 0, 1.0 / colsum.clamp_min(1e-30), torch.zeros_like(colsum))
        r = (self._r.reshape(1, self.n_angles, self.size) * mask[:, :, None]).reshape(-1)
        return BatchOperators(w, wt, r, c, mask)

    def _rows(self, sel: torch.Tensor, col_offset: int):
        """W restricted to the rows of angles `sel` (other rows empty), columns shifted by col_offset."""
        crow, col, val = self._w
        spans = [(int(self._angle_off[a]), int(self._angle_off[a + 1])) for a in sel.tolist()]
        counts = crow.diff().reshape(self.n_angles, self.size)
        keep = torch.zeros(self.n_angles, 1, dtype=counts.dtype, device=self.device)
        keep[sel] = 1
        new_crow = torch.cat([crow[:1], torch.cumsum((counts * keep).reshape(-1), 0)])
        return new_crow, torch.cat([col[i:j] for i, j in spans]) + col_offset, torch.cat([val[i:j] for i, j in spans])

    def _cols(self, sel: torch.Tensor, col_offset: int):
        """Wᵀ restricted to the columns of angles `sel`: the blocks W_aᵀ merged row by row."""
        cnt = self._t_ptr[sel].diff(dim=1)  # (k, N²) entries per pixel row in each block
        before = (torch.cumsum(cnt, 0) - cnt).reshape(-1)  # entries of earlier blocks in the same row
        crow = torch.cat([cnt.new_zeros(1), torch.cumsum(cnt.sum(0), 0)])
        npix = self.size**2
        row, pos, col, val = (torch.cat(x) for x in zip(*(self._t[a] for a in sel.tolist())))
        lengths = torch.tensor([len(self._t[a][0]) for a in sel.tolist()], device=self.device)
        j = torch.repeat_interleave(torch.arange(len(sel), device=self.device), lengths, output_size=len(row))
        rowl = row.long()
        dest = crow[rowl] + before[j * npix + rowl] + pos
        out_col = torch.empty_like(col)
        out_val = torch.empty_like(val)
        out_col[dest] = col + (sel[j] * self.size + col_offset).to(col.dtype)
        out_val[dest] = val
        return crow, out_col, out_val

    @staticmethod
    def _stack(parts):
        crows, cols, vals = zip(*parts)
        offsets = torch.tensor([0] + [int(c[-1]) for c in crows[:-1]], device=crows[0].device).cumsum(0)
        crow = torch.cat([crows[0][:1]] + [c[1:] + o for c, o in zip(crows, offsets)])
        return crow, torch.cat(cols), torch.cat(vals)

    def reconstruct(
        self,
        sinograms: torch.Tensor,
        mask: torch.Tensor | BatchOperators,
        iterations: int = tomo.SIRT_ITERATIONS,
        x0: torch.Tensor | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
    ) -> torch.Tensor:
        """SIRT for a batch: sinograms (B, A, N) (rows of unselected angles ignored), mask (B, A)
        or prebuilt operators; x0 (B, N, N) warm start (default 0). Returns (B, N, N)."""
        ops = mask if isinstance(mask, BatchOperators) else self.operators(mask)
        nb = len(ops.mask)
        p = sinograms.to(self.device, torch.float32).reshape(-1)
        x = (torch.zeros(nb * self.size**2, device=self.device) if x0 is None
             else x0.to(self.device, torch.float32).reshape(-1).clone())
        rp = ops.r * p  # R·p, zero on unselected rows
        for _ in range(iterations):
            resid = rp - ops.r * torch.mv(ops.w, x)
            x += ops.c * torch.mv(ops.wt, resid)
            x.clamp_(bounds[0], bounds[1])
        return x.reshape(nb, self.size, self.size)
