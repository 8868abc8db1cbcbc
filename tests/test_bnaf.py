"""Tests of the block neural autoregressive flow (jaxstars.flows.bnaf)."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flow_checks import (
    check_log_det,
    check_normalised_2d,
    check_round_trip,
    check_sample_mean_matches_quadrature,
    check_samples_match_density,
)

from jaxstars.flows import Flow
from jaxstars.flows.base import from_config
from jaxstars.flows.bnaf import BNAF, bnaf

CONTEXT = jnp.array([0.3, -0.5])


def perturb(params, key, scale=0.3):
    """Add N(0, scale²) noise to every leaf so the map is far from its near-identity initialisation."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    noisy = [leaf + scale * jax.random.normal(k, leaf.shape, leaf.dtype) for leaf, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(tree, noisy)


def make(spec, seed=0):
    return spec, perturb(spec.init(jax.random.key(seed)), jax.random.key(seed + 100))


class Jitted:
    """The bijector interface with jitted methods, so the generic (eager, per-point) checks run fast."""

    def __init__(self, bijector):
        self.dim, self.context_dim, self.triangular = bijector.dim, bijector.context_dim, bijector.triangular
        self.forward_and_log_det = jax.jit(bijector.forward_and_log_det)
        self.inverse_and_log_det = jax.jit(bijector.inverse_and_log_det)
        self.inverse_and_log_diag = jax.jit(bijector.inverse_and_log_diag)


def data(n, dim, context_dim, seed=1):
    x = jax.random.normal(jax.random.key(seed), (n, dim))
    c = None if not context_dim else jax.random.normal(jax.random.key(seed + 1), (n, context_dim))
    return x, c


@pytest.mark.parametrize("activation", ["tanh", "leaky_tanh"])
@pytest.mark.parametrize("context_dim", [0, 2])
def test_layer_round_trip_and_log_det(activation, context_dim):
    spec, params = make(BNAF(3, context_dim, activation=activation))
    x, c = data(4, 3, context_dim)
    check_round_trip(Jitted(spec), params, x, c)
    check_log_det(Jitted(spec), params, x, c)
    if context_dim:  # the context really changes the map
        assert not np.allclose(spec.inverse(params, x, c), spec.inverse(params, x, -c), atol=1e-2)


@pytest.mark.parametrize("activation", ["tanh", "leaky_tanh"])
@pytest.mark.parametrize("context_dim", [0, 2])
def test_stack_round_trip_and_log_det(activation, context_dim):
    spec, params = make(bnaf(3, context_dim, activation=activation))
    assert not spec.triangular
    x0, c = data(4, 3, context_dim)
    # Points that are images of data points, so the forward map is defined at them even for a tanh stack,
    # whose latent image is bounded (see test_tanh_outside_image_is_nan).
    pts = spec.inverse(params, x0, c)
    check_round_trip(Jitted(spec), params, pts, c)
    check_log_det(Jitted(spec), params, pts, c)


@pytest.mark.parametrize("activation", ["tanh", "leaky_tanh"])
def test_inverse_accuracy_jit_and_vmap(activation):
    spec, params = make(BNAF(3, 2, activation=activation))
    x, c = data(256, 3, 2, seed=3)
    z = spec.inverse(params, x, c)
    x_back = jax.jit(spec.forward)(params, z, c)
    assert float(jnp.max(jnp.abs(x_back - x))) <= 1e-5
    # vmap over single rows gives the same as the batched solve.
    per_row = jax.vmap(lambda zi, ci: spec.forward(params, zi[None], ci[None])[0])(z[:16], c[:16])
    np.testing.assert_allclose(per_row, x_back[:16], atol=1e-6)


def test_log_diag_is_the_jacobian_diagonal():
    spec, params = make(BNAF(3, 2, depth=4, block_dim=3))
    assert spec.triangular
    x, c = data(5, 3, 2)
    z, log_diag = spec.inverse_and_log_diag(params, x, c)
    z2, log_det = spec.inverse_and_log_det(params, x, c)
    np.testing.assert_allclose(z, z2)
    np.testing.assert_allclose(log_diag.sum(-1), log_det, rtol=1e-6, atol=1e-6)
    for i in range(x.shape[0]):
        jac = jax.jacfwd(lambda xi: spec.inverse(params, xi[None], c[i : i + 1])[0])(x[i])
        assert np.all(np.triu(np.asarray(jac), 1) == 0.0)  # triangular: z_i depends on x_{<=i} only
        np.testing.assert_allclose(jnp.log(jnp.diag(jac)), log_diag[i], rtol=1e-5, atol=1e-5)


