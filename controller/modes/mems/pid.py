"""Vectorised PID for the spot position loop (docs/design.md, "Units and conventions").

Per axis, parallel form with dt from timestamps:

    u = P·e + I·∫e dt − D·d(y_f)/dt,   e = target − measured [px], u [V]

P [V/px], I [V/(px·s)], D [V·s/px]. The derivative acts on the measurement y low-pass filtered
with a first-order filter of time constant ``tau_d`` (exact discretisation), so a target change
causes no derivative kick. The output is clamped to ``[u_min, u_max]``; anti-windup by clamping:
the integrator integrates only up to the headroom left by P·e − D·dy (it never pushes the output
further into a limit, but may always unwind), and the integral term itself stays within the limits. ``set_gains`` is bumpless: the integral
term is rescaled so the output computed from the last error and derivative does not jump.

State arrays have shape (..., 2) for (x, y): one stand on the edge (shape (2,)), B stands in the
learner (shape (B, 2)). ``update`` reuses preallocated buffers; its result is a view of an
internal buffer that the next call overwrites (copy it if you keep it).

An axis whose measurement is not finite (spot lost) holds its last output and its state; such
ticks are counted in ``invalid``.
"""
from __future__ import annotations

import math

import numpy as np

# Paper (Table 1, a_baseline) as printed: rows x, y; columns P, I, D. The stand's PID ran once per
# camera frame with time counted in frames (I per frame, D per frame⁻¹); docs/calibration.md.
PAPER_FRAME_RATE_HZ = 120.0
BASELINE_GAINS_PER_FRAME = np.array([[10.0, 5.0, 0.0], [16.0, 6.8, 2.5]])


def per_frame_to_si(gains: np.ndarray, frame_rate_hz: float = PAPER_FRAME_RATE_HZ) -> np.ndarray:
    """Gains (..., 2, 3) with time in frames → SI (I [V/(px·s)] = I·f, D [V·s/px] = D/f)."""
    g = np.array(gains, dtype=np.float64)
    g[..., 1] *= frame_rate_hz
    g[..., 2] /= frame_rate_hz
    return g


def si_to_per_frame(gains: np.ndarray, frame_rate_hz: float = PAPER_FRAME_RATE_HZ) -> np.ndarray:
    """Inverse of ``per_frame_to_si``."""
    return per_frame_to_si(gains, 1.0 / frame_rate_hz)


DEFAULT_TAU_D_S = 0.01  # derivative filter time constant [s]

# The baseline in the SI units of this module: X: P=10, I=600, D=0; Y: P=16, I=816, D=0.02083.
BASELINE_GAINS = per_frame_to_si(BASELINE_GAINS_PER_FRAME)
# The paper's fixed RL-derived gains (Table 1, a_test, per frame) in SI: X: P=15, I=1836, D=0;
# Y: P=13, I=1656, D=0.02083. The second calibration operating point (docs/calibration.md).
PAPER_A_TEST_GAINS_PER_FRAME = np.array([[15.0, 15.3, 0.0], [13.0, 13.8, 2.5]])
PAPER_A_TEST_GAINS = per_frame_to_si(PAPER_A_TEST_GAINS_PER_FRAME)


