"""The flow BatchNorm layer of Dinh et al. (2016), as used between MADE blocks by Cranmer et al. (§3.1)."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from jaxstars.flows.base import Bijector, register


@register
@dataclass(frozen=True)
class BatchNorm(Bijector):
    """Invertible batch normalisation, elementwise (so it keeps a flow triangular).

    Normalising direction: ``z = (x - m) / sqrt(v + eps) * exp(log_gamma) + beta`` with
    ``log|dz/dx| = sum(log_gamma - ½ log(v + eps))``.  In training mode ``(m, v)`` are the batch mean and variance
    and the running statistics are updated by an exponential moving average
    (``running = momentum * running + (1 - momentum) * batch``); in evaluation mode the running statistics are used.
    Running statistics are parameters named ``running_mean`` / ``running_var``: they get no gradient, and the
    training loop excludes them from weight decay.
    """

    momentum: float = 0.9
    eps: float = 1e-5

    triangular = True

    def init(self, key):
        return {
            "log_gamma": jnp.zeros(self.dim),
            "beta": jnp.zeros(self.dim),
            "running_mean": jnp.zeros(self.dim),
            "running_var": jnp.ones(self.dim),
        }

    def _normalise(self, params, x, mean, var):
        log_diag = params["log_gamma"] - 0.5 * jnp.log(var + self.eps)
        z = (x - mean) * jnp.exp(log_diag) + params["beta"]
        return z, jnp.broadcast_to(log_diag, x.shape)

    def inverse_and_log_diag(self, params, x, context=None):
        return self._normalise(params, x, params["running_mean"], params["running_var"])

    def inverse_and_log_det(self, params, x, context=None):
        z, log_diag = self.inverse_and_log_diag(params, x, context)
        return z, log_diag.sum(-1)

    def inverse_and_log_det_train(self, params, x, context=None, weight=None):
        # Weighted batch statistics: a zero-weight point does not move the normalisation (Cranmer's 1/σ_P² weights).
        w = jnp.ones(x.shape[:1], x.dtype) if weight is None else jnp.asarray(weight, x.dtype)
        w = w / jnp.sum(w)
        mean = jnp.sum(w[:, None] * x, axis=0)
        var = jnp.sum(w[:, None] * (x - mean) ** 2, axis=0)
        z, log_diag = self._normalise(params, x, mean, var)
        m = self.momentum
        new = dict(params)
        new["running_mean"] = jax.lax.stop_gradient(m * params["running_mean"] + (1 - m) * mean)
        new["running_var"] = jax.lax.stop_gradient(m * params["running_var"] + (1 - m) * var)
        return z, log_diag.sum(-1), new

    def forward_and_log_det(self, params, z, context=None):
        log_diag = params["log_gamma"] - 0.5 * jnp.log(params["running_var"] + self.eps)
        x = (z - params["beta"]) * jnp.exp(-log_diag) + params["running_mean"]
        return x, jnp.broadcast_to(-log_diag.sum(), z.shape[:-1])
