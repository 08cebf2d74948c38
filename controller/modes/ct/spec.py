"""The CT angle-selection task's spec, defined once: the policy's named inputs and outputs (ONNX contract,
docs/design.md "Angle policy"), their units, used by the exporter (learner/ct/export.py) and the edge
(controller/policy/runtime.py `AnglePolicy`).

  obs (1, N, N)       the reconstruction x̂_k in [0, 1], unit "1"
  acquired (A,)       1 = angle already acquired, unit "mask" (optional in a graph)
  angle_logits (A,)   greedy angle = argmax over the unacquired ones, unit "logit"
  stop_logit (1,)     stop when > 0 (sigmoid > ½), unit "logit"
A v1 manifest flattens them: observation = obs.ravel() ‖ acquired (N·N + A), action = angle_logits ‖ stop_logit.
"""
from __future__ import annotations

TASK = "ct-angles"  # the manifest task of angle policies
OBS, ACQUIRED, ANGLE_LOGITS, STOP_LOGIT = "obs", "acquired", "angle_logits", "stop_logit"
UNITS = {OBS: "1", ACQUIRED: "mask", ANGLE_LOGITS: "logit", STOP_LOGIT: "logit"}


def inputs(size: int, n_angles: int) -> dict[str, tuple[int, ...]]:
    """Per-sample shapes of the angle policy's inputs."""
    return {OBS: (1, size, size), ACQUIRED: (n_angles,)}


def outputs(n_angles: int) -> dict[str, tuple[int, ...]]:
    return {ANGLE_LOGITS: (n_angles,), STOP_LOGIT: (1,)}
