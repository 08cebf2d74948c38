"""controller.modes.mems.pid against analytic responses."""

import numpy as np
import pytest

from controller.modes.mems.pid import BASELINE_GAINS, BASELINE_GAINS_PER_FRAME, Pid, per_frame_to_si, si_to_per_frame

DT = 1 / 120


def gains(p=0.0, i=0.0, d=0.0):
    return np.array([[p, i, d], [p, i, d]])


def test_p_only_step():
    pid = Pid(gains(p=3.0), u_min=-1e3, u_max=1e3)
    m = np.array([1.0, -2.0])
    for k in range(5):
        u = pid.update(m, np.array([5.0, 5.0]), k * DT)
        np.testing.assert_allclose(u, 3.0 * (np.array([5.0, 5.0]) - m))


def test_i_ramp_and_dt_from_timestamps():
    pid = Pid(gains(i=2.0), u_min=-1e3, u_max=1e3)
    ts = np.cumsum([0.0, 0.01, 0.003, 0.02, 0.0083, 0.015])  # irregular ticks
    for t in ts:
        u = pid.update(np.zeros(2), np.array([1.5, -0.5]), t)
        np.testing.assert_allclose(u, 2.0 * np.array([1.5, -0.5]) * (t - ts[0]), atol=1e-12)


def test_d_on_ramp_measurement_no_filter_and_no_target_kick():
    pid = Pid(gains(d=0.5), u_min=-1e3, u_max=1e3, tau_d=0.0)
    rate = np.array([30.0, -12.0])  # px/s
    ts = np.cumsum([0.0, 0.01, 0.004, 0.02, 0.007])
    for k, t in enumerate(ts):
        u = pid.update(rate * t, np.full(2, 100.0 * k), t)  # target jumps: derivative on measurement
        np.testing.assert_allclose(u, 0.0 if k == 0 else -0.5 * rate, atol=1e-9)


def test_d_filter_first_order():
    tau = 0.02
    pid = Pid(gains(d=1.0), u_min=-1e3, u_max=1e3, tau_d=tau)
    rate = np.array([10.0, 20.0])
    pid.update(np.zeros(2), np.zeros(2), 0.0)
    u1 = pid.update(rate * DT, np.zeros(2), DT).copy()
    np.testing.assert_allclose(u1, -(1 - np.exp(-DT / tau)) * rate)  # exact lag, first tick
    for k in range(2, 200):
        u = pid.update(rate * k * DT, np.zeros(2), k * DT)
    np.testing.assert_allclose(u, -rate, rtol=1e-6)  # filtered derivative of a ramp → its slope


def test_saturation_and_anti_windup():
    pid = Pid(gains(p=1.0, i=50.0), u_min=-10.0, u_max=10.0)
    for k in range(200):  # large error: output saturates; integrator must not wind up
        u = pid.update(np.zeros(2), np.full(2, 5.0), k * DT)
    np.testing.assert_allclose(u, 10.0)
    assert np.all(pid.i_term <= 10.0 - 5.0 + 1e-9)  # integrates only up to the remaining headroom
    u = pid.update(np.zeros(2), np.full(2, -1.0), 200 * DT)  # error reverses: leaves saturation at once
    assert np.all(u < 10.0 - 1.0)


def test_bumpless_gain_change():
    pid = Pid(BASELINE_GAINS, u_min=-1e4, u_max=1e4)
    rng = np.random.default_rng(0)
    for k in range(50):
        u = pid.update(rng.normal(size=2), np.zeros(2), k * DT).copy()
    new = BASELINE_GAINS * np.array([1.7, 0.4, 2.0])
    pid.set_gains(new)
    e, dy = pid.e.copy(), pid.dy.copy()
    np.testing.assert_allclose(new[:, 0] * e + pid.i_term - new[:, 2] * dy, u, atol=1e-9)


def test_vectorised_equals_single():
    rng = np.random.default_rng(1)
    g = BASELINE_GAINS * rng.uniform(0.5, 1.5, size=(4, 2, 3))
    batch = Pid(g, u_min=-50.0, u_max=50.0)
    singles = [Pid(g[b], u_min=-50.0, u_max=50.0) for b in range(4)]
    for k in range(30):
        m, t = rng.normal(size=(4, 2)), rng.normal(size=(4, 2))
        ub = batch.update(m, t, k * DT)
        for b, s in enumerate(singles):
            np.testing.assert_allclose(ub[b], s.update(m[b], t[b], k * DT))


def test_lost_axis_holds_and_is_counted():
    pid = Pid(BASELINE_GAINS, u_min=-1e4, u_max=1e4)
    for k in range(5):
        u = pid.update(np.array([1.0, 1.0]), np.zeros(2), k * DT).copy()
    u2 = pid.update(np.array([np.nan, 1.0]), np.zeros(2), 5 * DT)
    assert u2[0] == u[0] and u2[1] != u[1] and np.all(np.isfinite(u2))
    assert pid.invalid == 1
    pid.update(np.array([1.0, 1.0]), np.zeros(2), 5 * DT)  # timestamp did not advance
    assert pid.bad_dt == 1


def test_bad_gains_rejected():
    with pytest.raises(ValueError):
        Pid(np.zeros((3, 3)), u_min=-1, u_max=1)
    with pytest.raises(ValueError):
        Pid(gains(), u_min=1, u_max=-1)


def test_per_frame_conversion():
    np.testing.assert_allclose(BASELINE_GAINS[1], [16.0, 6.8 * 120, 2.5 / 120])
    np.testing.assert_allclose(si_to_per_frame(BASELINE_GAINS), BASELINE_GAINS_PER_FRAME)
