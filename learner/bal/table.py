"""The feedback policy table u*(t_n, x_i; θ) (paper Eq. 28), and how it is read between its grid points.

Per step n a G × G grid on the box [low[n], high[n]] (the region the states reach at t_n); optionally one table per
value of a grid over θ (``theta_axes``), so a policy can follow the direct filter's estimate on the edge.
``control`` reads it: multilinear in θ (clamped to the axes), bilinear in x (clamped to the step's box), the step
clamped to [0, N − 1], then projected onto |u| ≤ u_max. The ONNX export (learner/bal/export.py) computes the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from controller.modes.bal.models import project


def _bracket(axis: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower index and weight of v (B,) on a sorted axis, clamped to its ends."""
    if len(axis) == 1:
        return np.zeros(len(v), np.int64), np.zeros(len(v))
    i = np.clip(np.searchsorted(axis, v, side="right") - 1, 0, len(axis) - 2)
    w = np.clip((v - axis[i]) / (axis[i + 1] - axis[i]), 0.0, 1.0)
    return i, w


@dataclass
class PolicyTable:
    theta_axes: tuple[np.ndarray, ...]
    low: np.ndarray  # (N, 2)
    high: np.ndarray  # (N, 2)
    u: np.ndarray  # (*theta shape, N, G, G, m)
    u_max: float

    def __post_init__(self) -> None:
        self.theta_axes = tuple(np.asarray(a, np.float64) for a in self.theta_axes)
        self.low, self.high = np.asarray(self.low, np.float64), np.asarray(self.high, np.float64)
        self.u = np.asarray(self.u, np.float64)
        k = len(self.theta_axes)
        if self.u.ndim != k + 4 or self.u.shape[:k] != tuple(len(a) for a in self.theta_axes):
            raise ValueError(f"policy table: u has shape {self.u.shape}, want (*θ axes, N, G, G, m)")
        n, g, g2 = self.u.shape[k:k + 3]
        if g != g2 or g < 2 or self.low.shape != (n, 2) or self.high.shape != (n, 2):
            raise ValueError("policy table: want a G × G grid (G ≥ 2) and one box (N, 2) per step")
        if np.any(self.high <= self.low):
            raise ValueError("policy table: every box needs low < high")
        if not (np.all(np.isfinite(self.u)) and np.all(np.isfinite(self.low)) and np.all(np.isfinite(self.high))
                and self.u_max > 0):
            raise ValueError("policy table: controls and boxes must be finite and u_max > 0")
        if any(np.any(np.diff(a) <= 0) for a in self.theta_axes):
            raise ValueError("policy table: θ axes must be strictly increasing")

    @property
    def steps(self) -> int:
        return self.low.shape[0]

    @property
    def grid(self) -> int:
        return self.u.shape[-2]

    @property
    def control_dim(self) -> int:
        return self.u.shape[-1]

    def points(self, n: int) -> np.ndarray:
        """The grid points of step n, (G, G, 2): [i, j] at x = low + (i, j)·(high − low)/(G − 1)."""
        s = np.linspace(0.0, 1.0, self.grid)
        lo, hi = self.low[n], self.high[n]
        return np.stack(np.meshgrid(lo[0] + s * (hi[0] - lo[0]), lo[1] + s * (hi[1] - lo[1]), indexing="ij"), -1)

    def control(self, n: int | np.ndarray, x: np.ndarray, theta: np.ndarray | None = None) -> np.ndarray:
        """u at step(s) n for states x (B, 2) and θ (P,) / (B, P) (None: a table without θ axes): (B, m)."""
        x = np.atleast_2d(np.asarray(x, np.float64))
        b = len(x)
        steps = np.clip(np.broadcast_to(np.asarray(n, np.int64), (b,)), 0, self.steps - 1)
        corners = [(np.zeros(b, np.int64), np.ones(b))]  # (flat θ index, weight): multilinear over the θ cell
        if self.theta_axes:
            if theta is None:
                raise ValueError("policy table: this table is indexed by θ; pass theta")
            th = np.broadcast_to(np.asarray(theta, np.float64), (b, len(self.theta_axes)))
            for k, axis in enumerate(self.theta_axes):
                i, w = _bracket(axis, th[:, k])
                hi = np.minimum(i + 1, len(axis) - 1)
                corners = [(idx * len(axis) + ii, cw * ww) for idx, cw in corners for ii, ww in ((i, 1.0 - w), (hi, w))]
        flat = self.u.reshape((-1,) + self.u.shape[len(self.theta_axes):])  # (Θ, N, G, G, m)
        g = self.grid
        frac = np.clip((x - self.low[steps]) / (self.high[steps] - self.low[steps]) * (g - 1), 0.0, g - 1)
        i = np.minimum(frac.astype(np.int64), g - 2)
        w = frac - i
        u = np.zeros((b, self.control_dim))
        for di in (0, 1):
            for dj in (0, 1):
                wx = (w[:, 0] if di else 1.0 - w[:, 0]) * (w[:, 1] if dj else 1.0 - w[:, 1])
                for idx, cw in corners:
                    u += (cw * wx)[:, None] * flat[idx, steps, i[:, 0] + di, i[:, 1] + dj]
        return project(u, self.u_max)

    def save(self, path: Path) -> None:
        np.savez_compressed(path, low=self.low, high=self.high, u=self.u, u_max=self.u_max,
                            **{f"theta_axis_{k}": a for k, a in enumerate(self.theta_axes)})

    @classmethod
    def load(cls, path: Path) -> PolicyTable:
        import zipfile

        try:
            with np.load(path) as z:
                count = sum(1 for key in z.files if key.startswith("theta_axis_"))
                return cls(tuple(z[f"theta_axis_{k}"] for k in range(count)), z["low"], z["high"], z["u"],
                           float(z["u_max"]))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise ValueError(f"policy table {path}: not a readable table ({exc})") from exc
