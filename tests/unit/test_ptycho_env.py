"""The scan environment (shapes, Halton start, snapping, visited handling, keyed counts, chooser interface)
and the scan policy (shapes, the hidden state carried, ONNX export with the state as input/output)."""
import numpy as np
import pytest
import torch

from controller.modes.ptycho.path import halton, snap_unvisited
from learner.ptycho.env import PtychoBatchEnv, PtychoEnvConfig, PtychoVecEnv, lattice_phase, run_scan
from controller.modes.ptycho.spec import M_MAX
from controller.modes.ptycho.path import prior
from learner.ptycho.policy import REACH, PolicyConfig, ScanPolicy

TINY = PtychoEnvConfig(positions=12, subsequences=3, iterations=1, sample="lattice")


def test_episode_shapes_halton_start_and_rewards():
    env = PtychoBatchEnv(TINY, batch=2, seed=3)
    seen = []

    def choose(obs):
        seen.append(obs)
        return np.full((2, 4, 2), 0.5)  # the same point every time: visited handling spreads them

    scan = run_scan(env, choose)
    assert [o.t for o in seen] == [1, 2] and [o.want for o in seen] == [4, 4] and seen[0].recon.shape == (2, 1, 100, 100)
    assert seen[1].positions.shape == (2, 8, 2) and seen[1].last.shape == (2, 4, 2)
    assert float(seen[0].recon.mean().abs()) < 1e-5  # mean removed
    first = snap_unvisited(halton(4), np.zeros((100, 100), bool))
    assert np.array_equal(scan.positions[0][0], first)  # the first sub-sequence is Halton, as on the edge
    allpos = np.concatenate(scan.positions, 1)
    assert all(len(np.unique(p, axis=0)) == 12 for p in allpos)  # never a position twice
    assert scan.rewards.shape == (2, 12) and scan.recon.shape == (2, 100, 100)
    with pytest.raises(RuntimeError, match="finished"):
        env.step(np.zeros((2, 4, 2)))


def test_keyed_counts_make_scans_reproducible_and_bad_actions_fail():
    a = np.random.default_rng(1).uniform(0, 1, (2, 4, 2))
    results = [run_scan(PtychoBatchEnv(TINY, batch=2, seed=s), lambda o: a, keys=[7, 8]) for s in (0, 99)]
    assert np.array_equal(results[0].recon, results[1].recon)  # same keys and positions → same data
    other = run_scan(PtychoBatchEnv(TINY, batch=2), lambda o: a, keys=[7, 9])
    assert np.array_equal(other.recon[0], results[0].recon[0]) and not np.array_equal(other.recon[1], results[0].recon[1])
    env = PtychoBatchEnv(TINY, batch=2)
    env.reset()
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros((2, 5, 2)))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.full((2, 4, 2), np.nan))
    with pytest.raises(ValueError, match="sub-sequences"):
        PtychoBatchEnv(PtychoEnvConfig(positions=10, subsequences=1))


def test_uneven_subsequences_split_the_positions_larger_first():
    cfg = PtychoEnvConfig(positions=11, subsequences=3, iterations=1, sample="lattice")
    assert cfg.sizes == (4, 4, 3) and PtychoEnvConfig(250, 4).sizes == (63, 63, 62, 62)
    wants = []
    scan = run_scan(PtychoBatchEnv(cfg, batch=1), lambda o: wants.append(o.want) or np.full((1, o.want, 2), 0.5))
    assert wants == [4, 3] and [p.shape[1] for p in scan.positions] == [4, 4, 3]


def test_vector_env_view():
    venv = PtychoVecEnv(2, TINY)
    obs, _ = venv.reset(seed=5)
    assert venv.observation_space.contains(obs)
    _, r, done, _, _ = venv.step(np.full((2, 4, 2), 0.3, np.float32))
    assert not done.any() and np.all(r == 0)
    obs, r, done, _, info = venv.step(np.full((2, 4, 2), 0.7, np.float32))
    assert done.all() and info["rewards"].shape == (2, 12) and venv.observation_space.contains(obs)
    assert np.allclose(r, info["rewards"][:, 4:].sum(1))  # the policy's positions' rewards


def test_lattice_sample_differs_per_key():
    from controller.modes.ptycho.optics import Optics
    a, b = lattice_phase(1, Optics()), lattice_phase(2, Optics())
    assert a.shape == (163, 163) and 0.3 < a.max() <= 0.45 and not np.allclose(a, b)


def test_policy_shapes_and_hidden_state_carried():
    torch.manual_seed(0)
    net = ScanPolicy(PolicyConfig(hidden=16, features=16))
    recon, last = torch.randn(3, 1, 100, 100), torch.rand(3, 4, 2)
    h0 = net.initial_hidden(3)
    m0, _ = net.step(recon, last, 4, h0)
    assert torch.equal(m0, torch.as_tensor(prior(4), dtype=torch.float32).expand(3, M_MAX, 2))  # untrained: Halton
    torch.nn.init.normal_(net.fc_h.weight, std=0.1)  # as if trained
    m1, h1 = net.step(recon, last, 4, h0)
    assert m1.shape == (3, M_MAX, 2) and h1.shape == (3, 2, 16) and float(m1.min()) >= 0 and float(m1.max()) <= 1
    assert float((m1 - m0).abs().max()) <= REACH + 1e-6 and not torch.allclose(m1, m0)
    m2, _ = net.step(recon, last, 4, h1)
    assert not torch.allclose(m1, m2)  # the same input with the carried state gives another output
    m3, _ = net.step(recon, last[:, :3], 4, h0)
    assert not torch.allclose(m1, m3)  # the count is an input: a shorter sub-sequence is another observation
