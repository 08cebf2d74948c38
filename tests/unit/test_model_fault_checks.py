"""hil/faults/model.handled: what counts as the edge doing what it must after a model request."""
from __future__ import annotations

from hil.faults.model import handled


def _bad_push(**changes: object) -> dict[str, object]:
    rec = {"model": "corrupt", "version": "v2", "accepted": False, "reason": "corrupt", "expect": "corrupt",
           "detail": "", "active_before": "v1", "previous_before": None, "active_after": "v1",
           "previous_after": None, "quarantined_during": []}
    return {**rec, **changes}


def test_refused_bad_push_keeping_the_policy_is_handled() -> None:
    assert handled(_bad_push()) == ""


def test_bad_push_that_changes_the_active_policy_is_not_handled() -> None:
    assert "active policy changed" in handled(_bad_push(active_after=None))


def test_run_time_quarantine_during_the_request_is_not_blamed_on_it() -> None:
    assert handled(_bad_push(active_after=None, quarantined_during=["v1"])) == ""


def test_accepted_bad_push_is_never_excused_by_a_quarantine() -> None:
    assert "accepted" in handled(_bad_push(accepted=True, reason=None, quarantined_during=["v1"]))


def test_good_push_must_be_accepted_even_with_a_quarantine() -> None:
    good = _bad_push(model="good", expect=None, accepted=False, reason="too_slow", quarantined_during=["v1"])
    assert handled(good) != ""
