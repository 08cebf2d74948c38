"""firmware_sim.mems.physics physics and firmware_sim.mems.disturbance generators."""
from dataclasses import replace

import numpy as np
import pytest
from scipy import signal

from firmware_sim.mems import disturbance
from firmware_sim.mems.physics import MemsParams, MemsStand

QUIET = MemsParams(centroid_noise_px=0.0, centroid_quant_px=0.0)


def run(stand, seed, cmds, dist):
    state = stand.reset(seed, batch=cmds.shape[0])
    frames = []
    for k in range(cmds.shape[1]):
        state, f = stand.step(state, cmds[:, k], stand.params.dt, dist[:, k])
        frames.append(f.xy)
    return np.stack(frames, axis=1), state


def test_batch_equals_single_runs():
    stand = MemsStand(replace(QUIET, centroid_quant_px=1 / 16))
    rng = np.random.default_rng(0)
    cmds = rng.uniform(-3000, 3000, size=(4, 50, 2))
    dist = disturbance.wiener(4, 50, 3)
    batched, _ = run(stand, 0, cmds, dist)
    for b in range(4):
        single, _ = run(stand, 0, cmds[b : b + 1], dist[b : b + 1])
        np.testing.assert_array_equal(batched[b], single[0])


def test_seeding_determinism():
    stand = MemsStand()
    cmds, dist = np.zeros((3, 20, 2)), disturbance.wiener(3, 20, 1)
    a, _ = run(stand, 7, cmds, dist)
    b, _ = run(stand, 7, cmds, dist)
    c, _ = run(stand, 8, cmds, dist)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("fn, zeta, dt", [(150.0, 0.5, 1 / 120), (40.0, 0.2, 1 / 1000), (2000.0, 0.05, 1 / 120)])
def test_second_order_step_matches_analytic(fn, zeta, dt):
    p = replace(QUIET, m2_fn_hz=(fn, fn), m2_zeta=(zeta, zeta), coupling=0.0, readout_delay_frames=0)
    stand = MemsStand(p)
    state = stand.reset(0)
    u = np.array([[1000.0, -500.0]])
    w, wd = 2 * np.pi * fn, 2 * np.pi * fn * np.sqrt(1 - zeta**2)
    for k in range(1, 60):
        state, frame = stand.step(state, u, dt)
        t = k * dt
        s = 1 - np.exp(-zeta * w * t) * (np.cos(wd * t) + zeta / np.sqrt(1 - zeta**2) * np.sin(wd * t))
        np.testing.assert_allclose(state.m2_px[0], u[0] * p.gain_px_per_v * s, atol=1e-9)
        np.testing.assert_allclose(frame.xy[0], state.spot_px[0])


def test_coupling_and_voltage_limit():
    p = replace(QUIET, readout_delay_frames=0, coupling=0.05)
    stand = MemsStand(p)
    state = stand.reset(0)
    for _ in range(300):  # settle: static deflection = g · (u @ mix), command clipped to ±v_limit
        state, _ = stand.step(state, np.array([[1e9, 0.0]]), p.dt)
    np.testing.assert_allclose(state.m2_px[0], np.array(p.gain_px_per_v) * [p.v_limit, 0.05 * p.v_limit], rtol=1e-6)


def test_readout_delay_and_m1_lag():
    p = replace(QUIET, readout_delay_frames=2, m1_tau_s=0.0)
    stand = MemsStand(p)
    state = stand.reset(0)
    xs = []
    for k in range(5):
        state, f = stand.step(state, np.zeros((1, 2)), p.dt, np.array([[10.0 * (k + 1), 0.0]]))
        xs.append(f.x_px[0])
    assert xs == [0.0, 0.0, 10.0, 20.0, 30.0]


def test_spot_lost_off_sensor():
    stand = MemsStand(replace(QUIET, readout_delay_frames=1))
    state = stand.reset(0, batch=2)
    dist = np.array([[800.0, 0.0], [0.0, 0.0]])  # stand 0: beyond the 720 px half-width
    state, f = stand.step(state, np.zeros((2, 2)), 1 / 120, dist)
    assert not f.lost.any()  # the delay line still delivers the frame before
    state, f = stand.step(state, np.zeros((2, 2)), 1 / 120)
    assert f.lost.tolist() == [True, False]
    assert np.isnan(f.x_px[0]) and np.isnan(f.y_px[0]) and np.isfinite(f.x_px[1])


