"""CT angle selection with optimal stopping as environments (paper: ct-angle-selection-optimal-stopping).

An episode scans one phantom. State: the current SIRT reconstruction x̂_k (150 iterations from zero,
clipped to [0, 1]; x̂_1 = 0) and the mask of angles already acquired. Each step picks one of the
`n_angles` grid angles (1° grid for 180) and a stop decision d. The angle is acquired even when d = 1
(the stop fires after this projection): its projection is measured once at the rotation stage's
angle with the detector's noise (default Gaussian, σ = 5 % of that projection's std) and kept for
the episode. Rewards: −b per acquired angle; at termination (d = 1 or `max_angles` acquired) also
PSNR(x̂_{k+1}) = 20·log10(0.62 / RMSE).

`CTBatchEnv` steps B episodes at once (torch, `BatchSIRT`), the training/evaluation engine; it also
accepts angle == n_angles meaning "stop without acquiring" (Algorithm 1's 181st action).
`CTEnv` is the single-episode gymnasium view of it and `CTVecEnv` the vectorised one (learner.envs.base):
  observation Dict{"image": Box(0, 1, (1, N, N), float32), "acquired": MultiBinary(n_angles)}
  action      Dict{"angle": Discrete(n_angles), "stop": Discrete(2)}
An already acquired angle is not measured again: the step is counted in info["invalid_actions"]
and still costs b (the stage moved and exposed). `action_masks()` gives the valid angles.
Samples are drawn per episode, uniformly from `CTEnvConfig.families` (repeat a name to weight it): the
paper's polygons (`firmware_sim.ct.phantoms.SHAPES`, rotations in the config's train/val split) or a family
of `firmware_sim.ct.objects` (e.g. "broad", the random objects the default policy trains on), each drawn
from its own seed and projected analytically (no inverse crime); or a pool of custom images (projected
with the reconstruction's Joseph model). PSNR's peak is each sample's maximum (0.62 for the paper's
phantoms, as the paper), so objects of any contrast score alike.
`state_dict` / `load_state_dict` hold everything that evolves (RNG, samples, measured data), so a
training checkpoint resumes mid-episode exactly.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from controller.modes.ct import tomo
from firmware_sim.ct.objects import CTObject, from_polygon, make_objects
from firmware_sim.ct.physics import Detector, DetectorParams
from firmware_sim.ct.phantoms import OBJECT_VALUE, SHAPES, make_phantoms
from learner.ct.sirt_torch import BatchSIRT
from learner.envs.base import BatchVecEnv, SingleEnv

CUSTOM = "custom"  # family name of custom images
MIXTURE = SHAPES + ("broad",) * len(SHAPES)  # the default policy's training draw: half paper shapes, half broad objects


def draw_object(family: str, size: int, seed: int, split: str = "train") -> CTObject:
    """One sample of `family` (a paper shape, rotations in `split`, or a firmware_sim.ct.objects family)."""
    if family in SHAPES:
        ph = make_phantoms(1, size, seed=seed, split=split, shapes=(family,))
        return from_polygon(ph.vertices[0], OBJECT_VALUE, family)
    return make_objects(family, 1, size, seed)[0]


@dataclass(frozen=True)
class CTEnvConfig:
    size: int = 239  # image size N (odd) [px]
    n_angles: int = 180  # candidate angles on a uniform grid over [0°, 180°)
    max_angles: int = 20  # M: the episode ends once this many angles are acquired
    cost: float = 0.5  # b: experimental cost per acquired angle [dB]
    sirt_iterations: int = tomo.SIRT_ITERATIONS
    noise: str = "gaussian"  # firmware_sim.ct.physics.DetectorParams.noise
    noise_frac: float = 0.05  # Gaussian σ / projection std
    split: str = "train"  # paper phantoms' rotations: "train" | "val"
    families: tuple[str, ...] = SHAPES  # drawn uniformly per episode (see the module docstring)


@dataclass
class CTObs:
    image: torch.Tensor  # (B, 1, N, N) float32 reconstruction x̂_k
    acquired: torch.Tensor  # (B, A) bool
    psnr: np.ndarray  # (B,) PSNR(x̂_k) [dB]
    n_acquired: np.ndarray  # (B,) int


@dataclass
class CTStep:
    obs: CTObs  # after the step (before any reset)
    reward: np.ndarray  # (B,)
    done: np.ndarray  # (B,) bool: terminated at this step
    invalid: np.ndarray  # (B,) bool: an already acquired angle was asked for


class CTBatchEnv:
    """B episodes stepped together; finished episodes stay frozen until `reset(which)`."""

    def __init__(self, cfg: CTEnvConfig, batch: int, seed: int = 0, device: str | None = None,
                 images: np.ndarray | None = None) -> None:
        if batch < 1 or not 1 <= cfg.max_angles <= cfg.n_angles or cfg.cost < 0:
            raise ValueError(f"bad CT environment settings: batch={batch}, {cfg}")
        self.cfg, self.batch = cfg, batch
        self.solver = BatchSIRT(cfg.size, cfg.n_angles, device)
        self.device = self.solver.device
        self.detector = Detector(DetectorParams(noise=cfg.noise, noise_frac=cfg.noise_frac))
        self.grid = tomo.angle_grid(cfg.n_angles)
        self.rng = np.random.default_rng(seed)
        self.pool = None if images is None else self._check_pool(images)
        self._next = 0  # next custom image
        n, a = cfg.size, cfg.n_angles
        self.objects: list[CTObject | None] = [None] * batch
        self.truth = np.zeros((batch, n, n), np.float32)
        self.clean = np.zeros((batch, a, n), np.float32) if self.pool is not None else None
        self.shape = np.array([CUSTOM] * batch, dtype=object)
        self.sino = torch.zeros(batch, a, n, device=self.device)
        self.acquired = torch.zeros(batch, a, dtype=torch.bool, device=self.device)
        self.recon = torch.zeros(batch, n, n, device=self.device)
        self.n_acquired = np.zeros(batch, np.int64)
        self.active = np.zeros(batch, bool)
        self.order = np.full((batch, cfg.max_angles), -1, np.int64)  # acquired grid indices in order
        self.psnr = np.zeros(batch)
        self.peak = np.ones(batch)  # PSNR peak: each sample's maximum

    STATE = ("objects", "truth", "clean", "shape", "sino", "acquired", "recon", "n_acquired", "active", "order",
             "psnr", "peak", "_next")

    def state_dict(self) -> dict:
        """Everything that evolves (copied), for a checkpoint."""
        state = {k: copy.deepcopy(getattr(self, k)) for k in self.STATE}
        return {**state, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        for k in self.STATE:
            v = state[k]
            setattr(self, k, v.to(self.device) if isinstance(v, torch.Tensor) else v)
        self.rng.bit_generator.state = state["rng"]

    def _check_pool(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, np.float32)
        n = self.cfg.size
        if images.ndim != 3 or images.shape[1:] != (n, n) or len(images) == 0:
            raise ValueError(f"custom images must have shape (M, {n}, {n}), got {images.shape}")
        if not np.all(np.isfinite(images)) or images.min() < 0 or images.max() > 1:
            raise ValueError("custom images must be finite and within [0, 1]")
        if np.any(images.max(axis=(1, 2)) <= 0):
            raise ValueError("custom images must not be empty (all zero)")
        return images

    def reset(self, which: np.ndarray | None = None, new_samples: bool = True) -> CTObs:
        """New episodes in slots `which` (bool (B,); default all), on new samples or (new_samples=False) on the
        ones they had; returns the observation of all slots."""
        idx = np.flatnonzero(np.ones(self.batch, bool) if which is None else which)
        if len(idx) and new_samples:
            if self.pool is None:
                for i in idx:
                    family = self.cfg.families[self.rng.integers(len(self.cfg.families))]
                    self.objects[i] = draw_object(family, self.cfg.size, int(self.rng.integers(2**31)), self.cfg.split)
                    self.truth[i], self.shape[i] = self.objects[i].image(self.cfg.size), family
            else:
                pick = (self._next + np.arange(len(idx))) % len(self.pool)  # each image in turn
                self._next = int(pick[-1]) + 1
                self.truth[idx] = self.pool[pick]
                self.clean[idx] = self.solver.project(torch.from_numpy(self.pool[pick])).cpu().numpy()
            self.peak[idx] = self.truth[idx].max(axis=(1, 2))
        if len(idx):
            t = torch.as_tensor(idx, device=self.device)
            self.sino[t], self.acquired[t], self.recon[t] = 0.0, False, 0.0
            self.n_acquired[idx], self.order[idx], self.active[idx] = 0, -1, True
            self.psnr[idx] = [tomo.psnr(np.zeros_like(self.truth[i]), self.truth[i], self.peak[i]) for i in idx]
        return self.observe()

    def observe(self) -> CTObs:
        return CTObs(self.recon[:, None].clone(), self.acquired.clone(), self.psnr.copy(), self.n_acquired.copy())

    def step(self, angle: np.ndarray, stop: np.ndarray) -> CTStep:
        """angle (B,) grid index (n_angles = stop without acquiring), stop (B,) bool; inactive slots ignored."""
        a_count = self.cfg.n_angles
        angle = np.asarray(angle, np.int64).reshape(self.batch)
        stop = np.asarray(stop, bool).reshape(self.batch)
        if np.any((angle < 0) | (angle > a_count)) or np.any((angle == a_count) & ~stop & self.active):
            raise ValueError(f"angles must lie in [0, {a_count}) (or {a_count} together with stop)")
        act = self.active.copy()
        acq = act & (angle < a_count)
        a_safe = np.minimum(angle, a_count - 1)
        was = self.acquired.cpu().numpy()[np.arange(self.batch), a_safe]
        invalid, new = acq & was, acq & ~was
        idx = np.flatnonzero(new)
        if len(idx):
            self._measure(idx, angle[idx])
            self._reconstruct(idx)
        acq_idx = np.flatnonzero(acq)
        self.order[acq_idx, self.n_acquired[acq_idx]] = angle[acq_idx]
        self.n_acquired += acq
        done = act & (stop | (self.n_acquired >= self.cfg.max_angles))
        reward = np.where(done, self.psnr, 0.0) - self.cfg.cost * acq
        self.active &= ~done
        return CTStep(self.observe(), reward, done, invalid)

    def _measure(self, idx: np.ndarray, angle: np.ndarray) -> None:
        """Acquire one noisy projection for each slot idx[i] at grid angle angle[i] (kept for the episode)."""
        if self.pool is None:
            n, sub = self.cfg.size, self.detector.p.subrays
            clean = np.concatenate([self.objects[i].line_integrals(self.grid[a:a + 1], n, sub) for i, a in zip(idx, angle)])
        else:
            clean = self.clean[idx, angle]
        t, ta = torch.as_tensor(idx, device=self.device), torch.as_tensor(angle, device=self.device)
        self.sino[t, ta] = torch.from_numpy(self.detector.add_noise(clean, self.rng)).to(self.device)
        self.acquired[t, ta] = True

    def _reconstruct(self, idx: np.ndarray) -> None:
        t = torch.as_tensor(idx, device=self.device)
        self.recon[t] = self.solver.reconstruct(self.sino[t], self.acquired[t], self.cfg.sirt_iterations)
        rec = self.recon[t].cpu().numpy()
        self.psnr[idx] = [tomo.psnr(r, self.truth[i], self.peak[i]) for r, i in zip(rec, idx)]

    def scan(self, angles: list[np.ndarray], new_samples: bool = True) -> np.ndarray:
        """Baseline scans: from a fresh reset (on new samples, or the same ones), acquire a fixed list of grid
        angles per slot, reconstruct once; returns PSNR (B,). The episodes are left finished."""
        if len(angles) != self.batch or any(len(a) == 0 for a in angles):
            raise ValueError("scan needs a non-empty angle list per slot")
        self.reset(new_samples=new_samples)
        for b, a in enumerate(angles):
            a = np.unique(np.asarray(a, np.int64))
            self._measure(np.full(len(a), b), a)
            self.n_acquired[b] = len(a)
        self._reconstruct(np.arange(self.batch))
        self.active[:] = False
        return self.psnr.copy()


def _spaces(cfg: CTEnvConfig) -> tuple[gym.spaces.Dict, gym.spaces.Dict]:
    """One episode's observation and action spaces."""
    n, a = cfg.size, cfg.n_angles
    obs = gym.spaces.Dict({"image": gym.spaces.Box(0.0, 1.0, (1, n, n), np.float32),
                           "acquired": gym.spaces.MultiBinary(a)})
    return obs, gym.spaces.Dict({"angle": gym.spaces.Discrete(a), "stop": gym.spaces.Discrete(2)})


