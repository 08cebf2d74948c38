"""Riccati references for the LQ problem (issue #23 §3; paper §4.1, Eq. 29–30).

The LQ problem: dX = (A(θ) X + B u) dt + σ dW, J = ∫ (XᵀQX + uᵀRu) dt + X_TᵀG X_T, with A(θ) = A0 + θ A1.

- `continuous`: the Riccati ODE −Ṗ = AᵀP + PA − PBR⁻¹BᵀP + Q, P(T) = G, integrated backward by
  scipy.integrate.solve_ivp; gain K(t) = R⁻¹BᵀP(t) (u = −K(t) x, the paper's Eq. 30);
  E[J*] = x0ᵀP(0)x0 + ∫ tr(σσᵀP) dt.
- `discrete`: the Euler-discretised problem that BAL actually optimises,
  X_{n+1} = X_n + (A X_n + B u_n)Δt + σ√Δt ξ, J = Σ_n (X_nᵀQX_n + u_nᵀRu_n)Δt + X_NᵀGX_N:
  the backward Riccati recursion, gains K_n (u_n = −K_n X_n) and optimal cost x0ᵀP_0x0 + Σ_n σ²Δt tr(P_{n+1}).
- `feedback_cost`: the exact expected cost of any linear feedback u_n = −K_n X_n on the discretised problem
  (the Lyapunov recursion), e.g. the zero control (K = 0) or a learned gain.

The matrices are read from the problem's model through its public derivatives (`lq_matrices`), so no
attribute names of LqModel are assumed: A = b_x, B = b_u, Q = f_xx/2, R = f_uu/2, G = h_xx/2.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LqMatrices", "lq_matrices", "ContinuousRiccati", "DiscreteRiccati", "continuous", "discrete",
           "feedback_cost"]


@dataclass(frozen=True)
class LqMatrices:
    """One LQ instance: A (2,2), B (2,m), Q (2,2), R (m,m), G (2,2), scalar σ, Δt, N steps, x0 (2,)."""
    A: np.ndarray
    B: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    G: np.ndarray
    sigma: float
    dt: float
    steps: int
    x0: np.ndarray

    def __post_init__(self) -> None:
        d, m = self.B.shape
        if self.A.shape != (d, d) or self.Q.shape != (d, d) or self.G.shape != (d, d) or self.R.shape != (m, m):
            raise ValueError(f"inconsistent LQ shapes: A {self.A.shape}, B {self.B.shape}, Q {self.Q.shape}, "
                             f"R {self.R.shape}, G {self.G.shape}")
        if np.any(np.linalg.eigvalsh((self.R + self.R.T) / 2) <= 0):
            raise ValueError("R must be positive definite")
        if not (self.dt > 0 and self.steps > 0 and self.sigma >= 0):
            raise ValueError(f"need dt > 0, steps > 0, sigma >= 0; got {self.dt}, {self.steps}, {self.sigma}")

    @property
    def horizon(self) -> float:
        return self.dt * self.steps


def lq_matrices(problem, theta: np.ndarray | float | None = None) -> LqMatrices:
    """The LQ matrices of an "lq" problem at θ (default: the problem's θ_true), from the model's derivatives."""
    if problem.kind != "lq":
        raise ValueError(f"Riccati references need an lq problem, got kind {problem.kind!r}")
    model = problem.model
    th = np.atleast_1d(np.asarray(problem.theta_true if theta is None else theta, np.float64))
    d, m = 2, model.control_dim
    zx, zu = np.zeros((1, d)), np.zeros((1, m))
    A = model.drift_x(zx, zu, th)[0]
    B = model.drift_u(zx, zu, th)[0]
    eye_x, eye_u = np.eye(d), np.eye(m)
    Q = model.running_x(eye_x, np.zeros((d, m)), th) / 2.0  # f_x(e_k) = 2Q e_k (Q symmetric)
    R = model.running_u(np.zeros((m, d)), eye_u, th) / 2.0
    G = model.terminal_x(eye_x) / 2.0
    return LqMatrices(A=A, B=B, Q=(Q + Q.T) / 2, R=(R + R.T) / 2, G=(G + G.T) / 2, sigma=float(problem.sigma),
                      dt=float(problem.dt), steps=int(problem.steps), x0=np.asarray(problem.x0, np.float64))


@dataclass(frozen=True)
class ContinuousRiccati:
    """P(t) and K(t) on the grid t (the step times t_n = nΔt, n = 0..N), and E[J*] from x0."""
    t: np.ndarray  # (N+1,)
    P: np.ndarray  # (N+1, 2, 2)
    K: np.ndarray  # (N+1, m, 2)
    cost: float


@dataclass(frozen=True)
class DiscreteRiccati:
    """P_n (n = 0..N), the gains K_n (n = 0..N−1; u_n = −K_n X_n) and the optimal expected cost from x0."""
    P: np.ndarray  # (N+1, 2, 2)
    K: np.ndarray  # (N, m, 2)
    cost: float


def continuous(lq: LqMatrices, rtol: float = 1e-10, atol: float = 1e-12) -> ContinuousRiccati:
    """The Riccati ODE backward from P(T) = G (scipy solve_ivp, DOP853), with ∫σ² tr P dt integrated alongside."""
    from scipy.integrate import solve_ivp

    A, B, Q, G = lq.A, lq.B, lq.Q, lq.G
    d = A.shape[0]
    BRB = B @ np.linalg.solve(lq.R, B.T)
    s2 = lq.sigma ** 2

    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        P = y[:-1].reshape(d, d)
        dP = -(A.T @ P + P @ A - P @ BRB @ P + Q)  # Ṗ
        return np.concatenate([dP.ravel(), [-s2 * np.trace(P)]])  # the last: ∫_t^T σ² tr P ds, backward

    T = lq.horizon
    t = np.arange(lq.steps + 1) * lq.dt
    sol = solve_ivp(rhs, (T, 0.0), np.concatenate([G.ravel(), [0.0]]), method="DOP853", t_eval=t[::-1],
                    rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"Riccati ODE failed: {sol.message}")
    y = sol.y[:, ::-1].T  # ascending time
    P = y[:, :-1].reshape(-1, d, d)
    P = (P + np.swapaxes(P, 1, 2)) / 2
    K = np.linalg.solve(lq.R, B.T) @ P  # (N+1, m, d)
    x0 = lq.x0
    return ContinuousRiccati(t=t, P=P, K=K, cost=float(x0 @ P[0] @ x0 + y[0, -1]))


def discrete(lq: LqMatrices) -> DiscreteRiccati:
    """Backward Riccati recursion of the Euler-discretised problem (Ad = I + AΔt, Bd = BΔt, stage costs ·Δt):
    K_n = (RΔt + BdᵀP_{n+1}Bd)⁻¹ BdᵀP_{n+1}Ad,  P_n = QΔt + AdᵀP_{n+1}(Ad − Bd K_n),  P_N = G."""
    dt, N = lq.dt, lq.steps
    d, m = lq.B.shape
    Ad, Bd = np.eye(d) + lq.A * dt, lq.B * dt
    P = np.empty((N + 1, d, d))
    K = np.empty((N, m, d))
    P[N] = lq.G
    for n in range(N - 1, -1, -1):
        Pn1 = P[n + 1]
        K[n] = np.linalg.solve(lq.R * dt + Bd.T @ Pn1 @ Bd, Bd.T @ Pn1 @ Ad)
        Pn = lq.Q * dt + Ad.T @ Pn1 @ (Ad - Bd @ K[n])
        P[n] = (Pn + Pn.T) / 2
    noise = lq.sigma ** 2 * dt * float(np.trace(P[1:], axis1=1, axis2=2).sum())
    return DiscreteRiccati(P=P, K=K, cost=float(lq.x0 @ P[0] @ lq.x0 + noise))


def feedback_cost(lq: LqMatrices, K: np.ndarray) -> float:
    """Exact E[J] of u_n = −K_n X_n on the discretised problem from x0 (Lyapunov recursion):
    S_N = G, S_n = (Q + K_nᵀRK_n)Δt + M_nᵀS_{n+1}M_n with M_n = I + (A − BK_n)Δt; E[J] = x0ᵀS_0x0 + Σ σ²Δt tr S_{n+1}.
    K: (N, m, 2), or (m, 2) for one gain at every step (zeros: the zero control)."""
    d, m = lq.B.shape
    K = np.asarray(K, np.float64)
    if K.shape == (m, d):
        K = np.broadcast_to(K, (lq.steps, m, d))
    if K.shape != (lq.steps, m, d):
        raise ValueError(f"gains must have shape ({lq.steps}, {m}, {d}) or ({m}, {d}), got {K.shape}")
    dt = lq.dt
    S = lq.G.copy()
    noise = 0.0
    for n in range(lq.steps - 1, -1, -1):
        noise += lq.sigma ** 2 * dt * float(np.trace(S))
        M = np.eye(d) + (lq.A - lq.B @ K[n]) * dt
        S = (lq.Q + K[n].T @ lq.R @ K[n]) * dt + M.T @ S @ M
    return float(lq.x0 @ S @ lq.x0 + noise)
