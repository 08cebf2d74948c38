"""Adaptive ptychography scanning as an environment (paper: Schloz et al., adaptive scanning; issue #21 §3).

An episode scans one sample (a phase map φ = σV on the object grid, `Optics.object_px`² px, from a *sampler*
`sampler(key, optics)`; the default is firmware_sim.ptycho.mos2.draw_phase) with P positions in T
sub-sequences of M = P / T (default 250 = 5 × 50):
  - the first sub-sequence is the unscrambled Halton sequence (controller/modes/ptycho/path.halton, as on the
    edge); it is acquired by `reset`; sub-sequence sizes split P as evenly as possible (`sizes`);
  - after each sub-sequence the reconstruction (controller.modes.ptycho.recon.reconstruct, warm-started from
    the previous one, `iterations` gradient steps on all positions so far) is updated;
  - observation: the reconstruction over the scanned field (object pixels 32 … 131, 100 × 100, its mean
    removed), all positions so far and the last sub-sequence's, normalised to [0, 1] (grid index / (grid − 1));
  - action: the next sub-sequence's M positions, continuous in [0, 1]², snapped to unvisited grid points by the
    edge's rule (path.snap_unvisited: nearest grid point; a visited one moves to the nearest unvisited);
  - after the last sub-sequence: per-position Voronoi rewards of the final reconstruction (learner/ptycho/voronoi.py).
Counts are firmware_sim.ptycho.detector.counts, Poisson keyed per (sample key, position): the same sample and
positions give the same data in any order (and in the instrument emulator).

`run_scan(env, choose)` drives a whole episode with any chooser `choose(obs) -> (B, M, 2)` in [0, 1] (the
policy, or a baseline layout); `PtychoVecEnv` is the gymnasium vector view (learner/envs/base.py).
Sample keys: training draws keys from firmware_sim.ptycho.mos2.SPLITS["train"]; the others are the evaluation's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from controller.modes.ptycho import recon
from controller.modes.ptycho.optics import Optics, probe
from controller.modes.ptycho.path import halton, snap_unvisited
from firmware_sim.ptycho.detector import counts
from firmware_sim.ptycho.mos2 import SPLITS
from learner.envs.base import BatchVecEnv
from learner.ptycho import voronoi
from learner.ptycho.lattice import MOS2_A, lattice

Sampler = Callable[[int, Optics], np.ndarray]


def mos2_phase(key: int, optics: Optics) -> np.ndarray:
    """The default sample: a monolayer MoS₂ phase map (firmware_sim.ptycho.mos2, imported when first used)."""
    from firmware_sim.ptycho.mos2 import draw_phase

    return draw_phase(key, optics)


def lattice_phase(key: int, optics: Optics) -> np.ndarray:
    """A toy sample (tests, quick runs): learner/ptycho/lattice.py's Gaussian peaks on MoS₂'s hexagonal lattice,
    0.4 rad high, at a rotation and shift drawn from ``key``."""
    rng = np.random.default_rng(key)
    return lattice(optics, width_A=0.3, peak=0.4, angle=rng.uniform(0, np.pi / 3),
                   shift_A=tuple(rng.uniform(0, MOS2_A, 2)))


SAMPLERS: dict[str, Sampler] = {"mos2": mos2_phase, "lattice": lattice_phase}


@dataclass(frozen=True)
class PtychoEnvConfig:
    positions: int = 250  # P per scan
    subsequences: int = 5  # T
    iterations: int = 5  # reconstruction steps after each sub-sequence
    defocus_A: float = 0.0  # 0 = focused probe (optics.DEFOCUSED_A = 20 for the defocused one)
    sample: str = "mos2"  # a SAMPLERS name (used when no sampler is given)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Positions per sub-sequence: P split as evenly as possible, the larger ones first (250 in 3: 84, 83, 83)."""
        base, extra = divmod(self.positions, self.subsequences)
        return tuple(base + (t < extra) for t in range(self.subsequences))


@dataclass
class PtychoObs:
    recon: torch.Tensor  # (B, 1, G, G) float32: the reconstruction over the field, mean removed
    positions: torch.Tensor  # (B, K, 2) float32 in [0, 1]: every position so far, in acquisition order
    last: torch.Tensor  # (B, M, 2) float32 in [0, 1]: the last sub-sequence
    t: int  # sub-sequences acquired
    want: int  # M of the next sub-sequence (what a chooser returns; 0 when the scan is done)


@dataclass
class ScanResult:
    positions: list[np.ndarray]  # per sub-sequence (B, M, 2) int grid indices
    recon: np.ndarray  # (B, G, G) the final reconstruction over the field (mean removed)
    rewards: np.ndarray  # (B, P) per-position Voronoi rewards, in acquisition order