def _numpy_obs(o: CTObs) -> dict:
    """A batch observation as the spaces' numpy arrays: image (B, 1, N, N) float32, acquired (B, A) int8."""
    return {"image": o.image.cpu().numpy(), "acquired": o.acquired.cpu().numpy().astype(np.int8)}


class CTEnv(SingleEnv):
    """One episode at a time (gymnasium API) over `CTBatchEnv` with B = 1."""

    def __init__(self, cfg: CTEnvConfig = CTEnvConfig(), device: str | None = "cpu",
                 images: np.ndarray | None = None) -> None:
        super().__init__(*_spaces(cfg))
        self.cfg = cfg
        self._env = CTBatchEnv(cfg, 1, device=device, images=images)
        self._invalid = 0

    def _obs(self, o: CTObs) -> dict:
        return {k: v[0] for k, v in _numpy_obs(o).items()}

    def _info(self) -> dict:
        e = self._env
        k = int(e.n_acquired[0])
        return {"psnr": float(e.psnr[0]), "n_angles": k, "angles_deg": e.grid[e.order[0, :k]].tolist(),
                "shape": str(e.shape[0]), "invalid_actions": self._invalid}

    def action_masks(self) -> np.ndarray:
        """Valid angles (bool (n_angles,)): those not acquired yet."""
        return ~self._env.acquired[0].cpu().numpy()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._env.rng = self.np_random  # phantom and noise draws follow gymnasium's seeding
        self._invalid = 0
        return self._obs(self._env.reset()), self._info()

    def step(self, action):
        if not self._env.active[0]:
            raise RuntimeError("step() after the episode ended; call reset()")
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        out = self._env.step(np.array([int(action["angle"])]), np.array([bool(action["stop"])]))
        self._invalid += int(out.invalid[0])
        return self._obs(out.obs), float(out.reward[0]), bool(out.done[0]), False, self._info()


class CTVecEnv(BatchVecEnv):
    """B episodes as a gymnasium vector env over `CTBatchEnv`; a finished episode restarts alone at the next step."""

    def __init__(self, num_envs: int, cfg: CTEnvConfig = CTEnvConfig(), device: str | None = "cpu",
                 images: np.ndarray | None = None) -> None:
        super().__init__(num_envs, *_spaces(cfg))
        self._env = CTBatchEnv(cfg, num_envs, device=device, images=images)

    def _reset_batch(self, seed: int):
        self._env.rng = np.random.default_rng(seed)
        return _numpy_obs(self._env.reset()), {}

    def _reset_slots(self, which: np.ndarray):
        return _numpy_obs(self._env.reset(which))

    def _step_batch(self, actions):
        out = self._env.step(np.asarray(actions["angle"]), np.asarray(actions["stop"], bool))
        info = {"psnr": out.obs.psnr, "n_angles": out.obs.n_acquired, "invalid_actions": out.invalid}
        return _numpy_obs(out.obs), out.reward, out.done, np.zeros(self.num_envs, bool), info
