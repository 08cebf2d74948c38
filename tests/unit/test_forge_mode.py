"""The forge tick mode (controller/modes/bal/forge.py) in process: the force gate, the fallbacks (no policy, a
policy that gives NaN) with the filter running on, a lost reply, reproducible episodes, the [forge] config."""
from __future__ import annotations

import numpy as np
import pytest

from controller.config import ConfigError, parse_config
from controller.modes.bal.config import ForgeConfig
from controller.modes.bal.forge import ForceGate, ForgeMode, ForgePolicy
from controller.modes.bal.problem import load_problem
from controller.protocol import bal
from forge_policy import goal_table
from learner.bal.export import edge_episode, policy_graph
from learner.bal.table import PolicyTable

PROBLEM = load_problem("forge")
CFG = ForgeConfig(particles=300)


def _policy(table: PolicyTable) -> ForgePolicy:
    return ForgePolicy(policy_graph(table).SerializeToString(), 2)


def test_the_gate_clamps_the_magnitude_zeroes_outside_the_box_and_counts() -> None:
    gate = ForceGate(8.0, np.zeros(2), np.full(2, 10.0))
    gate.position[:] = (5.0, 5.0)
    np.testing.assert_allclose(gate(np.array([30.0, 40.0])), [4.8, 6.4])  # along its direction, |u| = 8
    assert gate.clamped == 1
    np.testing.assert_array_equal(gate(np.array([3.0, 4.0])), [3.0, 4.0])
    gate(np.array([8.0 * (1 + 1e-7), 0.0]))  # float32 rounding of the graph's projection: scaled, not counted
    assert gate.clamped == 1 and float(np.float32(gate.f_max)) <= 8.0
    np.testing.assert_array_equal(gate(np.array([np.nan, 1.0])), [0.0, 0.0])
    gate.position[:] = (10.5, 5.0)
    np.testing.assert_array_equal(gate(np.array([1.0, 1.0])), [0.0, 0.0])
    assert (gate.clamped, gate.non_finite, gate.outside) == (1, 1, 1)
    odd = ForceGate(0.1, np.zeros(2), np.ones(2))  # 0.1 is not a float32: the limit is the float32 below it
    assert odd.f_max < 0.1 and bal.force_command(np.array([odd.f_max, 0.0])).magnitude <= 0.1


def test_an_episode_is_reproducible_and_the_filter_learns_the_depths() -> None:
    policy = _policy(goal_table(PROBLEM))
    a, b = edge_episode(PROBLEM, CFG, policy, seed=3).last, edge_episode(PROBLEM, CFG, policy, seed=3).last
    assert a.stopped_by == "steps" and len(a.commands) == PROBLEM.steps and len(a.positions) == PROBLEM.steps + 1
    assert (a.positions, a.theta_hat, a.commands) == (b.positions, b.theta_hat, b.commands)
    assert set(a.sources) == {"policy"} and len(a.filter_ns) == PROBLEM.steps
    err_prior = np.abs(PROBLEM.prior_mean - PROBLEM.theta_true)
    assert np.all(np.abs(np.array(a.theta_hat[-1]) - PROBLEM.theta_true) < err_prior)
    other = edge_episode(PROBLEM, ForgeConfig(particles=300, filter_seed=1), policy, seed=3).last
    assert other.theta_hat != a.theta_hat


def test_without_a_policy_the_force_is_zero_and_the_filter_runs_on() -> None:
    mode = edge_episode(PROBLEM, CFG, None, seed=0)
    ep = mode.last
    assert ep.stopped_by == "steps" and set(ep.sources) == {"no_policy"} and mode.fallbacks == {"no_policy": 50}
    assert np.all(np.array(ep.commands) == 0.0)
    assert len(ep.filter_ns) == PROBLEM.steps and ep.theta_hat[-1] != ep.theta_hat[0]


