"""BAL training runs (the paper's Table 1 algorithm): real episodes with the direct filter, a BAL step on each real
path, and the Eq. 28 feedback table rebuilt on the model at θ̂.

One episode on the real environment (firmware_sim/bal/env.SdeEnv, θ_true inside; the real-episode budget is
what `episodes` counts): the agent applies the current policy — the feedback table once one exists (at θ̂ when
it has θ axes), before that the open-loop controls — plus the ε-greedy noise of Eq. 27, and the direct filter
(Eq. 21–23) updates θ̂ every step. After the episode one BAL step (Eq. 24–26, or the normalised step with its
moments kept across episodes) along the real path with θ̂ improves the open-loop controls (from zeros or the
straight line to the goal: `BalConfig.init`), which warm-start the Eq. 28 table. Every `rebuild_every` episodes
(and at the end) the table is rebuilt on the model at θ̂ (model rollouts, counted apart) by
learner/algos/bal.feedback_policy (Eq. 28) or, with `table = "closed_loop"`,
learner/algos/bal_closed_loop.closed_loop_table (which starts from its own laws: there the open-loop controls
only drive the episodes before the first table); with `theta_grid` = k it is a table per θ on a k-point grid per
axis over θ̂ ± `theta_width` filter stds (the forge export feeds θ̂ to it on the edge).

RUN_DIR gets: table.npz (learner/bal/table.PolicyTable), theta.csv (θ̂ and its std after every step of every
episode, and the truth), episodes.csv (per episode: real cost, final distance, energy, θ̂, model rollouts so
far), paths.npz (every real episode's observed states and applied controls), checkpoint.npz +
checkpoint_table.npz (filter particles, controls, the table in use, RNG states: `resume`
continues exactly; only `model_rollouts` also counts a stopped sitting's closing table) and provenance.json
(learner/run_folder.py).
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from controller.modes.bal.filter import DirectFilter
from controller.modes.bal.problem import Problem, load_problem, with_overrides
from firmware_sim.bal.env import SdeEnv
from learner import run_folder
from learner.algos import bal
from learner.algos.bal import BalConfig
from learner.algos.bal_closed_loop import closed_loop_table
from learner.bal.table import PolicyTable

RESUMABLE = ("episodes", "checkpoint_every", "max_wall_s")  # what a resumed run may change


@dataclass
class TrainConfig:
    problem: str = "lq"  # a problem name or a TOML path (controller/modes/bal/problem.load_problem)
    episodes: int = 40  # real episodes in all (a resumed run continues to it)
    seed: int = 0
    rebuild_every: int = 10  # episodes between feedback-table rebuilds (and one at the end)
    theta_grid: int = 0  # points per θ axis of the table (0: one table at θ̂)
    theta_width: float = 3.0  # the θ axes span θ̂ ± this many filter stds
    theta_true: tuple[float, ...] | None = None  # override the problem's true θ (the real environment)
    x0: tuple[float, float] | None = None  # override the problem's initial state
    bal: dict = field(default_factory=dict)  # BalConfig overrides on top of the problem file's [bal] table
    checkpoint_every: int = 5  # episodes
    max_wall_s: float | None = None  # stop (with a checkpoint) after this much wall time

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.rebuild_every < 1 or self.checkpoint_every < 1:
            raise ValueError(f"need ≥ 1 episode in all, between rebuilds and between checkpoints: {self}")
        if self.theta_grid < 0 or self.theta_grid == 1 or self.theta_width <= 0:
            raise ValueError(f"theta_grid must be 0 (none) or ≥ 2 and theta_width > 0: {self}")
        if self.x0 is not None and len(self.x0) != 2:
            raise ValueError(f"x0 needs 2 values, got {self.x0}")
        BalConfig.from_mapping(self.bal)

    def load(self) -> tuple[Problem, BalConfig]:
        """The problem (with the overrides) and BAL's settings: defaults < the file's [bal] < `bal`."""
        problem = load_problem(self.problem)
        problem = with_overrides(problem, theta_true=None if self.theta_true is None else np.asarray(self.theta_true),
                                 x0=None if self.x0 is None else np.asarray(self.x0))
        return problem, BalConfig.from_mapping({**problem.source.get("bal", {}), **self.bal})


def _json(value: object) -> object:
    """Tuples → lists, as a checkpoint's config reads back."""
    return json.loads(json.dumps(value))


