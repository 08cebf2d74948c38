"""The mode interface: what the one daemon (controller/daemon.py) runs, and how a mode says what it needs.

Two kinds of mode:
- a *tick mode* (stabilize, rl-pid) turns each reading into a command, every tick of the daemon's scheduler:
  ``update(reading, t) -> command``; the daemon passes the command through the mode's safety gate
  (controller/safety.py) just before writing it, then tells the mode what was written (``commanded``);
  ``safe()`` is the command for a tick without a valid reading or under an operator hold;
- a *session mode* (angles; ptychography scans and transceiver rings next) runs acquisitions on request
  (push-channel ops such as ``scan`` and ``abort``) and otherwise rests; its stage moves pass the same kind
  of gate (controller/modes/acquisition.py).

A mode registers a ``ModeSpec`` (controller/modes/registry.py): its name, its kind, its serial message set,
its config section, its push ops, and factories for its safety gate, its policy slot and the mode itself.
The daemon holds no application code: it builds what the spec names and runs it.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Literal, Protocol

import numpy as np

if TYPE_CHECKING:
    from controller.config import EdgeConfig
    from controller.driver import SerialDriver
    from controller.link.push_wire import PushHeader
    from controller.policy.slot import PolicySlot
    from controller.protocol.framing import MessageSet

PushOp = Callable[["PushHeader"], Awaitable[dict[str, Any]]]


class ModeHost(Protocol):
    """What the daemon offers a mode."""

    cfg: EdgeConfig
    driver: SerialDriver
    slot: PolicySlot | None
    held: bool

    def record(self, kind: str, details: dict[str, Any] | None = None, tick: int | None = None,
               images: dict[str, Any] | None = None) -> None: ...

    def background(self, coro: Any, what: str) -> None: ...

    @property
    def wants_images(self) -> bool:
        """Whether a scan's images go anywhere (``record``'s ``images``): else a mode need not build nor keep them."""

    @property
    def session(self) -> str: ...


class TickMode(ABC):
    """A mode run every tick. ``gate``: the safety gate the daemon applies to its commands."""

    gate: Any  # controller.safety.SafetyGate (its ``safe`` is the mode's safe command)

    @abstractmethod
    def update(self, reading: np.ndarray, t_s: float) -> np.ndarray:
        """The command for this reading (before the gate; NaN readings mean lost)."""

    def commanded(self, command: np.ndarray, t_s: float) -> None:
        """The command that was written (after the gate)."""

    def reading(self, frame: Any) -> tuple[float, float]:
        """The tick's reading from the device's latest data message (MEMS: the spot [px], NaN when lost)."""
        return (math.nan, math.nan) if frame.lost else (frame.x_px, frame.y_px)

    def write(self, driver: SerialDriver, command: np.ndarray) -> None:
        """Send the gated command (MEMS: the mirror voltages)."""
        driver.write_voltages(float(command[0]), float(command[1]))

    def ops(self) -> dict[str, PushOp]:
        """Push-channel ops the mode serves (their names are the spec's ``ops``); most tick modes serve none."""
        return {}

    def status(self) -> dict[str, Any]:
        """What the ``status`` push op adds for this mode."""
        return {}

    @abstractmethod
    def safe(self) -> np.ndarray:
        """The command for a tick without a valid reading, or under an operator hold."""

    def host_message(self, msg: Any, host: ModeHost) -> bool:
        """Apply a host-link command at the tick boundary; False: not one this mode takes."""
        return False

    def link_lost(self) -> str:
        """The host link went down: fall back and say to what (recorded with the link event; "": nothing changes)."""
        return ""

    def gauges(self) -> dict[str, Any]:
        return {}

    def each_second(self, host: Any, seconds: int) -> None:
        """Housekeeping (off the tick)."""


class SessionMode(ABC):
    """A mode that runs sessions (acquisitions) on request and otherwise rests. ``gate``: the safety gate its
    moves pass (controller/safety.py's StageGate)."""

    gate: Any

    @abstractmethod
    def ops(self) -> dict[str, PushOp]:
        """The push-channel ops it serves (their names are the spec's ``ops``)."""

    @abstractmethod
    async def abort(self, by: str) -> bool:
        """Stop the session in flight and wait until the actuators rest; True when one ran."""

    async def apply_hold(self, held: bool) -> None:
        if held:
            await self.abort("hold")

    async def actuators_safe(self) -> None:
        await self.abort("shutdown")

    def status(self) -> dict[str, Any]:
        return {}

    def stop_details(self) -> dict[str, Any]:
        return {}

    def describe(self) -> str:
        return ""

    def boundary(self) -> None:
        """A policy swap or rollback was requested: apply it at the next decision boundary."""


Mode = TickMode | SessionMode


def tick_decision_period(cfg: EdgeConfig) -> float:
    return cfg.policy.decision_every_n_ticks / cfg.loop.rate_hz


@dataclass(frozen=True)
class ModeSpec:
    """One registration: everything the daemon needs to know about a mode."""

    name: str  # the config's loop.mode
    kind: Literal["tick", "session"]
    messages: MessageSet  # what the device speaks (controller/protocol)
    build: Callable[[ModeHost], Mode]  # after the daemon built its driver and slot
    slot: Callable[[EdgeConfig, Callable[[], None]], PolicySlot] | None = None  # (cfg, on_request) → its policy slot
    ops: tuple[str, ...] = ()  # push ops the mode serves beyond push/rollback/status/hold/resume
    streams: bool = False  # the device streams readings (the link is dead when they stop)
    decision_period_s: Callable[[EdgeConfig], float] = tick_decision_period  # what its policies are trained at
