"""CT instrument physics: phantoms, rotation stage, detector."""
import numpy as np
import pytest

from controller.modes.ct import tomo
from firmware_sim.ct import phantoms as ph
from firmware_sim.ct.physics import Detector, DetectorParams, RotationStage, StageParams, line_integrals


@pytest.mark.parametrize("size", [31, 63])
def test_phantom_values_size_and_circle(size):
    p = ph.make_phantoms(12, size, seed=1)
    assert p.images.shape == (12, size, size) and p.images.dtype == np.float32
    assert p.images.min() == 0.0 and np.isclose(p.images.max(), ph.OBJECT_VALUE)
    assert np.all(p.images <= ph.OBJECT_VALUE + 1e-6)
    yy, xx = np.mgrid[:size, :size] - size // 2
    assert not np.any(p.images[:, np.hypot(xx, yy) > size // 2])  # inside the reconstruction circle
    assert set(p.kind.tolist()) <= {0, 1, 2}


def test_phantom_rejects_even_size_and_bad_split():
    with pytest.raises(ValueError):
        ph.make_phantoms(1, 64)
    with pytest.raises(ValueError):
        ph.make_phantoms(1, 63, split="test")


def test_phantom_seed_determinism():
    a, b, c = (ph.make_phantoms(5, 31, seed=s) for s in (7, 7, 8))
    assert np.array_equal(a.images, b.images) and np.array_equal(a.vertices, b.vertices)
    assert not np.array_equal(a.images, c.images)


def test_train_val_rotations_disjoint():
    tr, va = ph.make_phantoms(150, 31, seed=0, split="train"), ph.make_phantoms(150, 31, seed=1, split="val")
    for p, val in ((tr, False), (va, True)):
        for k, name in enumerate(ph.SHAPES):
            bins = ph.rotation_bin(name, p.rotation_deg[p.kind == k])
            assert len(bins) and np.all(ph.is_validation_bin(bins) == val)


def test_rasterised_area_matches_polygon_area():
    p = ph.make_phantoms(6, 63, seed=2)
    for v, img in zip(p.vertices, p.images):
        x, y = v[:, 0], v[:, 1]
        area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
        assert img.sum() / ph.OBJECT_VALUE == pytest.approx(area, rel=0.01)


def _run(stage, state, seconds, dt=0.001):
    for _ in range(int(round(seconds / dt))):
        state, reading = stage.step(state, None, dt)
    return state, reading


def _homed(stage, batch=2):
    state = stage.home(stage.reset(seed=3, batch=batch))
    state, reading = _run(stage, state, 1.0)
    assert state.homed.all() and reading.in_position.all()
    return state


def test_stage_refuses_moves_until_homed_and_encoder_nan():
    stage = RotationStage()
    s = stage.reset(seed=0, batch=3)
    s = stage.command(s, np.full(3, 45.0))
    assert np.all(s.rejected == 1)
    _, r = stage.step(s, None, 0.01)
    assert np.all(np.isnan(r.encoder_deg))


def test_stage_slew_rate_acceleration_and_settle():
    p = StageParams(max_speed_dps=90.0, accel_dps2=360.0, settle_s=0.05)
    stage = RotationStage(p)
    s = stage.command(_homed(stage), np.array([90.0, 10.0]))
    t0, dt, arrived, ready, vmax, amax = s.t_s, 0.001, None, None, 0.0, 0.0
    while ready is None:
        v_prev = s.velocity_dps[0]
        s, r = stage.step(s, None, dt)
        if arrived is None and s.angle_deg[0] == 90.0:
            arrived = s.t_s - t0
        if arrived is None:  # the arrival step snaps onto the target
            vmax, amax = max(vmax, abs(s.velocity_dps[0])), max(amax, abs(s.velocity_dps[0] - v_prev) / dt)
        if r.in_position[0]:
            ready = s.t_s - t0
    # Trapezoid: 0.25 s accelerating + 0.75 s cruising + 0.25 s braking = 1.25 s for 90°.
    assert vmax == pytest.approx(p.max_speed_dps) and amax <= p.accel_dps2 + 1e-6
    assert arrived == pytest.approx(1.25, abs=0.02)
    assert ready - arrived == pytest.approx(p.settle_s, abs=2 * dt)


def test_stage_soft_limits_and_encoder_quantisation():
    p = StageParams(encoder_counts_per_rev=3600)
    stage = RotationStage(p)
    s = stage.command(_homed(stage), np.array([400.0, 12.34]))
    assert s.target_deg[0] == p.soft_max_deg and s.limit_hits.tolist() == [1, 0]
    s = stage.command(s, np.array([np.nan, 12.34]))
    assert s.rejected.tolist() == [1, 0] and s.target_deg[0] == p.soft_max_deg
    s, r = _run(stage, s, 6.0)
    assert r.encoder_deg[1] == pytest.approx(12.3) and s.angle_deg[1] == pytest.approx(12.34)


def test_detector_gaussian_noise_is_five_percent_of_projection_std():
    p = ph.make_phantoms(64, 63, seed=4)
    angles = np.linspace(0.0, 179.0, 64)
    clean = line_integrals(p.vertices, angles, 63)
    noisy = Detector().acquire(p, angles, np.random.default_rng(0))
    ratio = (noisy - clean).std(axis=1) / clean.std(axis=1)
    assert ratio.mean() == pytest.approx(0.05, rel=0.05)


def test_detector_projection_matches_discrete_model():
    p = ph.make_phantoms(3, 63, seed=5)
    th = tomo.angle_grid(180)
    w = tomo.system_matrix(63, th, "float64")
    for v, img in zip(p.vertices, p.images):
        exact = line_integrals(np.repeat(v[None], 180, axis=0), th, 63)
        disc = (w @ img.ravel().astype(np.float64)).reshape(180, 63)
        assert np.linalg.norm(exact - disc) / np.linalg.norm(exact) < 0.03


def test_detector_poisson_noise_shrinks_with_flux():
    p = ph.make_phantoms(16, 31, seed=6)
    angles = np.zeros(16)
    clean = line_integrals(p.vertices, angles, 31)
    errs = []
    for flux in (1e4, 1e6):
        det = Detector(DetectorParams(noise="poisson", flux_per_s=flux, exposure_s=0.1))
        errs.append(np.abs(det.acquire(p, angles, np.random.default_rng(1)) - clean).mean())
    assert 7.0 < errs[0] / errs[1] < 13.0  # noise ∝ 1/sqrt(photons): 100× flux -> 10× less
