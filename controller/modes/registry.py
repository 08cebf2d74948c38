"""The mode registry: ``loop.mode`` → ``ModeSpec`` (controller/modes/base.py).

Each mode module calls ``register`` at import; ``MODULES`` lists the modules that hold registrations (a new
application adds its module here: the one registration line). Modules are imported on first look-up, so
``edgetune-edge --help`` loads none of them.
"""
from __future__ import annotations

import importlib

from controller.modes.base import ModeSpec

MODULES = ("controller.modes.mems.stabilize", "controller.modes.mems.rl_pid", "controller.modes.ct.session",
           "controller.modes.ptycho.session", "controller.modes.scatter.session", "controller.modes.bal.forge")
CORE_OPS = frozenset({"push", "rollback", "status", "hold", "resume"})  # served by the daemon in every mode
_SPECS: dict[str, ModeSpec] = {}


def register(spec: ModeSpec) -> ModeSpec:
    if spec.name in _SPECS and _SPECS[spec.name] is not spec:
        raise ValueError(f"mode {spec.name!r} is registered twice")
    if clash := CORE_OPS & set(spec.ops):
        raise ValueError(f"mode {spec.name!r} registers core push ops {sorted(clash)}")
    _SPECS[spec.name] = spec
    return spec


def _load() -> None:
    for module in MODULES:
        importlib.import_module(module)


def get(name: str) -> ModeSpec:
    """The spec registered as ``name``; ValueError names the registered ones."""
    _load()
    if (spec := _SPECS.get(name)) is None:
        raise ValueError(f"unknown mode {name!r}; registered: {', '.join(sorted(_SPECS))}")
    return spec


def names() -> list[str]:
    _load()
    return sorted(_SPECS)


def ops() -> frozenset[str]:
    """Every push op some mode serves (the push wire accepts these; a mode not serving one refuses it)."""
    _load()
    return CORE_OPS.union(*(s.ops for s in _SPECS.values()))
