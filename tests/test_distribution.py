"""FlowDistribution inside NumPyro: shapes, prior / observed sites, NUTS, exact marginals."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC, NUTS

from jaxstars.flows import Flow, maf
from jaxstars.flows.distribution import FlowDistribution
from jaxstars.flows.train import fit


@pytest.fixture(scope="module")
def trained():
    key = jax.random.PRNGKey(0)
    x1 = jax.random.normal(key, (5000,))
    x = jnp.stack([x1, 0.25 * x1**2 + 0.5 * jax.random.normal(jax.random.PRNGKey(1), (5000,))], -1)
    flow = Flow(maf(2, 3, 32, activation="tanh"))
    return flow, fit(flow, x, key=jax.random.PRNGKey(2), epochs=30, batch_size=256, progress=False).params


def test_nuts_with_flow_prior_matches_flow_samples(trained):
    flow, params = trained
    prior = FlowDistribution(flow, params)

    def model():
        numpyro.sample("x", prior)

    mcmc = MCMC(NUTS(model), num_warmup=500, num_samples=3000, num_chains=1, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(3))
    chain = np.asarray(mcmc.get_samples()["x"])
    ess = np.asarray(effective_sample_size(chain[None]))
    reference = np.asarray(prior.sample(jax.random.PRNGKey(4), (50000,)))
    for d in range(2):
        se = reference[:, d].std() / np.sqrt(ess[d])
        assert abs(chain[:, d].mean() - reference[:, d].mean()) < 4 * se, d
        assert abs(chain[:, d].std() - reference[:, d].std()) < 0.1 * reference[:, d].std(), d


def test_observed_site_and_likelihood_factor(trained):
    """As an observed site the flow contributes log p(obs) to the joint density."""
    flow, params = trained
    obs = jnp.array([[0.2, 0.1], [-1.0, 0.4]])

    def model():
        numpyro.sample("obs", FlowDistribution(flow, params), obs=obs)

    log_joint, _ = numpyro.infer.util.log_density(model, (), {}, {})
    np.testing.assert_allclose(float(log_joint), float(flow.log_prob(params, obs).sum()), rtol=1e-6)


def test_conditional_batch_shape_and_sampling():
    flow = Flow(maf(3, 2, 8, context_dim=2))
    params = flow.init(jax.random.PRNGKey(0))
    d = FlowDistribution(flow, params, context=jnp.zeros((4, 2)))
    assert d.batch_shape == (4,) and d.event_shape == (3,)
    s = d.sample(jax.random.PRNGKey(1), (7,))
    assert s.shape == (7, 4, 3)
    assert d.log_prob(s).shape == (7, 4)
    # as a plate of per-star likelihoods
    with numpyro.handlers.seed(rng_seed=0), numpyro.plate("stars", 4):
        x = numpyro.sample("x", d)
    assert x.shape == (4, 3)


def test_marginal_distribution_matches_joint_samples():
    flow = Flow(maf(3, 2, 16, reverse=False))
    params = flow.init(jax.random.PRNGKey(0))
    joint = FlowDistribution(flow, params)
    marg = FlowDistribution(flow, params, marginal_dims=2)
    assert marg.event_shape == (2,)
    xs = joint.sample(jax.random.PRNGKey(1), (5,))
    np.testing.assert_allclose(
        np.asarray(marg.log_prob(xs[:, :2])), np.asarray(flow.marginal_log_prob(params, xs[:, :2])), rtol=1e-6
    )
    with pytest.raises(TypeError, match="triangular"):
        FlowDistribution(Flow(maf(3, 2, 8)), Flow(maf(3, 2, 8)).init(jax.random.PRNGKey(0)), marginal_dims=2)


@pytest.mark.slow  # NUTS with a flow prior is checked by default in test_nuts_with_flow_prior_matches_flow_samples
def test_flow_prior_in_a_hierarchical_model_runs_under_nuts(trained):
    """A flow as the prior on a latent 'true' point observed with Gaussian noise: the posterior shifts sensibly."""
    flow, params = trained
    observed = jnp.array([1.5, 0.5])

    def model():
        x = numpyro.sample("x", FlowDistribution(flow, params))
        numpyro.sample("y", dist.Normal(x, 0.3).to_event(1), obs=observed)

    mcmc = MCMC(NUTS(model), num_warmup=300, num_samples=1000, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0))
    post = np.asarray(mcmc.get_samples()["x"])
    assert np.all(np.isfinite(post))
    # posterior mean lies between the prior mean (~(0, 0.25)) and the observation
    assert 0.5 < post[:, 0].mean() < 1.5
    assert mcmc.get_extra_fields()["diverging"].sum() < 10
