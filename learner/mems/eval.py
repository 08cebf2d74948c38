"""`edgetune eval mems`: the paper's test (Table 2) on the simulator, for every tuning method.

Each method drives the same stands through the same test disturbance (several fixed seeds, 1000
frames each, target at the sensor centre): the paper's baseline gains, the paper's own a_test gains
(Table 1) run on our simulator, Ziegler–Nichols gains found on the simulator, and per training run
a_test (its mean action over the last 20 % of training), the policy π(s) choosing gains from the last
k frames at every decision and π(s) retrained online during the test (DDPG updates on the test's own
transitions, as the paper's π(s)_retrain), and any fixed gains the user names.

Test seeds come in two sets (``SEED_SETS``): *selection* (1000, 1001, …) for every choice — budgets,
gain sets, thresholds, which run to ship — and *report* (5000, …), which no choice has seen, for
published numbers. Every method is compared with each reference (``REFERENCES``) paired over the same
test seeds: the reduction of mean Δ, 100·(Δ_ref − Δ)/Δ_ref per seed, its mean and the half-width of its
95 % confidence interval (t distribution over seeds). With several runs (training seeds) the spread of
each learned method over them is reported too ("training_spread"). Per method it also reports where
its gains (mean over the test) amplify M1 vibration, |S(f)| > 1 (learner/mems/loop_sensitivity.py),
as JSON ("sensitivity"), in the markdown table and in sensitivity_<disturbance>.png.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from learner.stats import mean_ci95

from firmware_sim.mems import disturbance as dist
from learner.mems import loop_sensitivity
from learner.mems.closed_loop import deviation_stats
from learner.algos.ddpg import DDPG, ReplayBuffer
from controller.modes.mems.pid import PAPER_A_TEST_GAINS
from learner.mems.env import FEATURES, MemsTuningSim, baseline_action, gains_from_action
from learner.mems.train import gain_map, load_agent, load_run_config
from learner.mems.robust_gains import GainMap
from learner.mems.ziegler_nichols import ziegler_nichols_gains

Split = Literal["selection", "report"]
SEED_SETS: dict[Split, int] = {"selection": 1000, "report": 5000}  # first seed; training draws 0, 1, 2, …
REFERENCES = ("baseline", "paper_a_test", "ziegler_nichols")
LEARNED = ("a_test", "policy", "policy_retrained")  # the methods each training run adds
FRAMES = 1000
Controller = Callable[[np.ndarray, MemsTuningSim], np.ndarray]  # (obs, sim) -> physical action (B, 4)
Learner = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict], None]  # (obs, action, reward, next, info)
REFERENCE_STYLE = {"baseline": "black", "paper_a_test": "tab:red", "ziegler_nichols": "tab:gray"}
NOT_REFERENCE_COLOURS = (6, 7, 14, 15)  # tab20's reds and greys: the learned methods' cycle leaves them out


def test_seeds(split: Split, n: int = 8) -> tuple[int, ...]:
    """The first `n` seeds of a test-seed set (module doc)."""
    return tuple(range(SEED_SETS[split], SEED_SETS[split] + n))


def file_stem(disturbance: str, burst_hz: float = dist.BURST_HZ) -> str:
    """What the test's files are named after: eval_<stem>.md, eval_<stem>.png, sensitivity_<stem>.png."""
    if disturbance == "bursts" and burst_hz != dist.BURST_HZ:
        return f"bursts_{burst_hz:g}hz"
    return Path(disturbance).stem


def fixed(action: np.ndarray) -> Controller:
    return lambda obs, sim: np.broadcast_to(np.asarray(action, np.float32), (sim.b, 4))


def policy(agent: DDPG, gains: GainMap) -> Controller:
    return lambda obs, sim: gains.gains(agent.act(obs))