class Pid:
    """PID over arrays of shape ``shape + (2,)``; gains are array-like (..., 2, 3) = [axis][P, I, D]."""

    def __init__(
        self,
        gains: np.ndarray,
        *,
        u_min: float | np.ndarray,
        u_max: float | np.ndarray,
        tau_d: float = DEFAULT_TAU_D_S,
        shape: tuple[int, ...] | None = None,
    ) -> None:
        g = np.asarray(gains, dtype=np.float64)
        if g.shape[-2:] != (2, 3):
            raise ValueError(f"gains must have shape (..., 2, 3) [axis][P, I, D], got {g.shape}")
        if tau_d < 0:
            raise ValueError(f"tau_d must be >= 0 s, got {tau_d}")
        self.shape = tuple(shape) + (2,) if shape is not None else g.shape[:-1]
        self.u_min = np.broadcast_to(np.asarray(u_min, dtype=np.float64), self.shape).copy()
        self.u_max = np.broadcast_to(np.asarray(u_max, dtype=np.float64), self.shape).copy()
        if np.any(self.u_min > self.u_max):
            raise ValueError("PID output limits inverted")
        self.tau_d = float(tau_d)
        z = lambda: np.zeros(self.shape)  # noqa: E731
        self.p, self.i, self.d = z(), z(), z()
        self.i_term = z()  # integral contribution to u [V]
        self.y_f = z()  # filtered measurement [px]
        self.e = z()  # last error [px]
        self.dy = z()  # last filtered-measurement derivative [px/s]
        self.u = z()  # last output [V]
        self._pd, self._inc, self._lo, self._hi = z(), z(), z(), z()  # scratch buffers
        self.t_last: float | None = None
        self.invalid = 0  # ticks with a non-finite measurement on some axis (those axes hold)
        self.bad_dt = 0  # ticks whose timestamp did not advance (no integration, no derivative)
        self._primed = False
        self._write_gains(g)

    def _write_gains(self, gains: np.ndarray) -> None:
        g = np.broadcast_to(np.asarray(gains, dtype=np.float64), self.shape + (3,))
        if not np.all(np.isfinite(g)):
            raise ValueError("PID gains must be finite")
        self.p[...], self.i[...], self.d[...] = g[..., 0], g[..., 1], g[..., 2]

    @property
    def gains(self) -> np.ndarray:
        return np.stack([self.p, self.i, self.d], axis=-1)

    def set_gains(self, gains: np.ndarray) -> None:
        """Change gains between ticks without a jump of the output (bumpless)."""
        old_pd = self.p * self.e - self.d * self.dy
        self._write_gains(gains)
        if self._primed:
            self.i_term += old_pd - (self.p * self.e - self.d * self.dy)
            np.clip(self.i_term, self.u_min, self.u_max, out=self.i_term)

    def reset(self) -> None:
        for a in (self.i_term, self.y_f, self.e, self.dy, self.u):
            a.fill(0.0)
        self.t_last, self._primed = None, False

    def update(self, measured: np.ndarray, target: np.ndarray, t_s: float) -> np.ndarray:
        """One tick: measured and target [px] of shape (..., 2), t_s [s] monotonic. Returns u [V]."""
        dt = 0.0 if self.t_last is None else t_s - self.t_last
        self.t_last = t_s
        if not self._primed:  # first valid tick: the filter starts at the measurement
            dt = 0.0
        elif not dt > 0.0:
            self.bad_dt += 1
            dt = 0.0
        flat = measured if measured.ndim == 1 else measured.reshape(-1)
        if math.isfinite(flat.dot(flat)):  # cheap "all finite" test
            if not self._primed:
                self.y_f[...] = measured
                self._primed = True
            return self._tick(measured, target, dt)
        # some axis lost: run the tick on the finite axes, hold the state of the others
        self.invalid += 1
        ok = np.isfinite(measured)
        if not self._primed:
            np.copyto(self.y_f, measured, where=ok)
            self._primed = bool(ok.all())
        held = [a.copy() for a in (self.i_term, self.y_f, self.e, self.u)]
        self._tick(np.where(ok, measured, self.y_f), target, dt)
        for a, h in zip((self.i_term, self.y_f, self.e, self.u), held):
            np.copyto(a, h, where=~ok)
        self.dy[~ok] = 0.0
        return self.u

    def _tick(self, y: np.ndarray, target: np.ndarray, dt: float) -> np.ndarray:
        e, dy, pd, inc, lo, hi, u = self.e, self.dy, self._pd, self._inc, self._lo, self._hi, self.u
        np.subtract(target, y, out=e)
        np.multiply(self.p, e, out=pd)
        if dt > 0.0:
            # filtered measurement (exact first-order lag) and its derivative
            alpha = 1.0 - math.exp(-dt / self.tau_d) if self.tau_d > 0.0 else 1.0
            np.subtract(y, self.y_f, out=dy)
            dy *= alpha
            self.y_f += dy
            dy *= 1.0 / dt
            np.multiply(self.d, dy, out=u)
            pd -= u  # P·e − D·dy
            # integrate, clamped so the integrator never drives the output further into a limit
            # (it may still unwind), and stays within the output limits itself
            np.multiply(self.i, e, out=inc)
            inc *= dt
            np.subtract(self.u_max, pd, out=hi)
            np.maximum(hi, self.i_term, out=hi)
            np.minimum(hi, self.u_max, out=hi)
            np.subtract(self.u_min, pd, out=lo)
            np.minimum(lo, self.i_term, out=lo)
            np.maximum(lo, self.u_min, out=lo)
            self.i_term += inc
            np.minimum(self.i_term, hi, out=self.i_term)
            np.maximum(self.i_term, lo, out=self.i_term)
        else:
            dy.fill(0.0)
        np.add(pd, self.i_term, out=u)
        np.minimum(u, self.u_max, out=u)
        np.maximum(u, self.u_min, out=u)
        return u
