"""The controlled SDEs of the BAL problems: dX = b(X, u; θ) dt + σ dW, cost J = ∫ f(X, u; θ) dt + h(X_T).

Paper (smp-backward-action-learning, Eq. 1–2): the physics b, f, h is known, the parameter θ is not. Every
model here gives b, f, h and the derivatives BAL's adjoint needs (b_x, b_u, f_x, f_u, h_x; Eq. 24–25), batched:
x (B, 2), u (B, m), θ (P,) or (B, P). The state space is 2-D in all three problems.

- ``LqModel`` (paper §4.1, Eq. 29): b = (A0 + θ A1) x + B u, f = xᵀQx + R u², h = xᵀGx.
- ``ForgeModel`` (§4.2, Eq. 31–32): an overdamped target atom pushed by the beam's force u (magnitude |u|,
  steering angle atan2(u_y, u_x)) and pulled by the Lennard-Jones "AB" force of its nearest background atom,
  V(r) = ε[(r_m/r)¹² − 2(r_m/r)⁶] (A = ε r_m¹², B = 2ε r_m⁶); θ = the well depth ε of each atom type;
  f = ρ|u|², h = K‖x − goal‖².
- ``MazeModel`` (§4.3, Eq. 33–34): the robot's velocity is the control, b = u; f = (c0 + c_θ(x))|u|² with
  c_θ(x) = Σ θ_ij s_i(x) s_j(y), s_i a smoothed indicator of block column i (differences of logistics, a
  partition of unity), so the running cost is block-wise with soft edges and ∇f exists; θ ≥ 0 (clipped).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import numpy as np


def _theta_rows(theta: np.ndarray, batch: int) -> np.ndarray:
    """θ as (B, P): a (P,) vector is shared by the batch."""
    theta = np.asarray(theta, np.float64)
    return np.broadcast_to(theta, (batch, theta.shape[-1])) if theta.ndim == 1 else theta


def project(u: np.ndarray, u_max: float) -> np.ndarray:
    """u projected onto the ball |u| ≤ u_max (Euclidean, along the last axis)."""
    norm = np.linalg.norm(u, axis=-1, keepdims=True)
    return u * np.minimum(1.0, u_max / np.maximum(norm, 1e-300))


def _goal_terminal(x: np.ndarray, goal: np.ndarray, weight: float) -> tuple[np.ndarray, np.ndarray]:
    d = x - goal
    return weight * np.einsum("bi,bi->b", d, d), 2.0 * weight * d


class Model(ABC):
    """b, f, h of one problem and their derivatives (all batched over B)."""

    state_dim = 2
    control_dim: int
    theta_dim: int
    observes: Literal["state", "cost"] = "state"  # what the direct filter compares (Eq. 23)

    def __init__(self, u_max: float) -> None:
        self.u_max = float(u_max)

    @abstractmethod
    def drift(self, x: np.ndarray, u: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """b(x, u; θ), (B, 2)."""

    @abstractmethod
    def drift_x(self, x: np.ndarray, u: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """∂b/∂x, (B, 2, 2)."""

    def drift_u(self, x: np.ndarray, u: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """∂b/∂u, (B, 2, m): the identity unless a model says otherwise."""
        return np.broadcast_to(np.eye(2, self.control_dim), (len(x), 2, self.control_dim))

    @abstractmethod
    def running(self, x: np.ndarray, u: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """f(x, u; θ) per unit time, (B,)."""

    @abstractmethod
    def running_x(self, x: np.ndarray, u: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """∂f/∂x, (B, 2)."""

    @abstractmethod
    def running_u(self, x: np.ndarray, u: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """∂f/∂u, (B, m)."""

    @abstractmethod
    def terminal(self, x: np.ndarray) -> np.ndarray:
        """h(x), (B,)."""

    @abstractmethod
    def terminal_x(self, x: np.ndarray) -> np.ndarray:
        """∂h/∂x, (B, 2)."""

    def component(self, x: np.ndarray) -> np.ndarray | None:
        """The θ component in force at each x, (B,) ints (paper Remark 3.2); None: θ is not state-dependent."""
        return None

    def active(self, x: np.ndarray) -> np.ndarray:
        """The θ components that shape the dynamics or the cost at one state x (2,): what the filter updates."""
        comp = self.component(x[None])
        return np.arange(self.theta_dim) if comp is None else comp

    def drift_particles(self, x: np.ndarray, u: np.ndarray, thetas: np.ndarray) -> np.ndarray:
        """b(x, u; θʲ) for one state x (2,) and control u (m,) under every particle θʲ of thetas (J, P): (J, 2)."""
        j = len(thetas)
        return self.drift(np.broadcast_to(x, (j, 2)), np.broadcast_to(u, (j, self.control_dim)), thetas)

    def running_particles(self, x: np.ndarray, u: np.ndarray, thetas: np.ndarray) -> np.ndarray:
        """f(x, u; θʲ) for one state and control under every particle: (J,)."""
        j = len(thetas)
        return self.running(np.broadcast_to(x, (j, 2)), np.broadcast_to(u, (j, self.control_dim)), thetas)

    def project(self, u: np.ndarray) -> np.ndarray:
        """u projected onto the control set |u| ≤ u_max (Euclidean)."""
        return project(u, self.u_max)


class LqModel(Model):
    """b = (A0 + θ A1) x + B u (θ scalar), f = xᵀQx + R u², h = xᵀGx."""

    control_dim = 1
    theta_dim = 1

    def __init__(self, a0: np.ndarray, a1: np.ndarray, b: np.ndarray, q: np.ndarray, r: float, g: np.ndarray,
                 u_max: float) -> None:
        super().__init__(u_max)
        self.a0, self.a1 = np.asarray(a0, np.float64), np.asarray(a1, np.float64)
        self.b = np.asarray(b, np.float64).reshape(2, 1)
        self.q, self.g, self.r = np.asarray(q, np.float64), np.asarray(g, np.float64), float(r)
        for name, m in (("A0", self.a0), ("A1", self.a1), ("Q", self.q), ("G", self.g)):
            if m.shape != (2, 2):
                raise ValueError(f"LQ {name} must be 2×2, got shape {m.shape}")

    def a(self, theta: np.ndarray) -> np.ndarray:
        """A(θ), (B, 2, 2) for θ (B, 1), or (2, 2) for a scalar θ."""
        theta = np.asarray(theta, np.float64)
        return self.a0 + theta[..., None] * self.a1 if theta.ndim == 2 else self.a0 + float(theta.ravel()[0]) * self.a1

    def drift(self, x, u, theta):
        th = _theta_rows(theta, len(x))[:, 0]
        return x @ self.a0.T + th[:, None] * (x @ self.a1.T) + u @ self.b.T

    def drift_x(self, x, u, theta):
        th = _theta_rows(theta, len(x))[:, 0]
        return self.a0 + th[:, None, None] * self.a1

    def drift_u(self, x, u, theta):
        return np.broadcast_to(self.b, (len(x), 2, 1))

    def drift_particles(self, x, u, thetas):
        return (self.a0 @ x + self.b @ u) + thetas[:, :1] * (self.a1 @ x)

    def running(self, x, u, theta):
        return np.einsum("bi,ij,bj->b", x, self.q, x) + self.r * u[:, 0] ** 2

    def running_x(self, x, u, theta):
        return x @ (self.q + self.q.T)

    def running_u(self, x, u, theta):
        return 2.0 * self.r * u

    def terminal(self, x):
        return np.einsum("bi,ij,bj->b", x, self.g, x)

    def terminal_x(self, x):
        return x @ (self.g + self.g.T)


class ForgeModel(Model):
    """The atomic forge: b = ε_type(x) g(x) + u, g = −∇ of the unit-depth LJ shape of the nearest atom."""

    control_dim = 2

    def __init__(self, atoms: np.ndarray, types: np.ndarray, r_m: float, shape_cap: float, effort: float,
                 goal: np.ndarray, miss: float, u_max: float) -> None:
        super().__init__(u_max)
        self.atoms = np.asarray(atoms, np.float64).reshape(-1, 2)
        self.types = np.asarray(types, np.int64).ravel()
        if len(self.types) != len(self.atoms) or len(self.atoms) == 0:
            raise ValueError("forge: one type per atom, at least one atom")
        if self.types.min() < 0:
            raise ValueError("forge: atom types are 0, 1, …")
        self.theta_dim = int(self.types.max()) + 1
        self.r_m, self.cap, self.effort = float(r_m), float(shape_cap), float(effort)
        self.goal, self.miss = np.asarray(goal, np.float64), float(miss)

    def nearest(self, x: np.ndarray) -> np.ndarray:
        """Index of each x's nearest background atom, (B,)."""
        d2 = ((x[:, None, :] - self.atoms[None]) ** 2).sum(-1)
        return np.argmin(d2, axis=1)

    def _shape(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(d = x − atom, r, s(r), s'(r)) for the nearest atom; the force per unit depth is s(r) d / r with
        s(r) = −φ'(r) = 12/r [(r_m/r)¹² − (r_m/r)⁶], capped at ``shape_cap`` (a soft core: Euler steps stay
        bounded next to an atom; s' = 0 where capped)."""
        d = x - self.atoms[self.nearest(x)]
        r = np.maximum(np.linalg.norm(d, axis=1), 1e-9)
        q6 = (self.r_m / r) ** 6
        s = 12.0 / r * (q6 * q6 - q6)
        ds = -12.0 / r ** 2 * (13.0 * q6 * q6 - 7.0 * q6)
        capped = s > self.cap
        return d, r, np.where(capped, self.cap, s), np.where(capped, 0.0, ds)

    def depth(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        th = _theta_rows(theta, len(x))
        return th[np.arange(len(x)), self.types[self.nearest(x)]]

    def component(self, x):
        return self.types[self.nearest(x)]

    def drift(self, x, u, theta):
        d, r, s, _ = self._shape(x)
        return (self.depth(x, theta) * s / r)[:, None] * d + u

    def drift_x(self, x, u, theta):
        d, r, s, ds = self._shape(x)
        eps = self.depth(x, theta)
        outer = d[:, :, None] * d[:, None, :] / r[:, None, None] ** 2
        return eps[:, None, None] * ((s / r)[:, None, None] * (np.eye(2) - outer) + ds[:, None, None] * outer)

    def drift_particles(self, x, u, thetas):
        d, r, s, _ = self._shape(x[None])
        return thetas[:, self.types[self.nearest(x[None])[0]], None] * (s / r * d) + u

    def running(self, x, u, theta):
        return self.effort * np.einsum("bi,bi->b", u, u)

    def running_x(self, x, u, theta):
        return np.zeros_like(x)

    def running_u(self, x, u, theta):
        return 2.0 * self.effort * u

    def terminal(self, x):
        return _goal_terminal(x, self.goal, self.miss)[0]

    def terminal_x(self, x):
        return _goal_terminal(x, self.goal, self.miss)[1]


class MazeModel(Model):
    """The continuous maze: b = u, f = (c0 + c_θ(x))|u|², θ = one cost per block of a rows × cols block grid."""

    control_dim = 2
    observes = "cost"

    def __init__(self, low: np.ndarray, high: np.ndarray, blocks: tuple[int, int], base: float, edge: float,
                 goal: np.ndarray, miss: float, u_max: float) -> None:
        super().__init__(u_max)
        self.low, self.high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        self.cols, self.rows = int(blocks[0]), int(blocks[1])
        if self.cols < 1 or self.rows < 1 or edge <= 0 or np.any(self.high <= self.low):
            raise ValueError("maze: blocks ≥ 1 per axis, edge > 0 and a non-empty domain")
        self.theta_dim = self.cols * self.rows  # θ[j·cols + i]: block column i (x), row j (y)
        self.block = (self.high - self.low) / np.array([self.cols, self.rows])
        self.base, self.edge = float(base), float(edge)
        self.goal, self.miss = np.asarray(goal, np.float64), float(miss)

    def _soft(self, v: np.ndarray, axis: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Soft indicators of the blocks along one axis and their derivatives, (B, count) each."""
        edges = self.low[axis] + self.block[axis] * np.arange(count + 1)
        z = (v[:, None] - edges[None]) / self.edge
        sig = 0.5 * (1.0 + np.tanh(0.5 * z))  # logistic
        dsig = sig * (1.0 - sig) / self.edge
        # The outermost edges extend to ±∞ so the indicators sum to one everywhere.
        sig[:, 0], dsig[:, 0] = 1.0, 0.0
        sig[:, -1], dsig[:, -1] = 0.0, 0.0
        return sig[:, :-1] - sig[:, 1:], dsig[:, :-1] - dsig[:, 1:]

    def _grid(self, theta: np.ndarray, batch: int) -> np.ndarray:
        return np.clip(_theta_rows(theta, batch), 0.0, None).reshape(batch, self.rows, self.cols)

    def cost_rate(self, x: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(c0 + c_θ(x), its gradient (B, 2))."""
        sx, dsx = self._soft(x[:, 0], 0, self.cols)
        sy, dsy = self._soft(x[:, 1], 1, self.rows)
        grid = self._grid(theta, len(x))
        c = np.einsum("bj,bji,bi->b", sy, grid, sx)
        grad = np.stack([np.einsum("bj,bji,bi->b", sy, grid, dsx), np.einsum("bj,bji,bi->b", dsy, grid, sx)], 1)
        return self.base + c, grad

    def _weights(self, x: np.ndarray) -> np.ndarray:
        """Each block's share of the cost at one state x (2,): (rows·cols,)."""
        sx, _ = self._soft(x[:1], 0, self.cols)
        sy, _ = self._soft(x[1:], 1, self.rows)
        return (sy[0][:, None] * sx[0][None, :]).ravel()

    def active(self, x):
        """The blocks with a share ≥ 1 % of the cost at x: near an edge two or four blocks blend."""
        return np.flatnonzero(self._weights(x) >= 1e-2)

    def running_particles(self, x, u, thetas):
        return (self.base + np.clip(thetas, 0.0, None) @ self._weights(x)) * float(u @ u)

    def component(self, x):
        idx = np.floor((x - self.low) / self.block).astype(np.int64)
        i, j = np.clip(idx[:, 0], 0, self.cols - 1), np.clip(idx[:, 1], 0, self.rows - 1)
        return j * self.cols + i

    def drift(self, x, u, theta):
        return u.copy()

    def drift_x(self, x, u, theta):
        return np.zeros((len(x), 2, 2))

    def running(self, x, u, theta):
        return self.cost_rate(x, theta)[0] * np.einsum("bi,bi->b", u, u)

    def running_x(self, x, u, theta):
        return self.cost_rate(x, theta)[1] * np.einsum("bi,bi->b", u, u)[:, None]

    def running_u(self, x, u, theta):
        return 2.0 * self.cost_rate(x, theta)[0][:, None] * u

    def terminal(self, x):
        return _goal_terminal(x, self.goal, self.miss)[0]

    def terminal_x(self, x):
        return _goal_terminal(x, self.goal, self.miss)[1]
