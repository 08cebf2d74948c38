"""L1-regularised reconstruction of the contrast η from a scan's data on the edge: numpy + scipy, no torch.

The objective of one scan (paper §3.2, "L-BFGS on ‖F(η) − d‖² + λ‖η‖₁"), shared with the batched torch code
(learner/scatter/recon.py), which imports the constants below:

    J(η) = [Σ_{r ≤ s} |F(η)[s, r] − d[s, r]|² + λ·Σ_j (√(η_j² + ε²) − ε)] / c,  c = max(Σ_{r ≤ s} |d[s, r]|², C_FLOOR)

- F is the Born series of order 1, 2 or 3 (physics.py); source s is the transceiver placed at step s (angle a_s,
  frequency f_s, a plane wave travelling along a_s + 180°), receiver r the one placed at step r ≤ s, received
  with the source's wavenumber (spec.py). Entries of d above the diagonal are not used.
- |η| is smoothed to √(η² + ε²) − ε (ε = EPS, ~1/30 of a typical nonzero value of a scatterer at ‖η‖₂ = 0.3 on
  32²): the authors feed L-BFGS the subgradient of |η|, whose objective has kinks at η_j = 0 and
  no optimum that two L-BFGS codes reach alike; the smoothed one is differentiable, so both codes run to the same
  stationary point (tests/unit/test_scatter_recon.py). A bound-constrained split η = p − q would need the bounds
  in the batched torch code too.
- Dividing by c (the data's own energy) changes no minimiser and keeps λ in the paper's units, and J(0) ≈ 1,
  so L-BFGS's tolerances mean the same for data of any size (the data are ~1e-3 … 1e-2).

Gradient (adjoint of the Born series): with A = k²G·diag(η), the fields v_0 = u_in, v_m = u_in + A v_{m−1}
(m < p) and F[s, ·] = R_s (η ⊙ v_{p−1}) (R_s the receiver rows k²Φh² at the source's k). For the masked
residual ρ and w = R_sᴴ ρ_s, a = η ⊙ w:

    ∂/∂η Σ|ρ|² = 2 Re[ conj(w) ⊙ v_{p−1} + Σ_{m = p−1 … 1} conj(b_m) ⊙ v_{m−1} ],  b_m = k²Gᴴa,  a ← η ⊙ b_m

and Gᴴx = conj(G conj(x)) since G is complex symmetric. scipy.optimize.minimize(method="L-BFGS-B") minimises
J from the warm start η0 (the previous step's reconstruction).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.optimize import minimize

from controller.modes.scatter import physics, spec

EPS = 1e-3  # ε of the smoothed |η|
C_FLOOR = 1e-30  # c for data that are all zero
ORDERS = (1, 2, 3)
HISTORY = 10  # L-BFGS memory (scipy's default), the same in the torch code


@lru_cache(maxsize=16)
def _green(n: int, f: int) -> physics.GreenOperator:
    return physics.GreenOperator(physics.Grid(n), float(spec.wavenumbers(n)[f]))


@lru_cache(maxsize=4096)
def _incident(n: int, f: int, angle: int) -> np.ndarray:
    """(n²,) the plane wave a transceiver at ``angle`` sends at frequency index f."""
    k = spec.wavenumbers(n)[f]
    return physics.plane_wave(physics.Grid(n), k, spec.incident_direction_deg(np.array([angle])))[:, 0]


@lru_cache(maxsize=4096)
def _receiver(n: int, f: int, angle: int) -> np.ndarray:
    """(n²,) the receiver row k²·Φ(x_angle, ·)·h² at frequency index f."""
    k = spec.wavenumbers(n)[f]
    return k**2 * physics.receiver_matrix(physics.Grid(n), k, physics.ring(np.array([angle], dtype=float)))[0]


def mask(t: int) -> np.ndarray:
    """(t, t) bool: source s is received by the transceivers placed up to it (r ≤ s)."""
    return np.tril(np.ones((t, t), dtype=bool))


def check_scan(n: int, angles: np.ndarray, freqs: np.ndarray, order: int, iterations: int) -> None:
    """ValueError for a scan the reconstruction cannot take (shared with the torch code)."""
    if angles.ndim != 1 or angles.shape != freqs.shape or angles.size == 0:
        raise ValueError(f"angles and freqs must be 1-D of the same length t >= 1, got {angles.shape}, {freqs.shape}")
    if np.any((angles < 0) | (angles >= spec.N_ANGLES)) or np.any((freqs < 0) | (freqs >= len(spec.FREQUENCY_FACTORS))):
        raise ValueError("angles must be integer degrees 0..359 and frequency indices 0..3")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
    if n < 2:
        raise ValueError(f"eta must be at least 2 x 2, got n = {n}")


def _as_int(a: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


class Problem:
    """One scan's objective J and its gradient (module doc) on an n × n grid."""

    def __init__(self, n: int, angles: np.ndarray, freqs: np.ndarray, data: np.ndarray, order: int, lam: float):
        self.n, self.angles, self.freqs, self.order, self.lam = n, angles, freqs, order, lam
        t = angles.size
        self.mask = mask(t)
        self.data = np.where(self.mask, data, 0)
        self.c = max(float(np.sum(np.abs(self.data) ** 2)), C_FLOOR)
        # per frequency present: its sources and the receiver rows of every transceiver at that k
        self.groups = [(f, np.flatnonzero(freqs == f)) for f in np.unique(freqs)]
        self.u_in = {f: np.stack([_incident(n, f, int(angles[s])) for s in src], axis=1) for f, src in self.groups}
        self.rows = {f: np.stack([_receiver(n, f, int(a)) for a in angles]) for f, _ in self.groups}

    def forward(self, eta: np.ndarray) -> tuple[np.ndarray, dict[int, list[np.ndarray]]]:
        """(t, t) data F(η)[s, r] (masked) and the fields v_0 … v_{p−1} per frequency (n², sources)."""
        e = eta.reshape(-1, 1)
        out = np.zeros((self.angles.size,) * 2, dtype=complex)
        fields = {}
        for f, src in self.groups:
            g, k2 = _green(self.n, f), _green(self.n, f).k ** 2
            v = [self.u_in[f]]
            for _ in range(self.order - 1):
                v.append(self.u_in[f] + k2 * g.apply(e * v[-1]))
            out[src] = (self.rows[f] @ (e * v[-1])).T
            fields[f] = v
        return np.where(self.mask, out, 0), fields

    def value_and_grad(self, eta: np.ndarray) -> tuple[float, np.ndarray]:
        """J(η) and ∂J/∂η (flat) for a flat real η."""
        model, fields = self.forward(eta)
        res = model - self.data
        e = eta.reshape(-1, 1)
        grad = np.zeros(eta.size)
        for f, src in self.groups:
            g, k2, v = _green(self.n, f), _green(self.n, f).k ** 2, fields[f]
            w = self.rows[f].conj().T @ res[src].T  # (n², sources)
            acc = np.conj(w) * v[-1]
            a = e * w
            for m in range(self.order - 1, 0, -1):
                b = k2 * np.conj(g.apply(np.conj(a)))
                acc += np.conj(b) * v[m - 1]
                a = e * b
            grad += 2 * acc.real.sum(axis=1)
        smooth = np.sqrt(eta**2 + EPS**2)
        value = float(np.sum(np.abs(res) ** 2)) + self.lam * float(np.sum(smooth - EPS))
        return value / self.c, (grad + self.lam * eta / smooth) / self.c


