"""The ring's receivers: the complex scattered field of one acquisition, with optional complex Gaussian noise.

The data come from the one physics source, `controller.modes.scatter.physics.data`, with the design space of
`controller.modes.scatter.spec`: the source is a plane wave of wavenumber ``spec.wavenumbers(n)[frequency]``
travelling along ``spec.incident_direction_deg(source_deg)`` (inward from the transceiver), and the receivers sit
on the ring (radius 100) at the integer angles asked. Born order 1, 2, 3 (or "exact") as configured.

Noise (optional): additive circular complex Gaussian with E|ε|² = RMS² · 10^(−SNR/10), the RMS that of this
acquisition's noise-free values, so the SNR in dB holds per acquisition. It is drawn from the key
(sample key, acquisition index) alone, so the same run gives the same noise whatever the timing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from controller.modes.scatter import physics, spec


@dataclass(frozen=True)
class ReceiverParams:
    order: physics.Order = 2  # Born order 1, 2, 3 or "exact"
    snr_db: float = math.inf  # +inf: noise-free

    def __post_init__(self) -> None:
        if self.order not in physics.ORDERS:
            raise ValueError(f"order must be one of {physics.ORDERS}, got {self.order!r}")
        if math.isnan(self.snr_db) or self.snr_db == -math.inf:
            raise ValueError(f"snr_db must be a number or +inf, got {self.snr_db}")


def clean(eta: np.ndarray, source_deg: float, frequency: int, receivers: np.ndarray, order: physics.Order
          ) -> np.ndarray:
    """(R,) noise-free data of one source (ring angle ``source_deg``, frequency index) at the receiver angles."""
    if not 0 <= frequency < len(spec.FREQUENCY_FACTORS):
        raise ValueError(f"frequency index must be 0..{len(spec.FREQUENCY_FACTORS) - 1}, got {frequency}")
    k = spec.wavenumbers(np.shape(eta)[0])[frequency]
    return physics.data(eta, k, np.atleast_1d(spec.incident_direction_deg(source_deg)), receivers, order)[0]


def noise(values: np.ndarray, snr_db: float, key: int, index: int) -> np.ndarray:
    """Complex Gaussian noise for ``values`` at ``snr_db`` relative to their RMS, drawn from (key, index)."""
    if snr_db == math.inf:
        return np.zeros_like(values)
    rms = math.sqrt(float(np.mean(np.abs(values) ** 2)))
    sigma = rms * 10.0 ** (-snr_db / 20.0) / math.sqrt(2.0)  # per real component
    rng = np.random.default_rng((key, index))
    return sigma * (rng.standard_normal(values.shape) + 1j * rng.standard_normal(values.shape))


def acquire(eta: np.ndarray, source_deg: float, frequency: int, receivers: np.ndarray, params: ReceiverParams,
            key: int, index: int) -> np.ndarray:
    """(R,) the data of acquisition ``index`` of the sample with ``key``: clean values plus noise."""
    values = clean(eta, source_deg, frequency, receivers, params.order)
    return values + noise(values, params.snr_db, key, index)
