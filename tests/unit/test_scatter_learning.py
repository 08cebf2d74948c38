"""The transceiver task's learning side: observation, masking, GAE, PPO and training runs (resume)."""
import csv

import numpy as np
import pytest
import torch

from controller.modes.scatter import spec
from firmware_sim.scatter import scatterers
from learner.algos.ppo_recurrent import gae
from learner.scatter.batched import Tables
from learner.scatter.episode import Recipe, Scans, run
from learner.scatter.policy import Actor, PolicyDesigner, log_prob
from learner.scatter.train import TrainConfig, train

N = 16


@pytest.fixture(scope="module")
def tables() -> Tables:
    return Tables(N)


def _eta(count: int = 3) -> torch.Tensor:
    return torch.as_tensor(scatterers.batch("circles", "train", range(count), N))


def test_batched_observation_is_the_contract(tables: Tables) -> None:
    scans = Scans.start(_eta(2), tables)
    np.testing.assert_array_equal(scans.observation(tables)[0].numpy(), spec.observation([], 8.0, [], [], N))
    for a, f in ((10, 3), (200, 0), (95, 2)):
        scans.measure(tables, torch.tensor([a, a + 1]), torch.tensor([f, 1]), order=2)
    obs = scans.observation(tables).numpy()
    for b in range(2):
        k = spec.wavenumbers(N)[int(scans.freqs[b, 2])]
        want = spec.observation(scans.data[b, 2, :3].numpy(), k, scans.angles[b, :3].numpy(),
                                scans.freqs[b, :3].numpy(), N)
        np.testing.assert_allclose(obs[b], want, rtol=1e-5, atol=1e-6)


def test_a_used_angle_is_never_chosen_and_measuring_it_is_refused(tables: Tables) -> None:
    torch.manual_seed(0)
    actor = Actor()
    with torch.no_grad():  # make angle 7 overwhelmingly likely: once used it must still never come back
        actor.angle_head[-1].bias[7] = 1e6
    designer = PolicyDesigner(actor, tables, sample=True, generator=torch.Generator().manual_seed(1))
    scans, _ = run(designer, _eta(), tables=tables, recipe=Recipe(2, 1e-6, 1, 0), rng=np.random.default_rng(0))
    for row in scans.angles.numpy():
        assert len(set(row)) == spec.BUDGET and row[0] == 7
    again = Scans.start(_eta(1), tables)
    again.measure(tables, torch.tensor([7]), torch.tensor([0]), order=2)
    with pytest.raises(ValueError, match="used angle"):
        again.measure(tables, torch.tensor([7]), torch.tensor([1]), order=2)


def test_log_prob_counts_only_what_the_mode_learns() -> None:
    torch.manual_seed(0)
    angle, freq = torch.randn(2, 360), torch.randn(2, 360, 4)
    a, f = torch.tensor([3, 300]), torch.tensor([1, 2])
    both, _ = log_prob(angle, freq, a, f, "both")
    only_angle, _ = log_prob(angle, freq, a, f, "angle")
    only_freq, _ = log_prob(angle, freq, a, f, "frequency")
    torch.testing.assert_close(both, only_angle + only_freq)
    torch.testing.assert_close(only_freq, torch.log_softmax(freq[[0, 1], a], -1)[[0, 1], f])


def test_gae_with_lambda_one_is_return_minus_value() -> None:
    rewards, values = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.5, -1.0, 2.0]])
    adv, ret = gae(rewards, values, gamma=1.0, lam=1.0)
    torch.testing.assert_close(ret, torch.tensor([[6.0, 5.0, 3.0]]))
    torch.testing.assert_close(adv, ret - values)


def _cfg(updates: int) -> TrainConfig:
    return TrainConfig(family="circles", n=N, iterations=2, final_iterations=1, updates=updates, episodes=2,
                       checkpoint_every=1, device="cpu")


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path) -> None:
    torch.set_num_threads(1)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(_cfg(2), whole)
    train(_cfg(1), parts)
    train(_cfg(2), parts, resume=True)
    rows = [list(csv.DictReader((d / "updates.csv").open())) for d in (whole, parts)]
    assert [r["return_db"] for r in rows[0]] == [r["return_db"] for r in rows[1]] and len(rows[0]) == 2
    a, b = (torch.load(d / "policy.pt", weights_only=False)["actor"] for d in (whole, parts))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (whole / "curves.png").stat().st_size > 0 and (whole / "scans.png").stat().st_size > 0
    with pytest.raises(ValueError, match="lam"):
        train(TrainConfig(**{**_cfg(3).__dict__, "lam": 1e-3}), parts, resume=True)
