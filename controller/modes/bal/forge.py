"""The `forge` tick mode: the atom forge driven by BAL's feedback table on the edge, with the direct filter
estimating the atoms' well depths θ online (issue #23; protocol controller/protocol/bal.py, contract spec.py).

An operator starts an episode with the push op ``episode`` (``PushClient.send(client.frame("episode"))``): at
the next tick the edge sends StartEpisode(x0) (the config's x0, else the problem's) and the reply of every command
is the next tick's reading. Each tick of a running episode, on the reading of step n (the Position read back):
  1. the direct filter (controller/modes/bal/filter.py, Eq. 21–23) takes the step n − 1 → n: (x_{n−1}, the force
     the device applied (echoed in the reading), x_n); its time is measured (``filter_us``); a reading without a
     position (NaN: the camera lost the spot) skips the two steps that touch it and gets the fallback (step 3);
  2. after N steps, or once the atom has left the position box, the episode ends;
  3. the policy (ONNX, spec.py) maps (n, x_n, θ̂) to a force vector; no policy, or a failed decision (raised,
     over budget, non-finite) gives the safe fallback, zero force (counted by reason, logged by the slot);
  4. the daemon passes it through the `ForceGate` (|u| ≤ F_max, scaled along its direction; zero outside the
     position box; zero for a non-finite one; each counted) and the mode sends it as Force(F, φ).
A reading that is not the one expected (a repeat while the reply is on its way) leaves the tick idle; no reply
within ``reply_timeout_s`` or an operator hold stop the episode (lockstep cannot step back). The
filter keeps its particles from one episode to the next (θ̂ improves over episodes). Each episode is recorded as
one "episode" event (positions, θ̂ and commands per step, who decided, the gate's and filter's numbers), which is
also the op's reply. The recorder's six per-tick mode columns hold θ̂ (NaN padded) and the target is the goal.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from controller.config import EdgeConfig
from controller.driver import SerialDriver
from controller.link.push_wire import PushHeader
from controller.modes.bal import spec
from controller.modes.bal.config import ForgeConfig
from controller.modes.bal.filter import DirectFilter
from controller.modes.bal.problem import Problem, load_problem
from controller.modes.base import ModeHost, ModeSpec, PushOp, TickMode
from controller.modes.registry import register
from controller.policy.runtime import DecisionPolicy, PolicyRejected, PolicySession, check_graph_io, load_for_task, open_session
from controller.policy.slot import PolicySlot, PolicySpec
from controller.protocol import bal
from controller.protocol.framing import Message

log = logging.getLogger(__name__)
CLAMP_SLACK = 1e-5  # relative: a force this little over F_max (float32 rounding of the graph) is not counted


class ForgePolicy(DecisionPolicy):
    """The forge policy: (n, x, θ̂) → force vector, on preallocated buffers."""

    def __init__(self, model: str | Path | bytes, theta_dim: int) -> None:
        session = open_session(model)
        check_graph_io(session, spec.inputs(theta_dim), spec.outputs())
        self.binding = PolicySession(session, spec.inputs(theta_dim), spec.outputs())
        self.theta_dim = theta_dim
        self._step, self._x = self.binding.inputs[spec.STEP], self.binding.inputs[spec.POSITION]
        self._theta, self._force = self.binding.inputs[spec.THETA], self.binding.outputs[spec.FORCE]
        super().__init__()

    @classmethod
    def from_artifact(cls, directory: str | Path, theta_dim: int) -> ForgePolicy:
        """Load an artifact: manifest and sha256, task, the named tensors for P = ``theta_dim``, the graph's I/O,
        finite forces on two probes (step 0 at the origin with θ̂ = 1; step 10 at (5, 5) with θ̂ = 2)."""
        manifest, model = load_for_task(Path(directory), spec.TASK)
        ins = {t.name: t.shape for t in manifest.inputs}
        outs = {t.name: t.shape for t in manifest.outputs}
        if ins != spec.inputs(theta_dim) or outs != spec.outputs() or manifest.state:
            raise PolicyRejected("wrong_shape", f"manifest says inputs {ins} outputs {outs} and {len(manifest.state)} "
                                                f"states; this mode takes inputs {spec.inputs(theta_dim)} outputs "
                                                f"{spec.outputs()} and no state")
        policy = cls(model, theta_dim)
        policy.manifest, policy.path = manifest, Path(directory)
        policy.probe(policy.decide, [(0, np.zeros(2), np.ones(theta_dim)), (10, np.full(2, 5.0), np.full(theta_dim, 2.0))],
                     PolicyRejected, "forge policy")
        return policy

    def decide(self, n: int, x: np.ndarray, theta: np.ndarray, run_options: ort.RunOptions | None = None) -> np.ndarray | None:
        """The force vector (2,) (a copy), or None (counted in ``faults``) when it is not finite."""
        self._step[0, 0], self._x[0], self._theta[0] = n, x, theta
        self.binding.step(run_options)
        u = self._force[0].astype(np.float64)
        if not np.isfinite(u).all():
            self.faults += 1
            return None
        return u


class ForceGate:
    """The forge's safety gate (the daemon applies it just before the write): a non-finite force → zero
    (``non_finite``); the atom outside the position box → zero (``outside``); |u| > F_max → scaled back along its
    direction (``clamped``). F_max is taken as the largest float32 not above it, so that the wire's float32
    magnitude never exceeds the device's limit."""

    def __init__(self, f_max: float, low: np.ndarray, high: np.ndarray) -> None:
        lim = np.float32(f_max)
        self.f_max = float(lim) if float(lim) <= f_max else float(np.nextafter(lim, np.float32(0)))
        self.low, self.high = np.asarray(low, float), np.asarray(high, float)
        self.safe = np.zeros(2)
        self.position = np.full(2, np.nan)  # the atom's latest reading (set by the mode before it decides)
        self.clamped = self.non_finite = self.outside = 0
        self._out = np.zeros(2)

    def __call__(self, u: np.ndarray) -> np.ndarray:
        out = self._out
        if not np.isfinite(u).all():
            self.non_finite += 1
            out[:] = self.safe
        elif not (np.all(self.position >= self.low) and np.all(self.position <= self.high)):
            self.outside += 1
            out[:] = self.safe
        else:
            norm = math.hypot(float(u[0]), float(u[1]))
            out[:] = u
            if norm > self.f_max:
                out *= self.f_max / norm
                self.clamped += norm > self.f_max * (1.0 + CLAMP_SLACK)
        return out


