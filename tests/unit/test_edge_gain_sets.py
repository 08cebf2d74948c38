"""Host-set gains clamped into the edge's gain-set tables (controller/link/edge_udp.py ``clamp_gains``,
controller/modes/mems/gain_sets.py), and a bad table refused; edge only (no torch): the tables against the
learner's computation are in test_edge_gain_sets_learner.py."""
from __future__ import annotations

import json

import pytest

from controller.config import GainEnvelope, HostLinkConfig
from controller.link.auth import AxisGains, Gains
from controller.link.edge_udp import clamp_gains
from controller.modes.mems import gain_sets


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


@pytest.fixture
def table_file(tmp_path, monkeypatch):
    """A table file of the test's own; the cached tables are dropped before and after."""
    path = tmp_path / "gain_sets.json"
    monkeypatch.setattr(gain_sets, "TABLE_FILE", path)
    gain_sets.table.cache_clear()
    yield path
    gain_sets.table.cache_clear()


def test_a_missing_or_bad_table_is_a_clear_error(table_file):
    with pytest.raises(ValueError, match="cannot read gain set 'wide'"):  # missing
        gain_sets.table("wide")
    table_file.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read gain set 'wide'"):
        gain_sets.table("wide")
    good = {"knots": [[1.0, 2.0], [1.0, 2.0]], "i_max": [[5.0, 6.0], [5.0, 6.0]]}
    table_file.write_text(json.dumps({"sets": {"wide": good}}))
    with pytest.raises(ValueError, match="no gain set 'robust'"):
        gain_sets.table("robust")
    for bad in ({"knots": [[1.0, 2.0]], "i_max": [[5.0, 6.0]]},  # one axis
                {"knots": [[2.0, 1.0], [1.0, 2.0]], "i_max": good["i_max"]},  # falling knots
                {"knots": good["knots"], "i_max": [[5.0, float("nan")], [5.0, 6.0]]}):
        table_file.write_text(json.dumps({"sets": {"wide": bad}}))
        with pytest.raises(ValueError, match="is not a table"):
            gain_sets.table("wide")
    table_file.write_text(json.dumps({"sets": {"wide": good}}))
    assert gain_sets.limit("wide", 1, 1.5) == (1.0, 2.0, 5.5)
