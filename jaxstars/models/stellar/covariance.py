"""Per-star likelihood of the stellar model: covariance (Eq. 4), colour transform (Eq. 6), whitening (Eq. 10),
χ² (Eqs. 11–14) and the closed-form reddening update (Eqs. 8–9).

Every function works on one star and is ``vmap``-ed over a sample by the ``batch_*`` helpers (compiled once per
network).  Unobserved entries of ``c = B m`` (a missing band, or ``c_0`` without a usable parallax) have infinite
variance: they are removed exactly by restricting ``C_c`` to the observed block — the masked rows and columns of
the whitening matrix are zero, so those entries contribute nothing to χ² whatever value they hold.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .network import StellarNetwork
from .stars import StellarStars

__all__ = [
    "StarArrays",
    "batch_chi2",
    "batch_reddening_update",
    "batch_whitening",
    "chi2",
    "colour_covariance",
    "magnitude_covariance",
    "reddening_update",
    "star_arrays",
    "whitening_matrix",
]

#: §2: floor on the updated reddening variance, σ_E'² ≥ 0.02² + (0.1 E')².
E_VAR_FLOOR = 0.02
E_VAR_FRACTION = 0.1
#: Release code: reddenings clipped to [0, 10].
E_MAX = 10.0


class StarArrays(NamedTuple):
    """The per-star arrays the likelihood reads (a JAX pytree; leading axis = stars)."""

    theta_n: jax.Array  # (n, 3) normalised θ
    cov_n: jax.Array  # (n, 3, 3) covariance of normalised θ
    y: jax.Array  # (n, b) B (m̂ − μ), 0 where unobserved
    mag_var: jax.Array  # (n, b) photometric variances (placeholder 1 where unobserved)
    mu_var: jax.Array  # (n,) distance-modulus variance (0 without a usable parallax)
    obs: jax.Array  # (n, b) observed entries of c
    E0: jax.Array  # (n,) reddening prior mean (fixed, Eqs. 8–9)
    E0_var: jax.Array  # (n,) reddening prior variance


def star_arrays(network: StellarNetwork, stars: StellarStars, dtype=None) -> StarArrays:
    """:class:`StarArrays` of a prepared sample for ``network`` (bands must match)."""
    if tuple(stars.bands) != tuple(network.bands):
        raise ValueError(f"the stars have bands {stars.bands}, the network {network.bands}")
    dtype = dtype or jnp.result_type(float)
    B = network.B
    m = stars.mag - stars.mu[:, None] * stars.plx_ok[:, None]
    obs = stars.colour_obs
    y = np.where(obs, m @ B.T, 0.0)
    return StarArrays(
        theta_n=jnp.asarray(network.normalise(stars.theta), dtype),
        cov_n=jnp.asarray(network.normalise_cov(stars.theta_cov), dtype),
        y=jnp.asarray(y, dtype),
        mag_var=jnp.asarray(stars.mag_var, dtype),
        mu_var=jnp.asarray(stars.mu_var, dtype),
        obs=jnp.asarray(obs),
        E0=jnp.asarray(stars.E0, dtype),
        E0_var=jnp.asarray(stars.E0_var, dtype),
    )


def magnitude_covariance(
    network: StellarNetwork, params, theta_n, cov_n, E, E_var, mag_var, mu_var, *, gradients: bool = True
) -> jax.Array:
    """Eq. 4: ``C_m = J C_θ Jᵀ + R Rᵀ σ_E² + σ_μ² 𝟙𝟙ᵀ + diag(σ_m²)`` for one star.

    ``J = ∂(M + Ê R)/∂θ`` is the network's Jacobian (``jax.jacfwd``) in normalised θ, with ``cov_n`` the covariance
    of normalised θ.  ``gradients=False`` drops the θ and reddening terms (``∇M = 0``, ``R = 0``: the first
    training iteration, §4).  ``σ_μ² = (5/ln 10 · σ_ϖ/ϖ)²`` is common to all bands.
    """
    n_b = network.n_bands
    cov = jnp.diag(mag_var) + mu_var * jnp.ones((n_b, n_b), mag_var.dtype)
    if not gradients:
        return cov

    def mean(t):
        return network.absolute_magnitudes(params, t) + E * network.extinction_vector(params, t)

    J = jax.jacfwd(mean)(theta_n)  # (b, 3)
    R = network.extinction_vector(params, theta_n)
    return cov + J @ cov_n @ J.T + E_var * jnp.outer(R, R)


def colour_covariance(network: StellarNetwork, cov_m) -> jax.Array:
    """Eq. 6: ``C_c = B C_m Bᵀ``."""
    B = jnp.asarray(network.B, cov_m.dtype)
    return B @ cov_m @ B.T


def whitening_matrix(cov_c, obs) -> jax.Array:
    """``Lᵀ`` with ``L Lᵀ = C_c⁻¹`` (Eq. 10) restricted to the observed entries ``obs`` (others: zero rows/cols).

    With the Cholesky factor ``C_c = K Kᵀ``, ``Lᵀ = K⁻¹`` (lower triangular), so ``|Lᵀ Δc|² = Δcᵀ C_c⁻¹ Δc``.
    """
    mask = obs.astype(cov_c.dtype)
    masked = cov_c * mask[:, None] * mask[None, :] + jnp.diag(1.0 - mask)
    K = jnp.linalg.cholesky(masked)
    eye = jnp.eye(cov_c.shape[0], dtype=cov_c.dtype)
    W = jax.scipy.linalg.solve_triangular(K, eye, lower=True)
    return W * mask[:, None] * mask[None, :]


def chi2(W, prediction, y) -> jax.Array:
    """Eqs. 11–14: ``|Lᵀ (B(M + ÊR) − B(m̂ − μ))|²``."""
    r = W @ (prediction - y)
    return jnp.sum(r**2)


def reddening_update(network: StellarNetwork, params, arrays_one: StarArrays, *, gradients: bool = True):
    """Eqs. 8–9 for one star: Gaussian posterior of ``E'`` given the zero-extinction prediction.

    ``m_pred = M(θ̂) + μ`` (``Ê = 0`` in Eq. 3) with ``C_pred`` from Eq. 4 at ``Ê = σ_E = 0``; the prior is the
    initial estimate ``N(E0, σ0²)`` (kept fixed across iterations, §2).  The mean is clipped to ``[0, 10]`` and the
    variance floored at ``0.02² + (0.1 E')²``.  Everything is done in colour space (``B`` is invertible, so
    ``Rᵀ C_pred⁻¹ Δm = (BR)ᵀ C_c⁻¹ BΔm``), which handles the unobserved entries exactly.

    Returns
    -------
    (E, E_var) : scalars
    """
    a = arrays_one
    cov_m = magnitude_covariance(
        network, params, a.theta_n, a.cov_n, 0.0, 0.0, a.mag_var, a.mu_var, gradients=gradients
    )
    W = whitening_matrix(colour_covariance(network, cov_m), a.obs)
    delta = W @ (a.y - network.colours(params, a.theta_n))
    r = network.extinction_vector(params, a.theta_n)
    wr = W @ (r @ jnp.asarray(network.B, r.dtype).T)
    precision = wr @ wr + 1.0 / a.E0_var
    mean = (a.E0 / a.E0_var + wr @ delta) / precision
    mean = jnp.clip(mean, 0.0, E_MAX)
    var = jnp.maximum(1.0 / precision, E_VAR_FLOOR**2 + (E_VAR_FRACTION * mean) ** 2)
    return mean, var


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("gradients",))
def batch_whitening(network: StellarNetwork, params, arrays: StarArrays, E, E_var, *, gradients: bool = True):
    """``Lᵀ`` ``(n, b, b)`` for every star at reddening ``(E, E_var)`` (Eqs. 4, 6, 10)."""

    def one(theta_n, cov_n, mag_var, mu_var, obs, e, e_var):
        cov_m = magnitude_covariance(
            network, params, theta_n, cov_n, e, e_var, mag_var, mu_var, gradients=gradients
        )
        return whitening_matrix(colour_covariance(network, cov_m), obs)

    return jax.vmap(one)(arrays.theta_n, arrays.cov_n, arrays.mag_var, arrays.mu_var, arrays.obs, E, E_var)


@functools.partial(jax.jit, static_argnums=(0,))
def batch_chi2(network: StellarNetwork, params, W, arrays: StarArrays, E) -> jax.Array:
    """χ² (Eq. 14) per star given whitening matrices ``W`` and reddenings ``E``."""
    pred = network.colour_output(params, arrays.theta_n, E)
    return jax.vmap(chi2)(W, pred, arrays.y)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("gradients",))
def batch_reddening_update(network: StellarNetwork, params, arrays: StarArrays, *, gradients: bool = True):
    """Eqs. 8–9 for every star: ``(E', σ_E'²)`` arrays."""
    return jax.vmap(lambda a: reddening_update(network, params, a, gradients=gradients))(arrays)
