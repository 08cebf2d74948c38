"""The edge's copy of the gain sets: I_max(P) tables for host-set gains (controller/modes/mems/gain_sets.py).

The learner computes the robust and wide sets (learner/mems/robust_gains.py, torch); the edge checks
host-set gains against the same tables without torch, from a JSON file in its package. This module
writes that file from the learner's computation for the default training box and plant, so the two
cannot drift (tests/unit/test_edge_gain_sets.py regenerates it and compares):

    python -m learner.mems.edge_gain_sets      # or: make gain-sets
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from controller.modes.mems.gain_sets import TABLE_FILE
from firmware_sim.mems.physics import MemsParams
from learner.mems.env import MemsTuningConfig
from learner.mems.robust_gains import TABLE_MARGIN, gain_set_map

EDGE_SETS = ("robust", "wide")  # "box" is the envelope alone


def edge_table(cfg: MemsTuningConfig = MemsTuningConfig(), params: MemsParams = MemsParams()) -> dict:
    """The tables of the sets the edge checks: {set: {"knots": (2, K), "i_max": (2, K)}} with the box and plant
    they were computed for. Values as the learner's map holds them (float32, the exported graphs' precision)."""
    sets = {}
    for name in EDGE_SETS:
        m = gain_set_map(name, cfg.p_bounds, cfg.i_bounds, params)
        # the map holds I_max(P) as a ReLU sum (its graph form); its values at the knots make the table
        i_max = m.integral_limit(m.knots.T).T  # (2, K): row a is axis a at its knots
        sets[name] = {"knots": m.knots.double().tolist(), "i_max": i_max.double().tolist()}
    return {"p_bounds": list(cfg.p_bounds), "i_bounds": list(cfg.i_bounds), "table_margin": TABLE_MARGIN,
            "plant": asdict(params), "sets": sets}


def write(path: Path = TABLE_FILE) -> Path:
    path.write_text(json.dumps(edge_table(), indent=1) + "\n")
    return path


if __name__ == "__main__":
    print(f"wrote {write()}")
