"""The MEMS PID-tuning environment (paper: mems-mirror-pid-rl, Section II), batched over B stands.

One decision: the agent sets (Px, Ix, Py, Iy) [SI: V/px, V/(px·s)] — D stays at the baseline — and
the stand runs a random number of camera frames under the PID with those gains (the interval
between decisions over UDP is not constant; it is reported in ``info["dt"]`` in nominal decision
periods, for the semi-Markov TD target of eq. 3).

Observation: the last k frames of (x, y, ux, uy, x_target, y_target), normalised by fixed
physical scales (``obs_mean``, ``obs_std``; the exported policy graph applies the same
normalisation to raw readings on the edge). Targets jump by ±100 px at random (eq. 6).

Reward (eq. 2): r = −c_r · Σ_i |pos_i − target_i| over the frames of the decision, with
c_r = 1 / (100 px · n_frames), minus ``r_out_baseline`` when the reward is markedly worse than the
baseline gains' reward over the same frames (a shadow copy of each stand runs the baseline from the
same state with the same targets and disturbance; only the camera noise samples differ).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import gymnasium as gym
import numpy as np

from controller.modes.mems.pid import BASELINE_GAINS, Pid
from controller.modes.mems.spec import OBS_FIELDS as FEATURES
from firmware_sim.mems.disturbance import generate
from firmware_sim.mems.physics import MemsParams, MemsStand, MemsState
from learner.envs.base import BatchVecEnv, SingleEnv

# fixed normalisation of the raw features (the edge graph applies the same)
OBS_SCALE = np.array([100.0, 100.0, 3000.0, 3000.0, 100.0, 100.0])


@dataclass(frozen=True)
class MemsTuningConfig:
    k: int = 8  # frames of history in the observation
    frames_per_decision: tuple[int, int] = (10, 14)  # random interval between decisions [frames]
    nominal_frames: int = 12  # one decision period (Δt = 1) [frames]: 100 ms at 120 Hz
    decisions_per_episode: int = 40
    step_px: float = 100.0  # target jumps (eq. 6)
    target_limit_px: float = 200.0
    target_hold_frames: tuple[int, int] = (30, 90)  # frames between target jumps
    p_bounds: tuple[float, float] = (2.0, 40.0)  # V/px
    i_bounds: tuple[float, float] = (120.0, 4800.0)  # V/(px·s)  (1..40 per frame at 120 Hz)
    r_out_baseline: float = 1.0  # extra penalty (eq. 2) ...
    out_baseline_ratio: float = 1.5  # ... when the error is this many times the baseline's
    disturbance_sigma_px_sqrt_s: float = 0.0  # optional Wiener disturbance during training
    # M1 disturbance during training: none | wiener | steps | sine | bursts | PATH.csv (a recorded trace,
    # header t_s,x_px,y_px: every episode replays a window of it from a random frame)
    disturbance: str = "none"


def action_bounds(cfg: MemsTuningConfig) -> tuple[np.ndarray, np.ndarray]:
    lo = np.array([cfg.p_bounds[0], cfg.i_bounds[0]] * 2, dtype=np.float32)
    hi = np.array([cfg.p_bounds[1], cfg.i_bounds[1]] * 2, dtype=np.float32)
    return lo, hi


def gains_from_action(action: np.ndarray, baseline: np.ndarray = BASELINE_GAINS) -> np.ndarray:
    """(B, 4) = (Px, Ix, Py, Iy) → (B, 2, 3) gains with D from the baseline."""
    a = np.asarray(action, dtype=np.float64).reshape(-1, 4)
    g = np.broadcast_to(baseline, (len(a), 2, 3)).copy()
    g[:, 0, :2], g[:, 1, :2] = a[:, :2], a[:, 2:]
    return g


def baseline_action(baseline: np.ndarray = BASELINE_GAINS) -> np.ndarray:
    return np.array([baseline[0, 0], baseline[0, 1], baseline[1, 0], baseline[1, 1]], dtype=np.float32)


class MemsTuningSim:
    """B stands (+ B shadow stands under baseline gains) stepped one decision at a time."""

    def __init__(self, batch: int, cfg: MemsTuningConfig = MemsTuningConfig(),
                 params: MemsParams | None = None) -> None:
        self.b, self.cfg = batch, cfg
        self.stand = MemsStand(params)
        self.dt = self.stand.params.dt
        self.baseline = BASELINE_GAINS
        lim = self.stand.params.v_limit
        self.pid = Pid(np.broadcast_to(BASELINE_GAINS, (2 * batch, 2, 3)), u_min=-lim, u_max=lim)
        self.rng = np.random.default_rng()
        self.obs_mean = np.zeros(cfg.k * len(FEATURES), dtype=np.float32)
        self.obs_std = np.tile(OBS_SCALE, cfg.k).astype(np.float32)

    def reset(self, seed: int | None, disturbance: np.ndarray | None = None,
              target: np.ndarray | None = None) -> np.ndarray:
        """New episode. ``disturbance``/``target`` (B, T, 2) [px] replay a test scenario frame by frame
        (held at their last sample after T); without them targets jump as in training (eq. 6)."""
        self.rng = np.random.default_rng(seed)
        self.scenario = None if disturbance is None else (
            np.asarray(disturbance, float), np.zeros_like(disturbance) if target is None else np.asarray(target, float))
        self.frame = 0
        self.trace: list[np.ndarray] = []  # scenarios only: (B, 4) per frame: x, y, target x, target y
        self.state: MemsState = self.stand.reset(int(self.rng.integers(2**31)), 2 * self.b)
        self.pid.reset()
        self.pid.set_gains(np.broadcast_to(self.baseline, (2 * self.b, 2, 3)))
        self.target = np.zeros((self.b, 2))
        self.next_jump = self.rng.integers(*self.cfg.target_hold_frames, size=self.b)
        self.m1 = np.zeros((self.b, 2))
        self.drawn = None if disturbance is not None or self.cfg.disturbance == "none" else self._draw_disturbance()
        self.meas = np.zeros((2 * self.b, 2))
        self.t = 0.0
        self.history = np.zeros((self.b, self.cfg.k, len(FEATURES)))
        self.decision = 0
        return self.observation()

    def _draw_disturbance(self) -> np.ndarray:
        """(B, T, 2): this episode's training disturbance, T frames: as long as the longest episode."""
        cfg = self.cfg
        frames = cfg.decisions_per_episode * cfg.frames_per_decision[1] + 1
        return generate(cfg.disturbance, self.rng.integers(2**31, size=self.b).tolist(), frames, starts=self.rng)

    def observation(self) -> np.ndarray:
        raw = self.history.reshape(self.b, -1)
        return ((raw - self.obs_mean) / self.obs_std).astype(np.float32)

    def _sync_shadow(self) -> None:
        """Shadow stands (second half) restart from the agents' stands' state."""
        b, s = self.b, self.state
        arrays = {}
        for name in ("m1_command_px", "m1_px", "m2_px", "m2_vel_px_s"):
            a = getattr(s, name).copy()
            a[b:] = a[:b]
            arrays[name] = a
        line = s.delay_line.copy()
        line[:, b:] = line[:, :b]
        self.state = replace(s, delay_line=line, **arrays)
        for a in (self.pid.i_term, self.pid.y_f, self.pid.e, self.pid.dy, self.pid.u, self.meas):
            a[b:] = a[:b]

    def _advance_scene(self) -> None:
        """Targets and M1 disturbance for the next frame."""
        self.frame += 1
        if self.scenario is not None:
            dist, tgt = self.scenario
            k = min(self.frame - 1, dist.shape[1] - 1)
            self.m1, self.target = dist[:, k], tgt[:, k]
            return
        if self.drawn is not None:
            self.m1 = self.drawn[:, min(self.frame - 1, self.drawn.shape[1] - 1)]
        if self.cfg.disturbance_sigma_px_sqrt_s:
            self.m1 = self.m1 + self.rng.normal(0.0, self.cfg.disturbance_sigma_px_sqrt_s * np.sqrt(self.dt), self.m1.shape)
        self.next_jump -= 1
        jump = self.next_jump <= 0
        if jump.any():
            n = int(jump.sum())
            step = self.rng.choice([-1.0, 1.0], size=(n, 2)) * self.cfg.step_px
            new = self.target[jump] + step
            over = np.abs(new) > self.cfg.target_limit_px
            new[over] = self.target[jump][over] - step[over]
            self.target[jump] = new
            self.next_jump[jump] = self.rng.integers(*self.cfg.target_hold_frames, size=n)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """Apply gains (B, 4) for one decision; returns obs, reward, truncated, info."""
        cfg, b = self.cfg, self.b
        self._sync_shadow()
        gains = np.concatenate([gains_from_action(action, self.baseline),
                                np.broadcast_to(self.baseline, (b, 2, 3))])
        self.pid.set_gains(gains)
        n = int(self.rng.integers(cfg.frames_per_decision[0], cfg.frames_per_decision[1] + 1))
        err = np.zeros(2 * b)
        target2 = np.zeros((2 * b, 2))
        for _ in range(n):
            self._advance_scene()
            target2[:b] = target2[b:] = self.target
            u = self.pid.update(self.meas, target2, self.t)
            self.state, frame = self.stand.step(self.state, u, self.dt, np.concatenate([self.m1, self.m1]))
            self.t += self.dt
            self.meas = frame.xy
            e = np.hypot(*(np.nan_to_num(self.meas, nan=1e3) - target2).T)
            err += e
            if self.scenario is not None:
                self.trace.append(np.concatenate([self.meas[:b], self.target], axis=1))
            self.history = np.roll(self.history, -1, axis=1)
            self.history[:, -1] = np.concatenate([self.meas[:b], u[:b], self.target], axis=1)
        np.nan_to_num(self.history, copy=False, nan=0.0)
        agent_err, base_err = err[:b] / n, err[b:] / n
        reward = -agent_err / 100.0
        reward -= cfg.r_out_baseline * (agent_err > cfg.out_baseline_ratio * base_err + 1.0)
        self.decision += 1
        truncated = np.full(b, self.decision >= cfg.decisions_per_episode)
        info = {"dt": np.full(b, n / cfg.nominal_frames), "mean_error_px": agent_err, "baseline_error_px": base_err}
        return self.observation(), reward, truncated, info


