"""Closed-loop simulation of B stands under PID at the camera frame rate (numpy only, no torch).

Per frame k: the PID sees the last delivered frame and the target of frame k, its command drives
M2 over the frame while M1 follows disturbance k, and the camera delivers the next frame.
``tracking_stats`` gives the paper's Table 2 quantities (Δ, Δx, Δy: mean and std, px).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controller.modes.mems.pid import Pid
from firmware_sim.mems.physics import MemsStand


@dataclass(frozen=True)
class Trajectory:
    positions: np.ndarray  # (B, T, 2) delivered centroid after frame k [px], NaN when lost
    true_positions: np.ndarray  # (B, T, 2) true spot position at the end of frame k [px]
    targets: np.ndarray  # (B, T, 2) target of frame k [px]
    commands: np.ndarray  # (B, T, 2) PID command during frame k [V]
    lost: np.ndarray  # (B, T) bool, delivered frame lost
    t_s: np.ndarray  # (T,) stand time at delivery [s]


def simulate(
    stand: MemsStand,
    gains: np.ndarray,
    disturbance: np.ndarray,
    target: np.ndarray | None = None,
    seed: int | None = 0,
    *,
    tau_d: float | None = None,
) -> Trajectory:
    """Run physics + PID. gains (B, 2, 3) or (2, 3) [axis][P, I, D]; disturbance, target (B, T, 2) [px].

    target None means the sensor centre. tau_d: PID derivative filter [s] (None: the Pid default).
    """
    dist = np.asarray(disturbance, dtype=np.float64)
    if dist.ndim != 3 or dist.shape[2] != 2:
        raise ValueError(f"disturbance must have shape (B, T, 2), got {dist.shape}")
    b, n = dist.shape[:2]
    tgt = np.zeros_like(dist) if target is None else np.broadcast_to(np.asarray(target, float), dist.shape)
    g = np.broadcast_to(np.asarray(gains, dtype=np.float64), (b, 2, 3))
    lim = stand.params.v_limit
    pid = Pid(g, u_min=-lim, u_max=lim, **({} if tau_d is None else {"tau_d": tau_d}))
    dt = stand.params.dt
    state = stand.reset(seed, b)
    pos, true, cmd = np.empty((b, n, 2)), np.empty((b, n, 2)), np.empty((b, n, 2))
    lost, t_s = np.empty((b, n), dtype=bool), np.empty(n)
    meas, t = np.zeros((b, 2)), 0.0
    for k in range(n):
        u = pid.update(meas, tgt[:, k], t)
        cmd[:, k] = u
        state, frame = stand.step(state, u, dt, dist[:, k])
        meas, t = frame.xy, float(frame.t_s[0])
        pos[:, k], true[:, k], lost[:, k], t_s[k] = meas, state.spot_px, frame.lost, t
    return Trajectory(pos, true, np.array(tgt), cmd, lost, t_s)


def tracking_stats(traj: Trajectory, skip_frames: int = 0) -> dict[str, float]:
    """Paper Table 2 quantities of a simulated trajectory (after ``skip_frames``), see ``deviation_stats``."""
    pos = np.where(traj.lost[..., None], np.nan, traj.positions)
    return deviation_stats(pos[:, skip_frames:], traj.targets[:, skip_frames:])


def deviation_stats(positions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Paper Table 2: mean/std of Δ = |pos − target| (Euclidean), Δx, Δy [px] over all samples of
    (..., 2) arrays; samples with a NaN position (spot lost) are excluded and reported as ``lost_frac``."""
    err = np.asarray(positions, float) - np.asarray(targets, float)
    ok = np.isfinite(err).all(axis=-1)
    d = np.hypot(err[..., 0], err[..., 1])[ok]
    dx, dy = np.abs(err[..., 0])[ok], np.abs(err[..., 1])[ok]
    out = {"lost_frac": float(1.0 - ok.mean())}
    for name, v in (("delta", d), ("delta_x", dx), ("delta_y", dy)):
        out[f"{name}_mean"] = float(v.mean()) if v.size else float("nan")
        out[f"{name}_std"] = float(v.std()) if v.size else float("nan")
    return out
