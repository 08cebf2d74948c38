"""The MEMS PID-tuning task's spec, defined once (paper mems-mirror-pid-rl, §II): the policy's observation
fields per tick with their units, and its actions {P_x, I_x, P_y, I_y} with theirs. Used by the learner
(learner/mems/env.py features, learner/mems/export.py manifest), the edge (controller/modes/mems/rl_pid.py,
its `PolicySpec` for the slot's validator) and the HIL model artifacts (hil/faults/model_artifacts.py).

An observation is the last k ticks, oldest first, each `OBS_FIELDS` in raw units, flattened to (k·6,).
"""
from __future__ import annotations

TASK = "mems-pid-gains"  # the manifest task of rl-pid policies
OBS_FIELDS = ("x_px", "y_px", "ux_v", "uy_v", "x_target_px", "y_target_px")
OBS_UNITS = ("px", "px", "V", "V", "px", "px")  # of each field
ACTIONS = ("kp_x", "ki_x", "kp_y", "ki_y")
ACT_UNITS = ("V/px", "V/(px*s)", "V/px", "V/(px*s)")  # of each action


def obs_units(steps: int) -> list[str]:
    """The units of a k-step observation (k·6 values)."""
    return list(OBS_UNITS) * steps
