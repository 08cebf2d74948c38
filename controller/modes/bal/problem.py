"""BAL problem files: one TOML per controlled-SDE instance (docs/bal.md lists every value and why).

``load_problem("lq" | "forge" | "maze" | "maze6" | "path/to/file.toml")`` reads one; the shipped files are in
``controller/modes/bal/problems/``. A file has the sections ``[problem]`` (kind, dt, steps, sigma, x0, u_max,
domain, optional start box), ``[theta]`` (truth, prior mean and std — scalars broadcast to every component),
``[filter]`` (the direct filter's particles, random-walk std per step, cost-meter std) and one section named after
the kind with its physics (``[lq]``, ``[forge]``, ``[maze]``). Unknown keys are refused, so a typo is an error.
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from controller.modes.bal.filter import FilterConfig
from controller.modes.bal.models import ForgeModel, LqModel, MazeModel, Model

PROBLEMS = Path(__file__).with_name("problems")
KINDS = ("lq", "forge", "maze")


@dataclass(frozen=True)
class Problem:
    name: str
    kind: str
    dt: float
    steps: int  # N: t_n = n·dt, T = N·dt
    sigma: float  # diffusion σ·I
    x0: np.ndarray
    theta_true: np.ndarray
    prior_mean: np.ndarray
    prior_std: np.ndarray
    u_max: float
    domain_low: np.ndarray
    domain_high: np.ndarray
    model: Model
    filter: FilterConfig
    start_low: np.ndarray | None = None  # random starts (uniform in the box) instead of x0
    start_high: np.ndarray | None = None
    goal: np.ndarray | None = None
    goal_radius: float = 0.0
    cost_noise: float = 0.0  # std of the observed step cost (the maze's cost meter)
    source: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def horizon(self) -> float:
        return self.dt * self.steps


def _section(data: dict, name: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    sec = data.get(name)
    if not isinstance(sec, dict):
        raise ValueError(f"problem file: missing section [{name}]")
    if missing := [k for k in required if k not in sec]:
        raise ValueError(f"problem file: [{name}] lacks {', '.join(missing)}")
    if unknown := sorted(set(sec) - set(required) - set(optional)):
        raise ValueError(f"problem file: [{name}] has unknown keys {', '.join(unknown)}")
    return sec


def _vec(value: Any, n: int, what: str) -> np.ndarray:
    a = np.asarray(value, np.float64)
    if a.ndim == 0:
        a = np.full(n, float(a))
    if a.shape != (n,) or not np.all(np.isfinite(a)):
        raise ValueError(f"problem file: {what} must be {n} finite numbers, got {value!r}")
    return a


def _limits(s: dict, section: str, positive: tuple[str, ...] = (), nonnegative: tuple[str, ...] = ()) -> None:
    """The physics' scalars that must be finite and > 0 (``positive``) or ≥ 0 (``nonnegative``)."""
    for key in positive + nonnegative:
        v = float(s[key])
        if not (math.isfinite(v) and (v > 0 if key in positive else v >= 0)):
            raise ValueError(f"problem file: [{section}] {key} must be finite and {'>' if key in positive else '≥'} 0, "
                             f"got {s[key]!r}")


def _model(kind: str, data: dict, p: dict) -> Model:
    u_max = float(p["u_max"])
    if kind == "lq":
        s = _section(data, "lq", ("a0", "a1", "b", "q", "r", "g"))
        _limits(s, "lq", positive=("r",))
        return LqModel(s["a0"], s["a1"], s["b"], s["q"], s["r"], s["g"], u_max)
    goal_keys = ("goal", "goal_radius", "miss")
    if kind == "forge":
        s = _section(data, "forge", ("atoms", "types", "r_m", "shape_cap", "effort") + goal_keys)
        _limits(s, "forge", positive=("r_m", "shape_cap"), nonnegative=("effort", "miss", "goal_radius"))
        return ForgeModel(s["atoms"], s["types"], s["r_m"], s["shape_cap"], s["effort"], s["goal"], s["miss"], u_max)
    s = _section(data, "maze", ("blocks", "base", "edge", "obstacles") + goal_keys)
    _limits(s, "maze", positive=("edge",), nonnegative=("base", "miss", "goal_radius"))
    if len(s["blocks"]) != 2:
        raise ValueError(f"problem file: [maze] blocks must be [columns, rows], got {s['blocks']!r}")
    return MazeModel(p["domain"][0], p["domain"][1], tuple(s["blocks"]), s["base"], s["edge"], s["goal"],
                     s["miss"], u_max)


