"""Training runs for the transceiver policy: recurrent PPO (learner/algos/ppo_recurrent.py) on PSNR-gain rewards.

One update = `episodes` scans (6, the authors') of training-split scatterers of one family, the policy sampled;
each step's reconstruction is `iterations` warm-started L-BFGS iterations at the run's λ (chosen on the selection
split, `edgetune eval scatter`), `final_iterations` after the last. `mode` picks Table 1's learned row: "both",
"angle" (frequency fixed to `fixed_freq`), "frequency" (random angles).

RUN_DIR gets (learner/run_folder.py): checkpoint.pt (actor, critic, optimiser, sampling generator and scatterer
RNG: `resume` continues exactly), policy.pt (actor + metadata), provenance.json, updates.csv (one row per update),
curves.png (return and final MSE over training) and scans.png (selection scatterers scanned by the greedy policy:
reconstructions after each step, transceivers on the ring coloured by frequency).
"""
from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from firmware_sim.scatter import scatterers
from learner import run_folder
from learner.algos.ppo_recurrent import PPOConfig, RecurrentPPO
from learner.scatter import plots
from learner.scatter.batched import Tables
from learner.scatter.episode import Recipe, psnr_gain, run
from learner.scatter.policy import MODES, Actor, Critic, PolicyConfig, PolicyDesigner

CSV_FIELDS = ("update", "episodes", "return_db", "loss", "value_loss", "entropy", "mse_final", "wall_s")
RESUMABLE = ("updates", "device", "checkpoint_every", "max_wall_s")  # what a resumed run may change
SCRATCH = 2**31  # training scatterers are drawn from indices 0 … SCRATCH − 1 of the train split


