"""Training runs for the adaptive scan policy: REINFORCE (eq. 8) from the Halton continuation (policy.py).

A run is `episodes` scans, B at a time (one update per batch). RUN_DIR gets: checkpoint.pt
(policy, optimiser, the sampling generator and the sample RNG: `resume` continues exactly where the run
stopped, so a stopped and resumed run equals an uninterrupted one at the same seed and thread count),
policy.pt (network + metadata), provenance.json (command, commit, seed, threads, device, torch, wall time,
sha256 of policy.pt, every sitting), updates.csv (one row per update), rewards.png (the policy positions'
Voronoi reward and the reconstruction's RMSE against the truth over training) and reconstructions.png
(selection samples scanned by the greedy policy, positions coloured by sub-sequence: the paper's Fig. 4).
"""
from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from firmware_sim.ptycho.mos2 import keys as split_keys
from learner import run_folder
from learner.algos.reinforce import Chooser, Reinforce, ReinforceConfig
from learner.ptycho.env import PtychoBatchEnv, PtychoEnvConfig, run_scan
from learner.ptycho.policy import PolicyConfig, ScanPolicy

CSV_FIELDS = ("update", "episodes", "loss", "reward", "rmse_rad", "wall_s")
NETS = ("cpu", "paper")


@dataclass
class TrainConfig:
    positions: int = 250
    subsequences: int = 5
    iterations: int = 5
    defocus_A: float = 0.0
    sample: str = "mos2"  # learner.ptycho.env.SAMPLERS
    episodes: int = 4000  # REINFORCE scans in all (a resumed run continues to it); one update per batch
    batch: int = 8
    net: str = "cpu"  # PolicyConfig.cpu | PolicyConfig.paper
    seed: int = 0
    device: str | None = None  # default: cuda if available, else cpu
    checkpoint_every: int = 25  # updates
    max_wall_s: float | None = None  # stop (with a checkpoint) after this much wall time

    def env(self) -> PtychoEnvConfig:
        return PtychoEnvConfig(self.positions, self.subsequences, self.iterations, self.defocus_A, self.sample)

    def updates(self) -> tuple[int, int]:
        """Updates: scans / batch, rounded up."""
        return -(-self.episodes // self.batch)


RESUMABLE = ("episodes", "device", "checkpoint_every", "max_wall_s")  # what a resumed run may change


def make_agent(cfg: TrainConfig) -> Reinforce:
    if cfg.net not in NETS:
        raise ValueError(f"net must be one of {NETS}, got {cfg.net!r}")
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg.seed)
    net = getattr(PolicyConfig, cfg.net)()
    return Reinforce(ScanPolicy(net).to(device), ReinforceConfig(), cfg.seed)


def load_policy(path: Path, device: str | None = None) -> tuple[ScanPolicy, dict]:
    """(policy in eval mode, metadata) from a policy.pt written by `train`."""
    blob = torch.load(Path(path), map_location=device or "cpu", weights_only=False)
    policy = ScanPolicy(PolicyConfig(**blob["policy_config"]))
    policy.load_state_dict(blob["net"])
    return policy.eval(), {k: v for k, v in blob.items() if k != "net"}


def _save(agent: Reinforce, cfg: TrainConfig, env: PtychoBatchEnv, done: int, out: Path, wall_s: float,
          sittings: list[dict]) -> None:
    meta = {"config": asdict(cfg), "policy_config": asdict(agent.policy.cfg), "updates": done}
    state = {"net": agent.policy.state_dict(), "opt": agent.opt.state_dict(), "gen": agent.gen.get_state(),
             "rng": env.rng.bit_generator.state}
    run_folder.save(out, {**meta, "net": state["net"]}, {**meta, **state}, cfg.seed, "updates", done, wall_s, sittings)


def _load_checkpoint(path: Path, cfg: TrainConfig, agent: Reinforce, env: PtychoBatchEnv) -> dict:
    ck = torch.load(path, map_location=agent.device, weights_only=False)
    if ck["config"].get("pretrain", 0):  # written before pre-training was dropped: its updates count differently
        raise ValueError(f"{path} is a run with {ck['config']['pretrain']} pre-training scans: it cannot be resumed")
    run_folder.check_resumable(ck["config"], asdict(cfg), RESUMABLE)
    agent.policy.load_state_dict(ck["net"])
    agent.opt.load_state_dict(ck["opt"])
    agent.gen.set_state(ck["gen"])
    env.rng.bit_generator.state = ck["rng"]
    return ck


