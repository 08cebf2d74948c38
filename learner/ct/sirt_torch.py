"""Batched SIRT in torch (CPU or CUDA) for many episodes with different angle sets.

The system matrix is controller.modes.ct.tomo's (Joseph model, all `n_angles` grid angles), converted once per
geometry to torch CSR (int32 indices). For a batch, each episode's angle mask (B, A) selects its rows
of W; the selected rows of consecutive episodes are stacked into one block-diagonal CSR matrix W_b
(unselected angles' rows left out; cost ∝ selected entries, once per batch), with W_bᵀ its CSR
transpose. Every SIRT iteration is then one sparse mat-vec forward and one backward per block of
episodes, in place in preallocated buffers — the work of one ASTRA reconstruction per episode,
without a Python loop over episodes. Update (ASTRA's SIRT, van der Sluis & van der Vorst; as
controller.modes.ct.tomo):
    x ← clip(x + C_b·W_bᵀ·R·(p − W_b·x), lo, hi),  R = 1/row sums, C_b = 1/column sums of W_b (0 where 0)

On CPU the batch is split into blocks of about equal work, at least one per torch thread and at most
BLOCK_ENTRIES entries of W_b each (8 MB; one episode at least), iterated by as many Python threads as
torch has, each block with single-threaded ops: no OpenMP barrier per op, which on a busy machine
(another process on a core) cut the time per iteration from ~75 to ~47 ms at 239², 20 angles, batch
32 (~30 ms when idle either way). Small blocks keep a block's operators closer to the cache (~4 % less
CPU time per reconstruction at 239², 20 angles, where a block is one episode) and let an idle thread
take the next block while another is preempted. On CUDA the whole batch is one block.
"""
from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import scipy.sparse as sp
import torch

from controller.modes.ct import tomo

BLOCK_ENTRIES = 1 << 20  # CPU: at most this many entries of W_b per block (unless one episode has more)
T = TypeVar("T")
U = TypeVar("U")


def pick_device(device: str | None = None) -> torch.device:
    """`device` if given, else cuda when available, else cpu."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


# torch: "Sparse CSR tensor support is in beta state" (a filter set once: catch_warnings is not thread-safe)
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)


def _csr(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    return torch.sparse_csr_tensor(crow.int(), col.int(), val, size=shape, check_invariants=False)


def _transpose(w: torch.Tensor) -> torch.Tensor:
    """Wᵀ in CSR (= W in CSC). On CPU scipy's counting sort (~0.3 s for 60M entries; torch's CPU
    conversion takes ~7 s); elsewhere torch's own conversion."""
    rows, cols = w.shape
    if w.device.type == "cpu":
        csc = sp.csr_matrix((w.values().numpy(), w.col_indices().numpy(), w.crow_indices().numpy()),
                            shape=(rows, cols)).tocsc()
        return _csr(*(torch.from_numpy(a) for a in (csc.indptr, csc.indices, csc.data)), (cols, rows))
    csc = w.to_sparse_csc()
    return _csr(csc.ccol_indices(), csc.row_indices(), csc.values(), (cols, rows))


class _SingleThreadedTorch:
    """While any `_parallel` call runs, torch's process-wide intra-op thread count is 1; the count
    saved by the first call is restored when the last one ends (calls may overlap from several threads)."""

    def __init__(self) -> None:
        self._lock, self._users, self._saved = threading.Lock(), 0, 1

    def __enter__(self) -> None:
        with self._lock:
            if self._users == 0:
                self._saved = torch.get_num_threads()
                torch.set_num_threads(1)
            self._users += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                torch.set_num_threads(self._saved)


_single_threaded_torch = _SingleThreadedTorch()


def _parallel(fn: Callable[[T], U], items: Sequence[T], workers: int | None = None) -> list[U]:
    """fn over items in `workers` Python threads (default: one per item), every torch op
    single-threaded meanwhile; with a single item or worker, inline (torch's threads unchanged)."""
    workers = min(workers or len(items), len(items))
    if workers == 1:
        return [fn(item) for item in items]
    with _single_threaded_torch, ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


@dataclass(frozen=True)
class OperatorBlock:
    """W_b, W_bᵀ, R, C_b of the consecutive episodes `episodes`. Rows: the selected angles' bins,
    episode by episode, angles in grid order (the order of `sinograms[mask]`)."""

    episodes: slice
    w: torch.Tensor  # (K·N, b·N²) CSR, K selected (episode, angle) pairs, b episodes
    wt: torch.Tensor  # (b·N², K·N) CSR
    r: torch.Tensor  # (K·N,) inverse row sums
    c: torch.Tensor  # (b·N²,) inverse column sums over the selected angles


@dataclass(frozen=True)
class BatchOperators:
    """Operators for one batch of angle masks, as blocks of consecutive episodes."""

    blocks: tuple[OperatorBlock, ...]
    mask: torch.Tensor  # (B, A) bool
    threads: int = 1  # worker threads over the blocks