@dataclass
class TrainConfig:
    family: str = "ellipses"  # a scatterers.FAMILIES name
    mode: str = "both"  # policy.MODES
    fixed_freq: int = 3  # the frequency index of mode "angle"
    n: int = 32
    order: int = 2
    lam: float = 1e-6
    iterations: int = 10  # per step (the paper: 3 × 20)
    final_iterations: int = 10  # after the last step (the paper: 20)
    updates: int = 300  # PPO updates in all (a resumed run continues to it)
    episodes: int = 6
    seed: int = 0
    device: str | None = None  # default: cuda if available, else cpu
    checkpoint_every: int = 10  # updates
    max_wall_s: float | None = None  # stop (with a checkpoint) after this much wall time

    def __post_init__(self) -> None:
        if self.family not in scatterers.FAMILIES:
            raise ValueError(f"family must be a training family {scatterers.FAMILIES}, got {self.family!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.order not in (1, 2, 3) or self.lam < 0 or self.iterations < 1 or self.final_iterations < 0:
            raise ValueError(f"need order 1-3, λ ≥ 0, ≥ 1 iteration per step and ≥ 0 final ones: {self}")
        if self.episodes < 2 or self.checkpoint_every < 1 or self.updates < 1 or not 0 <= self.fixed_freq < 4:
            raise ValueError(f"need ≥ 2 episodes per update, ≥ 1 update between checkpoints and in all, and a "
                             f"fixed frequency index 0-3: {self}")

    def recipe(self) -> Recipe:
        return Recipe(self.order, self.lam, self.iterations, self.final_iterations)


class Agent:
    """Everything a run trains and resumes: PPO (actor, critic, optimiser), the tables, generator and RNG."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch.manual_seed(cfg.seed)
        self.ppo = RecurrentPPO(Actor().to(self.device), Critic().to(self.device), cfg.mode, PPOConfig())
        self.tables = Tables(cfg.n, self.device)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)

    def designer(self, sample: bool) -> PolicyDesigner:
        return PolicyDesigner(self.ppo.actor, self.tables, self.cfg.mode, self.cfg.fixed_freq, sample, self.gen)

    def train_step(self) -> dict[str, float]:
        """One batch of scans sampled from π and one PPO update."""
        cfg = self.cfg
        eta = scatterers.batch(cfg.family, "train", self.rng.integers(0, SCRATCH, cfg.episodes), cfg.n)
        designer = self.designer(sample=True)
        scans, errors = run(designer, torch.as_tensor(eta), tables=self.tables, recipe=cfg.recipe(), rng=self.rng)
        rewards = psnr_gain(errors[:, :-1], errors[:, 1:]).float()
        stats = self.ppo.update(torch.stack(designer.obs, 1), scans.angles, scans.freqs, rewards)
        return {**stats, "mse_final": float(errors[:, -1].mean())}

    def state(self) -> dict:
        return {"actor": self.ppo.actor.state_dict(), "critic": self.ppo.critic.state_dict(),
                "opt": self.ppo.opt.state_dict(), "gen": self.gen.get_state(), "rng": self.rng.bit_generator.state}

    def load(self, ck: dict) -> None:
        self.ppo.actor.load_state_dict(ck["actor"])
        self.ppo.critic.load_state_dict(ck["critic"])
        self.ppo.opt.load_state_dict(ck["opt"])
        self.gen.set_state(ck["gen"])
        self.rng.bit_generator.state = ck["rng"]


def load_policy(path: Path, device: str | None = None) -> tuple[Actor, dict]:
    """(actor in eval mode, metadata incl. the run's "config") from a policy.pt written by `train`."""
    blob = torch.load(Path(path), map_location=device or "cpu", weights_only=False)
    actor = Actor(PolicyConfig(**blob["policy_config"]))
    actor.load_state_dict(blob["actor"])
    return actor.eval(), {k: v for k, v in blob.items() if k != "actor"}


def train(cfg: TrainConfig, out: Path, resume: bool = False,
          on_update: Callable[[int, float], None] | None = None) -> dict:
    """PPO until `cfg.updates`; returns a summary dict."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    agent = Agent(cfg)
    done, wall0, sittings = 0, 0.0, [run_folder.sitting(agent.device, 0, "update")]
    log = out / "updates.csv"
    if resume and (out / "checkpoint.pt").exists():
        ck = torch.load(out / "checkpoint.pt", map_location=agent.device, weights_only=False)
        run_folder.check_resumable(ck["config"], asdict(cfg), RESUMABLE)
        agent.load(ck)
        done, wall0 = int(ck["updates"]), float(ck["wall_s"])
        sittings = [*ck["sittings"], run_folder.sitting(agent.device, done, "update")]
        if log.exists():
            run_folder.keep_rows(log, CSV_FIELDS, "update", done)
    fresh, start, t0 = done == 0 or not log.exists(), done, time.perf_counter()
    wall = lambda: wall0 + time.perf_counter() - t0  # noqa: E731

    def save() -> None:
        meta = {"config": asdict(cfg), "policy_config": asdict(agent.ppo.actor.cfg), "updates": done}
        run_folder.save(out, {**meta, "actor": agent.ppo.actor.state_dict()}, {**meta, **agent.state()},
                        cfg.seed, "updates", done, wall(), sittings)

    with log.open("w" if fresh else "a", newline="") as fh:
        writer = csv.DictWriter(fh, CSV_FIELDS)
        if fresh:
            writer.writeheader()
        while done < cfg.updates and (cfg.max_wall_s is None or time.perf_counter() - t0 < cfg.max_wall_s):
            stats = agent.train_step()
            done += 1
            writer.writerow({"update": done, "episodes": cfg.episodes * done, "return_db": round(stats["return"], 4),
                             "loss": round(stats["loss"], 6), "value_loss": round(stats["value_loss"], 6),
                             "entropy": round(stats["entropy"], 4), "mse_final": f"{stats['mse_final']:.4e}",
                             "wall_s": round(wall(), 2)})
            if on_update:
                on_update(done, stats["return"])
            if done % cfg.checkpoint_every == 0:
                fh.flush()
                save()
    save()
    plots.training_curves(log, out / "curves.png")
    eta = scatterers.batch(cfg.family, "selection", range(3), cfg.n)
    plots.scans(agent.designer(sample=False), torch.as_tensor(eta), agent.tables, cfg.recipe(), out / "scans.png")
    return {"updates": done, "new_updates": done - start, "wall_s": round(wall(), 1), "device": str(agent.device),
            "out": str(out)}
