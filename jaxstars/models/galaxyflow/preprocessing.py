"""The preprocessing of Lim et al. §3.3 and its exact inverse, with log-Jacobians so densities stay in physical units.

Positions (Eqs. 9–11)::

    s = (r - r☉) / (r_max c)                 centre and scale into the unit ball, c = 1.000001      (Eq. 9)
    w = s / |s| · atanh|s|                   open ball → R³                                         (Eq. 10)
    u = (w - μ_w) / σ_w                      standardise with training-set mean and std              (Eq. 11)

Velocities: ``u_v = (v - μ_v) / σ_v`` (Eq. 11 only).  A flow models ``p(u)``; the physical density is
``p(r) = p(u) |det ∂u/∂r|`` with, for the radial map of a 3-D ball (radial stretch × two tangential stretches),

    log|det ∂w/∂s| = -log(1 - ρ²) + 2 log(atanh ρ / ρ),     ρ = |s|,

so ``log|det ∂u/∂r| = -3 log(r_max c) + log|det ∂w/∂s| - Σ log σ_w``.  Points at or beyond ``ρ = 1`` (outside the
selection sphere times ``c``) have zero density: their log-density is ``-inf``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

C_BOUNDARY = 1.000001  # Lim et al. §3.3 (i)


def _atanh_over_x(rho2):
    """``atanh(ρ)/ρ`` from ``ρ²``, with its series ``1 + ρ²/3 + ρ⁴/5`` near 0 (finite values and gradients at 0)."""
    small = rho2 < 1e-6
    safe = jnp.sqrt(jnp.where(small, 0.25, rho2))
    return jnp.where(small, 1.0 + rho2 / 3.0 + rho2**2 / 5.0, jnp.arctanh(safe) / safe)


def _tanh_over_x(a2):
    """``tanh(a)/a`` from ``a²``, with its series near 0."""
    small = a2 < 1e-6
    safe = jnp.sqrt(jnp.where(small, 0.25, a2))
    return jnp.where(small, 1.0 - a2 / 3.0 + 2.0 * a2**2 / 15.0, jnp.tanh(safe) / safe)


@dataclass(frozen=True)
class PositionPreprocessor:
    """Eqs. 9–11 for positions.  ``centre`` (3,) kpc, ``r_max`` kpc, ``mean``/``std`` (3,) of ``w`` (Eq. 10 output)."""

    centre: tuple
    r_max: float
    mean: tuple
    std: tuple
    c: float = C_BOUNDARY

    @classmethod
    def fit(cls, positions, centre, r_max: float, c: float = C_BOUNDARY) -> PositionPreprocessor:
        """Take ``mean``/``std`` of Eq. 11 from training positions (kpc); all must lie inside ``r_max · c``."""
        positions = np.asarray(positions, np.float64)
        s = (positions - np.asarray(centre)) / (r_max * c)
        rho = np.linalg.norm(s, axis=1)
        if np.any(rho >= 1.0):
            raise ValueError(
                f"{int(np.sum(rho >= 1))} positions lie outside the selection sphere (r_max = {r_max} kpc); "
                "cut them before fitting the preprocessing"
            )
        w = s * (np.arctanh(rho) / np.where(rho > 0, rho, 1.0))[:, None]
        w[rho == 0] = 0.0
        return cls(
            tuple(map(float, centre)), float(r_max), tuple(map(float, w.mean(0))), tuple(map(float, w.std(0))), c
        )

    def forward(self, r):
        """Physical ``r`` (…, 3) kpc → ``(u, log|det ∂u/∂r|)``; ``u`` is NaN-free but meaningless outside the ball,
        where the log-det is ``-inf``."""
        r = jnp.asarray(r)
        s = (r - jnp.asarray(self.centre, r.dtype)) / (self.r_max * self.c)
        rho2 = jnp.sum(s**2, axis=-1)
        inside = rho2 < 1.0
        rho2_in = jnp.where(inside, rho2, 0.25)
        ratio = _atanh_over_x(rho2_in)
        w = s * ratio[..., None]
        u = (w - jnp.asarray(self.mean, r.dtype)) / jnp.asarray(self.std, r.dtype)
        log_det = (
            -jnp.log1p(-rho2_in)
            + 2.0 * jnp.log(ratio)
            - 3.0 * jnp.log(self.r_max * self.c)
            - jnp.sum(jnp.log(jnp.asarray(self.std, r.dtype)))
        )
        return jnp.where(inside[..., None], u, 0.0), jnp.where(inside, log_det, -jnp.inf)

    def inverse(self, u):
        """``u`` → physical ``r`` (kpc), the exact inverse of :meth:`forward` (always inside the open ball)."""
        u = jnp.asarray(u)
        w = u * jnp.asarray(self.std, u.dtype) + jnp.asarray(self.mean, u.dtype)
        s = w * _tanh_over_x(jnp.sum(w**2, axis=-1))[..., None]
        return s * (self.r_max * self.c) + jnp.asarray(self.centre, u.dtype)

    def to_dict(self) -> dict:
        return {
            "centre": list(self.centre),
            "r_max": self.r_max,
            "mean": list(self.mean),
            "std": list(self.std),
            "c": self.c,
        }

    @classmethod
    def from_dict(cls, d: dict) -> PositionPreprocessor:
        return cls(
            tuple(d["centre"]), float(d["r_max"]), tuple(d["mean"]), tuple(d["std"]), float(d.get("c", C_BOUNDARY))
        )


@dataclass(frozen=True)
class VelocityPreprocessor:
    """Standardisation of velocities (Eq. 11 applied to ``v``; no boundary to remove)."""

    mean: tuple
    std: tuple

    @classmethod
    def fit(cls, velocities) -> VelocityPreprocessor:
        v = np.asarray(velocities, np.float64)
        return cls(tuple(map(float, v.mean(0))), tuple(map(float, v.std(0))))

    def forward(self, v):
        """``v`` (…, 3) km/s → ``(u_v, log|det ∂u_v/∂v|)``."""
        v = jnp.asarray(v)
        std = jnp.asarray(self.std, v.dtype)
        u = (v - jnp.asarray(self.mean, v.dtype)) / std
        return u, jnp.broadcast_to(-jnp.sum(jnp.log(std)), v.shape[:-1])

    def inverse(self, u):
        u = jnp.asarray(u)
        return u * jnp.asarray(self.std, u.dtype) + jnp.asarray(self.mean, u.dtype)

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> VelocityPreprocessor:
        return cls(tuple(d["mean"]), tuple(d["std"]))
