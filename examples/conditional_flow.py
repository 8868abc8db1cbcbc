"""Example: fit a conditional MAF to p(x | c) and use it as a NumPyro likelihood.

Run: ``python -m examples.conditional_flow``
"""

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS

from jaxstars.flows import Flow, FlowDistribution, fit, maf


def main():
    key = jax.random.PRNGKey(0)
    k_c, k_x = jax.random.split(key)
    c = jax.random.uniform(k_c, (20000, 1), minval=-1, maxval=1)
    x = jnp.concatenate([2 * c, -c], -1) + 0.3 * jax.random.normal(k_x, (20000, 2))
    flow = Flow(maf(2, 4, 32, context_dim=1, activation="tanh"))
    params = fit(flow, {"x": x, "context": c}, key=jax.random.PRNGKey(1), epochs=30, batch_size=512).params

    observed = jnp.array([1.0, -0.5])

    def model():
        # infer the context (a 'stellar parameter') from one observation through the learned likelihood
        ctx = numpyro.sample("c", dist.Uniform(-1, 1))
        numpyro.sample("x", FlowDistribution(flow, params, context=ctx[None]), obs=observed)

    mcmc = MCMC(NUTS(model), num_warmup=500, num_samples=1000)
    mcmc.run(jax.random.PRNGKey(2))
    mcmc.print_summary()


if __name__ == "__main__":
    main()
