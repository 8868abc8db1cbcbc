"""Continuous normalising flow (FFJORD-style) with a fixed-step RK4 solver, as used by GalaxyFlow.

A neural ODE (Chen et al. 2018) moves a point along ``dx/dt = f(x, t, c)``; the instantaneous change of
variables (Chen et al. 2018, Theorem 1; Lim et al., paper 004, §3.2 Eqs. 7-8) gives the log-det by integrating
the trace of the Jacobian of ``f`` along the same trajectory::

    d/dt log|det dx(t)/dx(0)| = tr(∂f/∂x)(x(t), t, c)        (equivalently d log p / dt = -tr, Lim Eq. 8)

GalaxyFlow (Lim et al. §3.2) uses an MLP with 4 hidden layers of 32 GELU units for ``f``, the conditioning
variables as extra inputs, base distribution at ``t = 0`` and data at ``t = 1``, classic RK4 with 20 steps in
*both* directions (the inverse is the solver run backwards, not an exact numerical inverse) and the exact trace.
:func:`cnf` builds that model.  Gradients are taken by backpropagating through the solver steps
(discretise-then-optimise), so the log-det returned is that of the solver's integrated trace; it differs from
the log-det of the discretised map by the RK4 error, ``O(h^4)``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from jaxstars.flows.base import Bijector, check_context, register
from jaxstars.flows.nn import ACTIVATIONS, mlp_apply, mlp_init

_TRACES = ("exact", "hutchinson")


@register
@dataclass(frozen=True)
class CNF(Bijector):
    """A continuous normalising flow ``x = phi_{0→t1}(z)`` with vector field ``f(x, t, c) = MLP([x, t, c])``.

    Parameters
    ----------
    dim, context_dim : int
        Data and context dimensions.  The context (if any) and the time are appended to the MLP input.
    hidden : tuple of int
        Hidden-layer widths of the vector-field MLP (GalaxyFlow: four layers of 32).
    activation : str
        Key of :data:`jaxstars.flows.nn.ACTIVATIONS`; ``"gelu"`` (Lim et al.) keeps the field smooth, which RK4
        needs for its fourth-order accuracy.
    n_steps : int
        Number of fixed classic-RK4 steps over ``[0, t1]`` (static; the same in both directions).
    trace : {"exact", "hutchinson"}
        ``"exact"``: the per-sample Jacobian from ``jax.jacfwd`` (``dim`` forward-mode passes per field
        evaluation).  It is the default and the right choice for ``dim <= 8`` or so (GalaxyFlow's densities are
        3-D).  ``"hutchinson"``: the unbiased estimator ``tr(J) = E[v^T J v]`` with Rademacher probes ``v``
        (Grathwohl et al. 2019, FFJORD §3.1), one Jacobian-vector product per evaluation, for larger ``dim``.
        The log-det is then a random variable whose mean is the exact-trace value; the map ``x`` is unaffected.
    t1 : float
        End time of the integration.
    hutchinson_seed : int
        Seed of the Hutchinson probes when no ``key`` is passed to the methods (so :class:`Flow` works unchanged
        and results are reproducible).  Fixed probes make the estimate biased *for a given seed*; when training
        with ``trace="hutchinson"`` pass a fresh ``key`` every iteration.  Ignored by the exact trace.
    remat : bool
        Rematerialise each RK4 step in the backward pass (``jax.checkpoint``): only the state between steps is
        stored and the four stages are recomputed when differentiating.  Values are unchanged; training is
        memory-bound without it (every stage's tangent arrays of the exact trace are kept), and on a 2-core CPU
        it measured ~2.6x faster per training step (4x32 field, 1024 points).  Set ``False`` to trade memory
        for the recomputation.

    Notes
    -----
    A fresh probe is drawn (per sample) for each RK4 step and shared by the step's four stages; step ``j``
    covers the same time interval ``[j h, (j + 1) h]`` in both directions, so with the same key the forward and
    inverse log-dets use the same probes.  Params: ``{"mlp": [...]}`` (a :func:`jaxstars.flows.nn.mlp_init`
    list); the output layer starts small so a fresh CNF is close to the identity.
    """

    hidden: tuple = (32, 32, 32, 32)
    activation: str = "gelu"
    n_steps: int = 20
    trace: str = "exact"
    t1: float = 1.0
    hutchinson_seed: int = 0
    remat: bool = True

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(w) for w in self.hidden))
        if self.trace not in _TRACES:
            raise ValueError(f"trace must be one of {_TRACES}, got {self.trace!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; known: {sorted(ACTIVATIONS)}")
        if self.n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {self.n_steps}")

    def init(self, key):
        sizes = [self.dim + 1 + self.context_dim, *self.hidden, self.dim]
        return {"mlp": mlp_init(key, sizes, final_scale=1e-2)}

    # -- the ODE ---------------------------------------------------------------------------------------------------
    def vector_field(self, params, x, t, context=None):
        """``f(x, t, c) = MLP([x, t, c])`` for ``x`` of shape ``(..., dim)`` and a scalar time ``t``."""
        t_col = jnp.full(x.shape[:-1] + (1,), t, x.dtype)
        inputs = [x, t_col] if context is None else [x, t_col, context]
        return mlp_apply(params["mlp"], jnp.concatenate(inputs, axis=-1), self.activation)

    def _dynamics(self, params, x, t, context, probe):
        """Velocity ``f`` (n, dim) and the trace of ``∂f/∂x`` (n,) -- exact, or Hutchinson's ``v^T J v``."""
        if probe is None:

            def one(xi, ci):
                velocity = self.vector_field(params, xi, t, ci)
                return velocity, velocity

            jac, velocity = jax.vmap(jax.jacfwd(one, has_aux=True))(x, context)
            return velocity, jnp.trace(jac, axis1=-2, axis2=-1)
        # Rows are independent, so one batched JVP gives every sample's J_i v_i.
        velocity, jv = jax.jvp(lambda y: self.vector_field(params, y, t, context), (x,), (probe,))
        return velocity, jnp.sum(probe * jv, axis=-1)

    # -- Bijector contract -----------------------------------------------------------------------------------------
    def forward_and_log_det(self, params, z, context=None, *, key=None):
        """Latent → data: integrate from 0 to ``t1``; returns ``(x, ∫ tr(∂f/∂x) dt)`` = ``(x, log|det dx/dz|)``.

        ``key`` (optional) seeds the Hutchinson probes; it is ignored by the exact trace.
        """
        check_context(self, context)
        return _solve(self, params, z, context, key, backward=False)

    def inverse_and_log_det(self, params, x, context=None, *, key=None):
        """Data → latent: integrate from ``t1`` back to 0; returns ``(z, -∫ tr dt)`` = ``(z, log|det dz/dx|)``.

        ``key`` (optional) seeds the Hutchinson probes; it is ignored by the exact trace.
        """
        check_context(self, context)
        return _solve(self, params, x, context, key, backward=True)


@functools.partial(jax.jit, static_argnames=("spec", "backward"))
def _solve(spec: CNF, params, x, context, key, backward: bool):
    """Classic RK4 for the augmented state ``(x, log-det)`` over ``[0, t1]`` (or back from ``t1`` to 0).

    Jitted with the (hashable) spec static, so eager calls -- e.g. ``Flow.log_prob`` outside ``jit`` -- compile
    the solver once per spec and input shape instead of on every call; inside an outer ``jit`` it is inlined.
    """
    if spec.trace == "hutchinson" and key is None:
        key = jax.random.key(spec.hutchinson_seed)
    h = spec.t1 / spec.n_steps
    dt = -h if backward else h

    def step(carry, j):
        y, log_det = carry
        t = (j + 1) * h if backward else j * h  # start of step j in the direction of integration
        probe = None
        if spec.trace == "hutchinson":
            probe = jax.random.rademacher(jax.random.fold_in(key, j), y.shape, y.dtype)
        k1, l1 = spec._dynamics(params, y, t, context, probe)
        k2, l2 = spec._dynamics(params, y + 0.5 * dt * k1, t + 0.5 * dt, context, probe)
        k3, l3 = spec._dynamics(params, y + 0.5 * dt * k2, t + 0.5 * dt, context, probe)
        k4, l4 = spec._dynamics(params, y + dt * k3, t + dt, context, probe)
        y = y + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        log_det = log_det + dt / 6.0 * (l1 + 2.0 * l2 + 2.0 * l3 + l4)
        return (y, log_det), None

    if spec.remat:
        step = jax.checkpoint(step)
    init = (x, jnp.zeros(x.shape[:-1], x.dtype))
    (y, log_det), _ = jax.lax.scan(step, init, jnp.arange(spec.n_steps), reverse=backward)
    return y, log_det


def cnf(
    dim: int,
    context_dim: int = 0,
    *,
    hidden: tuple = (32, 32, 32, 32),
    n_steps: int = 20,
    activation: str = "gelu",
    trace: str = "exact",
    t1: float = 1.0,
    hutchinson_seed: int = 0,
    remat: bool = True,
) -> CNF:
    """The GalaxyFlow CNF (Lim et al. §3.2): MLP 4×32 GELU field, RK4 with 20 steps, exact trace by default."""
    return CNF(
        dim,
        context_dim,
        hidden=tuple(hidden),
        activation=activation,
        n_steps=n_steps,
        trace=trace,
        t1=float(t1),
        hutchinson_seed=hutchinson_seed,
        remat=bool(remat),
    )
