"""Pictures of the BAL application: θ̂ over the filter's steps with the truth, the learned θ map (forge: the well
depth at every atom; maze: the block costs), the policy's feedback gain against Riccati's (LQ), and trajectories
of several policies over the problem's landscape."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from controller.modes.bal.models import ForgeModel, MazeModel
from controller.modes.bal.problem import Problem


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def theta_trace(steps: np.ndarray, estimate: np.ndarray, std: np.ndarray, truth: np.ndarray, labels: list[str],
                png: Path) -> None:
    """θ̂ (S, K) ± std over the filter's steps, with the true values dashed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for k, label in enumerate(labels):
        line, = ax.plot(steps, estimate[:, k], label=f"θ̂ {label}")
        ax.fill_between(steps, estimate[:, k] - std[:, k], estimate[:, k] + std[:, k], alpha=0.2,
                        color=line.get_color())
        ax.axhline(truth[k], ls="--", color=line.get_color(), lw=1)
    ax.set_xlabel("filter step (all episodes)")
    ax.set_ylabel("θ")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def gains(t: np.ndarray, learned: np.ndarray, riccati: np.ndarray, png: Path) -> None:
    """The learned feedback gain K(t) (u = −K x; from the policy table) against the discrete Riccati gain."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for k in range(learned.shape[1]):
        line, = ax.plot(t, riccati[:, k], ls="--", label=f"Riccati K{k + 1}")
        ax.plot(t, learned[:, k], "o", ms=3, color=line.get_color(), label=f"BAL K{k + 1}")
    ax.set_xlabel("t")
    ax.set_ylabel("gain")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _landscape(ax, problem: Problem, theta: np.ndarray, title: str) -> None:
    """The problem's θ-dependent landscape under θ: atoms coloured by depth, or the maze's cost map (one colour
    scale for every panel: the truth's)."""
    m = problem.model
    top = float(np.max(problem.theta_true))
    lo, hi = problem.domain_low, problem.domain_high
    if isinstance(m, MazeModel):
        g = np.stack(np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200)), -1).reshape(-1, 2)
        c = m.cost_rate(g, theta)[0].reshape(200, 200)
        im = ax.imshow(c, origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]), cmap="magma_r",
                       vmin=m.base, vmax=m.base + top)
        ax.figure.colorbar(im, ax=ax, fraction=0.046, label="running-cost rate c(x)")
    elif isinstance(m, ForgeModel):
        depth = np.asarray(theta)[m.types]
        sc = ax.scatter(m.atoms[:, 0], m.atoms[:, 1], c=depth, s=220, cmap="viridis", edgecolors="k", vmin=0.0,
                        vmax=top)
        ax.figure.colorbar(sc, ax=ax, fraction=0.046, label="well depth ε")
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
    if problem.goal is not None:
        ax.plot(*problem.goal, "rD", ms=8)
        ax.add_patch(_pyplot().Circle(problem.goal, problem.goal_radius, fill=False, color="r", lw=1))
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)


def theta_map(problem: Problem, estimate: np.ndarray, png: Path) -> None:
    """The true and the learned landscape side by side."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    _landscape(axes[0], problem, problem.theta_true, "true θ")
    _landscape(axes[1], problem, estimate, "learned θ̂ (direct filter)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def trajectories(problem: Problem, paths: dict[str, np.ndarray], png: Path, shown: int = 8) -> None:
    """A few episodes (states (E, N + 1, 2)) of each policy over the true landscape, one panel per policy."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(paths), figsize=(4.8 * len(paths), 4.5), squeeze=False)
    for ax, (name, states) in zip(axes[0], paths.items()):
        _landscape(ax, problem, problem.theta_true, name)
        for path in states[:shown]:
            ax.plot(path[:, 0], path[:, 1], lw=1.2)
            ax.plot(*path[0], "k.", ms=5)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