def test_a_nan_policy_falls_back_for_each_decision() -> None:
    t = goal_table(PROBLEM)
    nan = PolicyTable(t.theta_axes, t.low, t.high, t.u.copy(), t.u_max)
    nan.u[..., 2:, :] = np.nan  # a corrupted graph (the table refuses NaN at construction; a graph can carry it)
    policy = _policy(nan)  # NaN on the grid's upper rows: the atom's first steps (x ≈ 1.25) still decide
    mode = edge_episode(PROBLEM, CFG, policy, seed=0)
    ep = mode.last
    assert "policy" in ep.sources and "failed" in ep.sources and policy.faults == ep.sources.count("failed")
    assert mode.fallbacks["failed"] == policy.faults
    assert all(c == [0.0, 0.0] for c, s in zip(ep.commands, ep.sources) if s == "failed")
    assert mode.gate.non_finite == 0  # the fallback is decided before the gate


def test_a_lost_reply_stops_the_episode_and_is_recorded() -> None:
    events: list[tuple[str, dict]] = []
    mode = ForgeMode(PROBLEM, CFG, lambda n, x, th: (np.zeros(2), None), lambda k, d: events.append((k, d)),
                     reply_timeout_ticks=3)
    mode.start_episode()
    assert isinstance(mode.outgoing(mode.safe()), bal.StartEpisode)
    for _ in range(3):
        assert mode.outgoing(mode.safe()) is None and mode.busy
    mode.safe()
    assert not mode.busy and mode.last.stopped_by == "lost_reply"
    assert events[0][0] == "episode" and events[0][1]["stopped_by"] == "lost_reply"
    mode.start_episode()
    with pytest.raises(RuntimeError, match="running"):
        mode.start_episode()


def test_the_forge_config_section() -> None:
    cfg = parse_config({"loop": {"mode": "forge", "pacing": "timer", "rate_hz": 100.0},
                        "forge": {"particles": 500, "x0": [2.0, 3.0]}})
    assert cfg.forge.particles == 500 and cfg.forge.x0 == (2.0, 3.0)
    for bad in ({"particles": -1}, {"x0": [1.0]}, {"reply_timeout_s": 0.0}, {"unknown": 1}):
        with pytest.raises(ConfigError, match="forge"):
            parse_config({"forge": bad})


def test_a_reading_without_a_position_neither_moves_the_filter_nor_reaches_the_policy() -> None:
    """The camera's centroid is NaN when the spot drowns in noise: the filter skips the two steps that touch that
    reading (a NaN likelihood would collapse its particles onto one), the policy is not asked (a NaN position
    makes the table graph fail, and failures quarantine the policy), the force is the zero fallback."""
    asked: list[int] = []
    mode = ForgeMode(PROBLEM, CFG, lambda n, x, th: (asked.append(n), (np.ones(2), None))[1])
    mode.start_episode()
    assert isinstance(mode.outgoing(mode.safe()), bal.StartEpisode)

    def step(n: int, x: tuple[float, float]) -> np.ndarray:
        u = mode.gate(mode.update(np.array(mode.reading(bal.Position(n, 0, *x, 1.0, 1.0, True))), 0.0))
        mode.commanded(u, 0.0)
        assert isinstance(mode.outgoing(u), bal.Force)
        return u

    step(0, (1.25, 0.25))
    std = mode.filter.std()
    np.testing.assert_array_equal(step(1, (np.nan, np.nan)), [0.0, 0.0])
    step(2, (1.3, 0.3))
    np.testing.assert_array_equal(mode.filter.std(), std)  # steps 0 → 1 and 1 → 2 skipped
    step(3, (1.35, 0.35))
    assert np.all(mode.filter.std() > 0.1) and mode.filter.updates == 1
    assert asked == [0, 2, 3] and mode.episode.sources == ["policy", "no_reading", "policy", "policy"]
    assert mode.fallbacks == {"no_reading": 1}


def test_an_operator_hold_cancels_an_episode_whose_start_has_not_gone_out() -> None:
    """The hold may come between the `episode` op and the tick that sends StartEpisode (which moves the atom):
    under the hold nothing goes out and the episode is over."""
    from types import SimpleNamespace

    from controller.modes.bal.forge import EdgeForge

    cfg = parse_config({"loop": {"mode": "forge", "pacing": "timer", "rate_hz": 100.0}, "forge": {"particles": 300}})
    host = SimpleNamespace(cfg=cfg, record=lambda kind, details: None, held=False)
    mode = EdgeForge(host)
    mode.start_episode()
    host.held = True
    assert mode.outgoing(mode.safe()) is None
    assert not mode.busy and mode.last.stopped_by == "held"