class PtychoBatchEnv:
    """B scans stepped together (torch reconstruction on ``device``; counts in numpy)."""

    def __init__(self, cfg: PtychoEnvConfig = PtychoEnvConfig(), batch: int = 1, seed: int = 0,
                 device: str | None = "cpu", sampler: Sampler | None = None) -> None:
        if not 2 <= cfg.subsequences <= cfg.positions or cfg.iterations < 1 or batch < 1:
            raise ValueError(f"need batch ≥ 1, 2 … P sub-sequences and ≥ 1 iteration: {cfg}, {batch}")
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

    @property
    def done(self) -> bool:
        return len(self.history) == self.cfg.subsequences

    def reset(self, keys: np.ndarray | None = None) -> PtychoObs:
        """New scans (sample keys drawn from the env's RNG, or ``keys`` (B,)); acquires the Halton sub-sequence."""
        o, b = self.optics, self.batch
        train = SPLITS["train"]
        self.keys = self.rng.integers(train.start, train.stop, b) if keys is None else np.asarray(keys, np.int64).reshape(b)
        self.truth = np.stack([self.sampler(int(k), o) for k in self.keys]).astype(np.float64)
        if self.truth.shape[1:] != (o.object_px, o.object_px):
            raise ValueError(f"the sampler must give ({o.object_px}, {o.object_px}) phase maps, got {self.truth.shape[1:]}")
        self.phase = torch.zeros(b, o.object_px ** 2, device=self.device)
        self.visited = np.zeros((b, o.grid, o.grid), bool)
        self.history: list[np.ndarray] = []
        self._indices: list[torch.Tensor] = []
        self._amplitudes: list[torch.Tensor] = []
        self.rewards: np.ndarray | None = None
        return self._acquire(np.broadcast_to(halton(self.cfg.sizes[0]), (b, self.cfg.sizes[0], 2)))

    def step(self, action: np.ndarray | torch.Tensor) -> PtychoObs:
        """Acquire the next sub-sequence (B, M, 2) in [0, 1]²; after the last one `self.rewards` holds (B, P)."""
        if self.done:
            raise RuntimeError("the scans are finished; call reset()")
        a = np.asarray(action.detach().cpu() if isinstance(action, torch.Tensor) else action, np.float64)
        if a.shape != (self.batch, self.cfg.sizes[len(self.history)], 2) or not np.all(np.isfinite(a)):
            raise ValueError(f"action must be finite with shape ({self.batch}, {self.cfg.sizes[len(self.history)]}, 2), got {a.shape}")
        return self._acquire(a)

    def _acquire(self, unit: np.ndarray) -> PtychoObs:
        """Snap (B, M, 2) points in [0, 1]² to unvisited grid positions (controller/modes/ptycho/path.py), measure
        them, update the reconstruction, and the rewards after the last sub-sequence."""
        o, n = self.optics, self.optics.window
        grid_pos = np.stack([snap_unvisited(u, v) for u, v in zip(unit, self.visited)])
        for v, pos in zip(self.visited, grid_pos):
            v[pos[:, 0], pos[:, 1]] = True
        size = o.object_px ** 2
        patterns = np.stack([[counts(self.probe, self.truth[b], tuple(p), o.dose, int(self.keys[b])) for p in pos]
                             for b, pos in enumerate(grid_pos)])
        idx = np.stack([recon.window_indices(pos, o.object_px, n) + b * size for b, pos in enumerate(grid_pos)])
        self._indices.append(torch.as_tensor(idx, device=self.device))
        self._amplitudes.append(recon.amplitudes(torch.as_tensor(patterns, dtype=torch.float32, device=self.device),
                                                 o.dose))
        self.history.append(grid_pos)
        self.phase = recon.reconstruct(self.phase, self.probe_t, self.measured(), self.cfg.iterations)
        obs = self.observe()
        if self.done:
            field, pos = obs.recon[:, 0].cpu().numpy(), np.concatenate(self.history, 1)
            self.rewards = np.stack([voronoi.rewards(f, p) for f, p in zip(field, pos)])
        return obs

    def measured(self) -> recon.Measured:
        """Everything measured so far (the reconstruction's data)."""
        return recon.Measured(torch.cat(self._indices, 1), torch.cat(self._amplitudes, 1),
                              torch.ones(self.batch, sum(self.cfg.sizes[:len(self.history)]), device=self.device))

    def field(self) -> torch.Tensor:
        """The reconstruction over the scanned field (B, G, G), mean removed."""
        o = self.optics
        c = o.window // 2
        f = self.phase.reshape(self.batch, o.object_px, o.object_px)[:, c:c + o.grid, c:c + o.grid]
        return f - f.mean((1, 2), keepdim=True)

    def observe(self) -> PtychoObs:
        scale = 1.0 / (self.optics.grid - 1)
        pos = torch.as_tensor(np.concatenate(self.history, 1) * scale, dtype=torch.float32, device=self.device)
        t = len(self.history)
        return PtychoObs(self.field()[:, None].float(), pos, pos[:, -len(self.history[-1][0]):], t,
                         0 if self.done else self.cfg.sizes[t])

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
        if len(set(cfg.sizes)) != 1:
            raise ValueError(f"the vector view needs equal sub-sequences (fixed action shape): {cfg.sizes}")
        g, p, m = Optics().grid, cfg.positions, cfg.sizes[0]
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
        total = self._env.rewards[:, self._env.cfg.sizes[0]:].sum(1) if self._env.done else np.zeros(self.num_envs)
        info = {"rewards": self._env.rewards} if self._env.done else {}
        return obs, total, done, np.zeros(self.num_envs, bool), info