class BatchSIRT:
    def __init__(self, size: int, n_angles: int = 180, device: str | None = None) -> None:
        self.size, self.n_angles = size, n_angles
        self.device = pick_device(device)
        w = tomo.system_matrix(size, tomo.angle_grid(n_angles))  # float32 CSR, cached per geometry
        as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.device)  # noqa: E731
        self._w = (as_t(w.indptr.astype(np.int64)), as_t(w.indices), as_t(w.data))
        self._angle_off = w.indptr[::size].tolist()  # (A+1,) first entry of each angle's rows
        self._angle_nnz = torch.from_numpy(np.diff(w.indptr[::size]).astype(np.float64))  # entries per angle
        self._row_len = self._w[0].diff().reshape(n_angles, size)  # entries per (angle, bin)
        self._r = as_t(tomo.sirt_weights(w)[0]).reshape(n_angles, size)
        self._full = _csr(*self._w, w.shape)

    def project(self, images: torch.Tensor) -> torch.Tensor:
        """Noise-free sinograms of all grid angles: (B, N, N) -> (B, A, N)."""
        x = images.reshape(len(images), -1).to(self.device, torch.float32)
        return (self._full @ x.T).T.reshape(len(images), self.n_angles, self.size)

    def operators(self, mask: torch.Tensor) -> BatchOperators:
        """Build W_b, W_bᵀ, R, C_b for angle masks (B, A) (bool); cost ∝ selected entries."""
        mask = torch.as_tensor(mask, dtype=torch.bool, device=self.device)
        if mask.ndim != 2 or mask.shape[1] != self.n_angles or not bool(mask.any(1).all()):
            raise ValueError(f"mask must have shape (B, {self.n_angles}) with an angle per episode")
        k = mask.cpu().to(torch.float64) @ self._angle_nnz  # entries of W_b per episode
        cpu = self.device.type == "cpu"
        threads = torch.get_num_threads() if cpu else 1
        n = min(max(threads, math.ceil(float(k.sum()) / BLOCK_ENTRIES)), len(mask)) if cpu else 1
        # n blocks of about equal work (entries): each episode goes where its midpoint falls.
        block = ((k.cumsum(0) - k / 2) * n / k.sum()).long().clamp_max(n - 1)
        edges = [0, *torch.bincount(block, minlength=n).cumsum(0).tolist()]
        blocks = [slice(i, j) for i, j in zip(edges[:-1], edges[1:]) if j > i]
        return BatchOperators(tuple(_parallel(lambda s: self._block(s, mask[s]), blocks, threads)), mask, threads)

    def _block(self, episodes: slice, mask: torch.Tensor) -> OperatorBlock:
        """The operators of `episodes`, whose masks are `mask`."""
        nb, npix = len(mask), self.size**2
        episode, angle = torch.nonzero(mask).T  # selected (episode, angle) pairs, episode-major
        crow = torch.cat([self._w[0][:1], torch.cumsum(self._row_len[angle].reshape(-1), 0)])
        if int(crow[-1]) >= 2**31 or nb * npix >= 2**31:
            raise ValueError("batch too large for int32 sparse indices; split it")
        col, val = self._w[1:]
        spans = [(self._angle_off[a], self._angle_off[a + 1]) for a in angle.tolist()]
        cols = torch.cat([col[i:j] for i, j in spans])
        vals = torch.cat([val[i:j] for i, j in spans])
        ends = crow[self.size * torch.cumsum(torch.bincount(episode, minlength=nb), 0)].tolist()
        for b, (i, j) in enumerate(zip([0] + ends[:-1], ends)):
            cols[i:j] += b * npix  # episode b's columns: its image block
        w = _csr(crow, cols, vals, (len(angle) * self.size, nb * npix))
        wt = _transpose(w)
        colsum = torch.mv(wt, torch.ones(w.shape[0], device=self.device))
        c = torch.where(colsum > 0, 1.0 / colsum.clamp_min(1e-30), torch.zeros_like(colsum))
        return OperatorBlock(episodes, w, wt, self._r[angle].reshape(-1), c)

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
        nb, npix = len(ops.mask), self.size**2
        sino = sinograms.to(self.device, torch.float32)
        x = (torch.zeros(nb, npix, device=self.device) if x0 is None
             else x0.to(self.device, torch.float32).reshape(nb, npix).clone())

        def run(block: OperatorBlock) -> None:
            p = sino[block.episodes][ops.mask[block.episodes]].reshape(-1)  # selected rows, W_b's order
            xb = x[block.episodes].view(-1)  # this block's images, updated in place
            resid, back = torch.empty_like(p), torch.empty_like(xb)
            for _ in range(iterations):
                torch.addmv(p, block.w, xb, alpha=-1.0, out=resid).mul_(block.r)  # R·(p − W_b·x)
                torch.mv(block.wt, resid, out=back)  # W_bᵀ·R·(p − W_b·x)
                xb.addcmul_(block.c, back).clamp_(bounds[0], bounds[1])

        _parallel(run, ops.blocks, ops.threads)
        return x.reshape(nb, self.size, self.size)
