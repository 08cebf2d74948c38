"""Non-learned transceiver designs and their evaluation: D-optimal, uniform spacing, best_fixed, oracle, λ tuning."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from controller.modes.scatter import spec
from firmware_sim.scatter import scatterers as S
from learner.scatter import designs as D
from learner.scatter import eval as E
from learner.scatter.batched import Tables
from learner.scatter.episode import Recipe, run
from learner.scatter.metrics import psnr

N, K = 8, 4
RECIPE = Recipe(order=2, lam=1e-6, iterations=2, final_iterations=3)


@pytest.fixture(scope="module")
def tables() -> Tables:
    return Tables(N)


def _eta(split: str = "selection", count: int = 3, family: str = "circles") -> torch.Tensor:
    return torch.as_tensor(S.batch(family, split, range(count), N))


def test_flat_d_optimal_picks_the_highest_frequency_and_distinct_angles(tables: Tables) -> None:
    scans, _ = run(D.DOptimal(tables, "flat"), _eta(count=2), tables=tables, recipe=RECIPE,
                   rng=np.random.default_rng(0), budget=K)
    assert torch.all(scans.freqs == D.N_FREQ - 1)
    assert torch.equal(scans.angles[0], scans.angles[1])  # η-independent: one design for every scan
    assert len(set(scans.angles[0].tolist())) == K


def test_weighted_d_optimal_depends_on_the_reconstruction(tables: Tables) -> None:
    d = D.DOptimal(tables, "weighted")
    recon = torch.zeros(N, N)
    assert torch.equal(d.weights(recon), torch.ones(N * N, dtype=torch.float64))  # flat before any data
    recon[2, 3] = 1.0
    w = d.weights(recon)
    assert w.max() == pytest.approx(1 + D.WEIGHT_FLOOR) and w.min() == pytest.approx(D.WEIGHT_FLOOR)
    a, f = torch.tensor([10, 200]), torch.tensor([3, 1])
    assert not torch.allclose(d.gains(a, f, w), d.gains(a, f, torch.ones_like(w)))
    coarse = D.DOptimal(tables, "weighted", stride=2).gains(a, f, w)  # odd angles are not candidates
    assert torch.isinf(coarse[:, 1::2]).all() and torch.equal(coarse[:, 0::2], d.gains(a, f, w)[:, 0::2])


def test_d_optimal_gain_matches_a_direct_log_det(tables: Tables) -> None:
    """The Woodbury gain equals log det(I + P^½ M₊ P^½/σ²) − log det(I + P^½ M P^½/σ²) computed densely."""
    d = D.DOptimal(tables, "weighted")
    a, f = torch.tensor([30, 140]), torch.tensor([2, 0])
    p = torch.linspace(0.2, 1.5, N * N, dtype=torch.float64)
    j = torch.cat([d.rows(a[s : s + 1], f[s : s + 1], a[None, : s + 1])[0] for s in range(2)])
    cand_a, cand_f = 77, 1
    rows = d.rows(torch.tensor([cand_a]), torch.tensor([cand_f]), torch.tensor([[30, 140, cand_a]]))[0]
    sq = p.sqrt()

    def logdet(m: torch.Tensor) -> float:
        return torch.linalg.slogdet(torch.eye(N * N, dtype=torch.float64) + (sq[:, None] * (m.T @ m) * sq) / d.sigma2)[1].item()
    expected = logdet(torch.cat([j, rows])) - logdet(j)
    assert d.gains(a, f, p)[cand_f, cand_a].item() == pytest.approx(expected, rel=1e-6)
    assert torch.isinf(d.gains(a, f, p)[:, a]).all()


def test_uniform_angles_are_equally_spaced_around_the_ring(tables: Tables) -> None:
    for designer, freqs in ((D.uniform_angle(2), [2] * 5), (D.uniform_cycling(), [0, 1, 2, 3, 0])):
        scans, _ = run(designer, _eta(count=3), tables=tables, recipe=RECIPE, rng=np.random.default_rng(1), budget=5)
        steps = (scans.angles[:, 1:] - scans.angles[:, :-1]) % spec.N_ANGLES
        assert torch.all(steps == 72)
        assert len(set(scans.angles[:, 0].tolist())) > 1  # random rotations
        assert scans.freqs.tolist() == [freqs] * 3


def test_random_designs_use_distinct_angles_and_the_fixed_frequency(tables: Tables) -> None:
    scans, _ = run(D.random_angle(1), _eta(count=3), tables=tables, recipe=RECIPE, rng=np.random.default_rng(2),
                   budget=K)
    assert all(len(set(row)) == K for row in scans.angles.tolist()) and torch.all(scans.freqs == 1)
    with pytest.raises(ValueError):
        D.random_angle(4)


def test_best_fixed_is_the_best_training_candidate_and_then_frozen(tables: Tables) -> None:
    train = _eta("train", 3)
    sel = D.select_fixed(train, tables=tables, recipe=RECIPE, rng=np.random.default_rng(3), n_random=4, budget=K)
    angles, freqs = D.fixed_candidates(np.random.default_rng(3), K, 4)
    best = int(np.argmin(sel.scores))
    assert sel.scores.shape == (9,) and np.array_equal(sel.angles, angles[best])
    _, alone = run(D.fixed(angles[best], freqs[best]), train, tables=tables, recipe=RECIPE,
                   rng=np.random.default_rng(0), budget=K)
    assert alone[:, -1].mean().item() == pytest.approx(sel.scores[best], rel=1e-3)
    for seed, eta in ((4, _eta("report", 2)), (5, _eta("selection", 3, "ellipses"))):
        scans, _ = run(D.fixed(sel.angles, sel.freqs), eta, tables=tables, recipe=RECIPE,
                       rng=np.random.default_rng(seed), budget=K)
        assert np.array_equal(scans.angles.numpy(), np.tile(sel.angles, (len(eta), 1)))
        assert np.array_equal(scans.freqs.numpy(), np.tile(sel.freqs, (len(eta), 1)))


def test_oracle_is_at_most_every_random_design_per_scatterer(tables: Tables) -> None:
    oracle = D.Oracle(tables, RECIPE, n_designs=5)
    _, errors = run(oracle, _eta("report", 3), tables=tables, recipe=RECIPE, rng=np.random.default_rng(6), budget=K)
    final = errors[:, -1].numpy()
    assert oracle.candidate_mse.shape == (3, 5)
    assert np.all(final <= oracle.candidate_mse.min(1) * (1 + 1e-4))
    assert np.allclose(final, oracle.candidate_mse.min(1), rtol=1e-4)
    assert np.any(oracle.candidate_mse.max(1) > oracle.candidate_mse.min(1))  # the choice mattered


def test_psnr_uses_the_papers_max() -> None:
    assert psnr(np.array([4096.0**2])) == pytest.approx([0.0])
    assert psnr(1e-4) == pytest.approx(20 * np.log10(4096) + 40)
    with pytest.raises(ValueError):
        psnr(np.array([0.0]))


def _config(tables: Tables, lam_grid: tuple[float, ...] = (1e-3, 1e-6)) -> E.CellConfig:
    return E.CellConfig(tables, RECIPE, lam_grid=lam_grid, budget=3, fixed_candidates=2, oracle_designs=3)


def _methods() -> list[E.Method]:
    return [E.Method("random_angle", lambda r, freq: D.random_angle(freq), E.FREQ_VARIANTS[2:]),
            E.Method("uniform_cycling", lambda r: D.uniform_cycling()), E.Method("random_both", lambda r: D.random_both())]


def test_lambda_and_variants_are_chosen_on_the_selection_set_only(tables: Tables, monkeypatch) -> None:
    """With scores that depend on the scatterers, every tuning run sees the selection set and each choice is
    its table's arg-min; the report set is run only at the chosen λ and the paper's."""
    sets = E.Sets("circles", _eta("report", 2), _eta("selection", 2), _eta("train", 2))
    calls = []

    def fake(method, variant, eta, cfg, lam):
        calls.append((method.name, eta, lam))
        return np.full(len(eta), abs(np.log10(lam) + 4.2 + variant.get("freq", 0) * eta.sum().item()))
    monkeypatch.setattr(E, "_final_mse", fake)
    cell = E.evaluate_cell(_methods(), sets, _config(tables))
    grid = {name: [c for c in calls if c[0] == name and c[1] is sets.selection] for name in cell["lam"]}
    assert all(len(grid[name]) == len(cell["tuning"][name]) for name in cell["tuning"])
    assert len(cell["tuning"]["random_angle"]) == 2 * 2  # every variant × every λ
    for name, table in cell["tuning"].items():
        assert min(table, key=table.get) == E._key(cell["variant"][name], cell["lam"][name])
    report = [c for c in calls if c[1] is sets.report]
    assert all(lam in (cell["lam"][name], E.PAPER_LAM) for name, _, lam in report)
    assert {c[1] is sets.selection or c[1] is sets.report for c in calls} == {True}


def test_a_cell_reports_every_method_with_cis_and_the_papers_setting(tables: Tables) -> None:
    report = _eta("report", 3)
    cell = E.evaluate_cell(_methods(), E.Sets("circles", report, _eta("selection", 2), _eta("train", 2)),
                           _config(tables, lam_grid=(1e-6,)))  # the choice of λ: the test above
    methods = {"random_angle", "uniform_cycling", "random_both", "best_fixed", "oracle", "zero"}
    assert set(cell["mse"]) == set(cell["mse_ci95"]) == set(cell["psnr"]) == methods
    assert cell["mse"]["zero"] == pytest.approx(report.double().pow(2).mean().item())
    assert cell["paired_reference"] == "uniform_cycling" and set(cell["paired"]) == methods - {"uniform_cycling"}
    assert cell["paper_setting"]["lam"] == 1e-3 and set(cell["paper_setting"]["mse"]) == {"random_angle"}
    assert all(cell["mse"][m] < cell["mse"]["zero"] for m in methods - {"zero"})
    assert len(cell["best_fixed_plan"]["train_mse"]) == D.N_FREQ + 1 + 2


def test_datasets_and_bad_input(tmp_path) -> None:
    np.save(tmp_path / "a.npy", np.ones((5, 5)))
    sets = E.scatterer_sets("custom", N, report=0, selection=3, train=3, custom_dir=tmp_path)
    assert sets.names == ["a"] and sets.report.shape == (1, N, N) and sets.selection.shape == (3, N, N)
    private = E.scatterer_sets(S.PRIVATE, N, report=2, selection=3, train=3)
    assert private.report.shape == (2, N, N)
    assert torch.equal(private.selection[1], torch.as_tensor(S.scatterer(S.FAMILIES[1], "selection", 0, N)))
    with pytest.raises(ValueError, match="folder"):
        E.scatterer_sets("custom", N, report=1, selection=1, train=1)
    with pytest.raises(ValueError, match="unknown dataset"):
        E.scatterer_sets("mnist", N, report=1, selection=1, train=1)
