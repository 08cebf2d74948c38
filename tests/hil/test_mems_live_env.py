"""The live MEMS tuning environment (learner/mems/live_env.py) stepping a running daemon over the host link."""
from __future__ import annotations

import numpy as np

from controller.link.host_udp import HostClient
from controller.modes.mems.pid import BASELINE_GAINS
from learner.mems.env import MemsTuningConfig, baseline_action, gains_from_action
from learner.mems.live_env import MemsLiveEnv


async def test_live_env_steps_the_running_daemon(mems_stand):
    await mems_stand.client.close()  # one sender per key id (docs/hostlink.md)
    mems_stand.client = None
    addr, ring = mems_stand.edge_addr, mems_stand.keyring

    async def factory():
        return await HostClient(addr, ring, key_id=ring.newest).open()

    import asyncio

    env = await asyncio.to_thread(MemsLiveEnv, factory, MemsTuningConfig(decisions_per_episode=3))
    try:
        obs, _ = await asyncio.to_thread(env.reset, seed=0)
        assert env.observation_space.contains(obs)
        obs, r, term, trunc, info = await asyncio.to_thread(env.step, baseline_action())
        assert info["frames"] >= 6 and 0.5 < info["dt"] < 3.0  # ~12 frames of telemetry per 100 ms
        assert np.isfinite(r) and not term and env.observation_space.contains(obs)
        np.testing.assert_allclose(info["gains"], BASELINE_GAINS, rtol=1e-9)
        action = np.array([14.0, 500.0, 20.0, 700.0], dtype=np.float32)  # not the daemon's start-up gains
        obs, r, term, trunc, info = await asyncio.to_thread(env.step, action)
        # the gains the daemon reports running (its telemetry) are the ones the env sent
        np.testing.assert_allclose(info["gains"], gains_from_action(action)[0], rtol=1e-9)
        assert not np.allclose(info["gains"], BASELINE_GAINS) and env.observation_space.contains(obs)
    finally:
        await asyncio.to_thread(env.close)
