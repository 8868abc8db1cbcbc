"""The optax training loop: recovery of known densities, weights, ensembles, early stopping, custom losses."""

import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxstars.flows import Flow, maf
from jaxstars.flows.train import fit, log_mean_exp


def banana(key, n):
    k1, k2 = jax.random.split(key)
    x1 = jax.random.normal(k1, (n,))
    x2 = 0.5 * x1**2 + 0.3 * jax.random.normal(k2, (n,))
    return jnp.stack([x1, x2], -1)


def banana_log_prob(x):
    norm = lambda v, m, s: -0.5 * ((v - m) / s) ** 2 - jnp.log(s) - 0.5 * math.log(2 * math.pi)
    return norm(x[:, 0], 0.0, 1.0) + norm(x[:, 1], 0.5 * x[:, 0] ** 2, 0.3)


def test_banana_recovered_to_within_005_nats():
    """KL(true || flow) estimated on fresh samples: mean(log p_true - log p_flow) < 0.05 nats."""
    flow = Flow(maf(2, 4, 64, activation="tanh"))
    result = fit(flow, banana(jax.random.PRNGKey(0), 20000), key=jax.random.PRNGKey(1), epochs=60,
                 batch_size=512, learning_rate=optax.cosine_decay_schedule(3e-3, 60 * 35), progress=False)
    test = banana(jax.random.PRNGKey(2), 20000)
    kl = float(jnp.mean(banana_log_prob(test) - flow.log_prob(result.params, test)))
    assert 0.0 - 0.01 < kl < 0.05, kl


def conditional_sample(key, n):
    k1, k2, k3 = jax.random.split(key, 3)
    c = jax.random.uniform(k1, (n, 1), minval=-1, maxval=1)
    x1 = 2 * c[:, 0] + (0.6 + 0.3 * c[:, 0]) * jax.random.normal(k2, (n,))
    x2 = -c[:, 0] + 0.5 * x1 + 0.4 * jax.random.normal(k3, (n,))
    return jnp.stack([x1, x2], -1), c


def conditional_log_prob(x, c):
    c = c[:, 0]
    norm = lambda v, m, s: -0.5 * ((v - m) / s) ** 2 - jnp.log(s) - 0.5 * math.log(2 * math.pi)
    return norm(x[:, 0], 2 * c, 0.6 + 0.3 * c) + norm(x[:, 1], -c + 0.5 * x[:, 0], 0.4)


@pytest.mark.slow
def test_conditional_flow_learns_known_conditional_gaussian():
    flow = Flow(maf(2, 3, 32, context_dim=1, activation="tanh"))
    x, c = conditional_sample(jax.random.PRNGKey(0), 20000)
    result = fit(flow, {"x": x, "context": c}, key=jax.random.PRNGKey(1), epochs=40, batch_size=512,
                 learning_rate=3e-3, progress=False)
    xt, ct = conditional_sample(jax.random.PRNGKey(2), 20000)
    kl = float(jnp.mean(conditional_log_prob(xt, ct) - flow.log_prob(result.params, xt, ct)))
    assert kl < 0.05, kl
    # the conditional mean moves with the context as the truth does (2c)
    for cv in (-0.8, 0.8):
        s = flow.sample(result.params, jax.random.PRNGKey(3), (), jnp.full((5000, 1), cv))
        assert abs(float(s[:, 0].mean()) - 2 * cv) < 0.1


@pytest.mark.slow
def test_same_seed_same_result_and_history():
    flow = Flow(maf(2, 2, 16))
    data = banana(jax.random.PRNGKey(0), 2000)
    a = fit(flow, data, key=jax.random.PRNGKey(5), epochs=3, batch_size=256, progress=False)
    b = fit(flow, data, key=jax.random.PRNGKey(5), epochs=3, batch_size=256, progress=False)
    c = fit(flow, data, key=jax.random.PRNGKey(6), epochs=3, batch_size=256, progress=False)
    np.testing.assert_array_equal(a.train_loss, b.train_loss)
    for la, lb in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(la), np.asarray(lb))
    assert not np.array_equal(a.train_loss, c.train_loss)


