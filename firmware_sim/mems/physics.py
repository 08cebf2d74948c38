"""The MEMS optical stabilisation stand (paper: mems-mirror-pid-rl, Section III.1), batched.

Laser → disturbance mirror M1 (piezo tip/tilt) → MEMS mirror M2 → camera. The spot position on
the sensor is the sum of the M1 displacement and the M2 deflection [px]; the PID drives M2 so that
the measured spot stays on the target. All arrays carry a leading batch axis B, so the learner runs
thousands of stands and the emulator runs one (B = 1) with the same code (`MemsStand` satisfies the
device-model contract, `firmware_sim.device.DeviceModel`). numpy only.

One ``step`` is one camera frame:
1. M1 follows its commanded displacement (``disturbance_px``, held until changed) through a
   first-order lag (exact discretisation; ``m1_tau_s = 0`` means it follows directly).
2. M2, per axis a damped 2nd-order system driven by the clipped command (held constant over the
   step, zero-order hold, plus a small cross-axis coupling), is integrated exactly over ``dt``.
3. The camera samples the spot at the end of the step, adds centroid noise, quantises the
   centroid, flags the spot lost when it is off the sensor (reading NaN), and pushes the reading
   into a readout delay line; the frame returned is the one captured ``readout_delay_frames`` ago.

Units: px (3.45 µm camera pixels, origin at the sensor centre), V (command volts, see
``MemsParams.gain_px_per_v``), s. Calibration of the defaults: docs/calibration.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class MemsParams:
    """Stand parameters; defaults fitted to the paper's Table 2 at two operating points (docs/calibration.md)."""

    frame_rate_hz: float = 120.0  # camera frame rate [Hz]; one step = one frame
    sensor_px: tuple[int, int] = (1440, 1080)  # sensor width, height [px] (IMX392-class)
    pixel_pitch_um: float = 3.45  # pixel pitch [µm] (documentation only: all positions in px)
    spot_radius_px: float = 4.0  # spot half-width [px]: centroid closer than this to an edge → lost
    readout_delay_frames: int = 1  # frames between capture and delivery [frames], >= 0
    centroid_noise_px: float = 0.3  # centroid noise, per axis [px rms]
    centroid_quant_px: float = 1.0 / 16.0  # sub-pixel centroid resolution [px]; 0 = none
    m1_tau_s: float = 0.002  # M1 (piezo) first-order lag time constant [s]; 0 = direct
    # M2 natural frequency x, y [Hz] and damping ratio x, y [1], each with its driver's low-pass
    # filter. x is fast, not identifiable at 120 Hz (fixed); y (the slow outer axis behind a
    # Butterworth-damped filter, ζ = 0.7 fixed) has its frequency fitted.
    m2_fn_hz: tuple[float, float] = (150.0, 12.6)
    m2_zeta: tuple[float, float] = (0.5, 0.7)
    # M2 static gain x, y [px per command volt] (fitted). A command volt is the PID output unit; the
    # MEMS driver applies 1/200 of it to the mirror (±20000 V command ↔ ±100 V at the mirror, i.e.
    # 5.6 / 4.9 px per mirror volt), see docs/calibration.md.
    gain_px_per_v: tuple[float, float] = (0.0279, 0.0246)
    v_limit: float = 20000.0  # command limit, symmetric [V]; commands are clipped to ±v_limit
    coupling: float = 0.02  # cross-axis coupling: deflection of one axis per unit of the other [1]

    def __post_init__(self) -> None:
        checks = {
            "frame_rate_hz > 0": self.frame_rate_hz > 0,
            "readout_delay_frames >= 0": self.readout_delay_frames >= 0,
            "centroid_noise_px >= 0": self.centroid_noise_px >= 0,
            "centroid_quant_px >= 0": self.centroid_quant_px >= 0,
            "m1_tau_s >= 0": self.m1_tau_s >= 0,
            "m2_fn_hz > 0": min(self.m2_fn_hz) > 0,
            "m2_zeta > 0": min(self.m2_zeta) > 0,
            "v_limit > 0": self.v_limit > 0,
            "|coupling| < 1": abs(self.coupling) < 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid MemsParams: {', '.join(bad)}")

    @property
    def dt(self) -> float:
        """Nominal frame interval [s]."""
        return 1.0 / self.frame_rate_hz


@dataclass(frozen=True)
class Frame:
    """One camera reading per stand, each array of shape (B,)."""

    x_px: np.ndarray  # centroid x [px] (quantised), NaN when lost
    y_px: np.ndarray  # centroid y [px] (quantised), NaN when lost
    lost: np.ndarray  # bool: spot off the sensor when this frame was captured
    t_s: np.ndarray  # stand time at delivery [s]

    @property
    def xy(self) -> np.ndarray:
        """Centroids as (B, 2) [px]."""
        return np.stack([self.x_px, self.y_px], axis=-1)


@dataclass(frozen=True)
class MemsState:
    """State of B stands. ``step`` returns a new state; ``rng`` is shared and advances."""

    t_s: float  # stand time [s]
    m1_command_px: np.ndarray  # (B, 2) commanded M1 displacement [px] (held until changed)
    m1_px: np.ndarray  # (B, 2) M1 displacement of the spot [px]
    m2_px: np.ndarray  # (B, 2) M2 deflection of the spot [px]
    m2_vel_px_s: np.ndarray  # (B, 2) M2 deflection rate [px/s]
    delay_line: np.ndarray  # (D, B, 2) captured, not yet delivered readings [px], oldest first
    rng: np.random.Generator = field(repr=False)

    @property
    def spot_px(self) -> np.ndarray:
        """True spot position (B, 2) [px]."""
        return self.m1_px + self.m2_px

    @property
    def batch(self) -> int:
        return self.m1_px.shape[0]


def _expm(a: np.ndarray) -> np.ndarray:
    """Matrix exponential by scaling and squaring with a Taylor series (small matrices)."""
    s = max(0, int(np.ceil(np.log2(max(np.abs(a).sum(axis=1).max(), 1e-300)))) + 1)
    a = a / 2.0**s
    out, term = np.eye(len(a)), np.eye(len(a))
    for k in range(1, 20):
        term = term @ a / k
        out = out + term
    for _ in range(s):
        out = out @ out
    return out


@lru_cache(maxsize=64)
def m2_discrete(fn_hz: float, zeta: float, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact ZOH discretisation of x'' + 2ζω x' + ω² x = ω² g·u for state (x, x'), unit gain g.

    Returns (Φ, Γ): [x, v]_{k+1} = Φ [x, v]_k + Γ·(g·u_k).
    """
    w = 2.0 * np.pi * fn_hz
    m = np.zeros((3, 3))
    m[0, 1] = 1.0
    m[1, 0], m[1, 1], m[1, 2] = -w * w, -2.0 * zeta * w, w * w
    e = _expm(m * dt)
    return e[:2, :2].copy(), e[:2, 2].copy()


class MemsStand:
    """Batched stand physics: ``reset(seed, batch) -> MemsState``, ``step(...) -> (MemsState, Frame)``."""

    def __init__(self, params: MemsParams | None = None) -> None:
        self.params = params or MemsParams()
        p = self.params
        self._gain = np.asarray(p.gain_px_per_v, dtype=np.float64)
        self._mix = np.array([[1.0, p.coupling], [p.coupling, 1.0]])  # u_eff = u @ mix
        self._half = np.asarray(p.sensor_px, dtype=np.float64) / 2.0 - p.spot_radius_px

    def reset(self, seed: int | None, batch: int = 1) -> MemsState:
        """All mirrors at rest, spot at the sensor centre; the delay line holds centred readings."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        rng = np.random.default_rng(seed)
        z = np.zeros((batch, 2))
        state = MemsState(0.0, z, z, z, z, np.zeros((self.params.readout_delay_frames, batch, 2)), rng)
        if self.params.readout_delay_frames:
            reading = self._capture(state.spot_px, rng)
            state = replace(state, delay_line=np.broadcast_to(reading, state.delay_line.shape).copy())
        return state

    def step(
        self,
        state: MemsState,
        command_v: np.ndarray,
        dt: float,
        disturbance_px: np.ndarray | None = None,
    ) -> tuple[MemsState, Frame]:
        """Advance one frame of ``dt`` [s].

        command_v: (B, 2) M2 command [V], held over the step (clipped to ±v_limit; NaN → 0).
        disturbance_px: optional (B, 2) new M1 command displacement [px]; None keeps the last one.
        """
        p, b = self.params, state.batch
        if not dt > 0.0:
            raise ValueError(f"dt must be > 0 s, got {dt}")
        u = np.asarray(command_v, dtype=np.float64)
        if u.shape != (b, 2):
            raise ValueError(f"command_v must have shape ({b}, 2), got {u.shape}")
        u = np.clip(np.nan_to_num(u, nan=0.0), -p.v_limit, p.v_limit)
        m1_cmd = state.m1_command_px
        if disturbance_px is not None:
            m1_cmd = np.broadcast_to(np.asarray(disturbance_px, dtype=np.float64), (b, 2)).copy()

        # M1: first-order lag towards its command (exact)
        decay = np.exp(-dt / p.m1_tau_s) if p.m1_tau_s > 0 else 0.0
        m1 = m1_cmd + (state.m1_px - m1_cmd) * decay
        # M2: exact ZOH step of the 2nd-order system per axis
        drive = (u @ self._mix) * self._gain  # static deflection the command asks for [px]
        x, v = np.empty((b, 2)), np.empty((b, 2))
        for ax in range(2):
            phi, gam = m2_discrete(p.m2_fn_hz[ax], p.m2_zeta[ax], float(dt))
            x0, v0 = state.m2_px[:, ax], state.m2_vel_px_s[:, ax]
            x[:, ax] = phi[0, 0] * x0 + phi[0, 1] * v0 + gam[0] * drive[:, ax]
            v[:, ax] = phi[1, 0] * x0 + phi[1, 1] * v0 + gam[1] * drive[:, ax]

        t = state.t_s + dt
        reading = self._capture(m1 + x, state.rng)
        if p.readout_delay_frames:
            delivered = state.delay_line[0]
            line = np.concatenate([state.delay_line[1:], reading[None]], axis=0)
        else:
            delivered, line = reading, state.delay_line
        lost = np.isnan(delivered[:, 0])
        frame = Frame(delivered[:, 0].copy(), delivered[:, 1].copy(), lost, np.full(b, t))
        return MemsState(t, m1_cmd, m1, x, v, line, state.rng), frame

    def _capture(self, spot: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Camera centroid of the spot (B, 2) [px]: noise, quantisation, NaN where lost."""
        p = self.params
        lost = np.any(np.abs(spot) > self._half, axis=1)
        c = spot + p.centroid_noise_px * rng.standard_normal(spot.shape)
        if p.centroid_quant_px > 0:
            c = np.round(c / p.centroid_quant_px) * p.centroid_quant_px
        c[lost] = np.nan
        return c