def train(cfg: TrainConfig, out: Path, resume: bool = False, on_update: Callable[[int, float], None] | None = None,
          sampler=None) -> dict:
    """REINFORCE until the episode budget is spent; returns a summary dict."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    agent = make_agent(cfg)
    env = PtychoBatchEnv(cfg.env(), cfg.batch, seed=cfg.seed, device=str(agent.device), sampler=sampler)
    n_rl = cfg.updates()
    sitting = lambda start: run_folder.sitting(agent.device, start, "update")  # noqa: E731
    done, wall0, sittings = 0, 0.0, [sitting(0)]
    log = out / "updates.csv"
    if resume and (out / "checkpoint.pt").exists():
        ck = _load_checkpoint(out / "checkpoint.pt", cfg, agent, env)
        done, wall0 = int(ck["updates"]), float(ck["wall_s"])
        if done >= n_rl:
            return {"updates": done, "new_updates": 0, "wall_s": wall0, "device": str(agent.device), "out": str(out)}
        sittings = [*ck["sittings"], sitting(done)]
        if log.exists():
            run_folder.keep_rows(log, CSV_FIELDS, "update", done)
    fresh = done == 0 or not log.exists()
    t0, start = time.perf_counter(), done
    wall = lambda: wall0 + time.perf_counter() - t0  # noqa: E731
    with log.open("w" if fresh else "a", newline="") as fh:
        writer = csv.DictWriter(fh, CSV_FIELDS)
        if fresh:
            writer.writeheader()
        while done < n_rl and (cfg.max_wall_s is None or time.perf_counter() - t0 < cfg.max_wall_s):
            scan, stats = agent.train_step(env)
            done += 1
            rmse = float(np.sqrt(((scan.recon - env.truth_field()) ** 2).mean()))
            writer.writerow({"update": done, "episodes": cfg.batch * done,
                             "loss": round(stats["loss"], 6), "reward": round(stats["reward"], 6),
                             "rmse_rad": round(rmse, 6), "wall_s": round(wall(), 2)})
            if on_update:
                on_update(done, stats["reward"])
            if done % cfg.checkpoint_every == 0:
                fh.flush()
                _save(agent, cfg, env, done, out, wall(), sittings)
    _save(agent, cfg, env, done, out, wall(), sittings)
    plot_rewards(log, out / "rewards.png")
    plot_reconstructions(agent.policy, cfg, out / "reconstructions.png", sampler=sampler)
    return {"updates": done, "new_updates": done - start, "wall_s": wall(), "device": str(agent.device), "out": str(out)}


def plot_rewards(log: Path, png: Path) -> None:
    """The policy positions' summed Voronoi reward and the reconstruction's RMSE per update."""
    run_folder.plot_log(log, png, (("reward", "reward of the policy's positions"),
                                   ("rmse_rad", "RMSE vs truth (means removed) [rad]")))


def plot_reconstructions(policy: ScanPolicy, cfg: TrainConfig, png: Path, samples: int = 3, sampler=None) -> None:
    """Selection-split samples scanned by the greedy policy: the reconstruction with the positions
    coloured by sub-sequence (Fig. 4), above the true phase."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env = PtychoBatchEnv(cfg.env(), samples, device=str(policy.fc_h.weight.device), sampler=sampler)
    with torch.no_grad():
        scan = run_scan(env, Chooser(policy, "greedy"), keys=np.array(split_keys("selection", samples)))
    truth = env.truth_field()
    fig, axes = plt.subplots(2, samples, figsize=(3.2 * samples, 6.4), layout="constrained", squeeze=False)
    colours = plt.cm.tab10(np.arange(cfg.subsequences) % 10)
    for b in range(samples):
        axes[0, b].imshow(scan.recon[b], cmap="gray")
        for t, pos in enumerate(scan.positions):
            axes[0, b].scatter(pos[b, :, 1], pos[b, :, 0], s=6, color=colours[t], label=f"sub-sequence {t + 1}")
        rmse = np.sqrt(((scan.recon[b] - truth[b]) ** 2).mean())
        axes[0, b].set_title(f"reconstruction, RMSE {rmse:.3f} rad", fontsize=9)
        axes[1, b].imshow(truth[b], cmap="gray")
        axes[1, b].set_title("true phase", fontsize=9)
        for ax in axes[:, b]:
            ax.set_axis_off()
    axes[0, 0].legend(fontsize=6, loc="lower left")
    fig.savefig(png, dpi=100)
    plt.close(fig)