def test_per_sample_weights_act_as_duplication():
    """Weight 0 removes a point, so a weighted fit on A∪B with zero weights on B matches the fit on A alone."""
    flow = Flow(maf(2, 2, 16, batch_norm=False))
    a = banana(jax.random.PRNGKey(0), 1024)
    b = a + 10.0
    weights = jnp.concatenate([jnp.ones(1024), jnp.zeros(1024)])
    data = {"x": jnp.concatenate([a, b]), "weight": weights}
    weighted = fit(flow, data, key=jax.random.PRNGKey(1), epochs=20, batch_size=2048, val_fraction=0,
                   progress=False)
    # The fit must place (almost) no mass on the zero-weight cluster.
    assert float(flow.log_prob(weighted.params, b).mean()) < float(flow.log_prob(weighted.params, a).mean()) - 5


def test_early_stopping_returns_best_epoch_params():
    flow = Flow(maf(2, 2, 64, batch_norm=False))
    data = banana(jax.random.PRNGKey(0), 300)  # tiny: it overfits fast with a high learning rate
    result = fit(flow, data, key=jax.random.PRNGKey(1), epochs=400, batch_size=64, learning_rate=1e-2,
                 val_fraction=0.3, patience=10, progress=False)
    assert result.stopped_early
    assert result.epochs_run == result.best_epoch + 11
    assert result.val_loss[result.best_epoch] == result.val_loss.min()


@pytest.mark.slow
def test_ensemble_in_one_vmap_trains_independent_members():
    flow = Flow(maf(2, 2, 16))
    data = banana(jax.random.PRNGKey(0), 2000)
    ens = fit(flow, data, key=jax.random.PRNGKey(3), n_members=3, epochs=5, batch_size=256, progress=False)
    assert ens.train_loss.shape == (5, 3)
    leaves = jax.tree_util.tree_leaves(ens.params)
    assert all(leaf.shape[0] == 3 for leaf in leaves)
    # members differ (independent init and minibatch order)
    assert not np.allclose(np.asarray(leaves[0][0]), np.asarray(leaves[0][1]))
    x = banana(jax.random.PRNGKey(9), 100)
    lp = jax.vmap(lambda p: flow.log_prob(p, x))(ens.params)
    assert lp.shape == (3, 100) and np.all(np.isfinite(np.asarray(lp)))


@pytest.mark.slow
def test_custom_importance_sampled_loss():
    """A user loss (here: the marginal likelihood of noisy data by importance sampling) plugs into fit.

    Data are y = x + N(0, 0.5²) with x ~ N(1, 0.5²) in 1-D... embedded in 2-D with an independent N(0,1) second
    coordinate.  Minimising -log mean_k p(y - e_k) with e_k ~ N(0, 0.5²) deconvolves: the flow learns x, whose
    first-coordinate std is 0.5 (the data's is 0.71).
    """
    flow = Flow(maf(2, 2, 16, batch_norm=False, activation="tanh"))
    n = 8000
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jnp.stack([1 + 0.5 * jax.random.normal(k1, (n,)), jax.random.normal(k2, (n,))], -1)
    y = x.at[:, 0].add(0.5 * jax.random.normal(k3, (n,)))

    def deconvolution_loss(flow, params, batch, key):
        eps = 0.5 * jax.random.normal(key, (64,) + batch["x"].shape[:1])
        shifted = jnp.broadcast_to(batch["x"], eps.shape + (2,)).at[..., 0].add(-eps)
        return -jnp.mean(log_mean_exp(flow.log_prob(params, shifted), axis=0))

    result = fit(flow, y, key=jax.random.PRNGKey(1), loss=deconvolution_loss, epochs=40, batch_size=512,
                 learning_rate=3e-3, progress=False)
    s = flow.sample(result.params, jax.random.PRNGKey(2), (20000,))
    assert abs(float(s[:, 0].std()) - 0.5) < 0.06
    assert abs(float(s[:, 0].mean()) - 1.0) < 0.05


def test_nan_data_rejected_with_clear_error():
    flow = Flow(maf(2, 1, 8))
    data = banana(jax.random.PRNGKey(0), 100).at[3, 1].set(jnp.nan)
    with pytest.raises(ValueError, match="NaN"):
        fit(flow, data, key=jax.random.PRNGKey(0), epochs=1, progress=False)


