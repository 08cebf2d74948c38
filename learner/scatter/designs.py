"""The non-learned designs of the transceiver task, as designers stepping scans in lockstep (episode.Designer).

Planned designs fix every scan's K (angle, frequency index) pairs at `reset` and play them back:
- random_angle:    K distinct random angles, one fixed frequency (paper Table 1's "random");
- uniform_angle:   angles 360°·j/K apart from a random start, placed around the ring, one fixed frequency;
- uniform_cycling: uniform angles with the frequency index cycling 0, 1, 2, 3, 0, … (k = n/4 → n);
- random_both:     random angles with random frequencies (the angles of Table 1's "learn frequency" row);
- fixed:           one frozen plan for every scan (best_fixed: the best candidate on the training split);
- Oracle:          per scatterer the best of N random designs (random_both), scored with the true η: a ceiling.
DOptimal is greedy and adaptive: each step places the (angle, frequency) with the largest gain in
log det(I + P^{1/2}·JᵀJ·P^{1/2}/σ²) for the linearised (first-order Born) operator J: one complex row per datum,
J[(s, r), ·] = k_s²·Φ_{k_s}(x_{a_r}, ·)·h² ⊙ u_in(θ_s, k_s) (batched.Tables' receiver and incident rows), taken
as its real and imaginary parts (η is real). With C = (P⁻¹ + JᵀJ/σ²)⁻¹ the posterior covariance of the rows so
far, a candidate's rows A (its source at every receiver so far and itself) add log det(I + A·C·Aᵀ/σ²), computed
with the Woodbury form C = P − P·Jᵀ·(σ²I + J·P·Jᵀ)⁻¹·J·P. The prior P is flat (I: the design does not depend
on η, so it is computed once and used for every scan; it picks the highest frequency — the rows' norm grows
with k²) or re-weighted by the current reconstruction: P = diag(WEIGHT_FLOOR + η̂₊/max η̂₊), flat while η̂ = 0.
The noise σ² = v·mean‖row‖²/10^(snr_db/10) with v = NORM²/n² the per-pixel variance of a scatterer at the
training norm, mean‖row‖² over all candidates' rows: the design's SNR for a typical datum.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from controller.modes.scatter import spec
from learner.scatter.batched import Tables
from learner.scatter.episode import Recipe, Scans, run

N_FREQ = len(spec.FREQUENCY_FACTORS)
ORACLE_DESIGNS = 24  # N of the best-of-N oracle (issue #22)
WEIGHT_FLOOR = 0.1  # the re-weighted prior's weight where the reconstruction is zero
DESIGN_SNR_DB = 30.0  # the D-optimal design's σ² (module doc)


def _check_freq(freq: int) -> int:
    if isinstance(freq, bool) or not isinstance(freq, (int, np.integer)) or not 0 <= freq < N_FREQ:
        raise ValueError(f"a frequency index must be an integer 0..{N_FREQ - 1}, got {freq!r}")
    return int(freq)


def random_angles(rng: np.random.Generator, scans: int, budget: int) -> np.ndarray:
    """(scans, budget) distinct random integer angles per scan."""
    return np.stack([rng.choice(spec.N_ANGLES, budget, replace=False) for _ in range(scans)])


def uniform_angles(start: np.ndarray, budget: int) -> np.ndarray:
    """(scans, budget) angles round(360·j/K) past each scan's start, in placement order around the ring."""
    steps = np.round(np.arange(budget) * spec.N_ANGLES / budget).astype(int)
    return (np.asarray(start)[:, None] + steps[None, :]) % spec.N_ANGLES


def cycling(scans: int, budget: int) -> np.ndarray:
    """(scans, budget) frequency indices 0, 1, 2, 3, 0, …"""
    return np.tile(np.arange(budget) % N_FREQ, (scans, 1))


class Planned:
    """Plays back a plan (angles, freqs (B, K)) drawn per batch at reset by ``plan(rng, B, K)``."""

    def __init__(self, plan) -> None:
        self.plan = plan
        self.angles = self.freqs = np.zeros((0, 0), dtype=int)

    def reset(self, scans: Scans, rng: np.random.Generator) -> None:
        b, k = scans.eta.shape[0], scans.budget
        angles, freqs = (np.asarray(x, dtype=np.int64) for x in self.plan(rng, b, k))
        if angles.shape != (b, k) or freqs.shape != (b, k):
            raise ValueError(f"a plan must give (B, K) = {(b, k)} angles and frequencies, got {angles.shape}, "
                             f"{freqs.shape}")
        self.angles, self.freqs = angles, freqs

    def choose(self, scans: Scans) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.angles[:, scans.t]), torch.from_numpy(self.freqs[:, scans.t])


def random_angle(freq: int) -> Planned:
    f = _check_freq(freq)
    return Planned(lambda rng, b, k: (random_angles(rng, b, k), np.full((b, k), f)))


def uniform_angle(freq: int) -> Planned:
    f = _check_freq(freq)
    return Planned(lambda rng, b, k: (uniform_angles(rng.integers(spec.N_ANGLES, size=b), k), np.full((b, k), f)))