def maze_theta(data: dict, model: MazeModel) -> np.ndarray:
    """The maze's true block costs from its ``obstacles`` list: [x_lo, y_lo, x_hi, y_hi, cost] in block units."""
    theta = np.zeros((model.rows, model.cols))
    for ob in data["maze"]["obstacles"]:
        if len(ob) != 5:
            raise ValueError(f"maze obstacle {ob!r}: want [x_lo, y_lo, x_hi, y_hi, cost] in blocks")
        i0, j0, i1, j1 = (int(v) for v in ob[:4])
        if not (0 <= i0 < i1 <= model.cols and 0 <= j0 < j1 <= model.rows) or ob[4] < 0:
            raise ValueError(f"maze obstacle {ob!r}: outside the {model.cols}×{model.rows} blocks or negative cost")
        theta[j0:j1, i0:i1] = float(ob[4])
    return theta.ravel()


def parse(data: dict, name: str) -> Problem:
    p = _section(data, "problem", ("kind", "dt", "steps", "sigma", "x0", "u_max", "domain"),
                 ("start_low", "start_high", "cost_noise", "description"))
    kind = p["kind"]
    if kind not in KINDS:
        raise ValueError(f"problem file: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    steps = p["steps"]
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"problem file: steps must be an integer ≥ 1, got {steps!r}")
    _limits(p, "problem", positive=("dt", "u_max"), nonnegative=("sigma",))
    dt, sigma = float(p["dt"]), float(p["sigma"])
    model = _model(kind, data, p)
    dim = model.theta_dim
    t = _section(data, "theta", ("prior_mean", "prior_std") + (() if kind == "maze" else ("true",)))
    truth = maze_theta(data, model) if kind == "maze" else _vec(t["true"], dim, "[theta] true")
    prior_std = _vec(t["prior_std"], dim, "[theta] prior_std")
    if np.any(prior_std <= 0):
        raise ValueError("problem file: [theta] prior_std must be > 0")
    f = _section(data, "filter", ("particles", "walk_std"), ("cost_std",))
    fcfg = FilterConfig(particles=int(f["particles"]), walk_std=_vec(f["walk_std"], dim, "[filter] walk_std"),
                        cost_std=float(f.get("cost_std", 0.0)))
    domain = np.asarray(p["domain"], np.float64)
    if domain.shape != (2, 2) or np.any(domain[1] <= domain[0]):
        raise ValueError("problem file: domain must be [[x_lo, y_lo], [x_hi, y_hi]] with lo < hi")
    x0 = _vec(p["x0"], 2, "[problem] x0")
    if np.any(x0 < domain[0]) or np.any(x0 > domain[1]):
        raise ValueError(f"problem file: x0 {x0.tolist()} lies outside the domain {domain.tolist()}")
    if ("start_low" in p) != ("start_high" in p):
        raise ValueError("problem file: start_low and start_high come together")
    phys = data[kind]
    goal = _vec(phys["goal"], 2, f"[{kind}] goal") if "goal" in phys else None
    if kind == "maze" and fcfg.cost_std <= 0:
        raise ValueError("problem file: the maze observes costs: [filter] cost_std must be > 0")
    return Problem(
        name=name, kind=kind, dt=dt, steps=steps, sigma=sigma, x0=x0,
        theta_true=truth, prior_mean=_vec(t["prior_mean"], dim, "[theta] prior_mean"), prior_std=prior_std,
        u_max=float(p["u_max"]), domain_low=domain[0], domain_high=domain[1], model=model, filter=fcfg,
        start_low=_vec(p["start_low"], 2, "start_low") if "start_low" in p else None,
        start_high=_vec(p["start_high"], 2, "start_high") if "start_high" in p else None,
        goal=goal, goal_radius=float(phys.get("goal_radius", 0.0)), cost_noise=float(p.get("cost_noise", 0.0)),
        source=data)


def load_problem(name_or_path: str | Path) -> Problem:
    """A shipped problem by name (lq, forge, maze, maze6) or a TOML file."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PROBLEMS / f"{name_or_path}.toml"
        if not path.is_file():
            shipped = sorted(p.stem for p in PROBLEMS.glob("*.toml"))
            raise ValueError(f"unknown problem {str(name_or_path)!r}; shipped: {', '.join(shipped)} (or a .toml file)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"problem file {path}: {exc}") from exc
    return parse(data, path.stem)


def with_overrides(problem: Problem, theta_true: float | np.ndarray | None = None,
                   x0: np.ndarray | None = None) -> Problem:
    """The same problem with another true θ and/or initial state (``eval bal --theta-true/--x0``)."""
    changes: dict[str, Any] = {}
    if theta_true is not None:
        changes["theta_true"] = _vec(theta_true, problem.model.theta_dim, "theta_true")
    if x0 is not None:
        changes["x0"] = _vec(x0, 2, "x0")
        if np.any(changes["x0"] < problem.domain_low) or np.any(changes["x0"] > problem.domain_high):
            raise ValueError(f"x0 {changes['x0'].tolist()} lies outside the domain "
                             f"{[problem.domain_low.tolist(), problem.domain_high.tolist()]}")
    return dataclasses.replace(problem, **changes)
