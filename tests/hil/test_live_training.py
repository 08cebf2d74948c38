"""`edgetune train mems --live` against a real daemon and emulator on a pty (learner/mems/live_train.py):
fine-tuning from a simulator run, checkpoints, a link lost mid-run (the daemon stopped) ending cleanly with a
checkpoint, ``--resume`` once the daemon is back, and a daemon set up wrongly for it refused with a clear error."""
from __future__ import annotations

import asyncio
import json

import pytest
import torch
from typer.testing import CliRunner

from hil.cli import app
from hil.stand import SimulatedStand
from learner.algos.ddpg import DDPGConfig
from learner.mems.train import MemsTrainConfig, checkpoint_step, train_mems

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    """A tiny simulator-trained run to fine-tune (the box gain set: no robust map to compute)."""
    out = tmp_path_factory.mktemp("sim")
    cfg = MemsTrainConfig(num_envs=4, gain_set="box", ddpg=DDPGConfig(
        total_steps=64, learning_starts=32, batch_size=16, hidden=(16, 16), noise="ou", torch_threads=1))
    train_mems(out, cfg)
    return out


def live(stand: SimulatedStand, out, *args: str):
    to = f"{stand.edge_addr[0]}:{stand.edge_addr[1]}"
    return CliRunner().invoke(app, ["train", "mems", "--live", "--to", to, "--key-file", str(stand.key_file),
                                    "--out", str(out), *args])


async def test_fine_tune_checkpoint_link_lost_and_resume(mems_stand, sim_run, tmp_path):
    await mems_stand.client.close()  # one sender per key id (docs/hostlink.md)
    mems_stand.client = None
    out = tmp_path / "live"
    key_id = str(mems_stand.keyring.newest)
    run = asyncio.create_task(asyncio.to_thread(live, mems_stand, out, "--steps", "400", "--init", str(sim_run),
                                                "--key-id", key_id))
    async with asyncio.timeout(40):  # a checkpoint every 40 decisions (every 10 %)
        while not (out / "checkpoint.pt").exists():
            await asyncio.sleep(0.1)
    assert mems_stand.terminate_daemon() == 0  # the stand goes away mid-run
    result = await run
    assert result.exit_code == 3, result.output
    done = checkpoint_step(out)
    assert 40 <= done < 400
    assert "link lost" in result.output and f"holds {done} decisions" in result.output
    assert f"--key-id {key_id} --out {out} --steps 400 --resume" in result.output  # the command to go on, as started
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["live"]["init"] == str(sim_run) and cfg["gain_set"] == "box" and cfg["num_envs"] == 1
    # fine-tuned: the init run's networks, moved by updates (no random warm-up with --init)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    init = torch.load(sim_run / "checkpoint.pt", weights_only=True)["agent"]["actor"]
    assert ckpt["updates"] > 0 and ckpt["buffer"]["size"] == done
    assert ckpt["agent"]["actor"]["net.0.weight"].shape == init["net.0.weight"].shape
    assert not torch.equal(ckpt["agent"]["actor"]["net.0.weight"], init["net.0.weight"])
    assert (ckpt["buffer"]["dt"] > 0.5).all() and (ckpt["buffer"]["dt"] < 5).all()  # real Δt, in decision periods

    mems_stand.start_daemon()  # back (same config, port and keys)
    await (await mems_stand.connect()).close()  # it answers again
    mems_stand.client = None
    result = await asyncio.to_thread(live, mems_stand, out, "--steps", str(done + 20), "--resume")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["steps"] == done + 20 and checkpoint_step(out) == done + 20
    assert (out / "a_test.json").exists() and (out / "reward.png").exists()


async def test_a_daemon_that_decimates_telemetry_is_refused(tmp_path):
    async with SimulatedStand(tmp_path / "stand", config={"hostlink": {"telemetry_decimation": 4}}) as stand:
        await stand.client.close()
        stand.client = None
        result = await asyncio.to_thread(live, stand, tmp_path / "live", "--steps", "10")
    assert result.exit_code == 2 and "telemetry_decimation = 1" in result.output, result.output
    assert not (tmp_path / "live" / "checkpoint.pt").exists()
