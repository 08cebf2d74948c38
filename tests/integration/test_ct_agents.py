"""CT agents: Algorithm 2 update maths on a tiny batch; short training of both algorithms; CLI."""
import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

import learner.ct.cli
from learner.algos.actor_critic_stop import TerminalConfig, terminal_losses
from learner.ct.eval import evaluate
from learner.ct.net import CTActorCritic, masked_policy
from learner.ct.train import TrainConfig, load_policy, train


def _batch():
    f = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return dict(logp=f(-1.0, -2.0).requires_grad_(), entropy=f(3.0, 4.0), v=f(10.0, 12.0).requires_grad_(),
                p=f(0.2, 0.6).requires_grad_(), psnr=f(9.0, 14.0), v_next=f(11.0, 13.0), p_next=f(0.3, 0.9),
                psnr_next=f(12.0, 15.0), done=torch.tensor([False, True]))


def test_terminal_td_error_and_loss_terms():
    cfg, b = TerminalConfig(), _batch()
    t = terminal_losses(cfg, 0.5, **b)
    # line 11: episode 0 continues -> expectation over d_{k+1}; episode 1 ends -> its PSNR reward
    d0 = -0.5 + 0.99 * (0.7 * 11.0 + 0.3 * 12.0) - 10.0
    d1 = -0.5 + 15.0 - 12.0
    assert float(t["td"].detach()) == pytest.approx((d0 + d1) / 2)
    assert float(t["actor"].detach()) == pytest.approx(-(-1.0 * d0 - 2.0 * d1) / 2)
    assert float(t["critic"].detach()) == pytest.approx((d0**2 + d1**2) / 2)
    assert float(t["terminal"].detach()) == pytest.approx(-(0.2 * (9.0 - 10.0) + 0.6 * (14.0 - 12.0)) / 2)
    assert float(t["entropy"].detach()) == pytest.approx(-3.5)
    assert (cfg.w_actor, cfg.w_critic, cfg.w_terminal, cfg.w_entropy, cfg.gamma) == (1.0, 0.5, 1.0, 0.01, 0.99)
    assert (cfg.lr, cfg.weight_decay) == (1e-4, 1e-5)
    expected = t["actor"] + 0.5 * t["critic"] + t["terminal"] + 0.01 * t["entropy"]
    assert float(t["loss"].detach()) == pytest.approx(float(expected.detach()))


def test_terminal_gradients_follow_paper_updates():
    b = _batch()
    terminal_losses(TerminalConfig(), 0.5, **b)["loss"].backward()
    d = np.array([-0.5 + 0.99 * (0.7 * 11.0 + 0.3 * 12.0) - 10.0, 2.5])
    # line 12: ∇ log π · δ ; line 14 (critic weight 0.5 on δ²): −δ ∇V ; eq. 16: ∇p · (PSNR − V_C)
    np.testing.assert_allclose(b["logp"].grad.numpy(), -d / 2)
    np.testing.assert_allclose(b["v"].grad.numpy(), -d / 2)
    np.testing.assert_allclose(b["p"].grad.numpy(), -np.array([9.0 - 10.0, 14.0 - 12.0]) / 2)


def test_network_shapes_and_masked_softmax():
    assert CTActorCritic(239).actor.in_features == 2352  # Table 4
    net = CTActorCritic(31)
    logits, v, stop = net(torch.zeros(2, 1, 31, 31))
    assert logits.shape == (2, 180) and v.shape == (2,) and stop.shape == (2,)
    valid = torch.ones(2, 180, dtype=torch.bool)
    valid[:, :170] = False
    pi = masked_policy(logits, valid)
    assert torch.all(pi.probs[:, :170] == 0) and torch.allclose(pi.probs.sum(-1), torch.ones(2))
    assert torch.isfinite(pi.entropy()).all()


@pytest.mark.parametrize("algo", ["terminal", "naive"])
def test_short_training_writes_its_files_and_provenance(tmp_path, algo):
    torch.set_num_threads(1)
    cfg = TrainConfig(algo=algo, size=31, episodes=8, batch=4, checkpoint_every=4, max_angles=6)
    out = train(cfg, tmp_path)
    assert out["episodes"] >= 8
    for f in ("checkpoint.pt", "policy.pt", "provenance.json", "episodes.csv", "angles.png", "reconstructions.png"):
        assert (tmp_path / f).stat().st_size > 0
    rows = list(csv.DictReader((tmp_path / "episodes.csv").open()))
    assert all(1 <= int(r["angles"]) <= 6 or (algo == "naive" and int(r["angles"]) == 0) for r in rows)
    assert {r["shape"] for r in rows} <= {"parallelogram", "triangle", "pentagon", "broad"}
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["policy_sha256"] == hashlib.sha256((tmp_path / "policy.pt").read_bytes()).hexdigest()
    assert (prov["seed"], prov["threads"], prov["episodes"]) == (0, 1, out["episodes"]) and prov["commit"]


def _eval_numbers(run_dir):
    res = evaluate({"r": load_policy(run_dir / "policy.pt", "cpu")}, split="selection", per_cell=2, device="cpu")
    return [c["runs"]["r"]["rl_psnr_mean"] for c in res["cells"]]


