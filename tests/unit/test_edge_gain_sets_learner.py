"""The edge's gain-set tables (controller/modes/mems/gain_sets.py) against the learner's computation (needs the
learn extra: torch)."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from controller.modes.mems import gain_sets  # noqa: E402
from learner.mems.edge_gain_sets import EDGE_SETS, edge_table  # noqa: E402
from learner.mems.env import MemsTuningConfig  # noqa: E402
from learner.mems.robust_gains import gain_set_map  # noqa: E402

CFG = MemsTuningConfig()
STORED = json.loads(gain_sets.TABLE_FILE.read_text())


@pytest.mark.slow
def test_the_table_file_is_the_learners_computation():
    """Regenerated in full (both sets, both axes: ~15 s): the file cannot drift from the learner."""
    assert json.loads(json.dumps(edge_table())) == STORED


def test_the_robust_table_is_the_learners_map():
    """The short version: the learner's map for the robust set (computed once per process) holds the stored table."""
    m = gain_set_map("robust", CFG.p_bounds, CFG.i_bounds)
    assert m.knots.double().tolist() == STORED["sets"]["robust"]["knots"]
    assert m.integral_limit(m.knots.T).T.double().tolist() == STORED["sets"]["robust"]["i_max"]
    assert STORED["p_bounds"] == list(CFG.p_bounds) and STORED["i_bounds"] == list(CFG.i_bounds)


@pytest.mark.parametrize("name", EDGE_SETS)
def test_the_edge_interpolation_is_the_learners_map(name):
    """numpy's np.interp on the table = the learner's ReLU sum (the exported graphs' map), inside and beyond the knots."""
    knots, _ = gain_sets.table(name)
    p = np.random.default_rng(0).uniform(1.0, 45.0, (200, 2))
    edge = np.array([[gain_sets.limit(name, a, row[a])[2] for a in range(2)] for row in p])
    learner = gain_set_map(name, CFG.p_bounds, CFG.i_bounds).integral_limit(
        torch.as_tensor(np.clip(p, knots[:, 0], knots[:, -1]), dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(edge, learner, rtol=1e-5)
