"""The MEMS tuning environment on the live stand: steps the running daemon over the host link.

Same spaces as :class:`learner.mems.env.MemsTuningEnv`, so a policy moves between the two unchanged.
One step: send the gains (SetGains), let the stand run for one decision period in real time,
read the telemetry that came back (one row per tick: the daemon's `telemetry_decimation` must be 1)
and build observation and reward from it. ``info["gains"]`` holds the gains the daemon reported running
in the interval's last telemetry row ([axis][P, I, D]; NaN when none came back). The real interval is reported as Δt in ``info["dt"]``
(UDP and the host's scheduling make it vary — the paper's reason for the semi-Markov target, eq. 3).
Targets jump by ±100 px (eq. 6) through SetTarget, as on the paper's stand.

The penalty of eq. 2 for a reward far worse than the baseline's uses a reference measured with the
baseline gains at every reset (there is no shadow stand on real hardware).
"""
from __future__ import annotations

import asyncio
import threading
import time

import gymnasium as gym
import numpy as np

from controller.link.host_udp import HostClient
from controller.link.auth import Gains
from learner.mems.env import FEATURES, OBS_SCALE, MemsTuningConfig, action_bounds, baseline_action, gains_from_action


class MemsLiveEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, client_factory, cfg: MemsTuningConfig = MemsTuningConfig(), frame_rate_hz: float = 120.0) -> None:
        """``client_factory``: an async callable returning an open :class:`HostClient` (called on the env's loop)."""
        self.cfg = cfg
        self.period_s = cfg.nominal_frames / frame_rate_hz
        lo, hi = action_bounds(cfg)
        self.action_space = gym.spaces.Box(lo, hi, dtype=np.float32)
        dim = cfg.k * len(FEATURES)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), dtype=np.float32)
        self.obs_std = np.tile(OBS_SCALE, cfg.k).astype(np.float32)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="live-env", daemon=True)
        self._thread.start()
        self.client: HostClient = self._run(client_factory())
        self._rows: list[tuple[float, ...]] = []
        self._gains: list[tuple[tuple[float, ...], ...]] = []  # per row: the gains the daemon ran
        self._reader = asyncio.run_coroutine_threadsafe(self._read(), self._loop)
        self.target = np.zeros(2)
        self.history = np.zeros((cfg.k, len(FEATURES)))
        self.baseline_error = 1.0

    def _run(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _read(self) -> None:
        async for t in self.client.telemetry():
            self._rows.append((t.x_px, t.y_px, t.cmd_x_v, t.cmd_y_v, t.target_x_px, t.target_y_px))
            self._gains.append(t.gains.rows())

    def _interval(self, action: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        """Apply gains, run one decision period in real time; (rows (n, 6), elapsed s, the daemon's last gains)."""
        self._run(self.client.set_gains(Gains.from_rows(gains_from_action(action)[0])))
        self._rows.clear()
        self._gains.clear()
        t0 = time.monotonic()
        time.sleep(self.period_s)
        rows = np.array(self._rows, dtype=np.float64).reshape(-1, len(FEATURES))
        gains = np.array(self._gains[-1] if self._gains else np.full((2, 3), np.nan), dtype=np.float64)
        return rows, time.monotonic() - t0, gains

    def _observe(self, rows: np.ndarray) -> np.ndarray:
        if len(rows):
            self.history = np.concatenate([self.history, np.nan_to_num(rows, nan=0.0)])[-self.cfg.k:]
        return (self.history.reshape(-1) / self.obs_std).astype(np.float32)

    @staticmethod
    def _error(rows: np.ndarray) -> float:
        if not len(rows):
            return float("nan")
        return float(np.nanmean(np.hypot(rows[:, 0] - rows[:, 4], rows[:, 1] - rows[:, 5])))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.decision, self.next_jump = 0, 0
        rows, _, _ = self._interval(baseline_action())
        self.baseline_error = max(self._error(rows), 0.5)
        return self._observe(rows), {}

    def step(self, action):
        cfg = self.cfg
        self.next_jump -= 1
        if self.next_jump <= 0:  # eq. 6: the target moves by ±100 px
            step = self.np_random.choice([-1.0, 1.0], size=2) * cfg.step_px
            new = self.target + step
            self.target = np.where(np.abs(new) > cfg.target_limit_px, self.target - step, new)
            self._run(self.client.set_target(*self.target))
            self.next_jump = int(self.np_random.integers(*cfg.target_hold_frames)) // cfg.nominal_frames + 1
        rows, elapsed, gains = self._interval(np.asarray(action, dtype=np.float64))
        err = self._error(rows)
        if not np.isfinite(err):  # no telemetry at all this interval: the link is down
            err = 1e3
        reward = -err / 100.0 - cfg.r_out_baseline * (err > cfg.out_baseline_ratio * self.baseline_error + 1.0)
        self.decision += 1
        info = {"dt": elapsed / self.period_s, "mean_error_px": err, "frames": len(rows), "gains": gains}
        return self._observe(rows), float(reward), False, self.decision >= cfg.decisions_per_episode, info

    def close(self) -> None:
        self._reader.cancel()
        self._run(self.client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=2)