def test_quantisation_and_noise():
    p = MemsParams(centroid_noise_px=0.5, centroid_quant_px=1 / 16)
    stand = MemsStand(p)
    xy, _ = run(stand, 0, np.zeros((8, 200, 2)), np.full((8, 200, 2), 3.3))
    xy = xy[:, 10:]
    np.testing.assert_allclose(xy * 16, np.round(xy * 16), atol=1e-9)
    assert abs(xy.std() - 0.5) < 0.05 and abs(xy.mean() - 3.3) < 0.05


def test_step_input_validation():
    stand = MemsStand()
    state = stand.reset(0, batch=2)
    with pytest.raises(ValueError):
        stand.step(state, np.zeros((1, 2)), 1 / 120)
    with pytest.raises(ValueError):
        stand.step(state, np.zeros((2, 2)), 0.0)
    with pytest.raises(ValueError):
        MemsParams(m2_zeta=(0.0, 0.5))
    state, f = stand.step(state, np.full((2, 2), np.nan), 1 / 120)  # NaN command → 0 V, no crash
    assert np.all(np.isfinite(state.m2_px))


def test_generators_shapes_and_seeds():
    for gen in (disturbance.steps, disturbance.wiener, disturbance.sinusoids, disturbance.drift_bursts):
        a, b = gen(3, 500, 1), gen(3, 500, 1)
        assert a.shape == (3, 500, 2) and np.all(np.isfinite(a))
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, gen(3, 500, 2))
    s = disturbance.steps(4, 600, 0, hold_frames=60)
    jumps = np.abs(np.diff(s, axis=1))
    assert set(np.unique(jumps)) <= {0.0, 100.0} and np.abs(s).max() <= 200.0
    w = disturbance.wiener(200, 400, 0, sigma_px_sqrt_s=30.0, sweep_px_s=0.0)  # the pure Wiener process
    assert abs(np.diff(w, axis=1).std() - 30.0 / np.sqrt(120)) < 0.05
    # sweeps add velocity N(0, s²) per axis while an episode runs (a fraction rate·duration of the frames)
    w = disturbance.wiener(200, 4000, 0, sigma_px_sqrt_s=30.0, sweep_px_s=300.0, sweep_rate_hz=1.0, sweep_s=0.1)
    assert abs(np.diff(w, axis=1).std() - np.sqrt(30.0**2 / 120 + 0.1 * 300.0**2 / 120**2)) < 0.05


@pytest.mark.parametrize("hz", [5.0, 12.0, 30.0])
def test_bursts_ring_at_their_frequency(hz):
    d = disturbance.drift_bursts(8, 12_000, 0, drift_px_s=0.0, burst_hz=hz)
    f, power = signal.welch(d, fs=disturbance.FRAME_RATE_HZ, nperseg=1200, axis=1)
    peak = f[power.mean(axis=(0, 2)).argmax()]
    assert abs(peak - hz) < 0.5, peak
    with pytest.raises(ValueError, match="Nyquist"):
        disturbance.drift_bursts(1, 100, 0, burst_hz=60.0)


def test_from_csv_resamples(tmp_path):
    t = np.arange(0, 2.0001, 0.001)  # 1 kHz trace of 2 s
    path = tmp_path / "trace.csv"
    rows = "\n".join(f"{a:.4f},{3 * a:.6f},{-a:.6f}" for a in t)
    path.write_text("t_s,x_px,y_px\n" + rows + "\n")
    d = disturbance.from_csv(path, frame_rate=120)
    assert d.shape == (1, 241, 2)
    tq = np.arange(241) / 120
    np.testing.assert_allclose(d[0], np.stack([3 * tq, -tq], axis=1), atol=1e-5)


@pytest.mark.parametrize(
    "text, msg",
    [
        ("", "header"),
        ("time,x,y\n0,1,2\n1,2,3\n", "header"),
        ("t_s,x_px,y_px\n0,1,2\n", "at least 2"),
        ("t_s,x_px,y_px\n0,1,2\n0,2,3\n", "increasing"),
        ("t_s,x_px,y_px\n0,1,2\n1,abc,3\n", "bad row"),
        ("t_s,x_px,y_px\n0,1,2\n1,2\n", "bad row"),
        ("t_s,x_px,y_px\n0,1,2\n1,nan,3\n", "non-finite"),
    ],
)
def test_from_csv_bad_files(tmp_path, text, msg):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=msg):
        disturbance.from_csv(path)
