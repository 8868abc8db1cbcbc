"""A normalising flow: a bijector over a standard-normal base, with densities, sampling and exact marginals."""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from jaxstars.flows.base import Bijector

_LOG_2PI = math.log(2.0 * math.pi)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
    """Log density of N(0, I) summed over the last axis."""
    return -0.5 * (jnp.sum(z**2, axis=-1) + z.shape[-1] * _LOG_2PI)


@dataclass(frozen=True)
class Flow:
    """A density ``p(x | context)`` given by ``x = T(z, context)``, ``z ~ N(0, I)``.

    ``Flow`` is a hashable spec; parameters come from :meth:`init` (or training) and are passed to every method.
    Inputs may have any leading batch shape: ``x`` is ``(..., dim)`` and ``context`` is ``(..., context_dim)``,
    broadcast against each other.
    """

    bijector: Bijector

    @property
    def dim(self) -> int:
        return self.bijector.dim

    @property
    def context_dim(self) -> int:
        return self.bijector.context_dim

    def init(self, key: jax.Array):
        return self.bijector.init(key)

    # -- shapes ---------------------------------------------------------------------------------------------------
    def _flatten(self, x: jax.Array, context: jax.Array | None, dim: int | None = None):
        dim = self.dim if dim is None else dim
        x = jnp.asarray(x)
        if x.shape[-1] != dim:
            raise ValueError(f"expected inputs with last dimension {dim}, got shape {x.shape}")
        if self.context_dim and context is None:
            raise ValueError(f"this flow is conditional: pass a context of dimension {self.context_dim}")
        if context is None:
            batch = x.shape[:-1]
            return x.reshape(-1, dim), None, batch
        context = jnp.asarray(context, x.dtype)
        if context.shape[-1] != self.context_dim:
            raise ValueError(f"expected context with last dimension {self.context_dim}, got shape {context.shape}")
        batch = jnp.broadcast_shapes(x.shape[:-1], context.shape[:-1])
        x = jnp.broadcast_to(x, batch + (dim,)).reshape(-1, dim)
        context = jnp.broadcast_to(context, batch + (self.context_dim,)).reshape(-1, self.context_dim)
        return x, context, batch

    # -- densities ------------------------------------------------------------------------------------------------
    def log_prob(self, params, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """``log p(x | context)`` in evaluation mode (BatchNorm uses running statistics)."""
        flat, ctx, batch = self._flatten(x, context)
        z, log_det = self.bijector.inverse_and_log_det(params, flat, ctx)
        return (standard_normal_log_prob(z) + log_det).reshape(batch)

    def log_prob_train(self, params, x: jax.Array, context: jax.Array | None = None, weight: jax.Array | None = None):
        """Training-mode ``log p``: returns ``(log_prob, new_params)`` with BatchNorm running statistics updated.

        ``weight`` (same batch shape as ``x``) weights the BatchNorm batch statistics like the loss.
        """
        flat, ctx, batch = self._flatten(x, context)
        flat_weight = None if weight is None else jnp.broadcast_to(jnp.asarray(weight), batch).reshape(-1)
        z, log_det, new_params = self.bijector.inverse_and_log_det_train(params, flat, ctx, flat_weight)
        return (standard_normal_log_prob(z) + log_det).reshape(batch), new_params

    def marginal_log_prob(self, params, x_leading: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """Exact log density of the leading ``k = x_leading.shape[-1]`` dimensions, the rest marginalised.

        Cranmer et al. §5: for a flow that is autoregressive *in the data ordering* (every layer triangular:
        MADE with natural order, BatchNorm, no Reverse/permutation), ``z_{1:k}`` depends on ``x_{1:k}`` only, so
        ``p(x_{1:k}) = N(z_{1:k}) · prod_{i<=k} |dz_i/dx_i|``.  Order bands so the ones that may be missing come
        last.  Raises ``TypeError`` for flows that are not triangular.
        """
        k = jnp.shape(x_leading)[-1]
        if not 1 <= k <= self.dim:
            raise ValueError(f"marginal over the leading k dims needs 1 <= k <= {self.dim}, got k={k}")
        if not self.bijector.triangular:
            raise TypeError(
                "marginal_log_prob needs a flow that is triangular in the data ordering "
                "(e.g. maf(..., reverse=False)); this flow permutes dimensions"
            )
        x_leading = jnp.asarray(x_leading)
        pad = jnp.zeros(x_leading.shape[:-1] + (self.dim - k,), x_leading.dtype)
        flat, ctx, batch = self._flatten(jnp.concatenate([x_leading, pad], axis=-1), context)
        z, log_diag = self.bijector.inverse_and_log_diag(params, flat, ctx)
        out = standard_normal_log_prob(z[:, :k]) + log_diag[:, :k].sum(-1)
        return out.reshape(batch)

    def prefix_log_probs(self, params, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """``log p(x_{1:k})`` for every ``k = 1 … dim`` at once, shape ``(..., dim)`` (evaluation mode).

        One pass of a triangular flow gives every leading marginal (see :meth:`marginal_log_prob`): entry ``k-1``
        depends on ``x_{1:k}`` only, so trailing entries of ``x`` may hold any finite placeholder.
        """
        if not self.bijector.triangular:
            raise TypeError(
                "prefix_log_probs needs a flow that is triangular in the data ordering "
                "(e.g. maf(..., reverse=False)); this flow permutes dimensions"
            )
        flat, ctx, batch = self._flatten(x, context)
        z, log_diag = self.bijector.inverse_and_log_diag(params, flat, ctx)
        per_dim = -0.5 * (z**2 + _LOG_2PI) + log_diag
        return jnp.cumsum(per_dim, axis=-1).reshape(batch + (self.dim,))

    # -- sampling -------------------------------------------------------------------------------------------------
    def sample_and_log_prob(self, params, key: jax.Array, shape=(), context: jax.Array | None = None):
        """Draw samples of shape ``shape + batch(context) + (dim,)`` and their log densities."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        ctx_batch = () if context is None else jnp.shape(context)[:-1]
        z = jax.random.normal(key, shape + tuple(ctx_batch) + (self.dim,))
        flat_z, ctx, batch = self._flatten(z, context)
        x, log_det = self.bijector.forward_and_log_det(params, flat_z, ctx)
        log_prob = standard_normal_log_prob(flat_z) - log_det
        return x.reshape(batch + (self.dim,)), log_prob.reshape(batch)

    def sample(self, params, key: jax.Array, shape=(), context: jax.Array | None = None) -> jax.Array:
        return self.sample_and_log_prob(params, key, shape, context)[0]
