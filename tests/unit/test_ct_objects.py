"""CT sample objects (firmware_sim.ct.objects): exact projections, image range and support, families."""
import dataclasses

import numpy as np
import pytest

from controller.modes.ct import tomo
from firmware_sim.ct import objects as ob
from firmware_sim.ct import phantoms as ph
from firmware_sim.ct.physics import line_integrals, polygon_chords, ray_offsets

ANGLES = np.array([0.0, 30.0, 90.0, 137.0])


def _single(ellipses=np.zeros((0, 5)), ellipse_values=(), blobs=np.zeros((0, 3)), blob_values=()) -> ob.CTObject:
    """An object of ellipses and blobs only."""
    f = np.asarray
    return ob.CTObject(np.zeros((0, 3, 2)), np.zeros(0), f(ellipses, float), f(ellipse_values, float),
                       f(blobs, float), f(blob_values, float), "test")


def _finer(o: ob.CTObject, k: int) -> ob.CTObject:
    """The same object on a pixel grid k times finer (k odd): x -> k·x + (k − 1)/2 keeps the pixel edges
    and maps the rotation centre c to k·c + (k − 1)/2 = (k·size) // 2."""
    off = (k - 1) / 2
    return dataclasses.replace(o, polygons=k * o.polygons + off, blobs=k * o.blobs + [off, off, 0],
                               ellipses=o.ellipses * [k, k, k, k, 1] + [off, off, 0, 0, 0])


def test_polygon_object_is_the_paper_detector_model():
    p = ph.make_phantoms(4, 63, seed=2)
    for v, img in zip(p.vertices, p.images):
        o = ob.from_polygon(v, ph.OBJECT_VALUE, "pentagon")
        exact = line_integrals(np.repeat(v[None], len(ANGLES), axis=0), ANGLES, 63)
        assert np.abs(o.line_integrals(ANGLES, 63) - exact).max() < 1e-9
        assert np.abs(o.image(63) - img).max() < 1e-6


def test_ellipse_chords_closed_form():
    c, (cx, cy, a, b) = 31, (33.3, 28.6, 12.5, 6.2)
    o = _single([[cx, cy, a, b, 0.0]], [0.5])
    j = np.arange(63.0)
    # θ = 0: vertical rays at col = j; θ = 90°: horizontal rays at row = 2c − j (subrays=1: one ray per bin).
    at0 = 2 * b * np.sqrt(np.clip(1 - ((j - cx) / a) ** 2, 0, None))
    at90 = 2 * a * np.sqrt(np.clip(1 - ((2 * c - j - cy) / b) ** 2, 0, None))
    got = o.line_integrals(np.array([0.0, 90.0]), 63, subrays=1)
    assert np.allclose(got, 0.5 * np.stack([at0, at90]), atol=1e-12)
    # A rotated ellipse against its inscribed 4096-gon (physics' polygon chords): the rotation convention.
    e = np.array([30.2, 35.1, 14.0, 5.0, 0.7])
    t = np.linspace(0, 2 * np.pi, 4096, endpoint=False)
    rot = [[np.cos(e[4]), np.sin(e[4])], [-np.sin(e[4]), np.cos(e[4])]]  # turns row vectors by e[4]
    gon = e[:2] + np.stack([e[2] * np.cos(t), e[3] * np.sin(t)], -1) @ rot
    ref = polygon_chords(gon[None], np.deg2rad(ANGLES), ray_offsets(63, 8), c).reshape(len(ANGLES), 63, 8).mean(-1)
    assert np.abs(_single([e], [1.0]).line_integrals(ANGLES, 63) - ref).max() < 1e-3


def test_gaussian_and_disc_chords_closed_form():
    s = np.arange(63.0) - 31
    blob = _single(blobs=[[31.0, 31.0, 3.5]], blob_values=[0.4])
    disc = _single([[31.0, 31.0, 9.3, 9.3, 1.1]], [0.7])  # no ray grazes it (√ of rounding there)
    gauss = 0.4 * 3.5 * np.sqrt(2 * np.pi) * np.exp(-(s**2) / (2 * 3.5**2))
    chord = 0.7 * 2 * np.sqrt(np.clip(9.3**2 - s**2, 0, None))
    for th in ANGLES:
        assert np.allclose(blob.line_integrals(th, 63, subrays=1)[0], gauss, atol=1e-12)
        assert np.allclose(disc.line_integrals(th, 63, subrays=1)[0], chord, atol=1e-12)
    off = _single(blobs=[[25.0, 40.0, 2.0]], blob_values=[1.0])  # θ = 90°: u = (0, −1), offset = 40 − 31
    gauss = 2.0 * np.sqrt(2 * np.pi) * np.exp(-((s + 9) ** 2) / 8)
    assert np.allclose(off.line_integrals(90.0, 63, subrays=1)[0], gauss, atol=1e-12)


