"""Training runs for the CT angle-selection agents (Algorithm 1 `naive`, Algorithm 2 `terminal`).

A run is a fixed number of finished episodes drawn from a named training set (`TRAINING_SETS`:
"mixture" = the paper's three shapes and the broad random objects, "paper" = the shapes only).
RUN_DIR gets: checkpoint.pt (network, optimiser, both RNGs and the environment mid-episode: `resume`
continues exactly where the run stopped, so a stopped and resumed run equals an uninterrupted one at the
same seed and thread count), policy.pt (network + metadata, what `edgetune eval ct` loads),
provenance.json (command, code commit, seed, threads, device, torch version, wall time, sha256 of
policy.pt), episodes.csv (one row per finished episode), angles.png (mean ± std of angles per family over
training, paper Fig. 7) and reconstructions.png (validation samples with the chosen angles coloured by
order, paper Fig. 10).
"""
from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from firmware_sim.ct.phantoms import SHAPES
from learner import run_folder
from learner.algos.actor_critic_stop import TerminalActorCritic, TerminalConfig
from learner.ct.env import MIXTURE, CTBatchEnv, CTEnvConfig
from learner.algos.actor_critic_naive import NaiveActorCritic
from learner.ct.net import ACConfig, CTActorCritic
from learner.ct.sirt_torch import pick_device

ALGOS = ("terminal", "naive")
TRAINING_SETS = {"mixture": MIXTURE, "paper": SHAPES}
CSV_FIELDS = ("episode", "shape", "angles", "psnr", "return", "loss", "actor", "critic", "terminal",
              "entropy", "wall_s")


@dataclass
class TrainConfig:
    algo: str = "terminal"
    size: int = 63
    cost: float = 0.5
    families: str = "mixture"  # a TRAINING_SETS name
    episodes: int = 2000  # total finished episodes (a resumed run continues to this count)
    batch: int = 16  # episodes stepped together
    max_angles: int = 20
    seed: int = 0
    device: str | None = None  # default: cuda if available, else cpu
    checkpoint_every: int = 200  # episodes
    max_wall_s: float | None = None  # stop (with a checkpoint) after this much wall time


def make_agent(algo: str, size: int, n_angles: int = 180, device: str | None = None, seed: int = 0):
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")
    torch.manual_seed(seed)
    net = CTActorCritic(size, n_angles + (algo == "naive")).to(pick_device(device))
    return TerminalActorCritic(net, TerminalConfig(), seed) if algo == "terminal" else NaiveActorCritic(net, ACConfig(), seed)


def load_policy(path: Path, device: str | None = None):
    """(agent, metadata) from a policy.pt written by `train`."""
    blob = torch.load(Path(path), map_location="cpu", weights_only=False)
    agent = make_agent(blob["algo"], blob["size"], device=device)
    agent.net.load_state_dict(blob["net"])
    agent.net.eval()
    return agent, {k: v for k, v in blob.items() if k != "net"}


def _save(agent, cfg: TrainConfig, episodes: int, out: Path, resume_state: dict, wall_s: float,
          sittings: list[dict]) -> None:
    """policy.pt, checkpoint.pt (+ everything `resume` needs) and provenance.json (learner/run_folder.py; a
    resumed run equals an uninterrupted one at the same thread count and training code, so the command in
    provenance.json run in a new folder reproduces the run)."""
    meta = {"algo": cfg.algo, "size": cfg.size, "cost": cfg.cost, "families": cfg.families, "episodes": episodes,
            "config": asdict(cfg)}
    state = {"net": agent.net.state_dict(), "opt": agent.opt.state_dict(), "gen": agent.gen.get_state(), **resume_state}
    run_folder.save(out, {**meta, "net": state["net"]}, {**meta, **state}, cfg.seed, "episodes", episodes, wall_s,
                    sittings)


RESUMABLE = ("episodes", "device", "checkpoint_every", "max_wall_s")  # what a resumed run may change


def _load_checkpoint(path: Path, cfg: TrainConfig, agent) -> dict:
    """A checkpoint that can resume this run exactly: written with the run's state, under the same settings."""
    ck = torch.load(path, map_location=agent.device, weights_only=False)
    if "env" not in ck or "sittings" not in ck:
        raise ValueError(f"{path} was written by an older edgetune without the run's state; "
                         "it cannot be resumed exactly (start a new run)")
    try:
        run_folder.check_resumable(ck["config"], asdict(cfg), RESUMABLE)
    except ValueError as exc:
        raise ValueError(f"checkpoint is {ck['algo']} at size {ck['size']} on {ck['families']!r}; {exc}") from exc
    return ck


