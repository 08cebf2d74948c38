"""The edge's gain-set tables (controller/modes/mems/gain_sets.py) against the learner's computation, and
host-set gains clamped into them (controller/link/edge_udp.py ``clamp_gains``)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from controller.config import GainEnvelope, HostLinkConfig
from controller.link.auth import AxisGains, Gains
from controller.link.edge_udp import clamp_gains
from controller.modes.mems import gain_sets
from learner.mems.edge_gain_sets import EDGE_SETS, edge_table
from learner.mems.env import MemsTuningConfig
from learner.mems.robust_gains import gain_set_map

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


def envelope(name: str) -> GainEnvelope:
    return GainEnvelope(gain_set=name)


def test_gains_beyond_i_max_are_clamped_to_it():
    _, _, i_max_x = gain_sets.limit("robust", 0, 14.0)
    _, _, i_max_y = gain_sets.limit("robust", 1, 20.0)
    wanted = Gains(AxisGains(14.0, 3000.0, 0.0), AxisGains(20.0, 700.0, 0.02))
    out, clamped = clamp_gains(wanted, envelope("robust"))
    assert clamped and out == Gains(AxisGains(14.0, i_max_x, 0.0), AxisGains(20.0, 700.0, 0.02))
    assert 700.0 < i_max_y < 3000.0 and 500.0 < i_max_x < 3000.0
    # the box alone lets them through
    assert clamp_gains(wanted, envelope("box")) == (wanted, False)


def test_p_outside_the_sets_range_is_clamped_into_it():
    lo, hi, _ = gain_sets.limit("wide", 0, 0.0)
    out, clamped = clamp_gains(Gains(AxisGains(55.0, 100.0, 0.0), AxisGains(0.5, 100.0, 0.0)), envelope("wide"))
    assert clamped and out.x.kp == hi and out.y.kp == gains_lo("wide", 1) and hi < 55.0 and lo > 0.5


def gains_lo(name: str, axis: int) -> float:
    return gain_sets.limit(name, axis, 0.0)[0]


def test_the_default_set_holds_the_baseline_and_the_paper_gains():
    from controller.modes.mems.pid import BASELINE_GAINS, PAPER_A_TEST_GAINS

    default = HostLinkConfig().envelope
    assert default.gain_set == "wide"
    for rows in (BASELINE_GAINS, PAPER_A_TEST_GAINS):
        g = Gains.from_rows(rows.tolist())
        assert clamp_gains(g, default) == (g, False)
    # the robust set clamps the baseline's own I (its table lies 2 % inside the crossover bound the baseline sits on)
    out, clamped = clamp_gains(Gains.from_rows(BASELINE_GAINS.tolist()), envelope("robust"))
    assert clamped and out.x.ki < BASELINE_GAINS[0, 1]


def test_an_unknown_gain_set_is_a_config_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="gain_set"):
        GainEnvelope(gain_set="tight")
