"""The device-model contract every simulated instrument satisfies (docs/adding-an-application.md).

A device model is pure physics with the RNG in its state and a leading batch axis B on every array, so the
learner runs thousands of instruments in parallel and a firmware emulator runs one (B = 1) in real time with
the same code — one physics source for both:

    reset(seed, batch=1) -> state            power-on state of B devices (seeded)
    step(state, command, dt) -> state, reading
                                            advance dt [s] under `command` (B, ...) held over the step;
                                            `reading` is what the device reports at the end of the step

Satisfied by `firmware_sim.mems.physics.MemsStand` (command: M2 volts (B, 2); reading: `Frame`),
`firmware_sim.ct.physics.RotationStage` (command: target angles (B,) or None to keep them; reading:
`StageReading`) and `firmware_sim.ct.physics.Detector` (command: the actual angles (B,); dt: the exposure;
reading: projections (B, bins)). A model may take extra keyword arguments with defaults (the MEMS stand's
`disturbance_px`).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, TypeVar, runtime_checkable

S = TypeVar("S")
R = TypeVar("R")


@runtime_checkable
class DeviceModel(Protocol[S, R]):
    """Batched, seedable instrument physics: `reset(seed, batch) -> state`, `step(state, command, dt)`."""

    def reset(self, seed: int | None, batch: int = 1) -> S: ...

    def step(self, state: S, command: Any, dt: float) -> tuple[S, R]: ...


def rollout(model: DeviceModel[S, R], seed: int | None, commands: Iterable[Any], dt: float,
            batch: int = 1) -> tuple[S, list[R]]:
    """Run `model` from `reset(seed, batch)` through `commands` (one per step); the final state and the readings."""
    state = model.reset(seed, batch)
    readings = []
    for command in commands:
        state, reading = model.step(state, command, dt)
        readings.append(reading)
    return state, readings
