"""Disturbance generators: M1 displacement of the spot [px] per camera frame, shape (B, T, 2).

``steps`` is the paper's training signal (random ±100 px jumps, Eq. 6), ``wiener`` its test
signal (Eq. 7) with the stand's sweep episodes (below), ``from_csv`` replays a recorded trace.
``sinusoids`` and ``drift_bursts`` are families the tuner does not train on by default, for generalisation tests
(``generate`` picks one by name, for the test and for `edgetune train mems --disturbance`). All generators are seeded and
return float64 arrays; sample k is the M1 command during frame k (t = k / frame_rate).
"""
from __future__ import annotations

import csv
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

FRAME_RATE_HZ = 120.0
BURST_HZ = 12.0  # the bursts' ring frequency by default: above the baseline x crossover (11.5 Hz), at the y peak of |S|
# Wiener test as the stand saw it, calibrated on the paper's Table 2 at two operating points
# (docs/calibration.md): diffusion coefficient σ [px/√s] (W(t) ~ N(0, σ²t) per axis) plus sweep
# episodes: at Poisson times (SWEEP_RATE_HZ) the spot glides for SWEEP_S at a random velocity
# N(0, SWEEP_PX_S²) per axis. The sweeps give the stand's heavy error tails under slow integral
# action (the baseline), which faster integral action (the paper's a_test gains) removes.
WIENER_SIGMA_PX_SQRT_S = 29.8
SWEEP_RATE_HZ = 1.0  # fixed, not fitted
SWEEP_S = 0.1  # fixed, not fitted
SWEEP_PX_S = 336.0


def _check(batch: int, n_frames: int) -> None:
    if batch < 1 or n_frames < 1:
        raise ValueError(f"batch and n_frames must be >= 1, got {batch}, {n_frames}")


def steps(
    batch: int,
    n_frames: int,
    seed: int | None,
    *,
    step_px: float = 100.0,
    hold_frames: int = 60,
    limit_px: float = 200.0,
) -> np.ndarray:
    """Piecewise-constant signal: every ``hold_frames`` each axis jumps by ±``step_px`` (paper Eq. 6).

    A jump that would leave [−limit_px, limit_px] goes the other way, so the spot stays on the sensor.
    """
    _check(batch, n_frames)
    if hold_frames < 1 or step_px < 0 or limit_px < step_px:
        raise ValueError("need hold_frames >= 1 and 0 <= step_px <= limit_px")
    rng = np.random.default_rng(seed)
    n_jumps = (n_frames - 1) // hold_frames
    signs = rng.choice([-1.0, 1.0], size=(batch, n_jumps, 2))
    levels = np.zeros((batch, n_jumps + 1, 2))
    for k in range(n_jumps):
        nxt = levels[:, k] + signs[:, k] * step_px
        levels[:, k + 1] = np.where(np.abs(nxt) > limit_px, levels[:, k] - signs[:, k] * step_px, nxt)
    return np.repeat(levels, hold_frames, axis=1)[:, :n_frames]


def wiener(
    batch: int,
    n_frames: int,
    seed: int | None,
    *,
    sigma_px_sqrt_s: float = WIENER_SIGMA_PX_SQRT_S,
    sweep_px_s: float = SWEEP_PX_S,
    sweep_rate_hz: float = SWEEP_RATE_HZ,
    sweep_s: float = SWEEP_S,
    frame_rate: float = FRAME_RATE_HZ,
) -> np.ndarray:
    """Wiener process per axis (paper Eq. 7) from 0, increments N(0, σ²/frame_rate) per frame, plus
    sweep episodes: Poisson-timed (``sweep_rate_hz``) glides of ``sweep_s`` at a velocity
    N(0, ``sweep_px_s``²) per axis. ``sweep_px_s = 0`` gives the pure Wiener process; the
    Wiener increments do not depend on the sweep parameters (common random numbers for the fit)."""
    _check(batch, n_frames)
    if sigma_px_sqrt_s < 0 or sweep_px_s < 0 or sweep_rate_hz < 0 or sweep_s < 0:
        raise ValueError("Wiener and sweep parameters must be >= 0")
    rng = np.random.default_rng(seed)
    inc = rng.standard_normal((batch, n_frames, 2)) * (sigma_px_sqrt_s / np.sqrt(frame_rate))
    starts = rng.random((batch, n_frames, 1)) < sweep_rate_hz / frame_rate
    kick = np.cumsum(starts * rng.standard_normal((batch, n_frames, 2)) * sweep_px_s, axis=1)
    n_sweep = max(1, round(sweep_s * frame_rate))
    kick[:, n_sweep:] -= kick[:, :-n_sweep].copy()  # velocity: boxcar of n_sweep frames per episode
    inc += kick / frame_rate
    inc[:, 0] = 0.0
    return np.cumsum(inc, axis=1)