Decide = Callable[[int, np.ndarray, np.ndarray], tuple[np.ndarray | None, str | None]]  # (u, fallback reason)


@dataclass
class Episode:
    """One episode's record: readings x_0 … x_n, θ̂ before each decision, the gated commands, who decided."""

    index: int
    x0: tuple[float, float]
    positions: list[list[float]] = field(default_factory=list)
    theta_hat: list[list[float]] = field(default_factory=list)
    theta_std: list[list[float]] = field(default_factory=list)
    commands: list[list[float]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # "policy" or the fallback's reason
    filter_ns: list[int] = field(default_factory=list)
    stopped_by: str | None = None


class ForgeMode(TickMode):
    """The forge's tick logic (module doc), the same object on the edge (``decide``: the slot's policy under its
    guard) and in process (learner/bal/export.py `edge_episode`)."""

    def __init__(self, problem: Problem, cfg: ForgeConfig, decide: Decide,
                 record: Callable[[str, dict[str, Any]], None] = lambda kind, details: None,
                 reply_timeout_ticks: int = 10) -> None:
        self.problem, self.cfg, self.decide, self.record = problem, cfg, decide, record
        self.filter = DirectFilter.for_problem(problem, seed=cfg.filter_seed, particles=cfg.particles or None,
                                               position_std=cfg.position_std)
        self.gate = ForceGate(problem.u_max, problem.domain_low, problem.domain_high)
        self.x0 = np.asarray(problem.x0 if cfg.x0 is None else cfg.x0, float)
        self.target = np.asarray(problem.goal if problem.goal is not None else np.full(2, np.nan), float)
        self.reply_timeout_ticks = reply_timeout_ticks
        self.episode: Episode | None = None  # the running one (or the one whose start was asked for)
        self.last: Episode | None = None  # the latest finished one
        self.episodes = 0
        self._pending = False  # StartEpisode goes out with the next write
        self._expect = -1  # the step of the reading awaited (-1: none)
        self._waited = 0  # ticks since the command whose reply is awaited
        self._send = False  # this tick's command goes out
        self._frame: bal.Position | None = None
        self._prev = np.full(2, np.nan)  # the previous step's reading
        self._done: asyncio.Future[Episode] | None = None
        self.fallbacks: Counter[str] = Counter()

    # -- episodes ------------------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self.episode is not None

    def start_episode(self) -> Episode:
        """Ask for an episode: StartEpisode(x0) goes out with the next write."""
        if self.busy:
            raise RuntimeError("an episode is running")
        self.episode = Episode(self.episodes, (float(self.x0[0]), float(self.x0[1])))
        self._pending, self._expect, self._waited = True, 0, 0
        return self.episode

    def _finish(self, why: str) -> None:
        ep = self.episode
        assert ep is not None
        ep.stopped_by, self.episode, self.last, self._expect, self._pending = why, None, ep, -1, False
        self.episodes += 1
        summary = self.summary(ep)
        self.record("episode", summary)
        if why not in ("steps", "left_box"):
            log.warning("forge episode %d stopped after %d steps: %s", ep.index, len(ep.commands), why)
        if self._done is not None and not self._done.done():
            self._done.set_result(ep)

    def summary(self, ep: Episode) -> dict[str, Any]:
        f = np.asarray(ep.filter_ns, float) / 1e3
        last = np.asarray(ep.positions[-1]) if ep.positions else np.full(2, np.nan)
        return {"episode": ep.index, "steps": len(ep.commands), "stopped_by": ep.stopped_by, "x0": list(ep.x0),
                "positions": ep.positions, "theta_hat": ep.theta_hat, "theta_std": ep.theta_std,
                "commands": ep.commands, "sources": ep.sources,
                "final_distance": float(np.linalg.norm(last - self.target)),
                "filter_us": {"p50": float(np.percentile(f, 50)), "p99": float(np.percentile(f, 99)),
                              "max": float(f.max())} if f.size else None,
                "gate": {"clamped": self.gate.clamped, "non_finite": self.gate.non_finite,
                         "outside": self.gate.outside}}

    # -- the tick (the daemon's order: reading → update → gate → commanded → write; safe() instead when stale) --

    def reading(self, frame: Any) -> tuple[float, float]:
        self._frame = frame if isinstance(frame, bal.Position) else None
        return (frame.x, frame.y) if self._frame is not None else (math.nan, math.nan)

    def update(self, reading: np.ndarray, t_s: float) -> np.ndarray:
        self._send = False
        ep, frame = self.episode, self._frame
        if ep is None or self._pending or frame is None or frame.step != self._expect:
            self._wait()
            return self.gate.safe
        self._frame, self._waited = None, 0
        x, force = np.array(reading, float), np.array([frame.fx, frame.fy])
        seen = bool(np.isfinite(x).all())  # NaN: the camera lost the spot
        if frame.step > 0 and seen and np.isfinite(self._prev).all() and np.isfinite(force).all():
            t0 = time.perf_counter_ns()
            self.filter.update(self._prev, force, x)  # Eq. 21–23
            ep.filter_ns.append(time.perf_counter_ns() - t0)
        ep.positions.append(x.tolist())
        self._prev = x
        if frame.step >= self.problem.steps or not frame.in_box:
            self._finish("steps" if frame.in_box else "left_box")
            return self.gate.safe
        theta = self.filter.estimate()
        ep.theta_hat.append(theta.tolist())
        ep.theta_std.append(self.filter.std().tolist())
        u, reason = self.decide(frame.step, x, theta) if seen else (None, "no_reading")
        if u is None:
            self.fallbacks[reason or "failed"] += 1
            u = self.gate.safe
        ep.sources.append("policy" if reason is None else reason)
        self.gate.position[:] = x
        self._send, self._expect = True, frame.step + 1
        return u

    def _wait(self) -> None:
        """A tick without the awaited reading: the episode stops when its reply is overdue."""
        if self.episode is not None and not self._pending:
            self._waited += 1
            if self._waited > self.reply_timeout_ticks:
                self._finish("lost_reply")

    def commanded(self, command: np.ndarray, t_s: float) -> None:
        if self._send and self.episode is not None:
            self.episode.commands.append(command.tolist())

    def safe(self) -> np.ndarray:
        """No fresh reading (the reply may still come: the episode stops once it is overdue)."""
        self._send = False
        self._wait()
        return self.gate.safe

    def outgoing(self, command: np.ndarray) -> Message | None:
        """What this tick sends: StartEpisode for an episode asked for, the gated force of a decision, or nothing."""
        if self._pending:
            self._pending = False
            return bal.StartEpisode(float(self.x0[0]), float(self.x0[1]))
        if self._send:
            self._send = False
            return bal.force_command(command)
        return None

    def write(self, driver: SerialDriver, command: np.ndarray) -> None:
        if (msg := self.outgoing(command)) is not None:
            driver.send(msg)

    @property
    def gains(self) -> np.ndarray:
        """The recorder's six per-tick mode columns: θ̂, NaN padded."""
        out = np.full(6, np.nan)
        theta = self.filter.estimate()[:6]
        out[:len(theta)] = theta
        return out.reshape(2, 3)

    def gauges(self) -> dict[str, Any]:
        return {}


class EdgeForge(ForgeMode):
    """The forge mode in the daemon: the slot's policy under its guard, and the ``episode`` push op."""

    def __init__(self, host: ModeHost) -> None:
        cfg = host.cfg
        if cfg.loop.pacing != "timer":
            raise ValueError('the forge mode answers commands and does not stream: set [loop] pacing = "timer"')
        self.host = host
        problem = load_problem(cfg.forge.problem)
        super().__init__(problem, cfg.forge, self._decide, host.record,
                         reply_timeout_ticks=max(1, math.ceil(cfg.forge.reply_timeout_s * cfg.loop.rate_hz)))

    def _decide(self, n: int, x: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray | None, str | None]:
        slot = self.host.slot
        assert slot is not None
        policy = slot.active
        if policy is None:
            return None, "no_policy"
        u, failure, detail = slot.guarded(policy.decide, n, x, theta)
        if failure is None and u is None:
            failure, detail = "non_finite_output", "the force is not finite"
        if failure is not None:
            slot.settle(policy, failure, detail)
            return None, "failed"
        return u, None

    def safe(self) -> np.ndarray:
        """Under an operator hold a running episode stops at once (lockstep cannot resume it), and one whose
        StartEpisode has not gone out yet never starts."""
        if self.host.held and self.episode is not None:
            self._finish("held")
        return super().safe()

    def ops(self) -> dict[str, PushOp]:
        return {"episode": self._episode_op}

    def status(self) -> dict[str, Any]:
        return {"device_up": self.host.driver.connected, "episode_running": self.busy, "episodes": self.episodes,
                "fallbacks": dict(self.fallbacks), "theta_hat": self.filter.estimate().tolist()}

    async def _check_device(self) -> None:
        """The device's Δt, force limit and position box must be the problem's (float32 on the wire), or the filter
        would weigh the wrong dynamics and the gate guard the wrong box: ValueError naming the difference."""
        info = await self.host.driver.query(bal.InfoRequest(), bal.Info, self.cfg.reply_timeout_s * 5)
        p = self.problem
        mine = {"dt": p.dt, "f_max": p.u_max, "box": (*p.domain_low, *p.domain_high)}
        theirs = {"dt": info.dt, "f_max": info.f_max, "box": (info.x_low, info.y_low, info.x_high, info.y_high)}
        for key, value in mine.items():
            if not np.allclose(np.float32(value), np.float32(theirs[key]), rtol=1e-6, atol=0.0):
                raise ValueError(f"the device's {key} is {theirs[key]}, the problem's {value}: run `edgetune sim forge` "
                                 f"(or the instrument) with the same problem as [forge] problem")

    async def _episode_op(self, header: PushHeader) -> dict[str, Any]:
        host = self.host
        if self.busy:
            return {"accepted": False, "reason": "busy", "detail": "an episode is running"}
        if host.held:
            return {"accepted": False, "reason": "held", "detail": "the operator hold is on"}
        if not host.driver.connected:
            return {"accepted": False, "reason": "device_down", "detail": f"no device on {host.cfg.device.port}"}
        try:
            await self._check_device()
        except (TimeoutError, ValueError) as exc:
            host.record("forge_device_refused", {"detail": str(exc)})
            return {"accepted": False, "reason": "device_mismatch", "detail": str(exc)}
        self._done = asyncio.get_running_loop().create_future()
        self.start_episode()
        try:
            ep = await asyncio.wait_for(asyncio.shield(self._done), self.cfg.episode_timeout_s)
        except TimeoutError:
            if self.busy:
                self._finish("timeout")
            return {"accepted": False, "reason": "timeout", "detail": f"no end within {self.cfg.episode_timeout_s} s"}
        finally:
            self._done = None
        slot = host.slot
        version = slot.active.version if slot is not None and slot.active is not None else None
        return {"accepted": True, "reason": "episode", "policy_version": version,
                "fallbacks": dict(self.fallbacks), **self.summary(ep)}


def _slot(cfg: EdgeConfig, on_request: Callable[[], None]) -> PolicySlot:
    c = cfg.forge
    p = load_problem(c.problem).model.theta_dim
    return PolicySlot(PolicySpec(spec.TASK, 2 + 1 + p, 2, 1), budget_s=c.decision_budget_s, on_request=on_request,
                      validate_timeout_s=cfg.policy.validate_timeout_s,
                      validator=partial(ForgePolicy.validated_us, budget_s=c.decision_budget_s, theta_dim=p),
                      opener=partial(ForgePolicy.opened, theta_dim=p))


SPEC = register(ModeSpec(name="forge", kind="tick", messages=bal.FORGE, build=EdgeForge, slot=_slot,
                         ops=("episode",), decision_period_s=lambda cfg: 1.0 / cfg.loop.rate_hz))