def _spaces(cfg: MemsTuningConfig) -> tuple[gym.spaces.Box, gym.spaces.Box]:
    """One stand's observation and action spaces."""
    lo, hi = action_bounds(cfg)
    dim = cfg.k * len(FEATURES)
    return gym.spaces.Box(-np.inf, np.inf, (dim,), dtype=np.float32), gym.spaces.Box(lo, hi, dtype=np.float32)


class MemsTuningEnv(SingleEnv):
    """Single-stand gymnasium view of :class:`MemsTuningSim` (passes ``check_env``)."""

    def __init__(self, cfg: MemsTuningConfig = MemsTuningConfig(), params: MemsParams | None = None) -> None:
        super().__init__(*_spaces(cfg))
        self.sim = MemsTuningSim(1, cfg, params)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        seed = int(self.np_random.integers(2**31)) if seed is None else seed
        return self.sim.reset(seed)[0], {}

    def step(self, action):
        obs, r, trunc, info = self.sim.step(np.asarray(action)[None])
        return obs[0], float(r[0]), False, bool(trunc[0]), {k: float(v[0]) for k, v in info.items()}


class MemsTuningVecEnv(BatchVecEnv):
    """B stands in one numpy batch; all episodes have the same length, so they reset together."""

    def __init__(self, num_envs: int, cfg: MemsTuningConfig = MemsTuningConfig(),
                 params: MemsParams | None = None) -> None:
        super().__init__(num_envs, *_spaces(cfg))
        self.sim = MemsTuningSim(num_envs, cfg, params)

    def _reset_batch(self, seed: int):
        return self.sim.reset(seed), {}

    def _step_batch(self, actions):
        obs, r, trunc, info = self.sim.step(np.asarray(actions))
        return obs, r, np.zeros(self.num_envs, bool), trunc, info