@pytest.mark.parametrize("family", list(ob.FAMILIES))
def test_family_images_in_range_inside_the_circle_and_projections_exact(family):
    size, c = 63, 31
    objs = ob.make_objects(family, 6, size, seed=11)
    yy, xx = np.mgrid[:size, :size] - c
    for o in objs:
        img = o.image(size)
        assert img.dtype == np.float32 and img.min() >= -1e-6 and img.max() <= 1 + 1e-6 and img.max() >= 0.2
        assert np.abs(img[np.hypot(xx, yy) > c]).max(initial=0) < 5e-3  # only Gaussian tails outside
        # Support within c − 1 of the centre; polygons counter-clockwise.
        assert np.hypot(*(o.polygons - c).T).max(initial=0) <= c - 1 + 1e-9
        reach = np.hypot(*(o.ellipses[:, :2] - c).T) + o.ellipses[:, 2:4].max(axis=1, initial=0)
        assert np.all(reach <= c - 1 + 1e-9)
        assert np.all(np.hypot(*(o.blobs[:, :2] - c).T) + 3 * o.blobs[:, 2] <= c - 1 + 1e-9)
        x, y = o.polygons[..., 0], o.polygons[..., 1]
        assert np.all((x * np.roll(y, -1, 1) - y * np.roll(x, -1, 1)).sum(axis=1) > 0)
        # Mass: every projection integrates to the image's sum (8² sub-pixels: small discs' areas to < 1 %).
        mass = o.image(size, supersample=8).sum()
        assert o.line_integrals(ANGLES, size).sum(axis=1) == pytest.approx(np.full(len(ANGLES), mass), rel=0.01)
    # Against the Joseph projection of a rendering 3× finer, binned down to 63 bins.
    k, o = 3, objs[0]
    fine = tomo.system_matrix(k * size, ANGLES, "float64") @ _finer(o, k).image(k * size).ravel().astype(np.float64)
    joseph = fine.reshape(len(ANGLES), size, k).sum(-1) / k**2
    exact = o.line_integrals(ANGLES, size)
    assert np.linalg.norm(exact - joseph) / np.linalg.norm(exact) < 0.01


def test_draws_reproducible_distinct_and_size_independent():
    def unit(o: ob.CTObject, size: int) -> list[np.ndarray]:
        c = size // 2
        r = c - 1
        return [(o.polygons - c) / r, o.polygon_values, (o.ellipses - [c, c, 0, 0, 0]) / [r, r, r, r, 1],
                o.ellipse_values, (o.blobs - [c, c, 0]) / r, o.blob_values]

    for family in ob.FAMILIES:
        a, b, d = (ob.make_objects(family, 3, 63, seed) for seed in (5, 5, 6))
        big = ob.make_objects(family, 4, 239, 5)
        for x, y, z, w in zip(a, b, d, big):
            assert x.family == family and all(np.array_equal(p, q) for p, q in zip(unit(x, 63), unit(y, 63)))
            assert not np.array_equal(x.image(63), z.image(63))
            assert all(np.allclose(p, q, atol=1e-12) for p, q in zip(unit(x, 63), unit(w, 239)))
    imgs = {f: ob.make_objects(f, 1, 63, 5)[0].image(63) for f in ob.FAMILIES}
    assert len({img.tobytes() for img in imgs.values()}) == len(imgs)


def test_family_lists_and_bad_arguments():
    assert set(ob.TRAIN_FAMILIES + ob.HELD_OUT + ob.PRIVATE) == set(ob.FAMILIES)
    assert len(ob.TRAIN_FAMILIES + ob.HELD_OUT + ob.PRIVATE) == len(ob.FAMILIES) == 7
    with pytest.raises(ValueError):
        ob.make_objects("paper", 1, 63, 0)
    with pytest.raises(ValueError):
        ob.make_objects("broad", 1, 64, 0)
