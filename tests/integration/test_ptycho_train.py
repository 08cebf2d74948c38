"""Ptychography training: a tiny run trains, resumes exactly and writes its files (also via the CLI), and
REINFORCE with per-position rewards learns a toy task."""
import csv
import json

import torch
from typer.testing import CliRunner

from hil.cli import app
from learner.algos.reinforce import ReinforceConfig, reinforce_loss
from learner.ptycho.policy import PolicyConfig
from learner.ptycho.train import TrainConfig, load_policy, train

TINY = dict(positions=8, subsequences=2, iterations=1, sample="lattice", batch=2, checkpoint_every=2)


def _rows(path):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in csv.DictReader(path.open())]


def test_tiny_run_resumes_exactly_and_writes_its_files(tmp_path):
    torch.set_num_threads(1)
    whole = train(TrainConfig(episodes=8, **TINY), tmp_path / "whole")
    assert whole["updates"] == 4
    train(TrainConfig(episodes=4, **TINY), tmp_path / "split")  # stops after 2 updates
    again = train(TrainConfig(episodes=8, **TINY), tmp_path / "split", resume=True)
    assert again["new_updates"] == 2
    a, meta = load_policy(tmp_path / "whole" / "policy.pt")
    b, _ = load_policy(tmp_path / "split" / "policy.pt")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert _rows(tmp_path / "whole" / "updates.csv") == _rows(tmp_path / "split" / "updates.csv")
    rows = _rows(tmp_path / "whole" / "updates.csv")
    assert [int(r["episodes"]) for r in rows] == [2, 4, 6, 8]
    assert float(a.fc_h.weight.abs().max()) > 0  # REINFORCE moved the policy off the Halton continuation
    prov = json.loads((tmp_path / "split" / "provenance.json").read_text())
    assert prov["updates"] == 4 and [s["from_update"] for s in prov["sittings"]] == [0, 2]
    for name in ("checkpoint.pt", "rewards.png", "reconstructions.png"):
        assert (tmp_path / "split" / name).stat().st_size > 0
    assert meta["policy_config"]["hidden"] == PolicyConfig().hidden


def test_cli_trains_and_a_finished_run_resumes_as_a_no_op(tmp_path):
    args = ["train", "ptycho", "--out", str(tmp_path), "--episodes", "2", "--batch", "2",
            "--positions", "8", "--subsequences", "2", "--iterations", "1", "--sample", "lattice", "--device", "cpu"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert json.loads(first.output.strip().splitlines()[-1])["updates"] == 1
    again = CliRunner().invoke(app, [*args, "--resume"])
    assert json.loads(again.output.strip().splitlines()[-1])["new_updates"] == 0
    bad = CliRunner().invoke(app, [*args[:-2], "--device", "tpu"])
    assert bad.exit_code != 0 and "--device" in bad.output


def _toy(shared: bool, agents: int = 50, updates: int = 60) -> tuple[float, float]:
    """Mean distance of each agent's mean to its own target before and after REINFORCE; each agent is rewarded by
    −distance of its draw to its target (per position), or every agent by the sum of those (shared)."""
    gen = torch.Generator().manual_seed(0)
    targets = 0.2 + 0.6 * torch.rand(agents, 2, generator=gen)
    logit = torch.zeros(agents, 2, requires_grad=True)
    opt = torch.optim.Adam([logit], lr=0.05)
    sigma = 0.05
    distance = lambda: float((torch.sigmoid(logit.detach()) - targets).norm(dim=1).mean())  # noqa: E731
    start = distance()
    for _ in range(updates):
        mu = torch.sigmoid(logit).expand(8, agents, 2)
        a = (mu + sigma * torch.randn(mu.shape, generator=gen)).detach()
        logp = torch.distributions.Normal(mu, sigma).log_prob(a).sum(-1)  # (B, M)
        reward = -(a - targets).norm(dim=-1)
        if shared:
            reward = reward.sum(1, keepdim=True).expand(-1, agents)
        opt.zero_grad()
        reinforce_loss(logp, reward, ReinforceConfig()).backward()
        opt.step()
    return start, distance()


def test_per_position_rewards_teach_each_agent_its_target_faster_than_a_shared_reward():
    start, per_position = _toy(shared=False)
    _, shared = _toy(shared=True)
    assert start > 0.2 and per_position < 0.02  # eq. 8 moves every mean to its own target
    assert shared > 2 * per_position  # the credit assignment of the Voronoi rewards (paper Fig. 3a) matters
