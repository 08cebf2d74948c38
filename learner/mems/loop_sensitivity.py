"""Where a set of PID gains amplifies vibration: the MEMS loop's sensitivity S = 1 / (1 + L) per axis.

S(f) is the ratio of the spot's deviation with the loop closed to the M1 disturbance that causes it,
at frequency f: |S| < 1 rejects, |S| > 1 amplifies. The loop per frame (learner.mems.closed_loop): the PID
acts on the frame delivered one readout later, and its command drives M2 (exact ZOH) over the frame,

    L(z) = C(z) · g · G_M2(z) · z⁻¹,
    C(z) = P + I·T/(1 − z⁻¹) + D·(1 − z⁻¹)/T · α/(1 − (1 − α)·z⁻¹)   (controller.modes.mems.pid, α = 1 − e^(−T/τ_d))

with T the frame interval and g the M2 gain [px/V]. Cross-axis coupling, the command limits and the
camera noise are left out (tests/unit/test_loop_sensitivity.py checks S against the simulator). Bode's
sensitivity integral is why gains that reject slow disturbances better amplify some faster band more:
`summary` says where, so a user can compare it with the spectrum of their stand's vibration.
"""
from __future__ import annotations

import numpy as np
from scipy import signal

from controller.modes.mems.pid import DEFAULT_TAU_D_S
from firmware_sim.mems.physics import MemsParams, m2_discrete


def _loop(gains_axis: np.ndarray, axis: int, params: MemsParams, tau_d: float) -> tuple[np.ndarray, np.ndarray]:
    """L(z) = num / den, polynomials in z (descending powers), for gains (P, I, D) [SI] of one axis."""
    p, i, d = (float(v) for v in gains_axis)
    t = params.dt
    beta = np.exp(-t / tau_d) if tau_d > 0 else 0.0
    # C(z)·z²/z²: P(z−1)(z−β) + I·T·z(z−β) + D(1−β)/T·(z−1)²  over  (z−1)(z−β)
    num_c = (p * np.polymul([1, -1], [1, -beta]) + i * t * np.polymul([1, 0], [1, -beta])
             + d * (1 - beta) / t * np.polymul([1, -1], [1, -1]))
    den_c = np.polymul([1, -1], [1, -beta])
    phi, gam = m2_discrete(params.m2_fn_hz[axis], params.m2_zeta[axis], t)
    num_g, den_g = signal.ss2tf(phi, gam[:, None], np.array([[1.0, 0.0]]), np.zeros((1, 1)))
    num = params.gain_px_per_v[axis] * np.polymul(num_c, num_g[0])
    den = np.polymul(den_c, np.polymul(den_g, [1, 0]))  # [1, 0]: the readout delay z⁻¹
    return num, den


def sensitivity(gains: np.ndarray, freqs_hz: np.ndarray, params: MemsParams | None = None,
                tau_d: float = DEFAULT_TAU_D_S) -> np.ndarray:
    """|S| (2, F) for gains (2, 3) = [axis][P, I, D] [SI]; inf on every frequency of an unstable axis."""
    params = params or MemsParams()
    z = np.exp(2j * np.pi * np.asarray(freqs_hz, float) * params.dt)
    out = np.empty((2, z.size))
    for ax in range(2):
        num, den = _loop(np.asarray(gains, float)[ax], ax, params, tau_d)
        closed = np.polyadd(den, num)
        stable = np.all(np.abs(np.roots(closed)) < 1.0)
        out[ax] = np.abs(np.polyval(den, z) / np.polyval(closed, z)) if stable else np.inf
    return out


def frequency_grid(params: MemsParams | None = None, n: int = 400) -> np.ndarray:
    """Log-spaced frequencies from 0.1 Hz to just below Nyquist [Hz]."""
    params = params or MemsParams()
    return np.geomspace(0.1, 0.499 * params.frame_rate_hz, n)


def summary(gains: np.ndarray, params: MemsParams | None = None) -> dict[str, dict[str, float | None]]:
    """Per axis: the peak |S| and its frequency, and the band where |S| > 1 (vibration is amplified) [Hz]."""
    f = frequency_grid(params)
    s = sensitivity(gains, f, params)
    out: dict[str, dict[str, float | None]] = {}
    for ax, name in enumerate("xy"):
        if not np.all(np.isfinite(s[ax])):
            out[name] = {"peak": None, "peak_hz": None, "amplifies_from_hz": None, "amplifies_to_hz": None}
            continue
        over = f[s[ax] > 1.0]
        out[name] = {"peak": float(s[ax].max()), "peak_hz": float(f[s[ax].argmax()]),
                     "amplifies_from_hz": float(over.min()) if over.size else None,
                     "amplifies_to_hz": float(over.max()) if over.size else None}
    return out
