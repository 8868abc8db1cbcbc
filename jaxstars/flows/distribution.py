"""``FlowDistribution``: any jaxstars flow as a NumPyro distribution (prior, likelihood factor or observed site)."""

from __future__ import annotations

import jax.numpy as jnp
from numpyro.distributions import Distribution, constraints

from jaxstars.flows.flow import Flow


class FlowDistribution(Distribution):
    """A trained flow (plus optional context) as a NumPyro ``Distribution`` over ``R^dim``.

    Parameters
    ----------
    flow : Flow
    params : the flow's parameter pytree.
    context : optional context array ``(..., context_dim)``; its leading shape is the batch shape.
    marginal_dims : if given (``k``), the distribution of the leading ``k`` dimensions with the rest marginalised
        exactly (Cranmer et al. §5).  Needs a flow triangular in the data ordering (MAF with ``reverse=False``,
        BNAF with ``reverse=False``, BatchNorm): put the dimensions that may be missing last.

    Examples
    --------
    ``numpyro.sample("x", FlowDistribution(flow, params))`` makes the flow a prior;
    ``numpyro.sample("obs", FlowDistribution(flow, params, context=c), obs=x)`` a likelihood.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    reparametrized_params: list = []
    pytree_data_fields = ("params", "context")
    pytree_aux_fields = ("flow", "marginal_dims")

    def __init__(self, flow: Flow, params, context=None, marginal_dims: int | None = None, *, validate_args=None):
        if context is None and flow.context_dim:
            raise ValueError(f"this flow is conditional: pass a context of dimension {flow.context_dim}")
        if marginal_dims is not None:
            if not 1 <= marginal_dims <= flow.dim:
                raise ValueError(f"marginal_dims must be in 1..{flow.dim}, got {marginal_dims}")
            if not flow.bijector.triangular:
                raise TypeError("marginal_dims needs a flow triangular in the data ordering (no permutations)")
        self.flow = flow
        self.params = params
        self.context = None if context is None else jnp.asarray(context)
        self.marginal_dims = marginal_dims
        batch_shape = () if context is None else tuple(jnp.shape(context)[:-1])
        event_dim = flow.dim if marginal_dims is None else marginal_dims
        super().__init__(batch_shape=batch_shape, event_shape=(event_dim,), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        x = self.flow.sample(self.params, key, tuple(sample_shape), self.context)
        # For a triangular flow the leading coordinates of a joint sample are a sample of their marginal.
        return x if self.marginal_dims is None else x[..., : self.marginal_dims]

    def log_prob(self, value):
        if self.marginal_dims is None:
            return self.flow.log_prob(self.params, value, self.context)
        return self.flow.marginal_log_prob(self.params, value, self.context)
