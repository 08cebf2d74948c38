"""An exported CT angle policy as a bluesky-adaptive 1.x optimizer: a Bluesky plan asks it for the next angle and
tells it each projection, so the policy drives the beamline's own rotation stage and detector.

bluesky-adaptive 1.0 has no ask/tell Agent base class any more: a plan (``bluesky_adaptive.plans.optimize``)
runs an `OptimizationProblem` of an optimizer (``suggest`` = ask, ``ingest`` = tell, and ``should_stop`` for the
stopping criterion), the actuators, the sensors and an evaluation function that turns an acquisition run into
outcomes. `AngleAgent` is the optimizer: it runs the policy the way the edge's angles mode does (the same
`AnglePolicy` greedy call, the same `AngleTrajectory`: acquired mask, golden-ratio fallback when a decision fails,
warm-started SIRT x̂ from the projections at their measured angles), so on the same sample it picks the same
angles as the daemon's own scan. It suggests one angle at a time; the angle chosen with the stop decision is still
acquired, then ``should_stop`` ends the plan (as the edge: d_T = 1 ends the trajectory after θ_T); `max_angles`
caps the scan. `Projections` is the evaluation function: a RunEngine subscriber that keeps each acquisition run's
events in memory (on a beamline the same could read them back from Tiled).

    agent = AngleAgent(AnglePolicy.from_artifact("policy/", size=63), AnglesConfig(), dof=stage.name)
    projections = Projections(detector)
    RE.subscribe(projections)
    RE(optimize(agent.problem(stage, detector, projections), iterations=None))
    agent.angles, agent.image  # the angles in acquisition order, the reconstruction
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from bluesky_adaptive.protocols import ID_KEY, OptimizationProblem

from controller.modes.ct.angles import AngleTrajectory
from controller.modes.ct.config import AnglesConfig
from controller.policy.runtime import AnglePolicy

log = logging.getLogger(__name__)


class AngleAgent:
    """bluesky-adaptive's Optimizer and SupportsStoppingCriteria over an angle policy (None: golden ratio).
    Suggestions are ``{"_id": k, dof: angle}``; outcomes must carry ``"projection"`` (size bins) and may carry
    ``"angle_deg"``, the encoder angle it was measured at (default: the suggested angle)."""

    def __init__(self, policy: AnglePolicy | None, config: AnglesConfig = AnglesConfig(), dof: str = "stage") -> None:
        self.policy, self.cfg, self.dof = policy, config, dof
        self.trajectory = AngleTrajectory(config)
        self.reset()

    def reset(self) -> None:
        """A new scan: nothing acquired, x̂ = 0, the policy's state at its start."""
        self.trajectory.reset()
        self.image = self.trajectory.empty()
        self.angles: list[float] = []
        self.projections: list[np.ndarray] = []
        self.policy_faults = 0
        self._pending: tuple[int, float, bool] | None = None  # the suggested step: (id, angle, stop after it)
        self._stopped: str | None = None
        if self.policy is not None:
            self.policy.reset()

    def suggest(self, num_points: int | None = None) -> Sequence[Mapping]:
        if (num_points or 1) != 1:
            raise ValueError("the angle policy decides one angle at a time (n_points=1)")
        if self._pending is not None:
            raise RuntimeError(f"angle {self._pending[0]} was suggested and not yet ingested")
        if self._stopped is not None:
            raise RuntimeError(f"the scan has stopped ({self._stopped}); reset() for a new one")
        angle, stop = self.trajectory.angle(self._decide())
        k = len(self.angles)
        self._pending = (k, angle, stop or k + 1 == self.cfg.max_angles)
        return [{ID_KEY: k, self.dof: angle}]

    def _decide(self) -> tuple[int, bool] | None:
        """The policy's greedy (grid index, stop), or None (golden ratio) without one or when it failed."""
        if self.policy is None:
            return None
        try:
            decision = self.policy.decide(self.image, self.trajectory.acquired)
        except Exception as e:  # onnxruntime's run-time errors: the edge falls back the same way
            log.warning("angle policy %s failed, golden-ratio angle instead: %r", self.policy.version, e)
            decision = None
        self.policy_faults += decision is None
        return decision

    def ingest(self, points: Sequence[Mapping]) -> None:
        for point in points:
            if self._pending is None or point.get(ID_KEY) != self._pending[0]:
                raise ValueError(f"outcome {point.get(ID_KEY)!r} does not answer the suggested angle "
                                 f"{None if self._pending is None else self._pending[0]}")
            k, angle, stop = self._pending
            projection = np.asarray(point["projection"], np.float32).ravel()
            if projection.shape != (self.cfg.size,):
                raise ValueError(f"projection has {projection.size} bins, the policy reconstructs {self.cfg.size}")
            self.trajectory.add(angle, float(point.get("angle_deg", angle)))
            self.angles.append(angle)
            self.projections.append(projection)
            self.image = self.trajectory.reconstruction(np.stack(self.projections), self.image)
            self._pending = None
            if stop:
                self._stopped = "max_angles" if k + 1 == self.cfg.max_angles else "policy"

    def should_stop(self) -> tuple[bool, str | None]:
        return self._stopped is not None, self._stopped

    def get_best_points(self) -> Sequence[tuple[Any, Mapping, Mapping]]:
        """The last angle acquired (a scan has no best point: its result is the reconstruction, ``image``)."""
        if not self.angles:
            return []
        k = len(self.angles) - 1
        return [(k, {self.dof: self.angles[k]}, {"n_angles": len(self.angles)})]

    def problem(self, stage: Any, detector: Any, evaluation: Projections) -> OptimizationProblem:
        """The optimization problem for ``bluesky_adaptive.plans.optimize``: this agent moving ``stage`` (named
        `dof`) and reading ``detector``, each point evaluated by ``evaluation``."""
        if stage.name != self.dof:
            raise ValueError(f"the stage is named {stage.name!r}, the agent suggests {self.dof!r}")
        return OptimizationProblem(optimizer=self, actuators=[stage], sensors=[detector],
                                   evaluation_function=evaluation.evaluate)