class Agent:
    """Everything a run learns and resumes: filter, open-loop controls, the table in use, RNGs, counters."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.problem, self.bal = cfg.load()
        p = self.problem
        if cfg.theta_grid and cfg.theta_grid ** p.model.theta_dim > 1000:
            raise ValueError(f"a θ grid of {cfg.theta_grid} points on each of {p.model.theta_dim} axes is more than "
                             f"1000 tables: use theta_grid 0 for this problem")
        self.rng = np.random.default_rng(cfg.seed)
        self.filter_rng = np.random.default_rng([cfg.seed, 1])
        self.filter = DirectFilter.for_problem(p, seed=self.filter_rng)
        self.controls = bal.initial_controls(p, self.bal)  # open-loop, from x0 (Eq. 26's iterate)
        self.moments = np.zeros((2, *self.controls.shape))  # the normalised step's, across episodes
        self.table: PolicyTable | None = None  # the table episodes follow
        self.table_at = -1  # the episode count it was built at
        self.episodes = 0
        self.rollouts = 0  # model rollouts of the table builds
        self.path_states: list[np.ndarray] = []  # every real episode's observed states (N + 1, 2) …
        self.path_controls: list[np.ndarray] = []  # … and applied controls (N, m): paths.npz

    def policy(self, n: int, x: np.ndarray) -> np.ndarray:
        """The control the current policy gives at step n and state x (2,): (m,)."""
        if self.table is None:
            return self.controls[n]
        theta = self.filter.estimate() if self.table.theta_axes else None
        return self.table.control(n, x[None], theta)[0]

    def episode(self) -> tuple[dict[str, float], list[np.ndarray], list[np.ndarray]]:
        """One real episode and the BAL step on its path: (log row, θ̂ per step, θ std per step)."""
        p, model = self.problem, self.problem.model
        env = SdeEnv(p, batch=1, seed=int(self.rng.integers(2**63)))
        noise = bal.exploration(self.bal, p.steps, model.control_dim, self.rng)  # Eq. 27
        xs, plan, applied, cost = [env.reset()[0]], [], [], 0.0
        estimates, stds = [], []
        for n in range(p.steps):
            plan.append(self.policy(n, xs[-1]))
            applied.append(model.project(plan[-1] + noise[n]))
            x_next, step_cost = env.step(applied[-1][None])
            self.filter.update(xs[-1], applied[-1], x_next[0],
                               cost=float(step_cost[0]) if model.observes == "cost" else None)  # Eq. 21–23
            xs.append(x_next[0])
            cost += float(step_cost[0])
            estimates.append(self.filter.estimate())
            stds.append(self.filter.std())
        x, u = np.array(xs)[None], np.array(applied)[None]
        self.path_states.append(x[0])
        self.path_controls.append(u[0])
        theta_hat = self.filter.estimate()
        g, _ = bal.adjoint_gradient(model, p.dt, x, u, theta_hat)  # Eq. 24–25 on the real path
        eta = bal.first_step(model, p.dt, p.sigma, x[:, 0], u, theta_hat, self.bal, self.rng)
        self.controls = bal.descend(self.bal, model, np.array(plan), g[0], p.dt, eta, self.moments, self.episodes)
        self.episodes += 1
        target = np.zeros(2) if p.goal is None else np.asarray(p.goal)
        row = {"cost": cost + float(env.terminal_cost(x[:, -1])[0]),
               "final_distance": float(np.linalg.norm(x[0, -1] - target)),
               "energy": float(p.dt * np.sum(u ** 2))}
        return row, estimates, stds

    def rebuild(self) -> PolicyTable:
        """The Eq. 28 table on the model at θ̂ (over the θ grid when asked), from an RNG of (seed, episodes)."""
        theta_hat, std = self.filter.estimate(), self.filter.std()
        axes: tuple[np.ndarray, ...] = ()
        if self.cfg.theta_grid:
            width = self.cfg.theta_width * np.maximum(std, 1e-6 * np.maximum(np.abs(theta_hat), 1.0))
            axes = tuple(t + w * np.linspace(-1, 1, self.cfg.theta_grid) for t, w in zip(theta_hat, width))
        rng = np.random.default_rng([self.cfg.seed, self.episodes, 2])
        if self.bal.table == "closed_loop":
            table, count = closed_loop_table(self.problem, theta_hat, self.bal, rng, axes)
        else:
            table, count = bal.feedback_policy(self.problem, theta_hat, self.controls, self.bal, rng, axes)
        self.rollouts += count
        return table

    def state(self) -> dict:
        return {"episodes": self.episodes, "rollouts": self.rollouts, "table_at": self.table_at,
                "rng": self.rng.bit_generator.state, "filter_rng": self.filter_rng.bit_generator.state}

    def load(self, meta: dict, arrays: dict[str, np.ndarray], table: PolicyTable | None) -> None:
        self.episodes, self.rollouts, self.table_at = meta["episodes"], meta["rollouts"], meta["table_at"]
        self.rng.bit_generator.state = meta["rng"]
        self.filter_rng.bit_generator.state = meta["filter_rng"]
        self.filter.particles = arrays["particles"]
        self.controls, self.moments = arrays["controls"], arrays["moments"]
        self.path_states, self.path_controls = list(arrays["path_states"]), list(arrays["path_controls"])
        self.table = table

    def paths(self) -> dict[str, np.ndarray]:
        p = self.problem
        return {"path_states": np.array(self.path_states).reshape(-1, p.steps + 1, 2),
                "path_controls": np.array(self.path_controls).reshape(-1, p.steps, p.model.control_dim)}


def _closing_table(out: Path, episodes: int) -> bool:
    """Whether out/table.npz is the table this run closed with at `episodes` (its provenance says so)."""
    prov, table = out / "provenance.json", out / "table.npz"
    if not (prov.exists() and table.exists()):
        return False
    saved = json.loads(prov.read_text())
    return saved.get("episodes") == episodes and saved.get("table_sha256") == run_folder.file_sha256(table)


def train(cfg: TrainConfig, out: Path, resume: bool = False,
          on_episode: Callable[[int, float], None] | None = None) -> dict:
    """Real episodes until `cfg.episodes`, the table rebuilt every `cfg.rebuild_every` and at the end; returns a
    summary dict."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    agent = Agent(cfg)
    p = agent.problem
    config = _json({**asdict(cfg), "bal": asdict(agent.bal)})
    dims = range(len(p.theta_true))
    ep_fields = ("episode", "cost", "final_distance", "energy", *(f"theta{i}" for i in dims), "model_rollouts",
                 "wall_s")
    th_fields = ("row", "episode", "step", *(f"theta{i}" for i in dims), *(f"std{i}" for i in dims),
                 *(f"true{i}" for i in dims))
    ep_log, th_log = out / "episodes.csv", out / "theta.csv"
    wall0, sittings, rows = 0.0, [run_folder.sitting("cpu", 0, "episode")], 0
    if resume and (out / "checkpoint.npz").exists():
        with np.load(out / "checkpoint.npz") as ck:
            meta, arrays = json.loads(str(ck["meta"])), {k: ck[k] for k in ("particles", "controls", "moments",
                                                                  "path_states", "path_controls")}
        run_folder.check_resumable(meta["config"], config, RESUMABLE)
        table = PolicyTable.load(out / "checkpoint_table.npz") if meta["table_at"] >= 0 else None
        agent.load(meta, arrays, table)
        wall0, rows = float(meta["wall_s"]), int(meta["theta_rows"])
        sittings = [*meta["sittings"], run_folder.sitting("cpu", agent.episodes, "episode")]
        for log, fields, counter, done in ((ep_log, ep_fields, "episode", agent.episodes),
                                           (th_log, th_fields, "row", rows)):
            if log.exists():
                run_folder.keep_rows(log, fields, counter, done)
    fresh = agent.episodes == 0 or not ep_log.exists() or not th_log.exists()
    start, t0 = agent.episodes, time.perf_counter()
    wall = lambda: wall0 + time.perf_counter() - t0  # noqa: E731

    def save(final: PolicyTable | None) -> None:
        if agent.table is not None:
            agent.table.save(out / "checkpoint_table.tmp.npz")
            (out / "checkpoint_table.tmp.npz").replace(out / "checkpoint_table.npz")
        meta = {"config": config, **agent.state(), "theta_rows": rows, "wall_s": wall(), "sittings": sittings}
        np.savez(out / "checkpoint.tmp.npz", meta=json.dumps(meta), particles=agent.filter.particles,
                 controls=agent.controls, moments=agent.moments, **agent.paths())
        (out / "checkpoint.tmp.npz").replace(out / "checkpoint.npz")
        if final is not None:
            paths = agent.paths()
            np.savez(out / "paths.tmp.npz", states=paths["path_states"], controls=paths["path_controls"])
            (out / "paths.tmp.npz").replace(out / "paths.npz")
            final.save(out / "table.tmp.npz")
            (out / "table.tmp.npz").replace(out / "table.npz")
            run_folder.provenance(out, out / "table.npz", cfg.seed, "episodes", agent.episodes, wall(), sittings)

    with ep_log.open("w" if fresh else "a", newline="") as ef, th_log.open("w" if fresh else "a", newline="") as tf:
        ep_writer, th_writer = csv.DictWriter(ef, ep_fields), csv.DictWriter(tf, th_fields)
        if fresh:
            ep_writer.writeheader()
            th_writer.writeheader()
        while agent.episodes < cfg.episodes and (cfg.max_wall_s is None or time.perf_counter() - t0 < cfg.max_wall_s):
            row, estimates, stds = agent.episode()
            done = agent.episodes
            for n, (est, std) in enumerate(zip(estimates, stds)):
                rows += 1
                th_writer.writerow({"row": rows, "episode": done, "step": n + 1,
                                    **{f"theta{i}": f"{est[i]:.6g}" for i in dims},
                                    **{f"std{i}": f"{std[i]:.4g}" for i in dims},
                                    **{f"true{i}": f"{p.theta_true[i]:.6g}" for i in dims}})
            if done % cfg.rebuild_every == 0:
                agent.table, agent.table_at = agent.rebuild(), done
            ep_writer.writerow({"episode": done, **{k: f"{v:.6g}" for k, v in row.items()},
                                **{f"theta{i}": f"{estimates[-1][i]:.6g}" for i in dims},
                                "model_rollouts": agent.rollouts, "wall_s": round(wall(), 2)})
            if on_episode:
                on_episode(done, row["cost"])
            if done % cfg.checkpoint_every == 0:
                ef.flush()
                tf.flush()
                save(None)
    if agent.table_at == agent.episodes:
        final = agent.table
    elif resume and agent.episodes == start and _closing_table(out, agent.episodes):
        final = PolicyTable.load(out / "table.npz")  # a finished run resumed (eval's reuse): not built again
    else:
        final = agent.rebuild()
    save(final)
    return {"episodes": agent.episodes, "new_episodes": agent.episodes - start, "model_rollouts": agent.rollouts,
            "theta_hat": agent.filter.estimate().tolist(), "theta_std": agent.filter.std().tolist(),
            "theta_true": np.asarray(p.theta_true).tolist(), "wall_s": round(wall(), 1), "out": str(out)}
