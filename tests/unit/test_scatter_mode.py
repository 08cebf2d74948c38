"""The transceiver mode's safety gate (controller/modes/scatter/policy.py `Designer`): a decision outside the arm
limits, at a used angle, with a frequency outside the set, or that failed (NaN logits) falls back to the uniform
design with the frequency cycling, with the GRU state restored; and the [scatter] config's checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from controller.modes.scatter import spec
from controller.modes.scatter.config import ScatterConfig
from controller.modes.scatter.policy import Designer, TransceiverPolicy
from controller.modes.scatter.session import ScanResult, catch_up, observation
from controller.policy.manifest import StateSpec
from learner.scatter.export import edge_episode, export_transceiver_policy, parity_observations
from scatter_policy import TinyTransceiverNet, disk


class Recurrent:
    """A stand-in policy: only its state matters to the gate."""

    def __init__(self) -> None:
        self.h = np.zeros(3)


def test_the_uniform_design_spans_the_allowed_angles_and_frequencies_cycle() -> None:
    d = Designer(range(360))
    assert d.uniform == list(range(0, 360, 36))
    used: list[int] = []
    for t in range(spec.BUDGET):
        angle, f = d.fallback(used)
        assert (angle, f) == (36 * t, t % 4)
        used.append(angle)
    assert Designer(range(20, 120)).uniform == [20, 30, 40, 50, 60, 70, 80, 90, 100, 110]
    assert d.fallback([0, 36, 72]) == (108, 3) and d.fallback([108, 0]) == (72, 2)  # the next unused one
    assert Designer(range(10, 20)).fallback(list(range(10, 19))) == (19, 1)


@pytest.mark.parametrize("decision, reason", [((25, 1), "out_of_limits"), ((300, 0), "out_of_limits"),
                                              ((40, 2), "used"), ((50, 4), "bad_frequency"),
                                              ((50, -1), "bad_frequency"), (None, "failed")])
def test_a_refused_decision_falls_back_and_keeps_the_state_it_advanced(decision, reason) -> None:
    d, policy = Designer(range(30, 231)), Recurrent()
    policy.h += 1.0  # what the decision did to the state: the policy saw this observation, as in training
    choice = d.resolve(policy, decision, [40, 30])
    assert (choice.source, choice.reason) == ("fallback", reason) and np.all(policy.h == 1.0)
    assert choice.angle not in (40, 30) and 30 <= choice.angle <= 230 and choice.frequency == 2


def test_an_allowed_decision_is_taken_and_no_policy_means_the_uniform_design() -> None:
    d, policy = Designer(range(360)), Recurrent()
    policy.h += 1.0
    choice = d.resolve(policy, (359, 3), [0])
    assert (choice.angle, choice.frequency, choice.source, choice.reason) == (359, 3, "policy", None)
    assert policy.h[0] == 1.0  # kept
    assert d.resolve(None, None, [0]) == d.resolve(None, None, [0]).__class__(36, 1, "fallback", "no_policy")


def test_nan_logits_are_a_failed_decision_with_the_state_kept(tmp_path) -> None:
    net = TinyTransceiverNet(bias=float("nan"))
    torch.onnx.export(net, (torch.zeros(1, spec.obs_size()), torch.zeros(1, spec.LAYERS, 8)), tmp_path / "m.onnx",
                      input_names=[spec.OBS, spec.HIDDEN],
                      output_names=[spec.ANGLE_LOGITS, spec.FREQUENCY_LOGITS, spec.HIDDEN_NEXT], dynamo=False)
    policy = TransceiverPolicy(tmp_path / "m.onnx", StateSpec(name=spec.HIDDEN, shape=(spec.LAYERS, 8), initial=0.0,
                                                                next=spec.HIDDEN_NEXT))
    obs = parity_observations(np.random.default_rng(0), 3)
    before = policy.state()
    assert policy.decide(obs[2]) is None and policy.faults == 1 and np.array_equal(policy.state(), before)
    choice = Designer(range(360)).resolve(policy, None, [5, 6])
    assert (choice.source, choice.reason) == ("fallback", "failed")


@pytest.mark.parametrize("bad", [dict(order=4), dict(n=1), dict(min_deg=100.0, max_deg=105.0), dict(max_deg=360.0),
                                 dict(lam=-1.0), dict(iterations=0), dict(poll_s=0.0)])
def test_config_refuses_bad_settings(bad) -> None:
    with pytest.raises(ValueError):
        ScatterConfig(**bad)


def test_the_first_observation_is_the_empty_one_without_a_warning() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0/0 data scale before the first row
        obs = observation(ScanResult(), 32)
    want = np.zeros(spec.obs_size(), np.float32)
    want[-1] = 1.0  # the whole budget left
    np.testing.assert_array_equal(obs, want)


def test_a_policy_swapped_in_mid_scan_catches_up_on_the_scan_so_far(tmp_path) -> None:
    export_transceiver_policy(TinyTransceiverNet(seed=2), tmp_path / "a", hidden_size=8, training_run="tiny")
    whole = edge_episode(TransceiverPolicy.from_artifact(tmp_path / "a"), disk(16), order=2)
    assert all(c.source == "policy" for c in whole.choices)
    joined = TransceiverPolicy.from_artifact(tmp_path / "a")  # the same policy, pushed before step 4
    joined.decide(np.ones(spec.obs_size(), np.float32))  # whatever state it held before
    partial = ScanResult(angles=whole.angles[:4], frequencies=whole.frequencies[:4], rows=whole.rows[:4])
    catch_up(joined, partial, 16)
    assert joined.decide(observation(partial, 16)) == (whole.angles[4], whole.frequencies[4])
