"""Tests of the RK4 continuous normalising flow (jaxstars.flows.cnf)."""

from __future__ import annotations

import functools
import json

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
from jaxstars.flows.cnf import CNF, cnf

# name -> (dim, context_dim, seed).  Noise of 0.3 on every weight gives vector fields whose strength varies a lot
# from draw to draw (some push points to |x| ~ 100); these seeds give maps that are far from the identity
# (log-dets spanning several units, displacements of several sigma, checked in test_maps_are_far_from_identity)
# while the 2-D densities stay inside the quadrature box.  The 3-D conditional case is GalaxyFlow's p(v | r).
CONFIGS = {"2d": (2, 0, 3), "2d_ctx": (2, 1, 3), "3d": (3, 0, 5), "3d_ctx": (3, 3, 5)}


def perturb(params, key, scale=0.3):
    """Add N(0, scale^2) noise to every parameter so the fresh (near-identity) CNF becomes a non-trivial map."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


@functools.cache
def setup(name, n=64):
    """(bijector, params, x, context) with x ~ N(0, I) test points and a random context per point."""
    dim, context_dim, seed = CONFIGS[name]
    bij = cnf(dim, context_dim)
    params = perturb(bij.init(jax.random.key(10 * seed)), jax.random.key(10 * seed + 1))
    x = jax.random.normal(jax.random.key(2), (n, dim))
    context = None if context_dim == 0 else jax.random.normal(jax.random.key(3), (n, context_dim))
    return bij, params, x, context


def fixed_context(name):
    """One context vector for the 2-D density checks (None for unconditional flows)."""
    return None if CONFIGS[name][1] == 0 else jnp.array([0.7])


# -- spec ------------------------------------------------------------------------------------------------------------
def test_spec_hashable_and_config_round_trip():
    spec = cnf(3, 3, hidden=[16, 16], n_steps=7, trace="hutchinson", t1=0.5)
    assert spec.hidden == (16, 16)
    assert hash(spec) == hash(cnf(3, 3, hidden=(16, 16), n_steps=7, trace="hutchinson", t1=0.5))
    config = json.loads(json.dumps(spec.config()))
    assert config["type"] == "CNF"
    rebuilt = from_config(config)
    assert rebuilt == spec and hash(rebuilt) == hash(spec)
    assert spec != cnf(3, 3, hidden=(16, 16), n_steps=8, trace="hutchinson", t1=0.5)
    # Defaults are the GalaxyFlow architecture.
    default = cnf(3, 3)
    assert (default.hidden, default.activation, default.n_steps, default.trace, default.t1) == (
        (32, 32, 32, 32),
        "gelu",
        20,
        "exact",
        1.0,
    )
    with pytest.raises(ValueError, match="trace"):
        cnf(2, trace="stochastic")
    with pytest.raises(ValueError, match="activation"):
        cnf(2, activation="swish!")


def test_context_is_validated_and_used():
    bij, params, x, context = setup("2d_ctx")
    with pytest.raises(ValueError, match="context"):
        bij.inverse_and_log_det(params, x)
    with pytest.raises(ValueError, match="context"):
        bij.forward_and_log_det(params, x, jnp.zeros((x.shape[0], 2)))
    with pytest.raises(ValueError, match="context"):
        cnf(2).forward_and_log_det(cnf(2).init(jax.random.key(0)), x, context)
    # The context must actually change the map, or the conditional tests below would be vacuous.
    z0, ld0 = bij.inverse_and_log_det(params, x, jnp.zeros_like(context))
    z1, ld1 = bij.inverse_and_log_det(params, x, jnp.ones_like(context))
    assert float(jnp.abs(z0 - z1).mean()) > 0.1 and float(jnp.abs(ld0 - ld1).mean()) > 0.05


@pytest.mark.parametrize("name", list(CONFIGS))
def test_maps_are_far_from_identity(name):
    bij, params, x, context = setup(name)
    z, log_det = bij.inverse_and_log_det(params, x, context)
    assert z.shape == x.shape and log_det.shape == x.shape[:1]
    assert float(jnp.abs(z - x).max()) > 1.0
    assert float(log_det.max() - log_det.min()) > 2.0


# -- bijection and log-det -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CONFIGS))
def test_round_trip(name):
    # The inverse is RK4 run backwards, not an exact inverse of the forward solve: each step's mismatch is
    # O(h^5), O(h^4) overall.  At h = 1/20 with these fields it is measured at <= 1e-4 on N(0, 1) points, so
    # 5e-4 (abs and rel) leaves room for float32 round-off while any real error in the inverse (wrong time
    # direction, wrong stage times) shows up at the 1e-2 to 1 level.
    bij, params, x, context = setup(name)
    check_round_trip(bij, params, x, context, atol=5e-4)


@pytest.mark.parametrize("name", ["2d", "2d_ctx"])
def test_log_det_matches_jacobian(name):
    # The returned log-det is the RK4-integrated trace; the log-det of the discretised map differs from it by
    # the RK4 error O(h^4), measured <= 7e-4 at 20 steps on these points (the log-dets themselves are O(1)).
    # The 3-D configurations are compared with jacfwd at 64 points in test_log_det_converges_at_fourth_order.
    bij, params, x, context = setup(name)
    ctx = None if context is None else context[:2]
    check_log_det(bij, params, x[:2], ctx, rtol=0.0, atol=2e-3)


def _log_det_discrepancy(name, n_steps, inverse):
    """Mean |integrated trace - log|det J|| over the test points, J the Jacobian of the discretised map."""
    _, params, x, context = setup(name)
    bij = cnf(CONFIGS[name][0], CONFIGS[name][1], n_steps=n_steps)
    method = bij.inverse_and_log_det if inverse else bij.forward_and_log_det

    @jax.jit
    def discrepancy(x, context):
        def flow_map(v):
            return method(params, v, context)[0]

        # Rows are mapped independently, so the JVP along e_k (for every row at once) is column k of each row's
        # Jacobian: jax.jacfwd of the per-row map, batched.
        basis = jnp.eye(bij.dim, dtype=x.dtype)
        columns = [jax.jvp(flow_map, (x,), (jnp.broadcast_to(e, x.shape),))[1] for e in basis]
        reference = jnp.linalg.slogdet(jnp.stack(columns, axis=-1))[1]
        return jnp.mean(jnp.abs(method(params, x, context)[1] - reference))

    return float(discrepancy(x, context))


@pytest.mark.parametrize("name, inverse", [("3d_ctx", True), ("3d", False)])
def test_log_det_converges_at_fourth_order(name, inverse):
    # Both the integrated trace and the discretised map's log-det approximate the exact flow's log-det to O(h^4),
    # so their discrepancy must fall ~16x per halving of h.  A trace integrated at lower order (e.g. only the
    # first RK stage) would fall 2x, a wrong sign or time would not fall at all.  Beyond ~40 steps float32
    # round-off (~1e-6) takes over, hence the check at 5 -> 10 steps and the "much smaller" check at 80 steps.
    errors = {n: _log_det_discrepancy(name, n, inverse) for n in (5, 10, 80)}
    assert errors[5] > 1e-4, errors  # the field is strong enough for the coarse solve to be visibly off
    assert errors[5] / errors[10] > 8.0, errors
    assert errors[80] < errors[5] / 50.0, errors


# -- densities and samples -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["2d", "2d_ctx"])
def test_density_normalised_2d(name):
    # Grid refinement (161 -> 401 points) changes the integral by < 1e-5, so the remaining error is the RK4
    # mismatch between integrated trace and the discretised map (~1e-5) plus mass outside the box; a wrong
    # log-det (sign, missing stage) moves the integral by O(1).
    bij, params, _, _ = setup(name)
    check_normalised_2d(Flow(bij), params, fixed_context(name), half_width=8.0, n=161, tol=2e-3)


@pytest.mark.parametrize("name", ["2d", "2d_ctx"])
def test_samples_match_density(name):
    bij, params, _, _ = setup(name)
    flow, context = Flow(bij), fixed_context(name)
    # sample_and_log_prob uses the forward solve and log_prob the backward one: they agree to the RK4
    # round-trip error, far below the 1e-3 tolerance.
    check_samples_match_density(flow, params, jax.random.key(5), context, n=4000, tol=1e-3)
    check_sample_mean_matches_quadrature(flow, params, jax.random.key(6), context, n_grid=161, n=20000)


# -- Hutchinson ------------------------------------------------------------------------------------------------------
def test_hutchinson_is_unbiased():
    name, n_points, n_keys = "3d_ctx", 8, 1000
    exact, params, x, context = setup(name)
    x, context = x[:n_points], context[:n_points]
    hutch = cnf(3, 3, trace="hutchinson")

    @jax.jit
    def estimates(keys):
        def both(k):
            return hutch.inverse_and_log_det(params, x, context, key=k), hutch.forward_and_log_det(
                params, x, context, key=k
            )

        return jax.vmap(both)(keys)

    results = estimates(jax.random.split(jax.random.key(7), n_keys))
    for (y_hutch, ld_hutch), method in zip(results, [exact.inverse_and_log_det, exact.forward_and_log_det]):
        y_exact, ld_exact = method(params, x, context)
        # The probes only touch the log-det: the map itself is the exact one for every key.
        y_exact = np.broadcast_to(np.asarray(y_exact), y_hutch.shape)
        np.testing.assert_allclose(np.asarray(y_hutch), y_exact, atol=1e-5)
        ld_hutch = np.asarray(ld_hutch, np.float64)
        std = ld_hutch.std(0)
        assert np.all(std > 1e-2), std  # genuinely stochastic (so the comparison below has teeth)
        standard_error = std / np.sqrt(n_keys)
        # 4 standard errors per point (8 points); the 1e-5 covers float32 round-off in the exact log-det.
        bias = ld_hutch.mean(0) - np.asarray(ld_exact)
        assert np.all(np.abs(bias) < 4 * standard_error + 1e-5), (bias, standard_error)


def test_hutchinson_without_key_uses_the_seed():
    _, params, x, context = setup("3d_ctx")
    x, context = x[:8], context[:8]
    flow = Flow(cnf(3, 3, trace="hutchinson", hutchinson_seed=1))
    lp = flow.log_prob(params, x, context)  # works without a key, as Flow passes none
    np.testing.assert_array_equal(np.asarray(lp), np.asarray(flow.log_prob(params, x, context)))
    # No key means key(hutchinson_seed); an explicit key overrides it.
    bij = flow.bijector
    _, ld_seed = bij.inverse_and_log_det(params, x, context)
    _, ld_key1 = bij.inverse_and_log_det(params, x, context, key=jax.random.key(1))
    _, ld_key9 = bij.inverse_and_log_det(params, x, context, key=jax.random.key(9))
    np.testing.assert_array_equal(np.asarray(ld_seed), np.asarray(ld_key1))
    assert float(jnp.abs(ld_key1 - ld_key9).max()) > 1e-3


# -- transformations -------------------------------------------------------------------------------------------------
def test_jit_and_vmap():
    bij, params, x, context = setup("3d_ctx")
    x, context = x[:8], context[:8]
    z, log_det = bij.inverse_and_log_det(params, x, context)

    @functools.partial(jax.jit, static_argnums=0)
    def inverse(spec, p, xs, cs):
        return spec.inverse_and_log_det(p, xs, cs)

    z_jit, ld_jit = inverse(bij, params, x, context)
    np.testing.assert_allclose(np.asarray(z_jit), np.asarray(z), atol=1e-5)
    np.testing.assert_allclose(np.asarray(ld_jit), np.asarray(log_det), atol=1e-5)
    # vmap over single rows reproduces the batched call.
    z_rows, ld_rows = jax.vmap(lambda xi, ci: bij.inverse_and_log_det(params, xi[None], ci[None]))(x, context)
    np.testing.assert_allclose(np.asarray(z_rows[:, 0]), np.asarray(z), atol=1e-5)
    np.testing.assert_allclose(np.asarray(ld_rows[:, 0]), np.asarray(log_det), atol=1e-5)
    # vmap over a stack of two parameter sets reproduces the separate calls.
    other = perturb(params, jax.random.key(11), scale=0.05)
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, other)
    _, ld_stack = jax.vmap(lambda p: bij.inverse_and_log_det(p, x, context))(stacked)
    np.testing.assert_allclose(np.asarray(ld_stack[0]), np.asarray(log_det), atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(ld_stack[1]), np.asarray(bij.inverse_and_log_det(other, x, context)[1]), atol=1e-5
    )
    assert float(jnp.abs(ld_stack[0] - ld_stack[1]).max()) > 1e-3


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_grad_matches_finite_differences(trace):
    # A smaller field than GalaxyFlow's keeps the compile of the reverse pass cheap; the mechanism is the same.
    flow = Flow(cnf(3, 3, hidden=(16, 16), trace=trace))
    params = perturb(flow.init(jax.random.key(50)), jax.random.key(51))
    _, _, x, context = setup("3d_ctx")
    x, context = x[:16], context[:16]

    @jax.jit
    @jax.value_and_grad
    def loss_and_grad(p):
        return -jnp.mean(flow.log_prob(p, x, context))

    _, grads = loss_and_grad(params)
    direction = perturb(jax.tree.map(jnp.zeros_like, params), jax.random.key(12), scale=1.0)
    analytic = sum(float(jnp.vdot(g, d)) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
    eps = 3e-4

    def shifted(sign):
        return loss_and_grad(jax.tree.map(lambda p, d: p + sign * eps * d, params, direction))[0]

    numeric = float(shifted(1.0) - shifted(-1.0)) / (2 * eps)
    # Central differences along a direction moving every parameter: O(eps^2) truncation (measured 2e-4
    # relative at this eps, converging quadratically from larger eps) and ~1e-7 * |loss| / eps round-off.
    assert abs(analytic) > 1.0
    assert abs(analytic - numeric) < 1e-2 * abs(analytic), (analytic, numeric)


def test_builder_and_class_agree():
    assert cnf(2, 1, hidden=(8,), n_steps=3) == CNF(2, 1, hidden=(8,), n_steps=3)


def test_remat_changes_nothing_but_memory():
    # Rematerialising the RK4 steps (the default) must give the same map, log-det and gradients as storing them.
    # A small field keeps the two compiles cheap; the mechanism does not depend on the size.
    _, _, x, context = setup("3d_ctx")
    x, context = x[:16], context[:16]
    params = perturb(cnf(3, 3, hidden=(8,), n_steps=5).init(jax.random.key(60)), jax.random.key(61))
    results = []
    for remat in (True, False):
        flow = Flow(cnf(3, 3, hidden=(8,), n_steps=5, remat=remat))
        value, grads = jax.value_and_grad(lambda p, f=flow: -jnp.mean(f.log_prob(p, x, context)))(params)
        results.append((value, grads))
    np.testing.assert_allclose(float(results[0][0]), float(results[1][0]), rtol=1e-6)
    for g_remat, g_plain in zip(jax.tree.leaves(results[0][1]), jax.tree.leaves(results[1][1])):
        np.testing.assert_allclose(np.asarray(g_remat), np.asarray(g_plain), rtol=1e-4, atol=1e-6)
    assert cnf(3, remat=False) != cnf(3) and from_config(cnf(3, remat=False).config()).remat is False
