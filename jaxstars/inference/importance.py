"""Importance-sampled marginal likelihoods: ``log (1/K) Σ_k w_k`` with the effective sample size.

The estimator used by FLOWER's training loss (Appendix A) and by per-star evidences: given log weights
``log w_k = log p(data, θ_k) − log q(θ_k)`` for K draws from a proposal ``q``, the marginal likelihood estimate is
``log mean exp(log w)``; the effective sample size ``(Σ w)² / Σ w²`` says how much to trust it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxstars.flows.train import log_mean_exp


class ImportanceResult(NamedTuple):
    """``log_marginal`` (log mean of the weights) and ``ess`` (Kish effective sample size, 1..K)."""

    log_marginal: jax.Array
    ess: jax.Array


def importance_log_marginal(log_weights: jax.Array, axis: int = -1) -> ImportanceResult:
    """Log mean exp of ``log_weights`` along ``axis`` and the Kish effective sample size.

    Non-finite log weights (e.g. ``-inf`` for draws outside the support) contribute zero weight; if no weight is
    positive, ``log_marginal`` is ``-inf`` and ``ess`` is 0.
    """
    log_weights = jnp.where(jnp.isnan(log_weights), -jnp.inf, log_weights)
    log_mean = log_mean_exp(log_weights, axis=axis)
    log_sum = log_mean + math.log(log_weights.shape[axis])
    log_sum_sq = jax.scipy.special.logsumexp(2.0 * log_weights, axis=axis)
    ess = jnp.where(jnp.isfinite(log_sum), jnp.exp(2.0 * log_sum - log_sum_sq), 0.0)
    return ImportanceResult(log_mean, ess)