def test_a_stopped_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    """The checkpoint holds the environment mid-episode and both RNGs: stopping after 12 episodes and resuming
    to 24 gives the same network, log and evaluation as one run to 24 (same seed, one thread)."""
    torch.set_num_threads(1)
    cfg = dict(size=31, batch=4, checkpoint_every=4, max_angles=6, seed=3)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(TrainConfig(episodes=24, **cfg), whole)
    train(TrainConfig(episodes=12, **cfg), parts)
    with (parts / "episodes.csv").open("a") as fh:
        fh.write("999,broad,3,1.0,1.0,0,0,0,0,0,9.9\n")  # a row written after the checkpoint
    train(TrainConfig(episodes=24, **cfg), parts, resume=True)
    a, b = (torch.load(d / "policy.pt", weights_only=False)["net"] for d in (whole, parts))
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda d: [r[:-1] for r in csv.reader((d / "episodes.csv").open())]  # noqa: E731  (wall time differs)
    assert strip(whole) == strip(parts)
    assert _eval_numbers(whole) == pytest.approx(_eval_numbers(parts), abs=0.05)
    prov = json.loads((parts / "provenance.json").read_text())
    assert [x["from_episode"] for x in prov["sittings"]][0] == 0 and len(prov["sittings"]) == 2
    assert prov["sittings"][1]["from_episode"] >= 12 and prov["command"] == prov["sittings"][-1]["command"]
    before = {f: (parts / f).read_bytes() for f in ("provenance.json", "policy.pt", "checkpoint.pt", "episodes.csv")}
    assert train(TrainConfig(episodes=24, **cfg), parts, resume=True)["new_episodes"] == 0  # finished: no-op
    assert all((parts / f).read_bytes() == b for f, b in before.items())
    with pytest.raises(ValueError, match="checkpoint is terminal at size 31 on 'mixture'"):
        train(TrainConfig(episodes=30, families="paper", **cfg), parts, resume=True)


def test_cli_train_and_eval_with_custom_phantoms(tmp_path):
    app = typer.Typer()
    app.command("train")(learner.ct.cli.train_ct)
    app.command("eval")(learner.ct.cli.eval_ct)
    run = CliRunner()
    for name in ("r", "r2"):
        res = run.invoke(app, ["train", "--size", "31", "--episodes", "4", "--batch", "4", "--families", "paper",
                               "--out", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
    ph = tmp_path / "ph"
    ph.mkdir()
    img = np.zeros((45, 45))
    img[15:30, 12:33] = 0.62
    np.save(ph / "good.npy", img)
    np.save(ph / "bad.npy", np.full((4, 5), 0.5))
    res = run.invoke(app, ["eval", "--run", str(tmp_path / "r"), "--run", str(tmp_path / "r2"), "--json",
                           "--split", "selection", "--per-cell", "3", "--phantoms", str(ph),
                           "--naive-run", str(tmp_path / "none"), "--png", str(tmp_path / "stop.png")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    cells = out["cells"]
    assert len(cells) == 3 * 4 + 4 and {c["family"] for c in cells} == {"parallelogram", "triangle", "pentagon", "custom"}
    assert set(out["runs"]) == {"r", "r2"} and (tmp_path / "stop.png").stat().st_size > 0
    cell = cells[0]["runs"]["r"]
    assert {"angles_mean", "rl_psnr_mean", "gr_psnr_mean", "rl_minus_gr_mean", "rl_minus_gr_ci95", "won",
            "rl_reward_mean", "gr_at_mean_count"} <= set(cell)
    assert cell["won"] == (cell["rl_minus_gr_mean"] - cell["rl_minus_gr_ci95"] > 0)
    assert len(cell["p_stop_on_gr_by_count"]) == 21 and all(0 <= p <= 1 for p in cell["p_stop_on_gr_by_count"])
    assert cells[0]["training_spread"]["runs"] == 2
    assert len(cells[0]["gr_psnr_by_count"]) == 21 and 0 <= cells[0]["gr_best_fixed"]["angles"] <= 20
    assert len(out["custom_skipped"]) == 1 and "bad.npy" in out["custom_skipped"][0]
    assert "error" in out["naive"]
    res = run.invoke(app, ["eval", "--run", str(tmp_path / "r"), "--per-cell", "2", "--split", "selection",
                           "--naive-run", str(tmp_path / "none")])
    rows = [line for line in res.output.splitlines() if line.startswith("| triangle |")]  # without --json: a table
    assert res.exit_code == 0 and len(rows) == 4 and "no naive policy" in res.output, res.output
    res = run.invoke(app, ["eval", "--run", str(tmp_path / "r"), "--per-cell", "1", "--split", "nonsense"])
    assert res.exit_code != 0 and "--split must be one of" in res.output


def test_select_ships_the_run_with_the_best_selection_reward(tmp_path):
    torch.set_num_threads(1)
    runs = [tmp_path / f"seed{s}" for s in (0, 1)]
    for s, r in enumerate(runs):
        train(TrainConfig(size=31, episodes=4, batch=4, max_angles=4, families="paper", seed=s), r)
    app = typer.Typer()
    app.command("select")(learner.ct.cli.select_ct)
    app.command("other")(learner.ct.cli.eval_ct)  # two commands: typer keeps the command name
    args = ["select", "--per-cell", "2", "--device", "cpu", "--to", str(tmp_path / "bundle")]
    res = CliRunner().invoke(app, [*args, *(x for r in runs for x in ("--run", str(r)))])
    assert res.exit_code == 0, res.output
    sel = json.loads((tmp_path / "bundle" / "selection.json").read_text())
    assert sel["chosen"] == max(sel["scores"], key=sel["scores"].get) and set(sel["scores"]) == {str(r) for r in runs}
    assert (tmp_path / "bundle" / "policy.pt").read_bytes() == (Path(sel["chosen"]) / "policy.pt").read_bytes()
    for f in ("provenance.json", "angles.png", "reconstructions.png"):
        assert (tmp_path / "bundle" / f).exists()
    (runs[0] / "policy.pt").write_bytes((runs[1] / "policy.pt").read_bytes())  # no longer what its provenance says
    res = CliRunner().invoke(app, [*args, "--run", str(runs[0])])
    assert res.exit_code != 0 and "does not match its provenance" in str(res.exception)
