"""learner/mems/loop_sensitivity.py: the MEMS loop's |S(f)| against the simulator, and what `summary` reports."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from controller.modes.mems.pid import BASELINE_GAINS
from firmware_sim.mems.physics import MemsParams, MemsStand
from learner.mems.closed_loop import simulate
from learner.mems.loop_sensitivity import sensitivity, summary

QUIET = replace(MemsParams(), centroid_noise_px=0.0, centroid_quant_px=0.0, coupling=0.0)
FREQS = np.array([0.5, 3.0, 12.0, 25.0, 45.0])


def measured_sensitivity(gains: np.ndarray, f_hz: float) -> np.ndarray:
    """Spot amplitude at f with the loop closed over the amplitude with it open (no gains), per axis,
    from a 1 px sine on M1 (least-squares fit over whole periods after the transient)."""
    fs = QUIET.frame_rate_hz
    n = int(round(fs / f_hz * max(4, int(4 * f_hz)))) + 600
    t = np.arange(n) / fs
    dist = np.stack([np.sin(2 * np.pi * f_hz * t), np.cos(2 * np.pi * f_hz * t)], axis=-1)[None]
    basis = np.stack([np.sin(2 * np.pi * f_hz * t), np.cos(2 * np.pi * f_hz * t)], axis=1)[600:]

    def amplitude(g: np.ndarray) -> np.ndarray:
        spot = simulate(MemsStand(QUIET), g, dist).true_positions[0, 600:]
        coef = np.linalg.lstsq(basis, spot, rcond=None)[0]
        return np.hypot(*coef)

    return amplitude(gains) / amplitude(np.zeros((2, 3)))


@pytest.mark.parametrize("scale", [(1.0, 1.0), (1.2, 2.5), (2.0, 2.0)])
def test_model_matches_the_simulator(scale):
    gains = BASELINE_GAINS.copy()
    gains[:, 0] *= scale[0]
    gains[:, 1] *= scale[1]
    model = sensitivity(gains, FREQS, QUIET)
    sim = np.stack([measured_sensitivity(gains, f) for f in FREQS], axis=1)
    np.testing.assert_allclose(model, sim, rtol=1e-3)


def test_summary_finds_where_higher_integral_gain_amplifies():
    base = summary(BASELINE_GAINS)
    high_i = BASELINE_GAINS.copy()
    high_i[:, 1] *= 2.0
    tuned = summary(high_i)
    for ax in "xy":
        assert 1.0 < base[ax]["peak"] < tuned[ax]["peak"]
        for s in (base[ax], tuned[ax]):
            assert s["amplifies_from_hz"] < s["peak_hz"] < s["amplifies_to_hz"]
    # on x the amplified band also starts lower; on y the slow mirror (12.6 Hz) sets where it starts
    assert tuned["x"]["amplifies_from_hz"] < base["x"]["amplifies_from_hz"]


def test_unstable_gains_have_no_finite_sensitivity():
    wild = BASELINE_GAINS.copy()
    wild[:, :2] *= 4.0
    assert np.isinf(sensitivity(wild, FREQS)).all()
    assert summary(wild)["x"]["peak"] is None


@pytest.mark.parametrize("p_scale,i_scale", [(1.0, 1.0), (1.9, 2.1), (2.2, 1.25), (0.8, 0.5)])
def test_rejecting_one_band_better_amplifies_another(p_scale, i_scale):
    """Bode's sensitivity integral: the mean of ln|S| from 0 to Nyquist is 0 for every stabilising gain set."""
    g = BASELINE_GAINS.copy()
    g[:, 0] *= p_scale
    g[:, 1] *= i_scale
    f = np.linspace(1e-4, 0.4999 * QUIET.frame_rate_hz, 100_001)
    log_s = np.log(sensitivity(g, f))
    assert np.all(np.isfinite(log_s)) and np.abs(log_s.mean(axis=1)).max() < 1e-3
    assert log_s.min() < -1.0 and log_s.max() > 0.2  # it rejects slow drift and amplifies a faster band