class Projections:
    """The evaluation function (``evaluate``) over the runs a RunEngine emits (subscribe this object): each
    acquisition run's events give its suggestions' outcomes, in the run's acquisition order, with the detector's
    ``<name>-projection`` and ``<name>-angle`` as ``projection`` and ``angle_deg``. Only the acquisition runs (a
    start document with `blop_acquisition_order`) are kept, each until it is evaluated or ends unsuccessfully
    (it is never evaluated then): other plans on the same RunEngine leave nothing here."""

    def __init__(self, detector: Any) -> None:
        self.keys = {"projection": f"{detector.name}-projection", "angle_deg": f"{detector.name}-angle"}
        self._order: dict[str, list[Any]] = {}  # run uid -> suggestion ids in acquisition order
        self._events: dict[str, list[dict]] = {}  # run uid -> event data
        self._run_of: dict[str, str] = {}  # descriptor uid -> run uid

    def __call__(self, name: str, doc: dict) -> None:
        if name == "start" and "blop_acquisition_order" in doc:
            self._order[doc["uid"]] = list(doc["blop_acquisition_order"])
            self._events[doc["uid"]] = []
        elif name == "descriptor" and doc["run_start"] in self._order:
            self._run_of[doc["uid"]] = doc["run_start"]
        elif name == "event" and doc["descriptor"] in self._run_of:
            self._events[self._run_of[doc["descriptor"]]].append(doc["data"])
        elif name == "stop":  # every event of the run has come
            run = doc["run_start"]
            self._run_of = {d: r for d, r in self._run_of.items() if r != run}
            if doc.get("exit_status") != "success":
                self._order.pop(run, None)
                self._events.pop(run, None)

    def evaluate(self, uid: str, suggestions: Sequence[Mapping]) -> Sequence[Mapping]:
        order, events = self._order.pop(uid, None), self._events.pop(uid, [])
        if order is None or len(events) != len(order):
            raise ValueError(f"run {uid} has {len(events)} events for {len(order or [])} suggestions "
                             "(is this object subscribed to the RunEngine?)")
        return [{ID_KEY: sid, **{out: data[key] for out, key in self.keys.items()}} for sid, data in zip(order, events)]
