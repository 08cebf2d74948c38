"""The MEMS tuning environment on the live stand: steps the running daemon over the host link.

Same spaces as :class:`learner.mems.env.MemsTuningEnv`, so a policy moves between the two unchanged.
One step: send the gains (SetGains; the edge clamps them into its envelope and gain set, and the Ack
says so: ``info["clamped"]``), let the stand run for one decision period in real time, read the telemetry
that came back (one row per tick) and build observation and reward from it. ``info["gains"]`` holds the
gains the daemon reported running in the interval's last telemetry row ([axis][P, I, D]). The real time the
gains ran before this observation, from the edge's own tick stamps (the span of the interval's rows, one tick
included), is reported as Δt in ``info["dt"]`` in decision periods (UDP and the host's scheduling make it
vary — the paper's reason for the semi-Markov target, eq. 3). The host's time between an observation and the
next command (the agent acting and learning) is in no transition: the observation is the last k ticks.
Targets jump by ±100 px (eq. 6) through SetTarget, as on the paper's stand.

The first reset checks the stand: telemetry for every tick (the daemon's ``[hostlink] telemetry_decimation``
must be 1) at the frame rate the observations assume (``[loop] rate_hz``), else ``StandMismatch``. A
command without a reply, or no telemetry for ``link_timeout_s``, raises ``LinkLost`` (training saves a
checkpoint and stops: learner/mems/live_train.py), and so does a socket error; an edge that speaks another protocol
version raises ``StandMismatch``. Gains the daemon does not run (an active rl-pid policy
sets its own) for ``FOREIGN_GAINS_STEPS`` decisions in a row raise ``StandMismatch``.

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
from controller.link.auth import Gains, VersionMismatch
from learner.mems.env import FEATURES, OBS_SCALE, MemsTuningConfig, action_bounds, baseline_action, gains_from_action


FOREIGN_GAINS_STEPS = 3  # decisions in a row whose telemetry shows other gains than the Ack's
RATE_TOLERANCE = 0.35  # the daemon's tick rate may differ from frame_rate_hz by this fraction (frames arrive in bunches)


class LinkLost(RuntimeError):
    """The stand stopped answering (commands) or sending (telemetry)."""


class StandMismatch(RuntimeError):
    """The running daemon is not set up for live training (telemetry rate, tick rate, gains it runs)."""


class MemsLiveEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, client_factory, cfg: MemsTuningConfig = MemsTuningConfig(), frame_rate_hz: float = 120.0,
                 link_timeout_s: float = 2.0) -> None:
        """``client_factory``: an async callable returning an open :class:`HostClient` (called on the env's loop)."""
        self.cfg, self.frame_rate_hz, self.link_timeout_s = cfg, frame_rate_hz, link_timeout_s
        self.period_s = cfg.nominal_frames / frame_rate_hz
        lo, hi = action_bounds(cfg)
        self.action_space = gym.spaces.Box(lo, hi, dtype=np.float32)
        dim = cfg.k * len(FEATURES)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), dtype=np.float32)
        self.obs_std = np.tile(OBS_SCALE, cfg.k).astype(np.float32)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="live-env", daemon=True)
        self._thread.start()
        try:
            self.client: HostClient = self._link(client_factory(), "cannot open the host link")
        except BaseException:
            self._stop_loop()
            raise
        # per telemetry row: (row, (the edge's tick index, its time [ns]), the gains the daemon ran); appended and
        # taken on the env's loop only (_take), so rows, ticks and gains never get out of step
        self._buf: list[tuple[tuple[float, ...], tuple[int, int], tuple[tuple[float, ...], ...]]] = []
        self._reader = asyncio.run_coroutine_threadsafe(self._read(), self._loop)
        self.target = np.zeros(2)
        self.history = np.zeros((cfg.k, len(FEATURES)))
        self.baseline_error = 1.0
        self.checked = False  # the stand's telemetry and tick rates (first reset)
        self._foreign = 0

    def _run(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _link(self, coro, what: str):
        """Run a host-link coroutine on the env's loop: an edge of another protocol version is a StandMismatch,
        no answer (HostClient's TimeoutError after its retries, or the loop's own deadline) or a socket error a
        LinkLost — both end training with a checkpoint."""
        try:
            return self._run(coro)
        except VersionMismatch as e:  # a ConnectionError (OSError): before it
            raise StandMismatch(str(e)) from None
        except (TimeoutError, OSError) as e:
            raise LinkLost(f"{what}: {type(e).__name__}: {e}") from None

    def _command(self, coro):
        """A command's Ack (see _link)."""
        return self._link(coro, f"the stand at {self.client.edge_addr[0]}:{self.client.edge_addr[1]} does not answer")

    async def _read(self) -> None:
        async for t in self.client.telemetry():
            self._buf.append(((t.x_px, t.y_px, t.cmd_x_v, t.cmd_y_v, t.target_x_px, t.target_y_px), (t.tick, t.t_ns),
                              t.gains.rows()))

    async def _take(self) -> list:
        """The rows received since the last take (on the env's loop, between two of the reader's appends)."""
        batch, self._buf = self._buf, []
        return batch

    def _interval(self, action: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, bool]:
        """Apply gains, run one decision period in real time (longer while no telemetry comes, up to
        ``link_timeout_s``); (rows (n, 6), Δt [periods], the daemon's last gains, whether the edge clamped)."""
        ack = self._command(self.client.set_gains(Gains.from_rows(gains_from_action(action)[0])))
        self._run(self._take())  # rows of the previous gains
        t0 = time.monotonic()
        time.sleep(self.period_s)
        while not self._buf:  # only _take empties it
            if time.monotonic() - t0 > self.link_timeout_s:
                raise LinkLost(f"no telemetry from the stand for {self.link_timeout_s:g} s")
            time.sleep(self.period_s / 4)
        batch = self._run(self._take())
        rows = np.array([b[0] for b in batch], dtype=np.float64).reshape(-1, len(FEATURES))
        ticks, gains = np.array([b[1] for b in batch], dtype=np.int64), np.array(batch[-1][2], dtype=np.float64)
        if not self.checked:
            self._check_rates(ticks)
        elapsed_s = (ticks[-1, 1] - ticks[0, 1]) * 1e-9 + 1.0 / self.frame_rate_hz
        self._foreign = self._foreign + 1 if not np.allclose(gains, ack.gains.rows(), rtol=1e-6) else 0
        if self._foreign >= FOREIGN_GAINS_STEPS:
            raise StandMismatch(f"the daemon runs gains {gains.tolist()}, not the ones it acknowledged "
                                f"({ack.gains.rows()}), {self._foreign} decisions in a row: an active rl-pid policy "
                                "sets its own; roll it back or run the daemon in stabilize mode")
        return rows, elapsed_s / self.period_s, gains, ack.clamped

    def _check_rates(self, ticks: np.ndarray) -> None:
        """Telemetry for every tick, ticks at the frame rate (StandMismatch otherwise)."""
        if len(ticks) < 3:
            return
        step = int(np.median(np.diff(ticks[:, 0])))
        if step != 1:
            raise StandMismatch(f"the daemon sends telemetry every {step} ticks; live training needs every tick "
                                "(its observation is the last frames): set [hostlink] telemetry_decimation = 1")
        rate = 1e9 * (ticks[-1, 0] - ticks[0, 0]) / max(int(ticks[-1, 1] - ticks[0, 1]), 1)  # over the interval
        if abs(rate / self.frame_rate_hz - 1) > RATE_TOLERANCE:
            raise StandMismatch(f"the daemon ticks at {rate:.0f} Hz; the policy's observations are frames at "
                                f"{self.frame_rate_hz:g} Hz: set [loop] rate_hz = {self.frame_rate_hz:g}")
        self.checked = True

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
        rows, _, _, _ = self._interval(baseline_action())
        self.baseline_error = max(self._error(rows), 0.5)
        return self._observe(rows), {}

    def step(self, action):
        cfg = self.cfg
        self.next_jump -= 1
        if self.next_jump <= 0:  # eq. 6: the target moves by ±100 px
            step = self.np_random.choice([-1.0, 1.0], size=2) * cfg.step_px
            new = self.target + step
            self.target = np.where(np.abs(new) > cfg.target_limit_px, self.target - step, new)
            self._command(self.client.set_target(*self.target))
            self.next_jump = int(self.np_random.integers(*cfg.target_hold_frames)) // cfg.nominal_frames + 1
        rows, dt, gains, clamped = self._interval(np.asarray(action, dtype=np.float64))
        err = self._error(rows)
        if not np.isfinite(err):  # no spot in any row (lost by the camera)
            err = 1e3
        reward = -err / 100.0 - cfg.r_out_baseline * (err > cfg.out_baseline_ratio * self.baseline_error + 1.0)
        self.decision += 1
        info = {"dt": dt, "mean_error_px": err, "frames": len(rows), "gains": gains, "clamped": clamped}
        return self._observe(rows), float(reward), False, self.decision >= cfg.decisions_per_episode, info

    def close(self) -> None:
        self._reader.cancel()
        try:
            self._run(self.client.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=2)
        if not self._thread.is_alive():
            self._loop.close()
