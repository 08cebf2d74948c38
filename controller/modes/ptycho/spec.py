"""The adaptive-scan task's policy contract, defined once (ONNX names, shapes, units): used by the exporter
(learner/ptycho/export.py) and the edge's ptycho mode (controller/modes/ptycho).

One decision per sub-sequence t = 0 … T−2 (the first sub-sequence is a Halton sequence, not the policy's):
  recon (1, F, F)        the reconstructed phase over the scanned field (F = optics.grid), mean removed, "rad"
  positions (M_MAX, 2)   the sub-sequence just acquired, (row, col) normalised to [0, 1] (grid index / (grid − 1)),
                         zero-padded past its length, "1"
  count (1,)             how many rows of ``positions`` are real (≤ M_MAX), "1"
  prior (M_MAX, 2)       the edge's own next sub-sequence: the Halton continuation from the positions acquired so
                         far (path.prior), "1"; a policy proposes where to go relative to it
  hidden (LAYERS, H)     the GRU state: a manifest `state` (starts at zeros, fed `hidden_next`), "1"
→ means (M_MAX, 2)       the next sub-sequence's positions in [0, 1] (the policy's Gaussian means; the edge
                         takes the first M it needs and snaps them to the grid), "1", bounds [0, 1]
  hidden_next (LAYERS, H)
"""
from __future__ import annotations

TASK = "ptycho-scan"
RECON, POSITIONS, COUNT, PRIOR = "recon", "positions", "count", "prior"
HIDDEN, MEANS, HIDDEN_NEXT = "hidden", "means", "hidden_next"
M_MAX = 125  # the largest sub-sequence a policy proposes (250 positions in 2)
LAYERS = 2  # stacked GRU layers (the paper's)
UNITS = {RECON: "rad", POSITIONS: "1", COUNT: "1", PRIOR: "1", HIDDEN: "1", MEANS: "1", HIDDEN_NEXT: "1"}


def inputs(field: int) -> dict[str, tuple[int, ...]]:
    """Per-sample shapes of the scan policy's non-state inputs."""
    return {RECON: (1, field, field), POSITIONS: (M_MAX, 2), COUNT: (1,), PRIOR: (M_MAX, 2)}


def state(hidden: int) -> tuple[int, ...]:
    return (LAYERS, hidden)


def outputs() -> dict[str, tuple[int, ...]]:
    return {MEANS: (M_MAX, 2)}