def train(cfg: TrainConfig, out: Path, resume: bool = False,
          on_episodes: Callable[[int], None] | None = None) -> dict:
    """Train until cfg.episodes episodes have finished; returns a summary dict."""
    if cfg.families not in TRAINING_SETS:
        raise ValueError(f"families must be one of {sorted(TRAINING_SETS)}, got {cfg.families!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    agent = make_agent(cfg.algo, cfg.size, device=cfg.device, seed=cfg.seed)
    env = CTBatchEnv(CTEnvConfig(size=cfg.size, cost=cfg.cost, max_angles=cfg.max_angles,
                                 families=TRAINING_SETS[cfg.families]), cfg.batch, seed=cfg.seed, device=cfg.device)
    log_path = out / "episodes.csv"
    done_eps, wall0, ret = 0, 0.0, np.zeros(cfg.batch)
    sittings = [run_folder.sitting(agent.device, 0, "episode")]
    obs = env.reset()
    if resume and (out / "checkpoint.pt").exists():
        ck = _load_checkpoint(out / "checkpoint.pt", cfg, agent)
        agent.net.load_state_dict(ck["net"])
        agent.opt.load_state_dict(ck["opt"])
        agent.gen.set_state(ck["gen"])
        env.load_state_dict(ck["env"])
        done_eps, wall0, ret, obs = int(ck["episodes"]), float(ck["wall_s"]), ck["returns"], env.observe()
        if done_eps >= cfg.episodes:  # finished: nothing to train, nothing to rewrite
            return {"episodes": done_eps, "new_episodes": 0, "wall_s": wall0, "device": str(agent.device), "out": str(out)}
        sittings = [*ck["sittings"], run_folder.sitting(agent.device, done_eps, "episode")]
        if log_path.exists():
            run_folder.keep_rows(log_path, CSV_FIELDS, "episode", done_eps)
    fresh = not log_path.exists() or done_eps == 0
    t0, start_eps, next_ck = time.perf_counter(), done_eps, done_eps + cfg.checkpoint_every
    wall = lambda: wall0 + time.perf_counter() - t0  # noqa: E731
    save = lambda: _save(agent, cfg, done_eps, out, {"env": env.state_dict(), "returns": ret.copy()}, wall(), sittings)  # noqa: E731
    with log_path.open("w" if fresh else "a", newline="") as fh:
        writer = csv.DictWriter(fh, CSV_FIELDS)
        if fresh:
            writer.writeheader()
        while done_eps < cfg.episodes and (cfg.max_wall_s is None or time.perf_counter() - t0 < cfg.max_wall_s):
            step, stats = agent.train_step(env, obs)
            ret += step.reward
            for b in np.flatnonzero(step.done):
                done_eps += 1
                writer.writerow({"episode": done_eps, "shape": env.shape[b], "angles": int(step.obs.n_acquired[b]),
                                 "psnr": round(float(step.obs.psnr[b]), 4), "return": round(float(ret[b]), 4),
                                 **{k: round(stats.get(k, 0.0), 5) for k in CSV_FIELDS[5:10]},
                                 "wall_s": round(wall(), 2)})
            ret[step.done] = 0.0
            obs = env.reset(step.done) if step.done.any() else step.obs
            if on_episodes and step.done.any():
                on_episodes(int(step.done.sum()))
            if done_eps >= next_ck:
                fh.flush()
                save()
                next_ck = done_eps + cfg.checkpoint_every
    save()
    plot_angles(log_path, out / "angles.png")
    plot_reconstructions(agent, cfg, out / "reconstructions.png")
    return {"episodes": done_eps, "new_episodes": done_eps - start_eps, "wall_s": wall(),
            "device": str(agent.device), "out": str(out)}


def run_episodes(agent, env: CTBatchEnv, greedy: bool = True):
    """Run every slot of `env` from reset to termination; returns the final batch state (env)."""
    obs = env.reset()
    while env.active.any():
        angle, stop = agent.act(obs, greedy)
        # finished slots are frozen by the environment; give them a harmless valid action
        angle = np.where(env.active, angle, 0)
        obs = env.step(angle, stop | ~env.active).obs
    return env


def plot_angles(log_path: Path, png: Path, window: int = 200) -> None:
    """Mean ± std of the number of angles per family over training (rolling window of episodes)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(Path(log_path).open()))
    fig, ax = plt.subplots(figsize=(7, 4))
    families = list(dict.fromkeys(r["shape"] for r in rows))
    for shape in families:
        ep = np.array([int(r["episode"]) for r in rows if r["shape"] == shape])
        n = np.array([int(r["angles"]) for r in rows if r["shape"] == shape], float)
        if len(n) == 0:
            continue
        w = max(1, min(window // len(families), len(n)))
        kern = np.ones(w) / w
        mean = np.convolve(n, kern, "valid")
        std = np.sqrt(np.maximum(np.convolve(n**2, kern, "valid") - mean**2, 0.0))
        x = ep[w - 1:]
        ax.plot(x, mean, label=shape)
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.set(xlabel="episode", ylabel="angles per episode", title="Angles chosen during training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def plot_reconstructions(agent, cfg: TrainConfig, png: Path, seed: int = 123) -> None:
    """One validation sample per training family: reconstruction, chosen angles as lines coloured by order."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(TRAINING_SETS[cfg.families]))
    fig, axes = plt.subplots(1, len(families), figsize=(4 * len(families), 4), layout="constrained")  # titles unclipped
    c = cfg.size // 2
    for ax, shape in zip(np.atleast_1d(axes), families):
        env = CTBatchEnv(CTEnvConfig(size=cfg.size, cost=cfg.cost, max_angles=cfg.max_angles, split="val",
                                     families=(shape,)), 1, seed=seed, device=cfg.device)
        run_episodes(agent, env)
        k = int(env.n_acquired[0])
        ax.imshow(env.recon[0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        colours = plt.cm.viridis(np.linspace(0, 1, max(k, 1)))
        for i, a in enumerate(env.order[0, :k]):
            th = np.deg2rad(env.grid[a])  # projection direction d = (sinθ, cosθ) in (col, row)
            ax.plot([c - c * np.sin(th), c + c * np.sin(th)], [c - c * np.cos(th), c + c * np.cos(th)],
                    color=colours[i], lw=1.2)
        ax.set_title(f"{shape}: {k} angles, PSNR {env.psnr[0]:.1f} dB", fontsize=10)
        ax.set_axis_off()
    fig.savefig(png, dpi=100)
    plt.close(fig)
