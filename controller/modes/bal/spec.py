"""The forge policy's contract, defined once: its ONNX names, shapes and units. Used by the learner's export
(learner/bal/export.py) and the edge's forge mode (controller/modes/bal/forge.py, its validator).

The policy is BAL's feedback table (paper Eq. 28) computed over a grid of θ values, so θ̂ is an input:
  step (1,)       the episode step n (0 … N − 1; a float holding an integer)
  position (2,)   the atom's position x_n [length unit]
  theta (P,)      the filter's estimate θ̂ of the well depths, one per atom type [well-depth unit]
→ force (2,)      the force vector u (the device takes its magnitude F = |u| ≤ u_max and steering angle
                  φ = atan2(u_y, u_x)) [well depth / length]
No recurrent state: the filter's estimate carries what the episode taught.
"""
from __future__ import annotations

TASK = "bal-forge"
STEP, POSITION, THETA, FORCE = "step", "position", "theta", "force"
UNITS = {STEP: "1", POSITION: "lj_sigma", THETA: "lj_epsilon", FORCE: "lj_epsilon/lj_sigma"}


def inputs(theta_dim: int) -> dict[str, tuple[int, ...]]:
    """Per-sample shapes of the policy's inputs for P = ``theta_dim`` unknown well depths."""
    if theta_dim < 1:
        raise ValueError(f"the forge policy takes at least one θ component, got {theta_dim}")
    return {STEP: (1,), POSITION: (2,), THETA: (theta_dim,)}


def outputs() -> dict[str, tuple[int, ...]]:
    return {FORCE: (2,)}