def uniform_cycling() -> Planned:
    return Planned(lambda rng, b, k: (uniform_angles(rng.integers(spec.N_ANGLES, size=b), k), cycling(b, k)))


def random_both() -> Planned:
    return Planned(lambda rng, b, k: (random_angles(rng, b, k), rng.integers(N_FREQ, size=(b, k))))


def fixed(angles: np.ndarray, freqs: np.ndarray) -> Planned:
    """One frozen plan (K,) angles and frequency indices for every scan."""
    angles, freqs = np.asarray(angles, dtype=np.int64), np.asarray(freqs, dtype=np.int64)
    if angles.ndim != 1 or angles.shape != freqs.shape or len(set(angles.tolist())) != angles.size:
        raise ValueError("a fixed plan needs K distinct angles and K frequency indices")
    if np.any((angles < 0) | (angles >= spec.N_ANGLES)) or np.any((freqs < 0) | (freqs >= N_FREQ)):
        raise ValueError("a fixed plan's angles must be 0..359 and its frequency indices 0..3")

    def plan(rng: np.random.Generator, b: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k != angles.size:
            raise ValueError(f"the fixed plan has {angles.size} transceivers, the scans a budget of {k}")
        return np.tile(angles, (b, 1)), np.tile(freqs, (b, 1))
    return Planned(plan)


def fixed_candidates(rng: np.random.Generator, budget: int, n_random: int) -> tuple[np.ndarray, np.ndarray]:
    """best_fixed's candidates (C, K): uniform angles (start 0) at each fixed frequency and cycling, then
    ``n_random`` random_both designs."""
    start = np.zeros(1, dtype=int)
    angles = [uniform_angles(start, budget)[0]] * (N_FREQ + 1)
    freqs = [np.full(budget, f) for f in range(N_FREQ)] + [cycling(1, budget)[0]]
    angles += list(random_angles(rng, n_random, budget))
    freqs += list(rng.integers(N_FREQ, size=(n_random, budget)))
    return np.stack(angles), np.stack(freqs)


@dataclass(frozen=True)
class Selected:
    """A design chosen by scoring candidates: the plan and every candidate's mean final MSE."""

    angles: np.ndarray  # (K,)
    freqs: np.ndarray  # (K,)
    scores: np.ndarray  # (C,) mean final MSE of each candidate over the scatterers it was scored on


def select_fixed(eta: torch.Tensor, *, tables: Tables, recipe: Recipe, rng: np.random.Generator,
                 n_random: int = 16, budget: int = spec.BUDGET) -> Selected:
    """best_fixed: the candidate (fixed_candidates) of least mean final MSE on ``eta`` (the TRAINING split's
    scatterers), every candidate run on every scatterer in one batch. Freeze it with ``fixed(s.angles, s.freqs)``."""
    angles, freqs = fixed_candidates(rng, budget, n_random)
    c, m = angles.shape[0], eta.shape[0]
    per_scan = Planned(lambda _rng, b, k: (np.repeat(angles, m, axis=0), np.repeat(freqs, m, axis=0)))
    _, errors = run(per_scan, eta.repeat(c, 1, 1), tables=tables, recipe=recipe, rng=rng, budget=budget)
    scores = errors[:, -1].reshape(c, m).mean(1).cpu().numpy()
    best = int(np.argmin(scores))
    return Selected(angles[best], freqs[best], scores)


class Oracle:
    """Per scatterer the best of N random_both designs by final MSE against the TRUE η (a ceiling, not a
    design one can run): reset runs all N on every scan, then the best plan is played back. ``candidate_mse``
    (B, N) keeps every candidate's final MSE."""

    def __init__(self, tables: Tables, recipe: Recipe, n_designs: int = ORACLE_DESIGNS) -> None:
        self.tables, self.recipe, self.n_designs = tables, recipe, n_designs
        self.plan = Planned(lambda rng, b, k: (self.angles, self.freqs))
        self.angles = self.freqs = np.zeros((0, 0), dtype=int)
        self.candidate_mse = np.zeros((0, n_designs))

    def reset(self, scans: Scans, rng: np.random.Generator) -> None:
        b, k, n = scans.eta.shape[0], scans.budget, self.n_designs
        angles, freqs = random_angles(rng, b * n, k), rng.integers(N_FREQ, size=(b * n, k))
        candidates = Planned(lambda _rng, _b, _k: (angles, freqs))
        # scan (i, c) is scatterer i with candidate c: rows i·N … i·N + N − 1
        _, errors = run(candidates, scans.eta.repeat_interleave(n, 0), tables=self.tables, recipe=self.recipe,
                        rng=rng, budget=k)
        self.candidate_mse = errors[:, -1].reshape(b, n).cpu().numpy()
        best = np.arange(b) * n + self.candidate_mse.argmin(1)
        self.angles, self.freqs = angles[best], freqs[best]
        self.plan.reset(scans, rng)

    def choose(self, scans: Scans) -> tuple[torch.Tensor, torch.Tensor]:
        return self.plan.choose(scans)


class DOptimal:
    """Greedy D-optimal design on the first-order Born operator (module doc): ``prior`` "flat" or "weighted";
    candidate angles every ``stride`` degrees (the weighted prior's gains are per scan and step: stride 2 halves
    their cost). Computed in float64 on the tables' device."""

    def __init__(self, tables: Tables, prior: str = "flat", snr_db: float = DESIGN_SNR_DB, stride: int = 1) -> None:
        if prior not in ("flat", "weighted"):
            raise ValueError(f"prior must be 'flat' or 'weighted', got {prior!r}")
        if not 1 <= stride <= spec.N_ANGLES // spec.BUDGET:
            raise ValueError(f"stride must be 1 … {spec.N_ANGLES // spec.BUDGET} degrees, got {stride!r}")
        self.tables, self.prior, self.stride = tables, prior, stride
        row_power = (tables.receivers.abs().double() ** 2).sum(-1).mean().item()  # |u_in| = 1
        self.sigma2 = (spec.NORM**2 / tables.n**2) * row_power / 10 ** (snr_db / 10)

    def reset(self, scans: Scans, rng: np.random.Generator) -> None:
        """Nothing to draw: the design is deterministic given the scans."""

    def weights(self, recon: torch.Tensor) -> torch.Tensor:
        """(n²,) prior variances P of one scan: flat, or re-weighted by the positive part of its reconstruction."""
        flat = torch.ones(self.tables.n**2, dtype=torch.float64, device=self.tables.device)
        pos = recon.reshape(-1).to(flat).clamp(min=0)
        if self.prior == "flat" or not pos.max() > 0:
            return flat
        return WEIGHT_FLOOR + pos / pos.max()

    def choose(self, scans: Scans) -> tuple[torch.Tensor, torch.Tensor]:
        b, t = scans.eta.shape[0], scans.t
        shared = torch.equal(scans.angles[:, :t], scans.angles[:1, :t].expand(b, -1)) and torch.equal(
            scans.freqs[:, :t], scans.freqs[:1, :t].expand(b, -1))
        if self.prior == "flat" and shared:  # η-independent: one greedy choice serves every scan
            gain = self.gains(scans.angles[0, :t], scans.freqs[0, :t], self.weights(scans.recon[0]))
            a, f = _argmax(gain)
            return torch.full((b,), a), torch.full((b,), f)
        picks = [_argmax(self.gains(scans.angles[i, :t], scans.freqs[i, :t], self.weights(scans.recon[i])))
                 for i in range(b)]
        return torch.tensor([p[0] for p in picks]), torch.tensor([p[1] for p in picks])

    def rows(self, src_angles: torch.Tensor, src_freq: torch.Tensor, receivers: torch.Tensor) -> torch.Tensor:
        """(S, 2R, n²) real rows of J (re and im of each datum) of sources (S,) at their receivers (S, R)."""
        tb = self.tables
        rows = tb.receivers[src_freq[:, None], receivers] * tb.incident[src_freq, src_angles][:, None]
        return torch.view_as_real(rows.to(torch.complex128)).transpose(-1, -2).reshape(len(src_angles), -1, tb.n**2)

    def gains(self, angles: torch.Tensor, freqs: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """(F, 360) log det gain of each candidate (frequency, angle) for one scan with transceivers (t,) at
        ``angles``/``freqs`` and prior variances p (n²,); used angles get −inf."""
        dev = self.tables.device
        a, f = angles.to(dev), freqs.to(dev)
        t = a.numel()
        # the rows so far: source s at receivers 0 … s
        j = torch.cat([self.rows(a[s : s + 1], f[s : s + 1], a[None, : s + 1])[0] for s in range(t)]
                      + [torch.zeros(0, p.numel(), dtype=p.dtype, device=dev)])
        jp = j * p
        s_inv = torch.linalg.inv(self.sigma2 * torch.eye(j.shape[0], dtype=p.dtype, device=dev) + jp @ j.T)
        candidates = torch.arange(0, spec.N_ANGLES, self.stride, device=dev)  # (C,)
        receivers = torch.cat([a[None, :].expand(len(candidates), -1), candidates[:, None]], 1)  # (C, t + 1)
        eye = torch.eye(2 * (t + 1), dtype=p.dtype, device=dev)
        gain = torch.full((N_FREQ, spec.N_ANGLES), -torch.inf, dtype=p.dtype, device=dev)
        for freq in range(N_FREQ):
            ar = self.rows(candidates, torch.full_like(candidates, freq), receivers)  # (C, 2t + 2, n²)
            ap = ar * p
            cross = ap @ j.T  # (C, 2t + 2, m)
            g = ap @ ar.transpose(1, 2) - cross @ s_inv @ cross.transpose(1, 2)  # A·C·Aᵀ (Woodbury)
            gain[freq, candidates] = torch.linalg.slogdet(eye + g / self.sigma2)[1]
        gain[:, a] = -torch.inf
        return gain


def _argmax(gain: torch.Tensor) -> tuple[int, int]:
    """(angle, frequency index) of the largest gain (F, 360), the first on ties."""
    f, angle = divmod(int(torch.argmax(gain).item()), spec.N_ANGLES)
    return angle, f
