"""Robust PID gains for the MEMS loop, and the map from the actor's output into them.

Gains are robust on an axis when the loop's sensitivity |S(f)| (learner/mems/loop_sensitivity.py)

- peaks at most ``MAX_PEAK`` = 2 (a 6 dB modulus margin), and
- stays ≤ 1 up to the frequency where the baseline gains' |S| first exceeds 1,

so they amplify no vibration band that the baseline rejects. Higher I rejects slow disturbances
(Wiener drift) better but, by Bode's sensitivity integral, amplifies a faster band more. An
unconstrained policy pushes I to where that trade is lost on vibration it never saw (README,
"Known limits").

For each axis the P range where the lowest I is robust is found, and on ``KNOTS`` values of P in it
the largest robust I, I_max(P), by bisection. The actor's output a ∈ [-1, 1]⁴ maps to gains

    P = P_lo + (a_P + 1)/2 · (P_hi − P_lo)
    I = I_lo + (a_I + 1)/2 · (I_max(P) − I_lo)

so every action the actor can emit is robust: the table meets bounds 2 % tighter than these, which
covers the linear interpolation between knots (I_max(P) is convex in places, where a chord overshoots). I_max(P) is written as a sum of ReLUs, so the same map runs inside the exported ONNX graph.
Unconstrained, P_lo..P_hi is the configured box and I_max ≡ I_hi: the plain affine map to the box.

Three gain sets (``GAIN_SETS``, `edgetune train mems --gain-set`): ``robust`` (both bounds above, the safe
default), ``wide`` (only |S| ≤ ``WIDE_PEAK`` = 3.2, a modulus margin of 0.31: wide enough to hold the paper's
a_test gains, whose |S| peaks at 3.06 / 2.64 on the calibrated plant, far outside the robust set; such gains
amplify bands the baseline rejects) and ``box`` (no constraint).
"""
from __future__ import annotations

from functools import cache
from typing import Literal

import numpy as np
import torch
from torch import nn

from controller.modes.mems.pid import BASELINE_GAINS
from firmware_sim.mems.physics import MemsParams
from learner.mems import loop_sensitivity

MAX_PEAK = 2.0  # largest allowed |S| [1]
WIDE_PEAK = 3.2  # the wide set's
KNOTS = 40  # P values on which I_max(P) is tabulated, per axis
P_SCAN = 200  # log-spaced P values scanned for the robust P range
BISECTIONS = 14  # I_max to (I_hi − I_lo) / 2¹⁴
TABLE_MARGIN = 0.02  # the table meets bounds 2 % tighter, so the interpolation between knots meets the bounds
GainSet = Literal["robust", "wide", "box"]
GAIN_SETS: tuple[GainSet, ...] = ("robust", "wide", "box")


class GainMap(nn.Module):
    """[-1, 1]⁴ → (Px, Ix, Py, Iy) [V/px, V/(px·s)]; I_max(P) piecewise linear through (knots, i_max)."""

    def __init__(self, knots: np.ndarray, i_max: np.ndarray, i_lo: float) -> None:
        super().__init__()
        knots, i_max = np.asarray(knots, np.float64), np.asarray(i_max, np.float64)  # (2, K) each
        slope = np.diff(i_max, axis=1) / np.diff(knots, axis=1)  # (2, K − 1)
        # f(P) = f(k₀) + Σ_j (s_j − s_{j−1})·relu(P − k_j), s₋₁ = 0 and s_{K−1} = 0 (flat past the ends)
        kink = np.diff(np.pad(slope, ((0, 0), (1, 1))), axis=1)  # (2, K)
        f32 = lambda x: torch.as_tensor(np.asarray(x, np.float32))  # noqa: E731
        self.register_buffer("knots", f32(knots))
        self.register_buffer("i_start", f32(i_max[:, 0]))
        self.register_buffer("kink", f32(kink))
        self.register_buffer("p_lo", f32(knots[:, 0]))
        self.register_buffer("p_hi", f32(knots[:, -1]))
        self.register_buffer("i_lo", f32(i_lo))

    def integral_limit(self, p: torch.Tensor) -> torch.Tensor:
        """I_max (B, 2) at P (B, 2)."""
        return self.i_start + (torch.relu(p[..., None] - self.knots) * self.kink).sum(-1)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        a = torch.clamp(a, -1.0, 1.0)
        p = self.p_lo + (a[:, 0::2] + 1.0) * 0.5 * (self.p_hi - self.p_lo)
        i = self.i_lo + (a[:, 1::2] + 1.0) * 0.5 * (self.integral_limit(p) - self.i_lo)
        return torch.stack((p[:, 0], i[:, 0], p[:, 1], i[:, 1]), dim=1)

    def inverse(self, gains: torch.Tensor) -> torch.Tensor:
        """Gains (B, 4) inside the set → actor output (B, 4)."""
        p, i = gains[:, 0::2], gains[:, 1::2]
        a_p = 2.0 * (p - self.p_lo) / (self.p_hi - self.p_lo) - 1.0
        a_i = 2.0 * (i - self.i_lo) / (self.integral_limit(p) - self.i_lo) - 1.0
        return torch.stack((a_p[:, 0], a_i[:, 0], a_p[:, 1], a_i[:, 1]), dim=1)

    def gains(self, a: np.ndarray) -> np.ndarray:
        """numpy view of forward (float64 out)."""
        with torch.no_grad():
            return self(torch.as_tensor(np.asarray(a, np.float32).reshape(-1, 4))).numpy().astype(np.float64)

    def actions(self, gains: np.ndarray) -> np.ndarray:
        """numpy view of inverse."""
        with torch.no_grad():
            return self.inverse(torch.as_tensor(np.asarray(gains, np.float32).reshape(-1, 4))).numpy()


