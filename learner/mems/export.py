"""Export a MEMS tuning run's actor as the edge's `rl-pid` policy artifact."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from controller.policy.manifest import Manifest
from learner.export import export_policy
from controller.modes.mems import spec
from learner.mems.env import MemsTuningSim, action_bounds
from learner.mems.train import MemsTrainConfig, gain_map, load_agent, load_run_config


def graph_args(cfg: MemsTrainConfig) -> dict[str, Any]:
    """``export_policy``'s arguments for an actor trained under ``cfg`` (all but the actor, the run and the
    version): normalisation, units, bounds, decision period and the run's gain map."""
    sim = MemsTuningSim(1, cfg.env)
    lo, hi = action_bounds(cfg.env)
    return dict(
        task=spec.TASK, obs_mean=sim.obs_mean, obs_std=sim.obs_std, obs_units=spec.obs_units(cfg.env.k),
        low=lo.astype(np.float64), high=hi.astype(np.float64), act_units=spec.ACT_UNITS,
        decision_period_s=cfg.env.nominal_frames / sim.stand.params.frame_rate_hz, action_map=gain_map(cfg),
    )


def export_mems(run: Path, out: Path, version: str = "1") -> Manifest:
    cfg = load_run_config(run)
    return export_policy(load_agent(run, cfg).actor, out, training_run=run.resolve().name, version=version,
                         **graph_args(cfg))