def run_method(controller: Controller, sim: MemsTuningSim, disturbance: np.ndarray, seed: int,
               learn: Learner | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Run the test; returns the trace (B, FRAMES, 4): x, y, target x, target y, and the mean action (4,)."""
    obs = sim.reset(seed, disturbance)
    actions = []
    while sim.frame < disturbance.shape[1]:
        action = controller(obs, sim)
        actions.append(action)
        nxt, reward, _, info = sim.step(action)
        if learn is not None:
            learn(obs, action, reward, nxt, info)
        obs = nxt
    return np.stack(sim.trace, axis=1)[:, :disturbance.shape[1]], np.mean(actions, axis=(0, 1))


def online_learner(agent: DDPG, buffer: ReplayBuffer, gains: GainMap, gradient_steps: int = 4):
    """DDPG keeps learning from the test's transitions (π(s)_retrain)."""

    def learn(obs, action, reward, nxt, info) -> None:
        n = len(reward)
        buffer.add(obs, gains.actions(action), reward, nxt, np.zeros(n), info["dt"])
        for _ in range(gradient_steps):
            agent.update(*buffer.sample(agent.cfg.batch_size))

    return learn


def paired_reduction(ref: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Reduction of mean Δ vs `ref` [%], paired per test seed: mean and 95 % CI half-width."""
    mean, half = mean_ci95(100.0 * (ref - other) / ref)
    return {"mean": mean, "ci95": half}


def summarize(traces: dict[str, np.ndarray]) -> dict:
    methods, per_seed = {}, {}
    for name, tr in traces.items():
        s = deviation_stats(tr[..., :2], tr[..., 2:])
        methods[name] = {"mean_px": s["delta_mean"], "std_px": s["delta_std"], "mean_x_px": s["delta_x_mean"],
                         "std_x_px": s["delta_x_std"], "mean_y_px": s["delta_y_mean"], "std_y_px": s["delta_y_std"]}
        per_seed[name] = np.array([deviation_stats(t[:, :2], t[:, 2:])["delta_mean"] for t in tr])
    reductions = {ref: {name: paired_reduction(per_seed[ref], m) for name, m in per_seed.items() if name != ref}
                  for ref in REFERENCES}
    return {"methods": methods, "reduction_pct": reductions}


def training_spread(reductions: dict[str, dict[str, dict[str, float]]], runs: Sequence[str]
                    ) -> dict[str, dict[str, dict[str, float]]]:
    """Per learned method and reference: the reduction's mean, σ, min and max over the training runs."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for kind in LEARNED:
        for ref, by_method in reductions.items():
            means = np.array([by_method[f"{kind}@{r}"]["mean"] for r in runs])
            out.setdefault(kind, {})[ref] = {"mean": float(means.mean()), "std": float(means.std(ddof=1)),
                                             "min": float(means.min()), "max": float(means.max()), "runs": len(runs)}
    return out


def learned_controllers(run: Path, suffix: str) -> tuple[dict[str, Controller], dict[str, Learner]]:
    """a_test, π(s) and π(s) retrained of one training run (names end with `suffix`), and the retrainer."""
    cfg = load_run_config(run)
    gmap = gain_map(cfg)
    retrained = load_agent(run, cfg)
    buffer = ReplayBuffer(cfg.ddpg.buffer_size, cfg.env.k * len(FEATURES), 4, retrained.device)
    buffer.load_state_dict(torch.load(run / "checkpoint.pt", map_location=retrained.device, weights_only=False)["buffer"])
    controllers = {"a_test": fixed(np.array(json.loads((run / "a_test.json").read_text())["action"])),
                   "policy": policy(load_agent(run, cfg), gmap), "policy_retrained": policy(retrained, gmap)}
    return ({k + suffix: c for k, c in controllers.items()},
            {"policy_retrained" + suffix: online_learner(retrained, buffer, gmap)})


def evaluate_mems(runs: Sequence[Path] = (), disturbance: str = "wiener", seeds: tuple[int, ...] = test_seeds("selection"),
                  out: Path | None = None, candidates: Sequence[Sequence[float]] = (),
                  burst_hz: float = dist.BURST_HZ) -> dict:
    """`runs`: training runs (several: one per training seed; their methods are named "policy@RUN" etc.).
    `candidates`: the user's own fixed gains (Px, Ix, Py, Iy) [V/px, V/(px·s)], each reported as
    "gains Px,Ix,Py,Iy" beside the references (e.g. to check hand-tuned gains on a recorded disturbance).
    `burst_hz`: the ring frequency of the bursts test."""
    d = dist.generate(disturbance, seeds, FRAMES, burst_hz)
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"runs must have distinct directory names: {names}")
    envs = [load_run_config(r).env for r in runs]
    if any(e != envs[0] for e in envs):
        raise ValueError("the runs were trained on different environments; evaluate them one at a time")
    sim = MemsTuningSim(len(seeds), *envs[:1])
    controllers: dict[str, Controller] = {"baseline": fixed(baseline_action()),
                                          "paper_a_test": fixed(baseline_action(PAPER_A_TEST_GAINS)),
                                          "ziegler_nichols": fixed(baseline_action(ziegler_nichols_gains()))}
    controllers |= {"gains " + ",".join(f"{g:g}" for g in c): fixed(np.asarray(c, np.float64)) for c in candidates}
    learners: dict[str, Learner] = {}
    for run in runs:
        more, learn = learned_controllers(run, f"@{run.name}" if len(runs) > 1 else "")
        controllers |= more
        learners |= learn
    outcomes = {}
    for name, c in controllers.items():
        torch.manual_seed(seeds[0])  # π(s)_retrain samples its replay buffer: the same test, the same numbers
        outcomes[name] = run_method(c, sim, d, seeds[0], learners.get(name))
    traces = {name: trace for name, (trace, _) in outcomes.items()}
    gains = {name: gains_from_action(action)[0] for name, (_, action) in outcomes.items()}
    summary = summarize(traces)
    result = {"disturbance": disturbance, **({"burst_hz": burst_hz} if disturbance == "bursts" else {}),
              "seeds": list(seeds), "frames": FRAMES, "runs": [str(r) for r in runs], **summary,
              **({"training_spread": training_spread(summary["reduction_pct"], names)} if len(runs) > 1 else {}),
              "sensitivity": {name: loop_sensitivity.summary(g) for name, g in gains.items()}}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        stem = file_stem(disturbance, burst_hz)
        (out / f"eval_{stem}.md").write_text(markdown(result))
        plot_traces(traces, out / f"eval_{stem}.png", _title(result))
        plot_sensitivity(gains, out / f"sensitivity_{stem}.png")
    return result


def markdown(result: dict) -> str:
    red = result["reduction_pct"]
    lines = [f"Test disturbance: {_title(result)}, seeds {result['seeds'][0]}–{result['seeds'][-1]} × "
             f"{result['frames']} frames [px]; reductions of mean Δ paired over the seeds, mean ± 95 % CI", "",
             "| method | Δ mean | σΔ | Δx mean | σΔx | Δy mean | σΔy | " + " | ".join(f"vs {r}" for r in REFERENCES) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(REFERENCES)]
    for name, m in result["methods"].items():
        vs = [f"{red[r][name]['mean']:+.1f} % ± {red[r][name]['ci95']:.1f}" if name in red[r] else "—"
              for r in REFERENCES]
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.2f}" for k in ("mean_px", "std_px", "mean_x_px", "std_x_px",
                                                                         "mean_y_px", "std_y_px")) + f" | {' | '.join(vs)} |")
    if "training_spread" in result:
        lines += ["", f"Over the {len(result['runs'])} training runs: reduction mean, σ [min, max]", "",
                  "| method | " + " | ".join(f"vs {r}" for r in REFERENCES) + " |", "|---|" + "---|" * len(REFERENCES)]
        for kind, refs in result["training_spread"].items():
            lines.append(f"| {kind} | " + " | ".join(
                f"{v['mean']:+.1f} % σ {v['std']:.1f} [{v['min']:+.1f}, {v['max']:+.1f}]" for v in refs.values()) + " |")
    lines += ["", "Where each method's gains (mean over the test) amplify M1 vibration "
                  "(|S| > 1; learner/mems/loop_sensitivity.py):", "", "| method | x: band [Hz], peak gain at [Hz] | y: band [Hz], peak gain at [Hz] |", "|---|---|---|"]
    for name, axes in result["sensitivity"].items():
        cells = [f"{a['amplifies_from_hz']:.1f}–{a['amplifies_to_hz']:.1f}, {a['peak']:.2f} at {a['peak_hz']:.1f}"
                 if a["peak"] is not None and a["amplifies_from_hz"] is not None
                 else ("unstable" if a["peak"] is None else "none") for a in axes.values()]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def _title(result: dict) -> str:
    hz = result.get("burst_hz")
    return result["disturbance"] + (f" ringing at {hz:g} Hz" if hz is not None else "")