def reconstruct(eta0: np.ndarray, angles: np.ndarray, freqs: np.ndarray, data: np.ndarray, *, order: int,
                lam: float, iterations: int) -> np.ndarray:
    """η (n, n) after ``iterations`` L-BFGS-B iterations on J from ``eta0`` (module doc); ``data`` (t, t) the
    scan's data d[s, r], used for r ≤ s."""
    eta0 = np.asarray(eta0, dtype=float)
    if eta0.ndim != 2 or eta0.shape[0] != eta0.shape[1] or not np.all(np.isfinite(eta0)):
        raise ValueError(f"eta0 must be a finite square (n, n) map, got shape {eta0.shape}")
    angles, freqs = _as_int(angles, "angles"), _as_int(freqs, "freqs")
    check_scan(eta0.shape[0], angles, freqs, order, iterations)
    data = np.asarray(data)
    if data.shape != (angles.size,) * 2 or not np.all(np.isfinite(data)):
        raise ValueError(f"data must be a finite (t, t) = {(angles.size,) * 2} array, got shape {data.shape}")
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be finite and >= 0, got {lam!r}")
    problem = Problem(eta0.shape[0], angles, freqs, data.astype(complex), order, float(lam))
    result = minimize(problem.value_and_grad, eta0.ravel(), jac=True, method="L-BFGS-B",
                      options={"maxiter": iterations, "maxcor": HISTORY})
    return result.x.reshape(eta0.shape)
