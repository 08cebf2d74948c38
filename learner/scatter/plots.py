"""Pictures of the scattering application: training curves, and scans — the reconstruction after each step with
the transceivers placed so far drawn on a ring around the domain, coloured by their frequency."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from controller.modes.scatter import spec
from learner import run_folder
from learner.scatter.batched import Tables
from learner.scatter.episode import Designer, Recipe, Scans, run

FREQ_COLOURS = ("tab:blue", "tab:green", "tab:orange", "tab:red")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves(log: Path, png: Path) -> None:
    """Return (summed PSNR gain, dB) and the final MSE per update, with a running mean."""
    run_folder.plot_log(log, png, (("return_db", "return (PSNR gain) [dB]"), ("mse_final", "final MSE")))


class _Recording:
    """A designer that keeps the reconstruction before each of its choices (after the previous step)."""

    def __init__(self, inner: Designer) -> None:
        self.inner, self.recons = inner, []

    def reset(self, scans: Scans, rng: np.random.Generator) -> None:
        self.inner.reset(scans, rng)

    def choose(self, scans: Scans) -> tuple[torch.Tensor, torch.Tensor]:
        self.recons.append(scans.recon.clone())
        return self.inner.choose(scans)


def _ring(ax, angles: np.ndarray, freqs: np.ndarray, n: int) -> None:
    """Transceivers at their angles on a circle around the image (pixel coordinates, row i = y)."""
    c, r = (n - 1) / 2, 0.62 * n
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(c + r * np.cos(t), c + r * np.sin(t), color="0.8", lw=0.5)
    a = np.deg2rad(angles)
    ax.scatter(c + r * np.cos(a), c + r * np.sin(a), s=14, c=[FREQ_COLOURS[f] for f in freqs], zorder=3)
    ax.set(xlim=(c - 1.3 * r, c + 1.3 * r), ylim=(c - 1.3 * r, c + 1.3 * r))


def scans(designer: Designer, eta: torch.Tensor, tables: Tables, recipe: Recipe, png: Path,
          steps: tuple[int, ...] = (1, 2, 4, 6, 8, 10), seed: int = 0) -> None:
    """One row per scatterer: the truth, then the reconstruction after the given steps (the last after the final
    iterations) with the transceivers so far; frequencies in the legend."""
    plt = _pyplot()
    recording = _Recording(designer)
    result, errors = run(recording, eta, tables=tables, recipe=recipe, rng=np.random.default_rng(seed))
    recons = [*recording.recons[1:], result.recon]  # after step 1 … K
    steps = tuple(s for s in steps if s <= result.budget)
    b, n = eta.shape[0], tables.n
    fig, axes = plt.subplots(b, len(steps) + 1, figsize=(2.3 * (len(steps) + 1), 2.4 * b), layout="constrained",
                             squeeze=False)
    top = float(eta.max())
    angles, freqs = result.angles.cpu().numpy(), result.freqs.cpu().numpy()
    for i in range(b):
        axes[i, 0].imshow(eta[i].cpu().numpy(), cmap="viridis", vmin=0, vmax=top, origin="lower")
        axes[i, 0].set_title("truth", fontsize=8)
        for j, s in enumerate(steps, 1):
            img = recons[s - 1][i].cpu().numpy()
            axes[i, j].imshow(img, cmap="viridis", vmin=0, vmax=top, origin="lower")
            _ring(axes[i, j], angles[i, :s], freqs[i, :s], n)
            axes[i, j].set_title(f"step {s}: MSE {float(errors[i, s]):.2e}", fontsize=8)
        for ax in axes[i]:
            ax.set_axis_off()
    ks = spec.wavenumbers(n)
    handles = [plt.Line2D([], [], ls="", marker="o", color=c, label=f"k = {k:g}") for c, k in zip(FREQ_COLOURS, ks)]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8)
    fig.savefig(png, dpi=100)
    plt.close(fig)


def families(png: Path, n: int = 32, per_family: int = 4) -> None:
    """Report-split scatterers of every family (training, held-out, private), one row per family."""
    from firmware_sim.scatter import scatterers

    plt = _pyplot()
    names = scatterers.ALL_FAMILIES
    fig, axes = plt.subplots(len(names), per_family, figsize=(1.8 * per_family, 1.9 * len(names)),
                             layout="constrained", squeeze=False)
    for row, family in zip(axes, names):
        for i, ax in enumerate(row):
            ax.imshow(scatterers.scatterer(family, "report", i, n), cmap="viridis", origin="lower")
            ax.set_axis_off()
        kind = "training" if family in scatterers.FAMILIES else "held out" if family in scatterers.HELD_OUT else "private"
        row[0].set_title(f"{family} ({kind})", fontsize=8, loc="left")
    fig.savefig(png, dpi=100)
    plt.close(fig)


if __name__ == "__main__":  # python -m learner.scatter.plots docs/img/scatter_families.png
    import sys

    families(Path(sys.argv[1]))
