"""Which gains the host may set: the gain sets' I_max(P) tables on the edge (numpy only, no torch).

The learner's gain sets (learner/mems/robust_gains.py) bound the integral gain by a piecewise-linear
I_max(P) per axis, on the P range where the set holds any gain at all. ``gain_sets.json`` beside this
module is that table for the default training box and plant, written by `python -m
learner.mems.edge_gain_sets` (a test regenerates it and compares). ``[hostlink.envelope] gain_set`` picks
the set host-set gains must lie in (controller/link/edge_udp.py ``clamp_gains``):

- ``box``: the envelope's ranges only;
- ``wide`` (default): also P in the set's range and I ≤ I_max(P) with |S| ≤ 3.2: no gain that makes the
  loop unstable or nearly so (holds the baseline, the paper's a_test gains and every bundled scenario's);
- ``robust``: I ≤ I_max(P) of the robust set: nothing amplified that the baseline rejects. Its table lies
  2 % inside its bounds, and the baseline sits on the bound (its own crossover), so this set clamps even the
  baseline's I a little (x: 600 → 567 V/(px·s)).

D is not in the tables (they hold it at the baseline's): it stays within the envelope only.

The host link loads and checks the configured set when it starts (controller/link/edge_udp.py
``HostLink.start``): a missing or bad table stops the daemon at start-up, never a SetGains on the receive path.
"""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np

TABLE_FILE = Path(__file__).with_name("gain_sets.json")


@cache
def table(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(knots, i_max), each (2, K) [axis][knot], of a set in the table file (read once per process); ValueError
    when the file is missing or unreadable, or the set is not in it or not a table (K ≥ 2 finite knots, rising)."""
    try:
        sets = json.loads(TABLE_FILE.read_text())["sets"]
        knots, i_max = np.array(sets[name]["knots"], np.float64), np.array(sets[name]["i_max"], np.float64)
    except KeyError:
        raise ValueError(f"no gain set {name!r} in {TABLE_FILE}") from None
    except (OSError, TypeError, ValueError) as e:
        raise ValueError(f"cannot read gain set {name!r} from {TABLE_FILE}: {e}") from None
    if (knots.ndim != 2 or knots.shape[0] != 2 or knots.shape[1] < 2 or i_max.shape != knots.shape
            or not np.isfinite(knots).all() or not np.isfinite(i_max).all() or (np.diff(knots) <= 0).any()):
        raise ValueError(f"gain set {name!r} in {TABLE_FILE} is not a table of (2, K ≥ 2) finite knots (rising) "
                         f"and I_max: shapes {knots.shape} and {i_max.shape}")
    return knots, i_max


def limit(name: str, axis: int, p: float) -> tuple[float, float, float]:
    """(P_min, P_max, I_max(P clamped into [P_min, P_max])) on ``axis`` of set ``name`` (linear between knots,
    flat beyond them: the same function as the learner's ReLU sum)."""
    knots, i_max = table(name)
    lo, hi = float(knots[axis, 0]), float(knots[axis, -1])
    return lo, hi, float(np.interp(min(max(p, lo), hi), knots[axis], i_max[axis]))
