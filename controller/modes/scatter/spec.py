"""The transceiver task's contract, defined once: the design space, the observation the policy sees, and its
ONNX names and shapes. Used by the learner (env, export, evaluation) and the edge's transceiver mode.

Design space (paper §3, the authors' code): the unit square on an n × n grid; transceivers on a ring at integer
degrees 0 … 359; wavenumbers k ∈ {n/4, n/2, 3n/4, n}; a budget of K = 10 transceivers per scan. At step t the
new transceiver at angle θ_t sends a plane wave of wavenumber k_t inward — travelling along θ_t + 180° (the
far-field limit of a point source at θ_t, paper eq. 3) — and every transceiver placed so far (θ_1 … θ_t, itself
included) receives: t complex numbers d_t = F_{θ_t, k_t}(η) at radius 100.

Observation (paper §3.1, s_t = (d_t, angle–frequency vector, budget left)), OBS = 2K + 360 + 1 floats:
  [0, 2K)          the newest data d_t, (re, im) per receiver in placement order, times data_scale(k_t, n),
                   zero-padded past t receivers (all zeros before the first transceiver)
  [2K, 2K + 360)   per integer angle: (f + 1)/4 where a transceiver at that angle used frequency index f, else 0
  [2K + 360]       the budget left, (K − t)/K

Policy graph (one recurrent step; the GRU state is a manifest `state`, zeros at the start of a scan):
  obs (OBS,), hidden (LAYERS, H) → angle_logits (360,)      used angles already masked to MASKED
                                   frequency_logits (360, 4) the frequency head given each angle
                                   hidden_next (LAYERS, H)
The edge takes the arg-max angle and then the arg-max frequency of that angle's row.
"""
from __future__ import annotations

import numpy as np

TASK = "scatter-transceiver"
RECEIVER_RADIUS = 100.0  # the ring's radius (the domain is the unit square around its centre)
N_ANGLES = 360
FREQUENCY_FACTORS = (0.25, 0.5, 0.75, 1.0)  # k = factor · n
BUDGET = 10
NORM = 0.3  # scatterers are scaled to a discrete 2-norm ‖η‖₂ = 0.3 over the grid values
LAYERS = 3  # the policy's stacked GRU layers (the paper's)
MASKED = -1.0e9  # the logit of an angle already used
OBS, HIDDEN, ANGLE_LOGITS, FREQUENCY_LOGITS, HIDDEN_NEXT = "obs", "hidden", "angle_logits", "frequency_logits", "hidden_next"
UNITS = {OBS: "1", HIDDEN: "1", ANGLE_LOGITS: "1", FREQUENCY_LOGITS: "1", HIDDEN_NEXT: "1"}


def wavenumbers(n: int) -> np.ndarray:
    """The allowed wavenumbers on an n × n grid, index f = 0 … 3."""
    return np.asarray(FREQUENCY_FACTORS) * n


def incident_direction_deg(angle_deg: np.ndarray | float) -> np.ndarray:
    """Travel direction of the plane wave a transceiver at ``angle_deg`` sends into the domain."""
    return (np.asarray(angle_deg, dtype=float) + 180.0) % 360.0


def obs_size(budget: int = BUDGET) -> int:
    return 2 * budget + N_ANGLES + 1


def data_scale(k: float, n: int) -> float:
    """Brings data at radius 100 to order one: removes the far-field Hankel amplitude (1/4)·√(2/(π k R)) and
    the k² of the Born term, and the ∫η ~ NORM/n of a scatterer at the training norm."""
    return 4.0 * np.sqrt(np.pi * k * RECEIVER_RADIUS / 2.0) / k**2 * n / NORM


def observation(
    data: np.ndarray, k: float, angles: np.ndarray, frequencies: np.ndarray, n: int, budget: int = BUDGET
) -> np.ndarray:
    """s_t as float32 (obs_size,): ``data`` the newest source's t complex values (empty before the first),
    ``angles``/``frequencies`` the t integer angles and frequency indices placed so far."""
    angles, frequencies = np.asarray(angles, dtype=int), np.asarray(frequencies, dtype=int)
    data = np.asarray(data, dtype=complex)
    t = angles.size
    if frequencies.size != t or t > budget or data.size not in (0, t):
        raise ValueError(f"inconsistent step: {t} angles, {frequencies.size} frequencies, {data.size} data")
    if np.any((angles < 0) | (angles >= N_ANGLES)) or np.any((frequencies < 0) | (frequencies >= len(FREQUENCY_FACTORS))):
        raise ValueError("angles must be integer degrees 0..359 and frequency indices 0..3")
    obs = np.zeros(obs_size(budget), dtype=np.float32)
    scaled = data * data_scale(k, n)
    obs[0 : 2 * data.size : 2], obs[1 : 2 * data.size : 2] = scaled.real, scaled.imag
    obs[2 * budget + angles] = (frequencies + 1) / len(FREQUENCY_FACTORS)
    obs[2 * budget + N_ANGLES] = (budget - t) / budget
    return obs