def sinusoids(
    batch: int,
    n_frames: int,
    seed: int | None,
    *,
    n_components: int = 3,
    amplitude_px: float = 15.0,
    f_range_hz: tuple[float, float] = (0.2, 8.0),
    frame_rate: float = FRAME_RATE_HZ,
) -> np.ndarray:
    """Mixture of sinusoids per axis: random log-uniform frequencies, amplitudes and phases."""
    _check(batch, n_frames)
    rng = np.random.default_rng(seed)
    shape = (batch, 1, 2, n_components)
    f = np.exp(rng.uniform(np.log(f_range_hz[0]), np.log(f_range_hz[1]), shape))
    a = amplitude_px * rng.uniform(0.3, 1.0, shape)
    ph = rng.uniform(0.0, 2 * np.pi, shape)
    t = (np.arange(n_frames) / frame_rate)[None, :, None, None]
    return (a * np.sin(2 * np.pi * f * t + ph)).sum(axis=-1)


def check_burst_hz(burst_hz: float, frame_rate: float = FRAME_RATE_HZ) -> None:
    if not 0.0 < burst_hz < frame_rate / 2:
        raise ValueError(f"burst frequency must be in (0, {frame_rate / 2:g}) Hz (below Nyquist), got {burst_hz:g}")


def drift_bursts(
    batch: int,
    n_frames: int,
    seed: int | None,
    *,
    drift_px_s: float = 5.0,
    burst_rate_hz: float = 0.5,
    burst_px: float = 25.0,
    burst_hz: float = BURST_HZ,
    burst_tau_s: float = 0.15,
    frame_rate: float = FRAME_RATE_HZ,
) -> np.ndarray:
    """Slow linear drift plus Poisson-timed vibration bursts (decaying oscillations at `burst_hz`)."""
    _check(batch, n_frames)
    check_burst_hz(burst_hz, frame_rate)
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) / frame_rate
    out = t[None, :, None] * rng.uniform(-drift_px_s, drift_px_s, (batch, 1, 2))
    kicks = rng.random((batch, n_frames)) < burst_rate_hz / frame_rate
    amp = burst_px * rng.uniform(-1.0, 1.0, (batch, n_frames, 2)) * kicks[..., None]
    n_kernel = min(n_frames, int(5 * burst_tau_s * frame_rate) + 1)
    tk = np.arange(n_kernel) / frame_rate
    kernel = np.exp(-tk / burst_tau_s) * np.sin(2 * np.pi * burst_hz * tk + np.pi / 2)
    for b in range(batch):
        for ax in range(2):
            out[b, :, ax] += np.convolve(amp[b, :, ax], kernel)[:n_frames]
    return out


def from_csv(path: str | Path, frame_rate: float = FRAME_RATE_HZ) -> np.ndarray:
    """Load a recorded trace (header ``t_s,x_px,y_px``, any sample rate) as (1, T, 2).

    The trace is linearly resampled to ``frame_rate`` from its first to its last time stamp.
    Raises ValueError naming the file and the problem on a bad header, row or time base.
    """
    path = Path(path)
    if frame_rate <= 0:
        raise ValueError(f"frame_rate must be > 0, got {frame_rate}")
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or [c.strip() for c in rows[0]] != ["t_s", "x_px", "y_px"]:
        raise ValueError(f"{path}: header must be 't_s,x_px,y_px', got {rows[0] if rows else 'empty file'}")
    data = []
    for n, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        try:
            if len(row) != 3:
                raise ValueError(f"expected 3 columns, got {len(row)}")
            data.append([float(c) for c in row])
        except ValueError as exc:
            raise ValueError(f"{path}:{n}: bad row {row!r}: {exc}") from None
    if len(data) < 2:
        raise ValueError(f"{path}: need at least 2 samples, got {len(data)}")
    arr = np.asarray(data)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{path}: non-finite values")
    t = arr[:, 0]
    if np.any(np.diff(t) <= 0):
        raise ValueError(f"{path}: t_s must be strictly increasing")
    tq = t[0] + np.arange(int(np.floor((t[-1] - t[0]) * frame_rate + 1e-9)) + 1) / frame_rate
    out = np.stack([np.interp(tq, t, arr[:, 1]), np.interp(tq, t, arr[:, 2])], axis=-1)
    return out[None]


NAMES = ("wiener", "steps", "sine", "bursts")  # the generated families; anything else names a CSV recording


def generate(kind: str, seeds: Sequence[int], frames: int, burst_hz: float = BURST_HZ,
             starts: np.random.Generator | None = None) -> np.ndarray:
    """(B, frames, 2) M1 displacement [px], one stand per seed: wiener | steps | sine | bursts (ringing at
    `burst_hz`) | PATH.csv. A recording is the same trace for every stand, from its start, or with `starts`
    from a random frame each (a window of `frames`); past its end its last sample is held."""
    one = lambda f: np.concatenate([f(s) for s in seeds])  # noqa: E731  (seeded per stand)
    match kind:
        case "wiener":
            return one(lambda s: wiener(1, frames, s))
        case "steps":
            return one(lambda s: steps(1, frames, s))
        case "sine":
            return one(lambda s: sinusoids(1, frames, s))
        case "bursts":
            return one(lambda s: drift_bursts(1, frames, s, burst_hz=burst_hz))
    trace = recording(kind)[0]
    first = np.zeros(len(seeds), int) if starts is None else starts.integers(0, max(len(trace) - frames, 0) + 1, len(seeds))
    k = np.minimum(first[:, None] + np.arange(frames), len(trace) - 1)
    return trace[k]


@lru_cache(maxsize=8)
def recording(path: str) -> np.ndarray:
    """``from_csv`` read once per process (training draws a window of it every episode)."""
    return from_csv(path)
