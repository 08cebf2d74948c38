"""CT sample objects beyond the paper's polygons, with exact parallel-beam line integrals (issue #20).

A sample (`CTObject`) is a weighted sum of primitives: convex polygons and ellipses (indicator × value)
and isotropic Gaussian blobs (peak value). Image and projections are linear in the primitives, so a
hole or a cut-away part is a negative primitive lying inside a positive one, and a non-convex shape is
a sum of convex pieces that share only edges. Every primitive has a closed-form line integral:
- polygon: the chord length, `physics.polygon_chords` (the paper phantoms' detector model);
- ellipse: at signed distance r from its centre along the detector direction u, 2ab·√(w² − r²)/w²,
  w² = a²(u·e₁)² + b²(u·e₂)² (e₁, e₂ the axis directions);
- Gaussian: value·σ·√(2π)·exp(−r²/(2σ²)).
Geometry is `controller.modes.ct.tomo`'s: (col, row) pixels, rotation centre c = size // 2, bin j at
offset s = j − c averaged over `subrays` sub-rays across its 1 px width. The image is the mean over
supersample² sub-pixel centres of each pixel (`phantoms.subpixel_mean`, as `phantoms.rasterise`); a
Gaussian is evaluated within ±6σ of its centre (beyond, it is below 2e-8 of its peak).

Draws. Each family is built in unit coordinates (the reconstruction circle's centre at 0, its radius
c − 1 px at 1) and scaled to pixels at the end, so one seed gives the same objects at 63 and 239 px,
up to resolution. Widths quoted "at 63 px" (unit PX = 1/30) scale likewise. All support (a blob: 3σ)
lies within the unit circle. Images lie in [0, 1] (to within a few TAIL) by construction, pointwise
(every sub-pixel centre at every size): a negative primitive lies inside positive ones of at least
its magnitude; objects do not overlap (their keep-out discs are disjoint); an object's peak (value plus
its positive blobs) is at most 1; Gaussian tails that leave their region are below TAIL (1e-7) there.
A draw is redrawn unless its image at CHECK_SIZE (63 px, whatever size is asked) peaks at ≥ MIN_PEAK,
so the accept decision, and thus the objects, do not depend on the size.

Families. HELD_OUT and PRIVATE are structurally different from "broad", the training distribution:
- "broad" (training): 1–3 objects, support radius 0.15–0.8 (the first 0.3–0.8), anywhere in the
  circle (one that does not fit beside the others is shrunk, not below 0.1). Each is a random convex
  polygon (3–9 vertices: the hull of points at random angles and radii), an ellipse (axis ratio
  0.2–1) or the union of two convex polygons (A + B − A∩B), of value 0.2–1. A single shape may get a
  cut-away part (polygons: the part inside another convex polygon centred on its boundary, 5–50 % of
  its area), a hole (a polygon or ellipse inside, value −1 or −0.3…−0.9 × the parent's) and a smooth
  texture (2–5 Gaussian blobs of ±5–25 % of the parent's value). With probability 0.3 a thin bar
  (1–3 px wide at 63 px) is one more object.
- "rings" (held out): 2–3 concentric elliptical annuli, each inside the previous one's hollow, walls
  8–20 % of the ring's radius. Broad nests one level only (nothing lies inside a hole), and its hole
  leaves a wall of at least 30 % of the clearance around the hole's centre.
- "shepp_logan" (held out): the modified Shepp–Logan head (10 ellipses) with the skull's width, the
  features' centres, axes and angles and all levels jittered, then scaled, rotated and shifted: nested
  three deep (skull ⊃ brain ⊃ features) with a thin bright shell and sharp-edged features of 1.5–10 %
  contrast. Broad nests one level and its sharp contrast steps are ≥ 0.06 (fine contrast is smooth).
- "dot_array" (held out): a rotated lattice of 3–6 × 3–6 equal discs, radius 0.04–0.08, pitch
  2.3–3.5 radii (a resolution target): 9–36 objects below broad's smallest (≤ 4 objects, radius ≥ 0.1).
- "gears" (private): 1–2 gears with 6–14 trapezoidal teeth (a fan of convex tooth pentagons and gap
  triangles around the centre), maybe with a bore: 12–28 re-entrant corners per gear, where broad's
  shapes are convex, a union of two convex polygons or one with a part cut away.
- "letters" (private): 1–2 of L, T, H, E, F, U from 2–4 touching rectangles (stroke 15–25 % of the
  height), rotated: rectilinear outlines with right-angle re-entrant corners, which broad's random
  hulls (right angles and parallel sides have probability zero) never make.
- "tube_bundle" (private): 4–12 small tubes (annuli of radius 0.09–0.2, less where scaled to fit;
  empty or partly filled) close-packed on a hexagonal lattice: many small hollow objects almost
  touching, where broad has at most 4 separated objects with at most one hole each.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull

from firmware_sim.ct.phantoms import inside, pixel_box, subpixel_mean
from firmware_sim.ct.physics import polygon_chords, ray_offsets

TRAIN_FAMILIES = ("broad",)
HELD_OUT = ("rings", "shepp_logan", "dot_array")  # public held-out families: evaluated, never trained on
PRIVATE = ("gears", "letters", "tube_bundle")  # private held-out families: evaluated once, at the very end

CHECK_SIZE = 63  # the acceptance check renders at this size, whatever size is asked
MIN_PEAK = 0.2  # a draw's image peaks at least this high
PX = 1.0 / 30.0  # one pixel at 63 px, in unit coordinates (the unit radius is c − 1 = 30 px there)
TAIL = 1e-7  # a blob's tail outside its region stays below this
BLOB_CUTOFF = 6.0  # the image evaluates a Gaussian within ±6σ of its centre
GAP = 0.02  # clearance between objects' keep-out discs
MIN_RADIUS = 0.1  # objects that do not fit are shrunk, but not below this
TRIES = 100  # bound on every rejection loop


@dataclass(frozen=True)
class CTObject:
    """One sample = a sum of weighted primitives; image and projections are linear in them."""

    # (P, V, 2) convex, counter-clockwise in (col, row) px, padded by repeating the last vertex
    polygons: np.ndarray
    polygon_values: np.ndarray  # (P,) signed densities
    # (E, 5): centre col, centre row, semi-axis a, semi-axis b [px], rotation φ [rad]: a along (cos φ, sin φ)
    ellipses: np.ndarray
    ellipse_values: np.ndarray  # (E,)
    blobs: np.ndarray  # (G, 3): centre col, centre row, sigma [px] (isotropic Gaussians)
    blob_values: np.ndarray  # (G,) peak values
    family: str

    def image(self, size: int, supersample: int = 4) -> np.ndarray:
        """(size, size) float32: each pixel the mean over supersample² sub-pixel centres (size: the one
        the object was drawn at; its coordinates are that image's pixels)."""
        img = np.zeros((size, size))

        def add(f: Callable[[np.ndarray], np.ndarray], lo: np.ndarray, hi: np.ndarray, value: float) -> None:
            lo, hi = pixel_box(lo, hi, size)
            img[lo[1] : hi[1], lo[0] : hi[0]] += value * subpixel_mean(f, lo, hi, supersample)

        for v, value in zip(self.polygons, self.polygon_values):
            add(lambda p, v=v: inside(v, p), v.min(axis=0), v.max(axis=0), value)
        for e, value in zip(self.ellipses, self.ellipse_values):
            half = _ellipse_half_extent(e)
            add(lambda p, e=e: _ellipse_rho(e, p) <= 1.0, e[:2] - half, e[:2] + half, value)
        for g, value in zip(self.blobs, self.blob_values):
            add(lambda p, g=g: _gaussian(g, p), g[:2] - BLOB_CUTOFF * g[2], g[:2] + BLOB_CUTOFF * g[2], value)
        return img.astype(np.float32)

    def line_integrals(self, angle_deg: np.ndarray, n_bins: int, subrays: int = 8) -> np.ndarray:
        """Exact bin-averaged line integrals: angles (K,) [deg] -> (K, n_bins) float64."""
        th = np.deg2rad(np.atleast_1d(np.asarray(angle_deg, np.float64)))  # (K,)
        c = n_bins // 2
        s = ray_offsets(n_bins, subrays)  # (S,)
        u = np.cos(th), -np.sin(th)  # detector direction (col, row)
        total = np.einsum("p,pks->ks", self.polygon_values, polygon_chords(self.polygons[:, None], th, s, c))
        cx, cy, a, b, phi = (x[:, None] for x in self.ellipses.T)  # (E, 1) each
        ua = u[0] * np.cos(phi) + u[1] * np.sin(phi)  # u along the a axis, (E, K)
        ub = -u[0] * np.sin(phi) + u[1] * np.cos(phi)
        w2 = ((a * ua) ** 2 + (b * ub) ** 2)[..., None]  # squared half-width of the shadow, (E, K, 1)
        r = s - ((cx - c) * u[0] + (cy - c) * u[1])[..., None]  # ray's offset from the centre, (E, K, S)
        chords = 2.0 * (a * b)[..., None] / w2 * np.sqrt(np.clip(w2 - r * r, 0.0, None))
        total += np.einsum("e,eks->ks", self.ellipse_values, chords)
        gx, gy, sig = (x[:, None] for x in self.blobs.T)
        r = s - ((gx - c) * u[0] + (gy - c) * u[1])[..., None]  # (G, K, S)
        sig = sig[..., None]
        gauss = np.sqrt(2.0 * np.pi) * sig * np.exp(-0.5 * (r / sig) ** 2)
        total += np.einsum("g,gks->ks", self.blob_values, gauss)
        return total.reshape(len(th), n_bins, subrays).mean(axis=-1)


def from_polygon(vertices: np.ndarray, value: float, family: str) -> CTObject:
    """One convex polygon (V, 2) [px], counter-clockwise (a paper phantom: `Phantoms.vertices[i]`, 0.62)."""
    return CTObject(np.asarray(vertices, np.float64)[None], np.array([float(value)]), np.zeros((0, 5)),
                    np.zeros(0), np.zeros((0, 3)), np.zeros(0), family)


def make_objects(family: str, n: int, size: int, seed: int) -> list[CTObject]:
    """n draws of `family` at image size `size` (odd, ≥ 15); a pure function of its arguments, and the
    first k of n draws are the k draws of make_objects(family, k, size, seed)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {tuple(FAMILIES)}")
    if size < 15 or size % 2 == 0:
        raise ValueError(f"size must be odd and >= 15, got {size}")
    rng = np.random.default_rng(seed)
    return [FAMILIES[family](rng, size) for _ in range(n)]


# --- primitives: geometry shared by rendering and drawing -------------------------------------------


def _ellipse_rho(e: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The ellipse 'radius' of points p (..., 2): p lies on the boundary of the ellipse scaled by ρ."""
    q0, q1 = p[..., 0] - e[0], p[..., 1] - e[1]
    cos, sin = np.cos(e[4]), np.sin(e[4])
    return np.hypot((q0 * cos + q1 * sin) / e[2], (-q0 * sin + q1 * cos) / e[3])


def _ellipse_half_extent(e: np.ndarray) -> np.ndarray:
    """Half-widths (col, row) of an ellipse's bounding box."""
    cos, sin = np.cos(e[4]), np.sin(e[4])
    return np.array([np.hypot(e[2] * cos, e[3] * sin), np.hypot(e[2] * sin, e[3] * cos)])


def _ellipse_boundary(e: np.ndarray, n: int = 256) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    x, y = e[2] * np.cos(t), e[3] * np.sin(t)
    cos, sin = np.cos(e[4]), np.sin(e[4])
    return np.stack([e[0] + x * cos - y * sin, e[1] + x * sin + y * cos], axis=-1)


def _gaussian(g: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * ((p[..., 0] - g[0]) ** 2 + (p[..., 1] - g[1]) ** 2) / g[2] ** 2)


def _area(v: np.ndarray) -> float:
    """Signed (shoelace) area: positive for a counter-clockwise polygon."""
    return 0.5 * float(np.dot(v[:, 0], np.roll(v[:, 1], -1)) - np.dot(v[:, 1], np.roll(v[:, 0], -1)))


def _clearance(shape: np.ndarray, p: np.ndarray) -> np.ndarray:
    """A lower bound on the distance from points p (N, 2) to the boundary of a convex shape, negative
    outside it. Polygon (V, 2), counter-clockwise: the least distance to an edge's line (exact inside;
    outside, minus it is a lower bound on the distance to the polygon). Ellipse (5,): b·(1 − ρ), b the
    shorter semi-axis: p lies on ρ·E, and ρ·E grown by b·(1 − ρ) stays inside E."""
    if shape.ndim == 1:
        return min(shape[2], shape[3]) * (1.0 - _ellipse_rho(shape, p))
    edge = np.roll(shape, -1, axis=0) - shape
    normal = np.stack([-edge[:, 1], edge[:, 0]], axis=-1) / np.linalg.norm(edge, axis=1)[:, None]
    return np.einsum("nvk,vk->nv", p[:, None, :] - shape, normal).min(axis=-1)


def _clip(subject: np.ndarray, clipper: np.ndarray) -> np.ndarray:
    """Intersection of two convex counter-clockwise polygons (Sutherland–Hodgman); (0, 2) if empty."""
    out = subject
    for a, b in zip(clipper, np.roll(clipper, -1, axis=0)):
        if len(out) < 3:
            return np.zeros((0, 2))
        d = (b[0] - a[0]) * (out[:, 1] - a[1]) - (b[1] - a[1]) * (out[:, 0] - a[0])  # ≥ 0: inside
        pts = []
        for p, q, dp, dq in zip(out, np.roll(out, -1, axis=0), d, np.roll(d, -1)):
            if dp >= 0:
                pts.append(p)
            if (dp >= 0) != (dq >= 0):
                pts.append(p + dp / (dp - dq) * (q - p))
        out = np.array(pts).reshape(-1, 2)
        out = out[np.linalg.norm(out - np.roll(out, 1, axis=0), axis=1) > 1e-12]  # no zero-length edges
    return out if len(out) >= 3 else np.zeros((0, 2))


def _reach(amplitude: float) -> float:
    """How many σ from its centre a Gaussian of this amplitude falls below TAIL."""
    return float(np.sqrt(2.0 * np.log(abs(amplitude) / TAIL)))


# --- drawing in unit coordinates ---------------------------------------------------------------------


class _Draft:
    """The primitives of one draw in unit coordinates (circle centre 0, radius 1)."""

    def __init__(self) -> None:
        self.polygons: list[np.ndarray] = []
        self.polygon_values: list[float] = []
        self.ellipses: list[np.ndarray] = []
        self.ellipse_values: list[float] = []
        self.blobs: list[np.ndarray] = []
        self.blob_values: list[float] = []

    def add_shape(self, shape: np.ndarray, value: float) -> None:
        """A polygon (V, 2) or an ellipse (5,)."""
        if shape.ndim == 2:
            self.polygons.append(shape)
            self.polygon_values.append(value)
        else:
            self.ellipses.append(shape)
            self.ellipse_values.append(value)

    def add_blob(self, centre: np.ndarray, sigma: float, value: float) -> None:
        self.blobs.append(np.array([centre[0], centre[1], sigma]))
        self.blob_values.append(value)

    def add_draft(self, other: _Draft, offset: np.ndarray) -> None:
        """Another draft's primitives, shifted by offset."""
        shift = np.concatenate([offset, np.zeros(3)])
        self.polygons += [v + offset for v in other.polygons]
        self.ellipses += [e + shift for e in other.ellipses]
        self.blobs += [g + shift[:3] for g in other.blobs]
        self.polygon_values += other.polygon_values
        self.ellipse_values += other.ellipse_values
        self.blob_values += other.blob_values

    def to_object(self, family: str, size: int) -> CTObject:
        """Scaled to pixels: unit point x -> c + (c − 1)·x."""
        c = size // 2
        scale = c - 1.0
        n_vert = max((len(v) for v in self.polygons), default=3)
        polys = [np.concatenate([v, np.repeat(v[-1:], n_vert - len(v), axis=0)]) for v in self.polygons]
        return CTObject(
            c + scale * np.array(polys).reshape(-1, n_vert, 2),
            np.array(self.polygon_values, np.float64),
            np.array(self.ellipses).reshape(-1, 5) * [scale, scale, scale, scale, 1.0] + [c, c, 0, 0, 0],
            np.array(self.ellipse_values, np.float64),
            np.array(self.blobs).reshape(-1, 3) * scale + [c, c, 0],
            np.array(self.blob_values, np.float64),
            family,
        )


# (rng, radius) -> (an object around 0 within radius, its keep-out radius)
Builder = Callable[[np.random.Generator, float], tuple[_Draft, float]]


def _in_disc(rng: np.random.Generator, radius: float, n: int) -> np.ndarray:
    """n points uniform in the disc of `radius` around 0, (n, 2)."""
    rad, ang = radius * np.sqrt(rng.random(n)), rng.uniform(0.0, 2.0 * np.pi, n)
    return np.stack([rad * np.cos(ang), rad * np.sin(ang)], axis=-1)


def _rotation(angle: float) -> np.ndarray:
    """Rotation matrix for row vectors: p @ _rotation(a) turns p by a."""
    cos, sin = np.cos(angle), np.sin(angle)
    return np.array([[cos, sin], [-sin, cos]])


def _random_polygon(rng: np.random.Generator, radius: float, centre: np.ndarray = np.zeros(2)) -> np.ndarray:
    """A convex polygon within `radius` of `centre`: the hull of 3–9 points at random angles and at
    0.6–1 × radius, not a sliver (area ≥ 0.3 radius²)."""
    for _ in range(TRIES):
        n = rng.integers(3, 10)
        ang = rng.uniform(0.0, 2.0 * np.pi, n)
        pts = radius * rng.uniform(0.6, 1.0, (n, 1)) * np.stack([np.cos(ang), np.sin(ang)], axis=-1)
        v = pts[ConvexHull(pts).vertices]  # counter-clockwise
        if _area(v) >= 0.3 * radius**2:
            return centre + v
    raise RuntimeError("no random polygon found")


def _random_ellipse(rng: np.random.Generator, radius: float, centre: np.ndarray = np.zeros(2)) -> np.ndarray:
    """An ellipse of semi-major axis `radius` around `centre`, axis ratio 0.2–1, any orientation."""
    return np.array([centre[0], centre[1], radius, radius * rng.uniform(0.2, 1.0), rng.uniform(0.0, np.pi)])


def _deep_point(rng: np.random.Generator, clearance: Callable[[np.ndarray], np.ndarray],
                radius: float) -> tuple[np.ndarray, float]:
    """A random point of a region inside the disc of `radius`, among the deeper half of 64 candidates,
    and its clearance (≤ 0: the region is too small to find)."""
    pts = _in_disc(rng, radius, 64)
    room = clearance(pts)
    top = room.max()
    i = rng.choice(np.flatnonzero(room >= min(0.5 * top, top)))
    return pts[i], float(room[i])


def _place(rng: np.random.Generator, radius: float, keep_out: float,
           placed: list[tuple[np.ndarray, float]]) -> np.ndarray | None:
    """A centre for an object of support `radius` in the unit circle whose keep-out disc clears those
    placed (appended to); None when TRIES random centres all collide."""
    for o in _in_disc(rng, 1.0 - radius, TRIES):
        if all(np.hypot(*(o - q)) >= keep_out + k + GAP for q, k in placed):
            placed.append((o, keep_out))
            return o
    return None


def _arrange(rng: np.random.Generator, items: list[tuple[float, Builder]]) -> _Draft:
    """Objects (radius, builder) placed without overlap, largest first; one that does not fit is rebuilt
    at 0.75 × its radius, down to MIN_RADIUS, then left out (the first always fits)."""
    draft, placed = _Draft(), []
    for radius, build in sorted(items, key=lambda item: -item[0]):
        while radius >= MIN_RADIUS:
            part, keep_out = build(rng, radius)
            o = _place(rng, radius, keep_out, placed)
            if o is not None:
                draft.add_draft(part, o)
                break
            radius *= 0.75
    return draft


# --- "broad": the training distribution ---------------------------------------------------------------

P_UNION, P_POLYGON = 0.15, 0.45  # object kinds (the rest: an ellipse)
P_CUT, P_HOLE, P_TEXTURE, P_BAR = 0.3, 0.3, 0.3, 0.3


def _broad(rng: np.random.Generator) -> _Draft:
    radii = [rng.uniform(0.3, 0.8), *rng.uniform(0.15, 0.8, rng.integers(0, 3))]  # one object of ≥ 0.3
    items: list[tuple[float, Builder]] = [(r, _broad_object) for r in radii]
    if rng.random() < P_BAR:
        items.append((rng.uniform(0.15, 0.6), _bar))
    return _arrange(rng, items)


def _bar(rng: np.random.Generator, radius: float) -> tuple[_Draft, float]:
    """A thin rectangle 1–3 px wide (at 63 px) with corners on the circle of `radius`, any direction."""
    half_w = 0.5 * PX * rng.uniform(1.0, 3.0)
    half_l = np.sqrt(radius**2 - half_w**2)
    rect = np.array([[-half_l, -half_w], [half_l, -half_w], [half_l, half_w], [-half_l, half_w]])
    part = _Draft()
    part.add_shape(rect @ _rotation(rng.uniform(0.0, np.pi)), rng.uniform(0.2, 1.0))
    return part, radius


def _union(rng: np.random.Generator, radius: float, value: float) -> _Draft:
    """Two convex polygons within `radius`, on either side of 0, as a union: A + B − A∩B."""
    ang = rng.uniform(0.0, 2.0 * np.pi)
    e = np.array([np.cos(ang), np.sin(ang)])
    ra, rb = radius * rng.uniform(0.5, 0.75), radius * rng.uniform(0.4, 0.7)
    a = _random_polygon(rng, ra, -(radius - ra) * rng.uniform(0.3, 1.0) * e)
    b = _random_polygon(rng, rb, (radius - rb) * rng.uniform(0.3, 1.0) * e)
    part = _Draft()
    part.add_shape(a, value)
    part.add_shape(b, value)
    both = _clip(a, b)
    if len(both):
        part.add_shape(both, -value)
    return part


def _cut(rng: np.random.Generator, shape: np.ndarray, radius: float) -> np.ndarray | None:
    """The part of a polygon inside another convex polygon centred on its boundary, if it is 5–50 % of
    its area."""
    i = rng.integers(len(shape))
    at = shape[i] + rng.random() * (shape[(i + 1) % len(shape)] - shape[i])
    cut = _clip(shape, _random_polygon(rng, radius * rng.uniform(0.3, 0.6), at))
    return cut if len(cut) and 0.05 <= _area(cut) / _area(shape) <= 0.5 else None


def _broad_object(rng: np.random.Generator, radius: float) -> tuple[_Draft, float]:
    value = rng.uniform(0.2, 1.0)
    kind = rng.random()
    if kind < P_UNION:
        return _union(rng, radius, value), radius
    shape = _random_polygon(rng, radius) if kind < P_UNION + P_POLYGON else _random_ellipse(rng, radius)
    part = _Draft()
    part.add_shape(shape, value)
    cuts: list[np.ndarray] = []
    holes: list[tuple[np.ndarray, float]] = []  # (centre, radius) of each hole's bounding disc

    def clearance(p: np.ndarray) -> np.ndarray:
        """Clearance in the object's solid part: inside the shape, outside the cut and the hole."""
        room = _clearance(shape, p)
        for cut in cuts:
            room = np.minimum(room, -_clearance(cut, p))
        for o, r in holes:
            room = np.minimum(room, np.hypot(*(p - o).T) - r)
        return room

    if shape.ndim == 2 and rng.random() < P_CUT:
        cut = _cut(rng, shape, radius)
        if cut is not None:
            part.add_shape(cut, -value)
            cuts.append(cut)
    if rng.random() < P_HOLE:
        at, room = _deep_point(rng, clearance, radius)
        if room > 2.0 * PX:
            r = room * rng.uniform(0.3, 0.7)
            hole = _random_polygon(rng, r, at) if rng.random() < 0.5 else _random_ellipse(rng, r, at)
            part.add_shape(hole, -value * (1.0 if rng.random() < 0.5 else rng.uniform(0.3, 0.9)))
            holes.append((at, r))
    keep_out = radius
    if rng.random() < P_TEXTURE:
        keep_out = _texture(rng, part, clearance, radius, value)
    return part, keep_out


def _texture(rng: np.random.Generator, part: _Draft, clearance: Callable[[np.ndarray], np.ndarray],
             radius: float, value: float) -> float:
    """2–5 Gaussian blobs of ±5–25 % of `value` in the object's solid part; returns its keep-out radius.

    Positive amplitudes sum to at most 1 − value (peak ≤ 1), negative ones to at most value (≥ 0). A
    positive blob keeps 3σ, a negative one its whole reach (tail < TAIL) inside the solid part; the
    keep-out disc covers every blob's reach, so neighbours see less than TAIL of it."""
    n = rng.integers(2, 6)
    amp = value * rng.uniform(0.05, 0.25, n) * rng.choice([-1.0, 1.0], n)
    pos, neg = amp[amp > 0].sum(), -amp[amp < 0].sum()
    amp[amp > 0] *= min(1.0, (1.0 - value) / max(pos, 1e-12))
    amp[amp < 0] *= min(1.0, value / max(neg, 1e-12))
    keep_out = radius
    for a in amp[np.abs(amp) >= 0.01]:
        at, room = _deep_point(rng, clearance, radius)
        reach = _reach(a)
        sigma = min(0.25 * radius, room / (3.0 if a > 0 else reach)) * rng.uniform(0.5, 1.0)
        if sigma >= 0.5 * PX:
            part.add_blob(at, sigma, a)
            keep_out = max(keep_out, float(np.hypot(*at)) + reach * sigma)
    return keep_out


# --- held-out families ----------------------------------------------------------------------------------


def _rings(rng: np.random.Generator) -> _Draft:
    """2–3 concentric elliptical annuli, each inside the previous one's hollow."""
    a0 = rng.uniform(0.45, 0.9)
    b0, phi = a0 * rng.uniform(0.6, 1.0), rng.uniform(0.0, np.pi)
    centre = _in_disc(rng, 1.0 - a0, 1)[0]
    draft, scale, n = _Draft(), 1.0, rng.integers(2, 4)
    for ring in range(n):
        if scale * b0 < 0.08:  # (never the second ring: its minor semi-axis is ≥ 0.097)
            break
        lam = 1.0 - max(rng.uniform(0.08, 0.2), 1.5 * PX / (scale * b0))  # wall ≥ 1.5 px at 63 px
        value = rng.uniform(0.2, 1.0)
        hollow = rng.uniform(0.3, 0.9) if ring == n - 1 and rng.random() < 0.3 else 1.0  # innermost: maybe filled
        draft.add_shape(np.array([*centre, scale * a0, scale * b0, phi]), value)
        draft.add_shape(np.array([*centre, lam * scale * a0, lam * scale * b0, phi]), -hollow * value)
        scale *= lam * rng.uniform(0.45, 0.8)
    return draft


# Modified Shepp–Logan (Toft): value, semi-axes a (x), b (y), centre x, y, rotation [deg]; y points up.
_SHEPP_LOGAN = np.array([
    [1.0, 0.69, 0.92, 0.0, 0.0, 0.0],
    [-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0],
    [-0.2, 0.11, 0.31, 0.22, 0.0, -18.0],
    [-0.2, 0.16, 0.41, -0.22, 0.0, 18.0],
    [0.1, 0.21, 0.25, 0.0, 0.35, 0.0],
    [0.1, 0.046, 0.046, 0.0, 0.1, 0.0],
    [0.1, 0.046, 0.046, 0.0, -0.1, 0.0],
    [0.1, 0.046, 0.023, -0.08, -0.605, 0.0],
    [0.1, 0.023, 0.023, 0.0, -0.606, 0.0],
    [0.1, 0.023, 0.046, 0.06, -0.605, 0.0],
])


def _shepp_logan(rng: np.random.Generator) -> _Draft:
    """A jittered modified Shepp–Logan head. Levels: skull g (0.5–1), brain 15–35 % of g, ventricles
    down to 0–40 % of the brain's level, six features 3–10 % of g above it (all six together stay below
    the skull's level). Jittered features are redrawn until they lie inside the brain and the two
    ventricles are disjoint (20 tries, then the feature is left out)."""
    kx = rng.uniform(0.85, 1.1)  # skull and brain width: the same x-scaling keeps the brain inside
    shrink = rng.uniform(0.96, 1.0)  # brain about its own centre: stays inside the skull
    g = rng.uniform(0.5, 1.0)
    brain_level = g * rng.uniform(0.15, 0.35)
    skull = np.array([0.0, 0.0, 0.69 * kx, 0.92, 0.0])
    brain = np.array([0.0, -0.0184, 0.6624 * kx * shrink, 0.874 * shrink, 0.0])
    ells, values, ventricles = [skull, brain], [g, brain_level - g], []
    for value, a, b, x0, y0, deg in _SHEPP_LOGAN[2:]:
        for _ in range(20):
            e = np.array([x0 * kx + rng.uniform(-0.03, 0.03), y0 + rng.uniform(-0.03, 0.03), a * rng.uniform(0.8, 1.25),
                          b * rng.uniform(0.8, 1.25), np.deg2rad(deg + rng.uniform(-10.0, 10.0))])
            if np.all(_ellipse_rho(brain, _ellipse_boundary(e)) <= 1.0 - 1e-3) and (
                    value > 0 or all(_disjoint(e, v) for v in ventricles)):
                ells.append(e)
                if value < 0:
                    ventricles.append(e)
                    values.append(-brain_level * rng.uniform(0.6, 1.0))
                else:
                    values.append(g * rng.uniform(0.03, 0.1))
                break
    # Head: y flipped to rows, scaled to 0.7–0.95 of the circle, rotated, shifted.
    extent = rng.uniform(0.7, 0.95)
    scale, turn = extent / max(0.69 * kx, 0.92), rng.uniform(0.0, 2.0 * np.pi)
    centre = _in_disc(rng, 1.0 - extent, 1)[0]
    draft = _Draft()
    for e, value in zip(ells, values):
        at = centre + scale * np.array([e[0], -e[1]]) @ _rotation(turn)
        draft.add_shape(np.array([*at, scale * e[2], scale * e[3], turn - e[4]]), value)
    return draft


def _disjoint(e: np.ndarray, f: np.ndarray) -> bool:
    """Two ellipses are apart: neither's boundary reaches into the other (with a 0.1 % margin)."""
    return bool(np.all(_ellipse_rho(f, _ellipse_boundary(e)) >= 1.001)
                and np.all(_ellipse_rho(e, _ellipse_boundary(f)) >= 1.001))


def _dot_array(rng: np.random.Generator) -> _Draft:
    """A rotated lattice of 3–6 × 3–6 equal discs (radius 0.04–0.08, pitch 2.3–3.5 radii)."""
    rho = rng.uniform(0.04, 0.08)
    pitch = rho * rng.uniform(2.3, 3.5)
    n = rng.integers(3, 7, 2)
    while 0.5 * pitch * np.hypot(*(n - 1)) + rho > 0.9:
        n[np.argmax(n)] -= 1
    extent = 0.5 * pitch * np.hypot(*(n - 1)) + rho
    grid = np.stack(np.meshgrid(np.arange(n[0]) - 0.5 * (n[0] - 1), np.arange(n[1]) - 0.5 * (n[1] - 1)), -1)
    pts = pitch * grid.reshape(-1, 2) @ _rotation(rng.uniform(0.0, np.pi)) + _in_disc(rng, 1.0 - extent, 1)[0]
    value, draft = rng.uniform(0.35, 1.0), _Draft()
    for p in pts:
        draft.add_shape(np.array([*p, rho, rho, 0.0]), value)
    return draft


# --- private held-out families ------------------------------------------------------------------------


def _gears(rng: np.random.Generator) -> _Draft:
    radii = [rng.uniform(0.45, 0.9)] if rng.random() < 0.7 else list(rng.uniform(0.3, 0.5, 2))
    return _arrange(rng, [(r, _gear) for r in radii])


def _gear(rng: np.random.Generator, radius: float) -> tuple[_Draft, float]:
    """6–14 trapezoidal teeth (tip radius `radius`, root 65–85 % of it) as a fan around 0 of convex
    pieces sharing only edges: per tooth the pentagon (0, root, tip, tip, root) and the gap triangle to
    the next tooth. A bore (a disc of 15–40 % of the root radius, value −value) lies inside the roots'
    polygon, whose inradius is ≥ 0.89 × the root radius, in exactly one piece at each point."""
    n, root = rng.integers(6, 15), radius * rng.uniform(0.65, 0.85)
    period, flank, tip = 2.0 * np.pi / n, rng.uniform(0.05, 0.12), rng.uniform(0.2, 0.35)
    start = rng.uniform(0.0, period) + period * np.arange(n)
    ang = start[:, None] + period * np.array([0.0, flank, flank + tip, 2.0 * flank + tip])  # (n, 4)
    pts = np.array([root, radius, radius, root])[:, None] * np.stack([np.cos(ang), np.sin(ang)], -1)  # (n, 4, 2)
    value, part, o = rng.uniform(0.2, 1.0), _Draft(), np.zeros((1, 2))
    for i in range(n):
        part.add_shape(np.concatenate([o, pts[i]]), value)
        part.add_shape(np.concatenate([o, pts[i, 3:], pts[(i + 1) % n, :1]]), value)
    if rng.random() < 0.6:
        r = root * rng.uniform(0.15, 0.4)
        part.add_shape(np.array([0.0, 0.0, r, r, 0.0]), -value)
    return part, radius


# Letters as rectangles (x0, y0, x1, y1) in a box of width w and height 1, stroke t; y points up.
_LETTERS: dict[str, Callable[[float, float], list[tuple[float, float, float, float]]]] = {
    "L": lambda w, t: [(0, 0, t, 1), (t, 0, w, t)],
    "T": lambda w, t: [(0, 1 - t, w, 1), ((w - t) / 2, 0, (w + t) / 2, 1 - t)],
    "H": lambda w, t: [(0, 0, t, 1), (w - t, 0, w, 1), (t, (1 - t) / 2, w - t, (1 + t) / 2)],
    "E": lambda w, t: [(0, 0, t, 1), (t, 0, w, t), (t, (1 - t) / 2, 0.85 * w, (1 + t) / 2), (t, 1 - t, w, 1)],
    "F": lambda w, t: [(0, 0, t, 1), (t, (1 - t) / 2, 0.8 * w, (1 + t) / 2), (t, 1 - t, w, 1)],
    "U": lambda w, t: [(0, t, t, 1), (w - t, t, w, 1), (0, 0, w, t)],
}


def _letters(rng: np.random.Generator) -> _Draft:
    """1–2 letters; the radius is the letter box's half-diagonal."""
    radii = [rng.uniform(0.45, 0.85)] if rng.random() < 0.6 else list(rng.uniform(0.3, 0.45, 2))
    return _arrange(rng, [(r, _letter) for r in radii])


def _letter(rng: np.random.Generator, radius: float) -> tuple[_Draft, float]:
    w, t = rng.uniform(0.6, 0.9), rng.uniform(0.15, 0.25)
    height = 2.0 * radius / np.hypot(1.0, w)
    turn, value, part = rng.uniform(0.0, 2.0 * np.pi), rng.uniform(0.2, 1.0), _Draft()
    for x0, y0, x1, y1 in _LETTERS[rng.choice(list(_LETTERS))](w, t):
        # y up -> rows down (letters are not mirrored); the reversed order keeps it counter-clockwise
        rect = np.array([[x0, y0], [x0, y1], [x1, y1], [x1, y0]]) * [1.0, -1.0] + [-w / 2, 0.5]
        part.add_shape(height * rect @ _rotation(turn), value)
    return part, radius


def _tube_bundle(rng: np.random.Generator) -> _Draft:
    """4–12 tubes (radius 0.09–0.2, walls ≥ 1.2 px at 63 px; empty or partly filled): the points of a
    hexagonal lattice (pitch 2 radii + 0.01–0.06) nearest a random point, scaled down where needed to
    fit the circle."""
    rho = rng.uniform(0.09, 0.2)
    pitch = 2.0 * rho + rng.uniform(0.01, 0.06)
    i, j = np.mgrid[-4:5, -4:5].reshape(2, -1)
    lattice = pitch * np.stack([i + 0.5 * j, np.sqrt(3.0) / 2.0 * j], -1) - _in_disc(rng, pitch, 1)[0]
    pts = lattice[np.argsort(np.hypot(*lattice.T))[: rng.integers(4, 13)]]
    pts -= pts.mean(axis=0)
    fit = min(1.0, 0.95 / (np.hypot(*pts.T).max() + rho))
    pts, rho = fit * pts @ _rotation(rng.uniform(0.0, np.pi)), fit * rho
    pts += _in_disc(rng, 1.0 - (np.hypot(*pts.T).max() + rho), 1)[0]
    lam = min(rng.uniform(0.5, 0.8), 1.0 - 0.04 / rho)
    value, draft = rng.uniform(0.3, 1.0), _Draft()
    for p in pts:
        contents = 0.0 if rng.random() < 0.6 else rng.uniform(0.1, 0.7)  # filled fraction of the tube's level
        draft.add_shape(np.array([*p, rho, rho, 0.0]), value)
        draft.add_shape(np.array([*p, lam * rho, lam * rho, 0.0]), -value * (1.0 - contents))
    return draft


def _family(name: str, build: Callable[[np.random.Generator], _Draft]
            ) -> Callable[[np.random.Generator, int], CTObject]:
    """One draw at image size: drafts are redrawn until their CHECK_SIZE image peaks at ≥ MIN_PEAK."""

    def draw(rng: np.random.Generator, size: int) -> CTObject:
        for _ in range(TRIES):
            draft = build(rng)
            if draft.to_object(name, CHECK_SIZE).image(CHECK_SIZE).max() >= MIN_PEAK:
                return draft.to_object(name, size)
        raise RuntimeError(f"no {name} draw peaks at >= {MIN_PEAK}")

    return draw


FAMILIES: dict[str, Callable[[np.random.Generator, int], CTObject]] = {
    name: _family(name, build)
    for name, build in (("broad", _broad), ("rings", _rings), ("shepp_logan", _shepp_logan),
                        ("dot_array", _dot_array), ("gears", _gears), ("letters", _letters),
                        ("tube_bundle", _tube_bundle))
}


def plot_families(png: str, size: int = 63, seed: int = 1, per_family: int = 6) -> None:
    """A grid of `per_family` draws of every FAMILIES entry (rows; not the paper's shapes), gray scale 0 … 1."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(FAMILIES), per_family, figsize=(2 * per_family, 2 * len(FAMILIES)), squeeze=False)
    for row, family in zip(axes, FAMILIES):
        for k, (ax, obj) in enumerate(zip(row, make_objects(family, per_family, size, seed))):
            ax.imshow(obj.image(size), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if k == 0:
                ax.set_ylabel(family + (" (held out)" if family in HELD_OUT else " (private)" if family in PRIVATE else ""))
    fig.suptitle(f"CT sample families: {per_family} draws each at {size} px (seed {seed})")
    fig.tight_layout()
    fig.savefig(png, dpi=70)
    plt.close(fig)


if __name__ == "__main__":  # python -m firmware_sim.ct.objects PNG [SIZE]: the family grid of docs/results.md
    import sys

    plot_families(sys.argv[1], *map(int, sys.argv[2:3]))
