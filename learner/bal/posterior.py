"""Exact Gaussian posteriors of θ along an observed path, for a drift that is affine in θ (issue #23 §3).

With state observations the Euler step is X_{n+1} = X_n + b(X_n, u_n; θ)Δt + σ√Δt ξ. When the drift is affine
in θ, b(x, u; θ) = b(x, u; 0) + H(x, u) θ (the LQ drift (A0 + θA1)x + Bu; also the forge drift θ_type g + u),
each increment is a linear-Gaussian observation of θ:

    y_n = X_{n+1} − X_n − b(X_n, u_n; 0)Δt = D_n θ + e_n,   D_n = H(X_n, u_n)Δt,   e_n ~ N(0, σ²Δt I).

- `static_posterior`: θ fixed, prior N(m0, diag s0²) → Bayesian linear regression on the increments.
- `kalman_posterior`: the direct filter's own pseudo-dynamics (Eq. 21: θ_{n+1} = θ_n + walk_std ξ before each
  step's update, Eq. 22–23: likelihood exp(−‖X̃ − X_{n+1}‖²/(2σ²Δt))) is a linear-Gaussian state-space model,
  so the Kalman filter is its exact posterior: what the particle filter (controller/modes/bal/filter.py)
  approximates. For a state-dependent θ only the active components (model.active(x)) walk and are seen, as
  in the particle filter.

`design` reads H from the model by evaluating the drift at θ = 0 and the unit vectors and checks affinity.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Gaussian", "design", "static_posterior", "kalman_posterior"]


@dataclass(frozen=True)
class Gaussian:
    """A Gaussian over θ: mean (P,), cov (P,P); std the marginal standard deviations."""
    mean: np.ndarray
    cov: np.ndarray

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(np.diag(self.cov))


def _path(states: np.ndarray, controls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, u = np.asarray(states, np.float64), np.asarray(controls, np.float64)
    if u.ndim == 1:
        u = u[:, None]
    if x.ndim != 2 or x.shape[1] != 2 or u.ndim != 2 or len(x) != len(u) + 1:
        raise ValueError(f"need states (N+1, 2) and controls (N, m), got {x.shape} and {u.shape}")
    return x, u


def design(model, x: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """b0 (B,2) = b(x, u; 0) and H (B,2,P) with b(x, u; θ) = b0 + H θ; ValueError if b is not affine in θ."""
    P = model.theta_dim
    b0 = model.drift(x, u, np.zeros(P))
    H = np.stack([model.drift(x, u, np.eye(P)[k]) - b0 for k in range(P)], axis=-1)
    probe = np.linspace(0.5, 1.5, P)
    scale = 1.0 + np.abs(b0).max() + np.abs(H).max()
    if not np.allclose(model.drift(x, u, probe), b0 + H @ probe, atol=1e-9 * scale):
        raise ValueError("the drift is not affine in theta: no exact Gaussian posterior")
    return b0, H


def _observations(model, dt: float, states: np.ndarray, controls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, u = _path(states, controls)
    b0, H = design(model, x[:-1], u)
    return x[1:] - x[:-1] - b0 * dt, H * dt  # y (N,2), D (N,2,P)


def _prior(prior_mean, prior_std, P: int) -> tuple[np.ndarray, np.ndarray]:
    m0 = np.broadcast_to(np.asarray(prior_mean, np.float64), (P,)).copy()
    s0 = np.broadcast_to(np.asarray(prior_std, np.float64), (P,)).copy()
    if np.any(s0 <= 0):
        raise ValueError(f"prior_std must be > 0, got {s0}")
    return m0, s0


def static_posterior(model, dt: float, sigma: float, prior_mean, prior_std, states: np.ndarray,
                     controls: np.ndarray) -> Gaussian:
    """Posterior of a fixed θ after the whole path (Bayesian linear regression, noise variance σ²Δt)."""
    if sigma <= 0:
        raise ValueError("sigma must be > 0 for a posterior from state increments")
    m0, s0 = _prior(prior_mean, prior_std, model.theta_dim)
    y, D = _observations(model, dt, states, controls)
    noise = sigma ** 2 * dt
    precision = np.diag(1.0 / s0 ** 2) + np.einsum("nip,niq->pq", D, D) / noise
    info = m0 / s0 ** 2 + np.einsum("nip,ni->p", D, y) / noise
    cov = np.linalg.inv(precision)
    return Gaussian(mean=cov @ info, cov=(cov + cov.T) / 2)


def kalman_posterior(model, dt: float, sigma: float, prior_mean, prior_std, walk_std, states: np.ndarray,
                     controls: np.ndarray) -> list[Gaussian]:
    """The exact filtering posteriors of the random-walk θ after each step n = 1..N (a list of N Gaussians):
    predict (Eq. 21: cov += diag(walk_std²) on the walking components), then the Kalman update with y_n."""
    if sigma <= 0:
        raise ValueError("sigma must be > 0 for a posterior from state increments")
    P = model.theta_dim
    mean, s0 = _prior(prior_mean, prior_std, P)
    walk = np.broadcast_to(np.asarray(walk_std, np.float64), (P,))
    if np.any(walk < 0):
        raise ValueError(f"walk_std must be >= 0, got {walk}")
    x, _ = _path(states, controls)
    y, D = _observations(model, dt, states, controls)
    cov = np.diag(s0 ** 2)
    R = sigma ** 2 * dt * np.eye(2)
    out = []
    for n in range(len(y)):
        active = np.isin(np.arange(P), model.active(x[n]))
        cov = cov + np.diag(np.where(active, walk ** 2, 0.0))
        Dn = D[n] * active  # only the active component is seen (the particle filter moves only it)
        S = Dn @ cov @ Dn.T + R
        gain = cov @ Dn.T @ np.linalg.inv(S)
        mean = mean + gain @ (y[n] - Dn @ mean)
        cov = (np.eye(P) - gain @ Dn) @ cov
        cov = (cov + cov.T) / 2
        out.append(Gaussian(mean=mean.copy(), cov=cov.copy()))
    return out
