"""Tests of the block neural autoregressive flow (jaxstars.flows.bnaf).

Compilation dominates the runtime, so tests share a few specs, jitted methods cached per spec (``jitted``) and
array shapes, draw random numbers with numpy and initialise with ``rbg`` keys (every new shape of a threefry
``jax.random`` draw compiles a costly kernel).
"""

from __future__ import annotations

import functools
import json
import math
import types

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
SEED = 0  # a draw whose latent image covers the base's bulk (a tanh layer's image is a bounded box)

# The specs shared by the tests (each test reuses their compiled functions).
LAYER_TANH_CTX = BNAF(2, 2, activation="tanh")
LAYER_LEAKY = BNAF(2, 0, activation="leaky_tanh")
STACK_TANH = bnaf(2)  # FLOWER's defaults: 2 layers, depth 3, block size 4, tanh, Reverse in between
STACK_LEAKY_CTX = bnaf(2, 2, activation="leaky_tanh")
LAYERS = pytest.mark.parametrize("spec", [LAYER_TANH_CTX, LAYER_LEAKY], ids=["tanh-context", "leaky"])


@functools.cache
def make(spec, seed=SEED, scale=0.3):
    """Fresh parameters plus N(0, scale²) noise on every leaf, so the map is far from its initialisation."""
    params = jax.jit(spec.init)(jax.random.key(seed, impl="rbg"))  # rbg: cheap to compile
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(np.asarray(a) + scale * rng.standard_normal(a.shape), a.dtype), params
    )


@functools.cache
def jitted(bijector):
    """The bijector interface with jitted methods, cached per spec so tests share compilations."""
    proxy = types.SimpleNamespace(dim=bijector.dim, context_dim=bijector.context_dim)
    for name in ("forward_and_log_det", "inverse_and_log_det", "inverse_and_log_diag"):
        setattr(proxy, name, jax.jit(getattr(bijector, name)))
    proxy.forward = lambda *a: proxy.forward_and_log_det(*a)[0]
    proxy.inverse = lambda *a: proxy.inverse_and_log_det(*a)[0]
    return proxy


def data(n, dim, context_dim, seed=1):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((n, dim)), jnp.float32)
    c = jnp.asarray(rng.standard_normal((n, context_dim)), jnp.float32) if context_dim else None
    return x, c


def row_jacobians(spec, params, x, c):
    """``dz/dx`` of the network for each row, shape (n, dim, dim)."""

    def one(xi, ci):
        return spec.inverse(params, xi[None], None if c is None else ci[None])[0]

    return np.asarray(jax.jit(jax.vmap(jax.jacfwd(one)))(x, jnp.zeros((x.shape[0], 0)) if c is None else c))


@LAYERS
def test_layer_round_trip_and_log_det(spec):
    params = make(spec)
    x, c = data(3, 2, spec.context_dim)
    check_round_trip(jitted(spec), params, x, c)
    check_log_det(spec, params, x, c)
    if c is not None:  # the context really changes the map
        assert not np.allclose(jitted(spec).inverse(params, x, c), jitted(spec).inverse(params, x, -c), atol=1e-2)


@pytest.mark.parametrize("spec", [STACK_TANH, STACK_LEAKY_CTX], ids=["tanh", "leaky-context"])
def test_stack_round_trip_and_log_det(spec):
    params = make(spec)
    assert not spec.triangular
    x0, c = data(3, 2, spec.context_dim)
    # Images of data points, so the forward map is defined at them even for a tanh stack, whose latent image
    # is bounded (see test_tanh_outside_image_is_nan).
    pts = jitted(spec).inverse(params, x0, c)
    check_round_trip(jitted(spec), params, pts, c)
    check_log_det(spec, params, pts, c)


@LAYERS
def test_inverse_accuracy_jit_and_vmap(spec):
    params, f = make(spec), jitted(spec)
    x, c = data(4000, 2, spec.context_dim, seed=3)
    z, log_diag = f.inverse_and_log_diag(params, x, c)
    x_back = f.forward(params, z, c)
    err, slope = np.abs(np.asarray(x_back - x)), np.exp(np.asarray(log_diag))
    # The root is exact up to float32 evaluation of the network (a few ulps of z), and x inherits that error
    # divided by the slope dz_i/dx_i: 1e-5 absolute where the map is well conditioned, ulp(z)/slope elsewhere.
    ulp_z = np.finfo(np.float32).eps * np.maximum(1.0, np.abs(np.asarray(z)))
    assert np.all(np.abs(np.asarray(f.inverse(params, x_back, c) - z)) <= 8 * ulp_z)  # residual at the root
    assert np.all(err <= 1e-5 + 8 * ulp_z / slope)
    assert np.all(err[slope > 0.5] <= 1e-5)
    if c is not None:  # vmap over single rows (batched while loops) gives the same as the batched solve
        per_row = jax.vmap(lambda zi, ci: spec.forward(params, zi[None], ci[None])[0])(z[:3], c[:3])
        np.testing.assert_allclose(per_row, x_back[:3], atol=1e-6)


@pytest.mark.parametrize("depth", [1, 3])
def test_log_diag_is_the_jacobian_diagonal(depth):
    spec = LAYER_TANH_CTX if depth == 3 else BNAF(3, 2, depth=1)
    params = make(spec)
    assert spec.triangular
    x, c = data(3, spec.dim, 2)
    z, log_diag = jitted(spec).inverse_and_log_diag(params, x, c)
    z2, log_det = jitted(spec).inverse_and_log_det(params, x, c)
    np.testing.assert_allclose(z, z2)
    np.testing.assert_allclose(log_diag.sum(-1), log_det, rtol=1e-6, atol=1e-6)
    jac = row_jacobians(spec, params, x, c)
    assert np.all(np.triu(jac, 1) == 0.0)  # triangular: z_i depends on x_{<=i} only
    np.testing.assert_allclose(np.log(np.diagonal(jac, axis1=1, axis2=2)), log_diag, rtol=1e-5, atol=1e-5)