def is_robust(p: float, i: float, axis: int, params: MemsParams, below_hz: float, margin: float = 0.0,
              max_peak: float = MAX_PEAK) -> bool:
    """Whether gains (P, I, baseline D) on `axis` meet |S| ≤ `max_peak` and |S| ≤ 1 below `below_hz` (the robust
    set: MAX_PEAK and the baseline's crossover; the wide set: WIDE_PEAK and 0), both tightened by `margin`."""
    g = BASELINE_GAINS.copy()
    g[axis, :2] = p, i
    f = loop_sensitivity.frequency_grid(params, n=600)
    s = loop_sensitivity.sensitivity(g, f, params)[axis]
    return bool(np.all(np.isfinite(s)) and s.max() <= max_peak * (1 - margin)
                and np.all(s[f < below_hz * (1 + margin)] <= 1.0))


def baseline_crossover_hz(params: MemsParams) -> np.ndarray:
    """(2,): the lowest frequency at which the baseline gains amplify M1 vibration, per axis [Hz]."""
    f = loop_sensitivity.frequency_grid(params, n=600)
    s = loop_sensitivity.sensitivity(BASELINE_GAINS, f, params)
    return np.array([f[row > 1.0].min() for row in s])


def integral_limits(axis: int, p_bounds: tuple[float, float], i_bounds: tuple[float, float],
                    params: MemsParams, below_hz: float, max_peak: float) -> tuple[np.ndarray, np.ndarray]:
    """(knots, I_max) on `axis`: ``KNOTS`` values of P spanning the robust P range, and the largest robust
    I at each (bisection), for bounds tightened by ``TABLE_MARGIN`` (`below_hz`, `max_peak`: as in `is_robust`)."""

    def robust(p: float, i: float) -> bool:
        return is_robust(p, i, axis, params, below_hz, TABLE_MARGIN, max_peak)

    i_lo, i_hi = i_bounds
    scan = np.geomspace(*p_bounds, P_SCAN)
    ok = np.array([robust(p, i_lo) for p in scan])
    if not ok.any():
        raise ValueError(f"no P in {p_bounds} is robust with I = {i_lo} on axis {'xy'[axis]}")
    knots = np.linspace(scan[ok].min(), scan[ok].max(), KNOTS)
    i_max = np.empty(KNOTS)
    for k, p in enumerate(knots):
        lo, hi = (i_hi, i_hi) if robust(p, i_hi) else (i_lo, i_hi)
        for _ in range(BISECTIONS if lo < hi else 0):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if robust(p, mid) else (lo, mid)
        i_max[k] = lo
    return knots, i_max


@cache
def gain_set_map(gain_set: GainSet, p_bounds: tuple[float, float], i_bounds: tuple[float, float],
                 params: MemsParams = MemsParams()) -> GainMap:
    """The map into `gain_set` within the P and I bounds (a few seconds; cached per process)."""
    if gain_set not in GAIN_SETS:
        raise ValueError(f"unknown gain set {gain_set!r} (one of {', '.join(GAIN_SETS)})")
    if gain_set == "box":
        return box_gain_map(p_bounds, i_bounds)
    below, peak = (baseline_crossover_hz(params), MAX_PEAK) if gain_set == "robust" else (np.zeros(2), WIDE_PEAK)
    knots, i_max = zip(*(integral_limits(axis, p_bounds, i_bounds, params, below[axis], peak) for axis in range(2)))
    return GainMap(np.stack(knots), np.stack(i_max), i_bounds[0])


def box_gain_map(p_bounds: tuple[float, float], i_bounds: tuple[float, float]) -> GainMap:
    """The plain affine map to the box (no robustness constraint)."""
    knots = np.array([p_bounds, p_bounds], np.float64)
    return GainMap(knots, np.full((2, 2), i_bounds[1]), i_bounds[0])