@pytest.mark.slow
def test_data_parallel_over_two_host_devices_matches_single_device():
    script = textwrap.dedent(
        """
        import jax, numpy as np
        from jaxstars.flows import Flow, maf
        from jaxstars.flows.train import fit
        assert len(jax.local_devices()) == 2
        flow = Flow(maf(2, 2, 16))
        x = jax.random.normal(jax.random.PRNGKey(0), (4096, 2))
        a = fit(flow, x, key=jax.random.PRNGKey(1), epochs=3, batch_size=512, progress=False)
        b = fit(flow, x, key=jax.random.PRNGKey(1), epochs=3, batch_size=512, progress=False,
                data_parallel=False)
        assert a.info["n_devices"] == 2 and b.info["n_devices"] == 1, (a.info, b.info)
        # Same minibatches, same maths; only the reduction order differs (Adam amplifies round-off in
        # near-zero gradient entries, so compare what the fit does, not raw weights).
        np.testing.assert_allclose(a.train_loss, b.train_loss, rtol=2e-3)
        np.testing.assert_allclose(np.asarray(flow.log_prob(a.params, x[:500])),
                                   np.asarray(flow.log_prob(b.params, x[:500])), atol=0.1, rtol=0.02)
        print("OK")
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


def test_weight_decay_skips_running_statistics_and_clipping_bounds_updates():
    from jaxstars.flows.train import _decay_mask, make_optimizer

    flow = Flow(maf(2, 2, 8))
    params = flow.init(jax.random.PRNGKey(0))
    mask = jax.tree_util.tree_flatten_with_path(_decay_mask(params))[0]
    for path, decayed in mask:
        is_running = "running" in jax.tree_util.keystr(path)
        assert decayed == (not is_running), jax.tree_util.keystr(path)
    # Huge weight decay with zero gradients shrinks weights but leaves running statistics untouched.
    opt = make_optimizer(1e-1, weight_decay=1.0, clip_norm=1.0)
    state = opt.init(params)
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = opt.update(zero, state, params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(np.asarray(new[1]["running_var"]), np.asarray(params[1]["running_var"]))
    w_old = np.asarray(params[0]["layers"][0]["w"])
    np.testing.assert_allclose(np.asarray(new[0]["layers"][0]["w"]), w_old * (1 - 0.1), rtol=1e-5)
    # Clipping: a gradient of global norm 1000 yields Adam-normalised steps no larger than the learning rate.
    big = jax.tree_util.tree_map(lambda a: 1000.0 * jnp.ones_like(a), params)
    updates, _ = make_optimizer(1e-2, clip_norm=1.0).update(big, make_optimizer(1e-2, clip_norm=1.0).init(params),
                                                             params)
    assert max(float(jnp.abs(u).max()) for u in jax.tree_util.tree_leaves(updates)) <= 1e-2 + 1e-6


def test_zero_weight_points_do_not_move_batchnorm_statistics():
    """With BatchNorm, weights enter the batch statistics too: zero-weight rows change nothing."""
    flow = Flow(maf(2, 2, 8))
    params = flow.init(jax.random.PRNGKey(0))
    a = banana(jax.random.PRNGKey(1), 256)
    b = a + 50.0
    both = jnp.concatenate([a, b])
    weight = jnp.concatenate([jnp.ones(256), jnp.zeros(256)])
    lp_w, new_w = flow.log_prob_train(params, both, None, weight)
    lp_a, new_a = flow.log_prob_train(params, a)
    np.testing.assert_allclose(np.asarray(lp_w[:256]), np.asarray(lp_a), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(new_w[1]["running_mean"]), np.asarray(new_a[1]["running_mean"]), atol=1e-5)


def test_bad_split_settings_raise_clear_errors_and_best_epoch_without_validation():
    flow = Flow(maf(2, 1, 8))
    data = banana(jax.random.PRNGKey(0), 64)
    with pytest.raises(ValueError, match="val_fraction"):
        fit(flow, data, key=jax.random.PRNGKey(0), epochs=1, val_fraction=1.0, progress=False)
    with pytest.raises(ValueError, match="no training rows"):
        fit(flow, data[:1], key=jax.random.PRNGKey(0), epochs=1, progress=False)
    r = fit(flow, data, key=jax.random.PRNGKey(0), epochs=3, val_fraction=0, progress=False)
    assert r.best_epoch == 2 and r.epochs_run == 3


def test_diverged_fit_warns_instead_of_returning_initial_params_silently():
    flow = Flow(maf(2, 1, 8, batch_norm=False))
    data = banana(jax.random.PRNGKey(0), 256)

    def bad_loss(flow, params, batch, key):
        return jnp.nan * jnp.sum(jax.tree_util.tree_leaves(params)[0])

    with pytest.warns(RuntimeWarning, match="never reached a finite validation loss"):
        r = fit(flow, data, key=jax.random.PRNGKey(0), loss=bad_loss, epochs=2, patience=1, progress=False)
    assert r.best_epoch == -1
