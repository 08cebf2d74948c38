"""Test fixtures of the transceiver task (issue #22): a disk scatterer at the training norm, and a tiny recurrent
policy with the ONNX contract of `controller.modes.scatter.spec` (the real one, learner/scatter/policy.py, exposes
its `.actor` with the same signature)."""
from __future__ import annotations

import numpy as np

from controller.modes.scatter import physics, spec


def disk(n: int = 32, centre: tuple[float, float] = (0.1, -0.05), radius: float = 0.2) -> np.ndarray:
    """A homogeneous disk (x, y centre) scaled to ‖η‖₂ = spec.NORM."""
    g = physics.Grid(n)
    x, y = np.meshgrid(g.axis, g.axis, indexing="xy")
    eta = (np.hypot(x - centre[0], y - centre[1]) <= radius).astype(float)
    return eta * spec.NORM / np.linalg.norm(eta)