def test_triangular_stack_without_reverse():
    spec, params = make(bnaf(3, 2, reverse=False, activation="leaky_tanh"))
    assert spec.triangular
    x, c = data(5, 3, 2)
    _, log_diag = spec.inverse_and_log_diag(params, x, c)
    jac = jax.vmap(jax.jacfwd(lambda xi, ci: spec.inverse(params, xi[None], ci[None])[0]))(x, c)
    np.testing.assert_allclose(log_diag, jnp.log(jnp.diagonal(jac, axis1=1, axis2=2)), rtol=1e-5, atol=1e-5)


def test_gradients_through_sampling_match_finite_differences():
    """Implicit-function gradients of the numerical inverse w.r.t. params, z and context (float64)."""
    with jax.enable_x64(True):
        spec, params = make(BNAF(2, 1, depth=3, block_dim=3))
        z = jnp.array([[0.4, -1.1], [-0.7, 0.9], [1.3, 0.2]])
        c = jnp.array([[0.5], [-0.3], [1.0]])
        weights = jnp.array([0.7, -1.3])

        def loss(p, z, c):
            x, log_det = spec.forward_and_log_det(p, z, c)
            return jnp.sum(jnp.sin(x) * weights) + jnp.sum(log_det)

        grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(params, z, c)
        keys = jax.random.split(jax.random.key(7), 3)
        for arg, (primal, grad, key) in enumerate(zip((params, z, c), grads, keys)):
            leaves, tree = jax.tree_util.tree_flatten(primal)
            direction = jax.tree_util.tree_unflatten(
                tree, [jax.random.normal(k, leaf.shape) for k, leaf in zip(jax.random.split(key, len(leaves)), leaves)]
            )
            eps = 1e-5

            def at(sign, arg=arg, primal=primal, direction=direction):
                args = [params, z, c]
                args[arg] = jax.tree_util.tree_map(lambda a, d: a + sign * eps * d, primal, direction)
                return loss(*args)

            numeric = (at(1.0) - at(-1.0)) / (2 * eps)
            analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(direction)))
            np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("activation", ["tanh", "leaky_tanh"])
@pytest.mark.parametrize("context", [None, CONTEXT])
def test_density_normalised(activation, context):
    spec, params = make(BNAF(2, 0 if context is None else 2, activation=activation))
    check_normalised_2d(Flow(Jitted(spec)), params, context, half_width=16.0, n=641)


@pytest.mark.parametrize("context", [None, CONTEXT])
def test_samples_match_density(context):
    spec, params = make(BNAF(2, 0 if context is None else 2, activation="leaky_tanh"))
    flow = Flow(Jitted(spec))
    check_samples_match_density(flow, params, jax.random.key(11), context)
    check_sample_mean_matches_quadrature(flow, params, jax.random.key(12), context, half_width=16.0, n_grid=481)


def test_leaky_tanh_tails_stay_finite_and_invertible():
    spec, params = make(BNAF(2, 2, activation="leaky_tanh"))
    x = jnp.array([[1e3, -1e3], [-1e3, 1e3], [1e3, 1e3], [-1e3, -1e3]])
    c = jnp.broadcast_to(CONTEXT, (4, 2))
    z, log_det = spec.inverse_and_log_det(params, x, c)
    assert np.all(np.isfinite(z)) and np.all(np.isfinite(log_det))
    # Linear tails: log|dz/dx| stays bounded below by about (depth - 1) * dim * log(0.01) - O(10).
    assert np.all(log_det > 2 * 2 * math.log(0.01) - 20)
    x_back, log_det_fwd = spec.forward_and_log_det(params, z, c)
    np.testing.assert_allclose(x_back, x, rtol=1e-4)
    np.testing.assert_allclose(log_det_fwd, -log_det, rtol=1e-4, atol=1e-4)


def test_tanh_outside_image_is_nan():
    """A tanh layer's latent image is a bounded box: points outside it have no preimage and give NaN."""
    spec, params = make(BNAF(2, activation="tanh"))
    far = spec.inverse(params, jnp.array([[1e6, 0.0]]))[0, 0] + 1.0  # beyond sup_x z_1
    x = spec.forward(params, jnp.array([[0.1, 0.2], [far, 0.2]]))
    assert np.all(np.isfinite(x[0])) and np.all(np.isnan(x[1]))


def test_spec_hashable_and_config_round_trip():
    layer = BNAF(3, 2, depth=2, block_dim=5, activation="leaky_tanh")
    assert hash(layer) == hash(BNAF(3, 2, depth=2, block_dim=5, activation="leaky_tanh"))
    assert from_config(json.loads(json.dumps(layer.config()))) == layer
    stack = bnaf(3, 2, n_layers=3)
    hash(stack)
    assert from_config(json.loads(json.dumps(stack.config()))) == stack
    with pytest.raises(ValueError):
        BNAF(3, activation="relu")
    _, params = make(layer)
    with pytest.raises(ValueError):
        layer.inverse(params, jnp.zeros((1, 3)))  # conditional layer called without a context
