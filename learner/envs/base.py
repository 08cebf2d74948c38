"""The vectorised-environment base every application's learner environment uses (gymnasium).

An application writes a *batch engine* (B episodes stepped together in numpy/torch: the training and
evaluation workhorse, e.g. `learner.mems.env.MemsTuningSim`, `learner.ct.env.CTBatchEnv`) and two thin views:
- `SingleEnv`: one episode (B = 1) as a `gymnasium.Env`, passing `check_env`;
- `BatchVecEnv`: B episodes as a `gymnasium.vector.VectorEnv`. This base owns what every vectorised view needs:
  the spaces (batched from the single ones), seeding (`reset(seed=s)` seeds the episodes, each later reset
  without a seed takes the next seed s+1, s+2, …, so a run is reproducible from its first seed) and autoreset
  with NEXT_STEP semantics (the step after an episode ends returns that slot's reset observation with reward 0
  and its action ignored). The application implements `_reset_batch(seed)` and `_step_batch(actions)`, and
  `_reset_slots(which)` when its episodes can end at different times.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

Obs = Any  # a batched observation: an array (B, ...) or a dict of them


class SingleEnv(gym.Env):
    """One episode of a batch engine (B = 1) with the given spaces."""

    metadata = {"render_modes": []}

    def __init__(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        self.observation_space, self.action_space = observation_space, action_space


class BatchVecEnv(gym.vector.VectorEnv):
    """B episodes of a batch engine; spaces, seeding and NEXT_STEP autoreset (see the module docstring)."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int, single_observation_space: gym.Space, single_action_space: gym.Space) -> None:
        self.num_envs = num_envs
        self.single_observation_space, self.single_action_space = single_observation_space, single_action_space
        self.observation_space = gym.vector.utils.batch_space(single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(single_action_space, num_envs)
        self._seed = 0
        self._ended = np.zeros(num_envs, bool)  # slots whose episode ended at the last step

    # --- what an application implements ---------------------------------------------------------

    def _reset_batch(self, seed: int) -> tuple[Obs, dict]:
        """Start new episodes in every slot, seeded with ``seed``."""
        raise NotImplementedError

    def _step_batch(self, actions: Any) -> tuple[Obs, np.ndarray, np.ndarray, np.ndarray, dict]:
        """One step of every running slot: obs, reward, terminated, truncated, info (all batched)."""
        raise NotImplementedError

    def _reset_slots(self, which: np.ndarray) -> Obs:
        """New episodes in the slots ``which`` (bool (B,)) only; returns the observation of all slots.
        The default handles engines whose episodes always end together (all slots or none)."""
        if not which.all():
            raise NotImplementedError(f"{type(self).__name__} resets all its episodes together")
        return self.reset()[0]

    # --- the gymnasium API ----------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Obs, dict]:
        if seed is not None:
            self._seed = seed
        self._ended[:] = False
        out = self._reset_batch(self._seed)
        self._seed += 1
        return out

    def step(self, actions: Any) -> tuple[Obs, np.ndarray, np.ndarray, np.ndarray, dict]:
        ended = self._ended.copy()
        no = np.zeros(self.num_envs, bool)
        if ended.all():
            obs = self._reset_slots(ended)
            self._ended[:] = False
            return obs, np.zeros(self.num_envs), no, no.copy(), {}
        obs, reward, terminated, truncated, info = self._step_batch(actions)
        if ended.any():  # those slots ignored the action; they start again now
            obs = self._reset_slots(ended)
            reward, terminated, truncated = np.where(ended, 0.0, reward), terminated & ~ended, truncated & ~ended
        self._ended = terminated | truncated
        return obs, reward, terminated, truncated, info
