"""`edgetune train mems`: DDPG re-tunes the MEMS PID on the fast simulator (paper: mems-mirror-pid-rl).

Paper settings: actor and critic 100 → 60, OU exploration (θ = 0.15, σ 0.2 → 1e-4, eq. 5), the
semi-Markov TD target (eq. 3) with Δt from the environment, ±100 px target steps (eq. 6).
The actor's output reaches the stands through a gain map (learner/mems/robust_gains.py) into the run's
gain set: ``robust`` (default), ``wide`` or ``box``.
A run directory holds: config.json, checkpoint.pt (resume), log.csv, a_test.json (the mean gains
over the last 20 % of training, the paper's a_test), actor.pt (host only) and reward.png.
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from learner.algos.ddpg import DDPG, DDPGConfig, TrainEvent, train
from firmware_sim.mems.physics import MemsParams
from learner.mems.env import FEATURES, MemsTuningConfig, MemsTuningVecEnv
from learner.progress import progress_bar
from learner.mems.robust_gains import GAIN_SETS, GainMap, GainSet, gain_set_map

A_TEST_FRACTION = 0.2  # a_test: mean action over the last 20 % of training (paper, Section IV)


@dataclass
class MemsTrainConfig:
    env: MemsTuningConfig = field(default_factory=MemsTuningConfig)
    ddpg: DDPGConfig = field(default_factory=lambda: DDPGConfig(
        total_steps=192_000, learning_starts=2_000, buffer_size=100_000, batch_size=256, gamma=0.9,
        tau=0.005, actor_lr=1e-3, critic_lr=1e-3, hidden=(100, 60), noise="ou", noise_sigma=0.2,
        noise_sigma_final=1e-4, ou_theta=0.15, train_freq=1, gradient_steps=4, torch_threads=1))
    num_envs: int = 16
    gain_set: GainSet = "robust"  # which gains the actor can set (learner/mems/robust_gains.py)
    plant: MemsParams = field(default_factory=MemsParams)  # trained on; its loop defines the gain set


# The plant of runs from before the two-point calibration (their config.json names none): the one-point fit.
ONE_POINT_PLANT = MemsParams(m2_fn_hz=(150.0, 150.0), m2_zeta=(0.5, 0.5), gain_px_per_v=(0.02, 0.013))


def gain_map(cfg: MemsTrainConfig) -> GainMap:
    """The actor's map to gains for this run (used in training, evaluation and the exported graph): the gain
    set of the plant the run was trained on, whatever the stand it is evaluated on."""
    return gain_set_map(cfg.gain_set, cfg.env.p_bounds, cfg.env.i_bounds, cfg.plant)


class ActorGains(gym.vector.VectorActionWrapper):
    """Takes the actor's output in [-1, 1]⁴ and steps the stands with the gains it maps to."""

    def __init__(self, env: gym.vector.VectorEnv, gains: GainMap) -> None:
        super().__init__(env)
        self.map = gains
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (4,), dtype=np.float32)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, env.num_envs)

    def actions(self, actions: np.ndarray) -> np.ndarray:
        return self.map.gains(actions)


class ActionLog(gym.vector.VectorWrapper):
    """Keeps the (physical) actions the agent executed after ``start_step`` transitions (for a_test)."""

    def __init__(self, env: gym.vector.VectorEnv, start_step: int, seen: int = 0) -> None:
        super().__init__(env)
        self.start_step, self.seen, self.actions = start_step, seen, []

    def step(self, actions):
        if self.seen >= self.start_step:
            self.actions.append(np.asarray(actions, dtype=np.float64).copy())
        self.seen += self.num_envs
        return self.env.step(actions)


def load_run_config(run: Path) -> MemsTrainConfig:
    """A run's config.json; ValueError when it names an unknown gain set."""
    raw = json.loads((run / "config.json").read_text())
    tuples = lambda d: {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}  # noqa: E731
    # runs from before gain sets say "robust": true|false (false, or neither key: the box)
    gain_set = raw.get("gain_set") or ("robust" if raw.get("robust") else "box")
    if gain_set not in GAIN_SETS:
        raise ValueError(f"{run / 'config.json'}: unknown gain set {gain_set!r} (one of {', '.join(GAIN_SETS)})")
    plant = MemsParams(**tuples(raw["plant"])) if "plant" in raw else ONE_POINT_PLANT
    return MemsTrainConfig(MemsTuningConfig(**tuples(raw["env"])), DDPGConfig(**tuples(raw["ddpg"])),
                           raw["num_envs"], gain_set, plant)


