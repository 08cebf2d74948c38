"""`edgetune train mems --live`: DDPG against the running daemon over the authenticated host link.

The same training as on the simulator (learner/mems/train.py ``train_run``: gain map, progress bar, log.csv,
checkpoints, a_test) on one live stand (learner/mems/live_env.py): a decision every 100 ms of real time,
Δt from the edge's tick stamps in the semi-Markov TD target (eq. 3), the daemon's safety gate and its
check of host-set gains (controller/link/edge_udp.py ``clamp_gains``) in force. ``--init RUN`` starts from a
simulator-trained run (sim-to-real fine-tuning): its environment, gain set and plant (so the actor's outputs
map to the same gains) and its agent (actor, critic, their targets and optimisers), with a fresh replay buffer;
its checkpoint is loaded with ``torch.load(weights_only=True)`` (tensors and plain data, no pickled code). A lost link (``LinkLost``), a stand
that stops fitting (``StandMismatch``) or Ctrl-C saves the checkpoint and stops; ``--resume`` continues it.
"""
from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
import torch

from controller.link.auth import Keyring
from controller.link.host_udp import HostClient
from learner.mems.env import FEATURES, MemsTuningConfig, baseline_action
from learner.mems.live_env import LinkLost, MemsLiveEnv, StandMismatch
from learner.mems.train import MemsTrainConfig, gain_map, load_agent, load_run_config, train_run

STOP_ON = (LinkLost, StandMismatch, KeyboardInterrupt)  # end training with a checkpoint


def connect(to: tuple[str, int], keyring: Keyring, key_id: int) -> Callable:
    """The live env's client factory: a HostClient to the daemon at ``to``."""

    async def factory() -> HostClient:
        return await HostClient(to, keyring, key_id=key_id).open()

    return factory


def live_env(factory: Callable, cfg: MemsTuningConfig) -> gym.vector.VectorEnv:
    """The live stand as a vector env of one (what ``train_run``'s wrappers take)."""
    env = MemsLiveEnv(factory, cfg)
    return gym.vector.SyncVectorEnv([lambda: env])


def init_agent(run: Path) -> dict:
    """The agent's state dicts in ``run``'s checkpoint, loaded without unpickling code (ValueError when it holds
    more than tensors and plain data)."""
    try:
        return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["agent"]
    except pickle.UnpicklingError as e:
        raise ValueError(f"{run / 'checkpoint.pt'} holds more than tensors and plain data; not loaded: "
                         f"{str(e).splitlines()[0]}") from None


def init_config(run: Path) -> MemsTrainConfig:
    """The config a fine-tuning run starts from: ``run``'s environment (observation: k frames at its decision
    period), gain set and plant, and its DDPG settings, on one stand without simulated disturbance and learning
    from the first decision (no random warm-up). ValueError when ``run`` is no MEMS run or its checkpoint does not
    fit its config."""
    if not (run / "config.json").exists() or not (run / "checkpoint.pt").exists():
        raise ValueError(f"{run} is not a `train mems` run (no config.json and checkpoint.pt)")
    init = load_run_config(run)
    obs_dim = int(init_agent(run)["actor"]["net.0.weight"].shape[1])
    if obs_dim != init.env.k * len(FEATURES):
        raise ValueError(f"{run}: its actor takes {obs_dim} inputs, its config says k = {init.env.k} frames of "
                         f"{len(FEATURES)} features")
    return dataclasses.replace(init, num_envs=1, env=dataclasses.replace(init.env, disturbance="none"),
                               ddpg=dataclasses.replace(init.ddpg, learning_starts=0))


def train_live(out: Path, cfg: MemsTrainConfig, factory: Callable, *, resume: bool = False, init: Path | None = None,
               extra: dict | None = None) -> dict:
    """Train on the live stand into ``out`` (``cfg.num_envs`` must be 1); ``init``: a run to fine-tune.
    Raises LinkLost (checkpoint saved) or StandMismatch (the daemon is not set up for it)."""
    if cfg.num_envs != 1:
        raise ValueError("live training runs one stand: num_envs must be 1")
    state = init_agent(init) if init and not resume else None
    env = live_env(factory, cfg.env)
    try:
        return train_run(out, cfg, env, resume, init=state, stop_on=STOP_ON, extra=extra, where="the live stand")
    finally:
        env.close()


def evaluate_live(run: Path | None, factory: Callable, decisions: int, seed: int) -> dict:
    """Mean |error| [px] over ``decisions`` decisions on the live stand with ``run``'s actor (deterministic, no
    learning), or with the baseline gains when ``run`` is None; the targets jump as in training, seeded."""
    cfg = MemsTuningConfig()
    if run is not None:
        tcfg = load_run_config(run)
        agent, gmap, cfg = load_agent(run, tcfg), gain_map(tcfg), tcfg.env
    env = MemsLiveEnv(factory, dataclasses.replace(cfg, decisions_per_episode=decisions))
    try:
        obs, _ = env.reset(seed=seed)
        errors = []
        for _ in range(decisions):
            action = gmap.gains(agent.act(obs[None]))[0] if run is not None else baseline_action()
            obs, _, _, _, info = env.step(action)
            errors.append(info["mean_error_px"])
    finally:
        env.close()
    return {"mean_error_px": float(np.mean(errors))}