def test_stack_without_reverse_is_triangular():
    spec = bnaf(2, 2, reverse=False, activation="leaky_tanh")
    params = make(spec)
    assert spec.triangular
    x, c = data(3, 2, 2)
    _, log_diag = jitted(spec).inverse_and_log_diag(params, x, c)
    jac = row_jacobians(spec, params, x, c)
    assert np.all(jac[:, 0, 1] == 0.0)
    np.testing.assert_allclose(np.log(np.diagonal(jac, axis1=1, axis2=2)), log_diag, rtol=1e-5, atol=1e-5)


def test_gradients_through_sampling_match_finite_differences():
    """Implicit-function gradients of the numerical inverse w.r.t. params, z and context (float64)."""
    spec = BNAF(2, 1, depth=3, block_dim=3)
    params32 = make(spec)
    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params32)
        z = jnp.array([[0.4, -1.1], [-0.7, 0.9], [1.3, 0.2]])
        c = jnp.array([[0.5], [-0.3], [1.0]])
        weights = jnp.array([0.7, -1.3])

        @jax.jit
        def loss(p, z, c):
            x, log_det = spec.forward_and_log_det(p, z, c)
            return jnp.sum(jnp.sin(x) * weights) + jnp.sum(log_det)

        grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(params, z, c)
        rng, eps = np.random.default_rng(7), 1e-5
        for arg, (primal, grad) in enumerate(zip((params, z, c), grads)):
            direction = jax.tree_util.tree_map(lambda a: rng.standard_normal(a.shape), primal)
            shifted = []
            for sign in (1.0, -1.0):
                args = [params, z, c]
                args[arg] = jax.tree_util.tree_map(lambda a, d, sign=sign: a + sign * eps * d, primal, direction)
                shifted.append(loss(*args))
            numeric = (shifted[0] - shifted[1]) / (2 * eps)
            leaves = zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(direction))
            analytic = sum(float(jnp.vdot(g, d)) for g, d in leaves)
            assert abs(analytic) > 1e-3  # a non-trivial directional derivative
            np.testing.assert_allclose(analytic, float(numeric), rtol=1e-6, atol=1e-8)


@LAYERS
def test_density_normalised_and_samples_match(spec):
    # A tanh layer's density integrates to the base mass inside its bounded latent image, and latent draws
    # outside it have no preimage: widen the output (row norms x2) so the image covers the base's +-5 sigma.
    params = make(spec)
    last = dict(params["layers"][-1], s=params["layers"][-1]["s"] + math.log(2.0))
    params = dict(params, layers=[*params["layers"][:-1], last])
    flow, context = Flow(jitted(spec)), (CONTEXT if spec.context_dim else None)
    check_normalised_2d(flow, params, context, half_width=16.0, n=641)
    check_samples_match_density(flow, params, jax.random.key(11), context)
    check_sample_mean_matches_quadrature(
        flow, params, jax.random.key(12), context, half_width=16.0, n_grid=641, n=4000
    )


def test_leaky_tanh_tails_stay_finite_and_invertible():
    f, params = jitted(LAYER_LEAKY), make(LAYER_LEAKY)
    x = jnp.array([[1e3, -1e3], [-1e3, 1e3], [-1e3, -1e3]])
    z, log_det = f.inverse_and_log_det(params, x)
    assert np.all(np.isfinite(z)) and np.all(np.isfinite(log_det))
    # Linear tails: log dz_i/dx_i tends to (depth - 1) log(0.01) + O(1) per coordinate (a tanh layer gives ~ -2|h|).
    assert np.all(log_det > 2 * (2 * math.log(0.01) - 5))
    x_back, log_det_fwd = f.forward_and_log_det(params, z)
    np.testing.assert_allclose(x_back, x, rtol=1e-4)
    np.testing.assert_allclose(log_det_fwd, -log_det, rtol=1e-4, atol=1e-4)


def test_tanh_outside_image_is_nan():
    """A tanh layer's latent image is a bounded box: points outside it have no preimage and give NaN."""
    f, params = jitted(LAYER_TANH_CTX), make(LAYER_TANH_CTX)
    c = jnp.broadcast_to(CONTEXT, (3, 2))
    z_max = f.inverse(params, jnp.array([[1e6, 0.0]] * 3), c)[0, 0]  # sup over x of z_1 (depends on x_1 only)
    x = f.forward(params, jnp.array([[z_max - 0.5, 0.2], [z_max + 0.5, 0.2], [-z_max - 50.0, 0.2]]), c)
    assert np.all(np.isfinite(x[0])) and np.all(np.isnan(x[1:]))


def test_spec_hashable_and_config_round_trip():
    layer = BNAF(3, 2, depth=2, block_dim=5, activation="leaky_tanh")
    assert hash(layer) == hash(BNAF(3, 2, depth=2, block_dim=5, activation="leaky_tanh"))
    assert from_config(json.loads(json.dumps(layer.config()))) == layer
    stack = bnaf(3, 2, n_layers=3)
    assert hash(stack) == hash(bnaf(3, 2, n_layers=3))
    assert from_config(json.loads(json.dumps(stack.config()))) == stack
    assert bnaf(3, reverse=False).triangular
    with pytest.raises(ValueError):
        BNAF(3, activation="relu")
    with pytest.raises(ValueError):
        layer.inverse(None, jnp.zeros((1, 3)))  # conditional layer called without a context