def _learned_colours(plt) -> list:
    """Colours for up to 16 learned methods, none like a reference's."""
    return [c for i, c in enumerate(plt.cm.tab20.colors) if i not in NOT_REFERENCE_COLOURS]


def plot_sensitivity(gains: dict[str, np.ndarray], png: Path) -> None:
    """|S(f)| per axis for each method's gains: above 1, M1 vibration at f is amplified."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = loop_sensitivity.frequency_grid()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax in axes:
        ax.set_prop_cycle(color=_learned_colours(plt))
    for name, g in gains.items():
        s = loop_sensitivity.sensitivity(g, f)
        style = {"color": REFERENCE_STYLE[name], "lw": 2.0} if name in REFERENCE_STYLE else {"lw": 1.0}
        for ax, curve in zip(axes, s):
            ax.loglog(f, curve, label=name, **style)
    for ax, axis in zip(axes, "xy"):
        ax.axhline(1.0, color="k", lw=0.6, ls="--")
        ax.set(xlabel="M1 disturbance frequency [Hz]", title=f"{axis} axis: sensitivity |S|")
    axes[0].set(ylabel="|deviation| / |disturbance|")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def plot_traces(traces: dict[str, np.ndarray], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for ax in axes:
        ax.set_prop_cycle(color=_learned_colours(plt))
    for name, tr in traces.items():
        t = np.arange(tr.shape[1]) / 120.0
        err = np.hypot(tr[0, :, 0] - tr[0, :, 2], tr[0, :, 1] - tr[0, :, 3])
        style = {"color": REFERENCE_STYLE[name]} if name in REFERENCE_STYLE else {}
        axes[0].plot(t, err, lw=0.8, label=name, **style)
        axes[1].plot(t, tr[0, :, 0] - tr[0, :, 2], lw=0.8, label=name, **style)
    axes[0].set(ylabel="Δ [px]", title=f"tracking error, first seed ({title})")
    axes[1].set(ylabel="Δx [px]", xlabel="time [s]")
    axes[0].legend(ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
