"""Adaptive ptychography scanning as an environment (paper: Schloz et al., adaptive scanning; issue #21 §3).

An episode scans one sample (a phase map φ = σV on the object grid, `Optics.object_px`² px, from a *sampler*
`sampler(key, optics)`; the default is firmware_sim.ptycho.mos2.draw_phase) with P positions in T
sub-sequences of M = P / T (default 250 = 5 × 50):
  - the first sub-sequence is the unscrambled Halton sequence (scipy.stats.qmc.Halton, bases 2 and 3, its
    first point (0, 0) skipped), snapped to the grid; it is acquired by `reset`;
  - after each sub-sequence the reconstruction (controller.modes.ptycho.recon.reconstruct, warm-started from
    the previous one, `iterations` gradient steps on all positions so far) is updated;
  - observation: the reconstruction over the scanned field (object pixels 32 … 131, 100 × 100, its mean
    removed), all positions so far and the last sub-sequence's, normalised to [0, 1] (grid index / (grid − 1));
  - action: the next sub-sequence's M positions, continuous in [0, 1]² (clipped to it), snapped to the nearest
    grid point. A position already visited (earlier, or earlier in the same sub-sequence) moves to the nearest
    unvisited grid point (Euclidean on the grid; ties to the first in row-major order), processed in the
    sub-sequence's order, so the result is deterministic and never repeats a position;
  - after the last sub-sequence: per-position Voronoi rewards of the final reconstruction (learner/ptycho/voronoi.py).
Counts are firmware_sim.ptycho.detector.counts, Poisson keyed per (sample key, position): the same sample and
positions give the same data in any order (and in the instrument emulator).

`run_scan(env, choose)` drives a whole episode with any chooser `choose(obs) -> (B, M, 2)` in [0, 1] (the
policy, or a baseline layout); `PtychoVecEnv` is the gymnasium vector view (learner/envs/base.py).
Sample keys: training draws keys in [0, TRAIN_KEYS); keys ≥ TRAIN_KEYS are left to the evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from scipy.stats import qmc

from controller.modes.ptycho import recon
from controller.modes.ptycho.optics import Optics, probe
from firmware_sim.ptycho.detector import counts
from learner.envs.base import BatchVecEnv
from learner.ptycho import voronoi

TRAIN_KEYS = 2**30
Sampler = Callable[[int, Optics], np.ndarray]


def mos2_phase(key: int, optics: Optics) -> np.ndarray:
    """The default sample: a monolayer MoS₂ phase map (firmware_sim.ptycho.mos2, imported when first used)."""
    from firmware_sim.ptycho.mos2 import draw_phase

    return draw_phase(key, optics)


def lattice_phase(key: int, optics: Optics, lattice_A: float = 3.16, width_A: float = 0.3,
                  peak_rad: float = 0.4) -> np.ndarray:
    """A toy sample: Gaussian peaks on a hexagonal lattice (MoS₂'s a = 3.16 Å) at a random shift and rotation."""
    rng = np.random.default_rng(key)
    n, a, w = optics.object_px, lattice_A / optics.pixel_A, width_A / optics.pixel_A
    angle, shift = rng.uniform(0, np.pi / 3), rng.uniform(0, a, 2)
    basis = a * np.array([[np.cos(angle), np.sin(angle)], [np.cos(angle + np.pi / 3), np.sin(angle + np.pi / 3)]])
    reach = int(np.ceil(2 * n / a))
    u, v = np.meshgrid(np.arange(-reach, reach + 1), np.arange(-reach, reach + 1), indexing="ij")
    sites = u.reshape(-1, 1) * basis[0] + v.reshape(-1, 1) * basis[1] + shift
    sites = sites[np.all((sites > -3 * w) & (sites < n + 3 * w), 1)]
    x = np.arange(n)
    gy = np.exp(-(x[None, :] - sites[:, :1]) ** 2 / (2 * w * w))  # (S, n) rows
    gx = np.exp(-(x[None, :] - sites[:, 1:]) ** 2 / (2 * w * w))  # (S, n) columns
    return peak_rad * np.einsum("si,sj->ij", gy, gx)


SAMPLERS: dict[str, Sampler] = {"mos2": mos2_phase, "lattice": lattice_phase}


def halton(count: int, grid: int, start: int = 0) -> np.ndarray:
    """Points start … start + count − 1 of the unscrambled 2-D Halton sequence (its (0, 0) skipped), in [0, 1]²,
    as (count, 2) (row, column); snap with `to_grid`."""
    seq = qmc.Halton(d=2, scramble=False)
    seq.fast_forward(1 + start)
    return seq.random(count)


def to_grid(unit: np.ndarray, grid: int) -> np.ndarray:
    """[0, 1]² coordinates (…, 2) → nearest grid indices (int64), clipped to the grid."""
    return np.rint(np.clip(unit, 0.0, 1.0) * (grid - 1)).astype(np.int64)


def snap(unit: np.ndarray, visited: np.ndarray) -> np.ndarray:
    """One sub-sequence (M, 2) in [0, 1]² → distinct unvisited grid positions (M, 2); marks them in ``visited``
    (grid × grid bool, changed in place). A visited point moves to the nearest unvisited one (module doc)."""
    grid = visited.shape[0]
    want = to_grid(unit, grid)
    if len(want) > (~visited).sum():
        raise ValueError(f"{len(want)} positions asked for but only {(~visited).sum()} grid points are unvisited")
    for m, (i, j) in enumerate(want):
        if visited[i, j]:
            free = np.argwhere(~visited)  # row-major order: argmin takes the first of equal distances
            i, j = free[np.argmin(((free - (i, j)) ** 2).sum(1))]
            want[m] = i, j
        visited[i, j] = True
    return want


@dataclass(frozen=True)
class PtychoEnvConfig:
    positions: int = 250  # P per scan
    subsequences: int = 5  # T
    iterations: int = 5  # reconstruction steps after each sub-sequence
    defocus_A: float = 0.0  # 0 = focused probe (optics.DEFOCUSED_A = 20 for the defocused one)
    sample: str = "mos2"  # a SAMPLERS name (used when no sampler is given)

    @property
    def per_subsequence(self) -> int:
        return self.positions // self.subsequences


@dataclass
class PtychoObs:
    recon: torch.Tensor  # (B, 1, G, G) float32: the reconstruction over the field, mean removed
    positions: torch.Tensor  # (B, K, 2) float32 in [0, 1]: every position so far, in acquisition order
    last: torch.Tensor  # (B, M, 2) float32 in [0, 1]: the last sub-sequence
    t: int  # sub-sequences acquired


@dataclass
class ScanResult:
    positions: list[np.ndarray]  # per sub-sequence (B, M, 2) int grid indices
    recon: np.ndarray  # (B, G, G) the final reconstruction over the field (mean removed)
    rewards: np.ndarray  # (B, P) per-position Voronoi rewards, in acquisition order


class PtychoBatchEnv:
    """B scans stepped together (torch reconstruction on ``device``; counts in numpy)."""

    def __init__(self, cfg: PtychoEnvConfig = PtychoEnvConfig(), batch: int = 1, seed: int = 0,
                 device: str | None = "cpu", sampler: Sampler | None = None) -> None:
        if cfg.subsequences < 2 or cfg.positions % cfg.subsequences or cfg.iterations < 1 or batch < 1:
            raise ValueError(f"need batch ≥ 1, ≥ 2 sub-sequences dividing the positions, ≥ 1 iteration: {cfg}, {batch}")
        if sampler is None and cfg.sample not in SAMPLERS:
            raise ValueError(f"sample must be one of {sorted(SAMPLERS)}, got {cfg.sample!r}")
        self.cfg, self.batch = cfg, batch
        self.optics = Optics(defocus_A=cfg.defocus_A)
        if cfg.positions > self.optics.grid ** 2:
            raise ValueError(f"{cfg.positions} positions do not fit a {self.optics.grid}² grid")
        self.sampler = sampler or SAMPLERS[cfg.sample]
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.probe = probe(self.optics)
        self.probe_t = torch.as_tensor(self.probe, dtype=torch.complex64, device=self.device)
        self.rng = np.random.default_rng(seed)
        self.first = to_grid(halton(cfg.per_subsequence, self.optics.grid), self.optics.grid)

    @property
    def done(self) -> bool:
        return len(self.history) == self.cfg.subsequences

    def reset(self, keys: np.ndarray | None = None) -> PtychoObs:
        """New scans (sample keys drawn from the env's RNG, or ``keys`` (B,)); acquires the Halton sub-sequence."""
        o, b = self.optics, self.batch
        self.keys = self.rng.integers(0, TRAIN_KEYS, b) if keys is None else np.asarray(keys, np.int64).reshape(b)
        self.truth = np.stack([self.sampler(int(k), o) for k in self.keys]).astype(np.float64)
        if self.truth.shape[1:] != (o.object_px, o.object_px):
            raise ValueError(f"the sampler must give ({o.object_px}, {o.object_px}) phase maps, got {self.truth.shape[1:]}")
        self.phase = torch.zeros(b, o.object_px ** 2, device=self.device)
        self.visited = np.zeros((b, o.grid, o.grid), bool)
        self.history: list[np.ndarray] = []
        self._indices: list[torch.Tensor] = []
        self._amplitudes: list[torch.Tensor] = []
        self.rewards: np.ndarray | None = None
        return self._acquire(np.stack([snap(self.first / (o.grid - 1), v) for v in self.visited]))

    def step(self, action: np.ndarray | torch.Tensor) -> PtychoObs:
        """Acquire the next sub-sequence (B, M, 2) in [0, 1]²; after the last one `self.rewards` holds (B, P)."""
        if self.done:
            raise RuntimeError("the scans are finished; call reset()")
        a = np.asarray(action.detach().cpu() if isinstance(action, torch.Tensor) else action, np.float64)
        if a.shape != (self.batch, self.cfg.per_subsequence, 2) or not np.all(np.isfinite(a)):
            raise ValueError(f"action must be finite with shape ({self.batch}, {self.cfg.per_subsequence}, 2), "
                             f"got {a.shape}")
        return self._acquire(np.stack([snap(u, v) for u, v in zip(a, self.visited)]))

    def _acquire(self, grid_pos: np.ndarray) -> PtychoObs:
        """Measure (B, M, 2) grid positions, update the reconstruction, and the rewards after the last."""
        o, n = self.optics, self.optics.window
        size = o.object_px ** 2
        patterns = np.stack([[counts(self.probe, self.truth[b], tuple(p), o.dose, int(self.keys[b])) for p in pos]
                             for b, pos in enumerate(grid_pos)])
        idx = np.stack([recon.window_indices(pos, o.object_px, n) + b * size for b, pos in enumerate(grid_pos)])
        self._indices.append(torch.as_tensor(idx, device=self.device))
        self._amplitudes.append(recon.amplitudes(torch.as_tensor(patterns, dtype=torch.float32, device=self.device),
                                                 o.dose))
        self.history.append(grid_pos)
        data = recon.Measured(torch.cat(self._indices, 1), torch.cat(self._amplitudes, 1),
                              torch.ones(self.batch, len(self.history) * grid_pos.shape[1], device=self.device))
        self.phase = recon.reconstruct(self.phase, self.probe_t, data, self.cfg.iterations)
        obs = self.observe()
        if self.done:
            field, pos = obs.recon[:, 0].cpu().numpy(), np.concatenate(self.history, 1)
            self.rewards = np.stack([voronoi.rewards(f, p) for f, p in zip(field, pos)])
        return obs

    def field(self) -> torch.Tensor:
        """The reconstruction over the scanned field (B, G, G), mean removed."""
        o = self.optics
        c = o.window // 2
        f = self.phase.reshape(self.batch, o.object_px, o.object_px)[:, c:c + o.grid, c:c + o.grid]
        return f - f.mean((1, 2), keepdim=True)

    def observe(self) -> PtychoObs:
        scale = 1.0 / (self.optics.grid - 1)
        pos = torch.as_tensor(np.concatenate(self.history, 1) * scale, dtype=torch.float32, device=self.device)
        return PtychoObs(self.field()[:, None].float(), pos, pos[:, -self.cfg.per_subsequence:], len(self.history))

    def truth_field(self) -> np.ndarray:
        """The true phase over the field (B, G, G), mean removed (for pictures and metrics)."""
        o = self.optics
        c = o.window // 2
        f = self.truth[:, c:c + o.grid, c:c + o.grid]
        return f - f.mean((1, 2), keepdims=True)


def run_scan(env: PtychoBatchEnv, choose: Callable[[PtychoObs], np.ndarray | torch.Tensor],
             keys: np.ndarray | None = None) -> ScanResult:
    """One full scan of every slot, the positions after the first chosen by ``choose(obs) -> (B, M, 2)``."""
    obs = env.reset(keys)
    while not env.done:
        obs = env.step(choose(obs))
    return ScanResult(list(env.history), obs.recon[:, 0].cpu().numpy(), env.rewards)


class PtychoVecEnv(BatchVecEnv):
    """B scans as a gymnasium vector env: one step per sub-sequence; all scans end together (T − 1 steps).
    observation Dict{"recon": Box((1, G, G)), "positions": Box(−1, 1, (P, 2)) (rows not yet scanned are −1),
    "last": Box(0, 1, (M, 2))}; action Box(0, 1, (M, 2)); reward 0 until the last step, then the summed Voronoi
    reward of the positions the actions chose (all but the Halton sub-sequence: a whole scan's rewards sum to
    zero, voronoi.py); info["rewards"]: the per-position ones, (B, P)."""

    def __init__(self, num_envs: int, cfg: PtychoEnvConfig = PtychoEnvConfig(), device: str | None = "cpu",
                 sampler: Sampler | None = None) -> None:
        g, p, m = Optics().grid, cfg.positions, cfg.per_subsequence
        obs = gym.spaces.Dict({"recon": gym.spaces.Box(-np.inf, np.inf, (1, g, g), np.float32),
                               "positions": gym.spaces.Box(-1.0, 1.0, (p, 2), np.float32),
                               "last": gym.spaces.Box(0.0, 1.0, (m, 2), np.float32)})
        super().__init__(num_envs, obs, gym.spaces.Box(0.0, 1.0, (m, 2), np.float32))
        self._env = PtychoBatchEnv(cfg, num_envs, device=device, sampler=sampler)

    def _numpy(self, o: PtychoObs) -> dict:
        pos = np.full((self.num_envs, self._env.cfg.positions, 2), -1.0, np.float32)
        pos[:, :o.positions.shape[1]] = o.positions.cpu().numpy()
        return {"recon": o.recon.cpu().numpy(), "positions": pos, "last": o.last.cpu().numpy()}

    def _reset_batch(self, seed: int):
        self._env.rng = np.random.default_rng(seed)
        return self._numpy(self._env.reset()), {}

    def _step_batch(self, actions):
        obs = self._numpy(self._env.step(np.asarray(actions)))
        done = np.full(self.num_envs, self._env.done)
        total = self._env.rewards[:, self._env.cfg.per_subsequence:].sum(1) if self._env.done else np.zeros(self.num_envs)
        info = {"rewards": self._env.rewards} if self._env.done else {}
        return obs, total, done, np.zeros(self.num_envs, bool), info
