"""Export a MEMS tuning run's actor as the edge's `rl-pid` policy artifact."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from controller.policy.manifest import Manifest
from learner.export import export_policy
from learner.mems.env import FEATURES, MemsTuningSim, action_bounds
from learner.mems.train import TASK, gain_map, load_agent, load_run_config

FEATURE_UNITS = {"x_px": "px", "y_px": "px", "ux_v": "V", "uy_v": "V", "x_target_px": "px", "y_target_px": "px"}


def export_mems(run: Path, out: Path, version: str = "1") -> Manifest:
    cfg = load_run_config(run)
    agent = load_agent(run, cfg)
    sim = MemsTuningSim(1, cfg.env)
    lo, hi = action_bounds(cfg.env)
    return export_policy(
        agent.actor, out, task=TASK,
        obs_mean=sim.obs_mean, obs_std=sim.obs_std,
        obs_units=[FEATURE_UNITS[f] for f in FEATURES] * cfg.env.k,
        low=lo.astype(np.float64), high=hi.astype(np.float64), act_units=["V/px", "V/(px*s)"] * 2,
        decision_period_s=cfg.env.nominal_frames / sim.stand.params.frame_rate_hz,
        training_run=run.resolve().name, version=version, action_map=gain_map(cfg),
    )