def checkpoint_step(run: Path) -> int:
    """Decisions the run's checkpoint has trained for."""
    return int(torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)["step"])


def load_agent(run: Path, cfg: MemsTrainConfig | None = None) -> DDPG:
    cfg = cfg or load_run_config(run)
    obs_dim = cfg.env.k * len(FEATURES)
    agent = DDPG(obs_dim, 4, cfg.ddpg)
    agent.load_state_dict(torch.load(run / "checkpoint.pt", map_location=agent.device, weights_only=False)["agent"])
    return agent


def train_mems(out: Path, cfg: MemsTrainConfig, resume: bool = False) -> dict:
    """Train on the simulator, checkpointing into ``out``; returns a summary (also in summary.json). Raises
    ValueError when a resumed run is already at ``total_steps``."""
    return train_run(out, cfg, MemsTuningVecEnv(cfg.num_envs, cfg.env, cfg.plant), resume)


def train_run(out: Path, cfg: MemsTrainConfig, env: gym.vector.VectorEnv, resume: bool = False, *,
              init: dict | None = None, stop_on: tuple[type[BaseException], ...] = (), extra: dict | None = None,
              where: str = "the MEMS simulator") -> dict:
    """Train DDPG on ``env`` (the simulator, or the live stand: learner/mems/live_train.py) with the run's gain
    map, progress bar, log.csv, checkpoints, a_test, reward.png and summary.json. ``init``: an agent's state to
    start from; ``stop_on``: exceptions that end training with a checkpoint (ddpg.train); ``extra``: more
    config.json keys."""
    total = cfg.ddpg.total_steps
    ckpt = out / "checkpoint.pt"
    resume_from = ckpt if resume and ckpt.exists() else None
    done = checkpoint_step(out) if resume_from else 0
    if done >= total:
        raise ValueError(f"{out} is already at {done} decisions, not below {total}: nothing to do")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"env": asdict(cfg.env), "ddpg": asdict(cfg.ddpg),
                                                "num_envs": cfg.num_envs, "gain_set": cfg.gain_set,
                                                "plant": asdict(cfg.plant), **(extra or {})}, indent=2))
    # a run resumed inside the a_test window averages the part of the window after the resume
    log = ActionLog(env, int(total * (1 - A_TEST_FRACTION)), seen=done)
    env = ActorGains(log, gain_map(cfg))
    log_path = out / "log.csv"
    mode = "a" if resume and log_path.exists() else "w"
    t0 = time.perf_counter()  # the gain map is computed: from here on, decisions
    with open(log_path, mode, newline="") as f, progress_bar(f"train mems (DDPG) on {where}", total) as bar:
        writer = csv.writer(f)
        if mode == "w":
            writer.writerow(["step", "updates", "episode_return"])

        def on_step(ev: TrainEvent) -> None:
            for r in ev.episode_returns:
                writer.writerow([ev.step, ev.updates, f"{r:.5f}"])
            bar.update(ev.step, ev.episode_returns)

        train(env, cfg.ddpg, on_step, checkpoint=ckpt, checkpoint_every=max(total // 10, 1), resume=resume_from,
              init=init, stop_on=stop_on)
    wall_s = time.perf_counter() - t0
    a_test = np.concatenate(log.actions).mean(axis=0)  # physical units
    (out / "a_test.json").write_text(json.dumps({"action": a_test.tolist(), "units": ["V/px", "V/(px*s)"] * 2,
                                                 "layout": ["Px", "Ix", "Py", "Iy"]}, indent=2))
    summary = {"steps": total, "a_test": a_test.tolist(), "wall_s": round(wall_s, 2),
               "s_per_1000_decisions": round(1000 * wall_s / (total - done), 3)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))  # before the plot: a run stopped now is done
    plot_training(log_path, out / "reward.png", where)
    return summary


def plot_training(log_path: Path, png: Path, where: str = "the MEMS simulator") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = np.loadtxt(log_path, delimiter=",", skiprows=1, ndmin=2)
    fig, ax = plt.subplots(figsize=(7, 4))
    if len(rows):
        ax.plot(rows[:, 0], rows[:, 2], ".", ms=2, alpha=0.4, label="episode return")
        w = max(len(rows) // 30, 1)
        ax.plot(rows[w - 1:, 0], np.convolve(rows[:, 2], np.ones(w) / w, mode="valid"), label=f"mean of {w}")
    ax.set(xlabel="decisions (all stands)", ylabel="return (eq. 2)", title=f"DDPG PID tuning on {where}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
