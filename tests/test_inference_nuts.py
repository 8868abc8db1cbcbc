"""The vmapped per-star NUTS engine (jaxstars.inference.nuts) against quadrature, NumPyro's MCMC driver and itself."""

import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.diagnostics import effective_sample_size

from jaxstars.inference import NUTS_FLAGS, NUTSConfig, sample_stars, sequential_nuts

# A distance posterior per star: parallax likelihood N(ϖ | 1000/d, σ) × EDSD prior d² exp(−d/L) on d > 0
# (skewed, heavy-tailed at low S/N: a real test of adaptation, with the truth available by quadrature).
L_SCALE = 1350.0


def distance_model(star):
    log_d = numpyro.sample("log_d", dist.Uniform(jnp.log(10.0), jnp.log(1e5)))
    d = numpyro.deterministic("d", jnp.exp(log_d))
    prior = 2.0 * log_d - d / L_SCALE  # EDSD, up to a constant
    numpyro.factor("prior", prior + log_d)  # + log_d: the Jacobian of d = exp(log_d)
    numpyro.sample("plx", dist.Normal(1000.0 / d, star["parallax_error"]), obs=star["parallax"])


def quadrature_moments(plx, err):
    d = np.geomspace(10.0, 1e5, 200_001)
    log_p = 2 * np.log(d) - d / L_SCALE - 0.5 * ((plx - 1000.0 / d) / err) ** 2
    w = np.exp(log_p - log_p.max()) * np.gradient(d)
    w /= w.sum()
    mean = np.sum(w * d)
    return mean, np.sqrt(np.sum(w * (d - mean) ** 2))


STARS = {
    "parallax": jnp.array([2.0, 1.0, 0.5, 0.3, -0.2, 5.0]),
    "parallax_error": jnp.array([0.05, 0.2, 0.3, 0.3, 0.4, 0.01]),
}
CONFIG = NUTSConfig(num_warmup=400, num_samples=1500, num_chains=2, batch_size=4)


@pytest.fixture(scope="module")
def vmapped():
    return sample_stars(distance_model, STARS, 0, config=CONFIG)


def mcse(draws):
    """Monte-Carlo standard error of the mean of (chains, samples) draws."""
    return draws.std() / np.sqrt(effective_sample_size(draws[..., None])[0])


def test_vmapped_matches_quadrature(vmapped):
    for i in range(len(STARS["parallax"])):
        truth_mean, truth_std = quadrature_moments(float(STARS["parallax"][i]), float(STARS["parallax_error"][i]))
        d = vmapped.samples["d"][i]
        assert abs(d.mean() - truth_mean) < 5 * mcse(d) + 1e-3 * truth_mean, i
        assert d.std() == pytest.approx(truth_std, rel=0.15), i
    # a rare divergence in the low-S/N tails is allowed (and flagged); nothing else
    assert np.all(vmapped.flags & ~NUTS_FLAGS["divergent"] == 0)
    assert np.all(vmapped.diagnostics["n_divergent"] <= 0.01 * CONFIG.num_chains * CONFIG.num_samples)


@pytest.mark.slow
def test_vmapped_statistically_equal_to_sequential_mcmc(vmapped):
    seq = sequential_nuts(distance_model, STARS, 1, config=CONFIG)
    for i, draws in enumerate(seq):
        a, b = vmapped.samples["d"][i], draws["d"]
        assert a.shape == b.shape == (CONFIG.num_chains, CONFIG.num_samples)
        z = (a.mean() - b.mean()) / np.hypot(mcse(a), mcse(b))
        assert abs(z) < 5, (i, a.mean(), b.mean())
        assert a.std() == pytest.approx(b.std(), rel=0.2), i


@pytest.mark.slow
def test_per_star_adaptation_handles_scales_spanning_five_decades():
    def gaussian(star):
        numpyro.sample("x", dist.Normal(star["mu"], star["sigma"]))

    sigma = jnp.array([1e-3, 1e-1, 1.0, 10.0, 100.0])
    data = {"mu": jnp.array([0.0, 1.0, -2.0, 30.0, 500.0]), "sigma": sigma}
    res = sample_stars(gaussian, data, 3, config=NUTSConfig(num_warmup=500, num_samples=1000))
    x = res.samples["x"][:, 0]
    np.testing.assert_allclose(x.std(axis=1), sigma, rtol=0.12)
    assert np.all(np.abs(x.mean(axis=1) - np.asarray(data["mu"])) < 5 * np.asarray(sigma) / np.sqrt(300))
    # the step sizes adapt per star: the adapted step times the posterior scale is O(1) for each
    assert np.all(res.diagnostics["ess_bulk"] > 300)
    assert np.all(res.diagnostics["num_steps"] < 8)


def test_draws_do_not_depend_on_the_batch():
    sub = {k: v[2:5] for k, v in STARS.items()}
    config = NUTSConfig(num_warmup=100, num_samples=100, batch_size=2)
    full = sample_stars(distance_model, STARS, 7, config=config)
    part = sample_stars(distance_model, sub, 7, config=config, row_ids=[2, 3, 4])
    # bit-identical: a star always runs at lane row_id % batch_size of a batch of the same shape
    np.testing.assert_array_equal(part.samples["d"], full.samples["d"][2:5])
    shuffled = sample_stars(distance_model, {k: v[::-1] for k, v in STARS.items()}, 7, config=config,
                            row_ids=np.arange(6)[::-1])  # fmt: skip
    np.testing.assert_array_equal(shuffled.samples["d"][::-1], full.samples["d"])
    other_key = sample_stars(distance_model, sub, 8, config=config, row_ids=[2, 3, 4])
    assert np.abs(other_key.samples["d"] - part.samples["d"]).max() > 1.0


def test_bad_rows_are_flagged_not_fatal():
    data = {
        "parallax": jnp.array([1.0, jnp.nan, 1.0, 0.8]),
        "parallax_error": jnp.array([0.1, 0.1, -0.1, 0.1]),  # a negative error: NaN likelihood everywhere
    }
    config = NUTSConfig(num_warmup=100, num_samples=100)
    valid = np.array([True, False, True, True])
    res = sample_stars(distance_model, data, 0, config=config, valid=valid)
    assert res.flags[1] == NUTS_FLAGS["invalid_input"]
    assert res.flags[2] & NUTS_FLAGS["init_failed"]
    for bad in (1, 2):
        assert np.all(np.isnan(res.samples["d"][bad]))
        assert np.isnan(res.summary()["d_mean"][bad])
    for good in (0, 3):
        assert res.flags[good] & (NUTS_FLAGS["init_failed"] | NUTS_FLAGS["invalid_input"]) == 0
        assert np.all(np.isfinite(res.samples["d"][good]))
    none = sample_stars(distance_model, data, 0, config=config, valid=np.zeros(4, bool))
    assert np.all(none.flags == NUTS_FLAGS["invalid_input"])
    with pytest.raises(ValueError, match="leading"):
        sample_stars(distance_model, {"parallax": jnp.ones(3), "parallax_error": jnp.ones(2)}, 0)


def test_rhat_flags_chains_stuck_in_separate_modes():
    def bimodal(star):
        numpyro.sample(
            "x",
            dist.MixtureSameFamily(
                dist.Categorical(probs=jnp.array([0.5, 0.5])),
                dist.Normal(jnp.array([-star["sep"], star["sep"]]), 1.0),
            ),
        )

    data = {"sep": jnp.array([0.0, 30.0])}
    res = sample_stars(bimodal, data, 0, config=NUTSConfig(num_warmup=200, num_samples=300, num_chains=4))
    chain_means = res.samples["x"][1].mean(axis=1)
    assert np.any(chain_means > 10) and np.any(chain_means < -10)  # this seed puts chains in both modes
    assert res.diagnostics["rhat"][1] > 2.0
    assert res.flags[1] & NUTS_FLAGS["high_rhat"]
    assert res.diagnostics["rhat"][0] < 1.05
    assert not res.flags[0] & NUTS_FLAGS["high_rhat"]


def test_summary_columns_and_arviz_netcdf(vmapped, tmp_path):
    cols = vmapped.summary(keep_samples=50)
    n = vmapped.n_stars
    for name in ("d_mean", "d_std", "d_q2_5", "d_q16", "d_q50", "d_q84", "d_q97_5", "log_d_mean", "rhat", "flags"):
        assert cols[name].shape == (n,), name
    assert cols["d_samples"].shape == (n, 50)
    d = vmapped.samples["d"].reshape(n, -1)
    np.testing.assert_allclose(cols["d_q50"], np.median(d, axis=1), rtol=1e-6)
    arviz = pytest.importorskip("arviz")
    idata = vmapped.to_arviz(row_ids=np.arange(100, 100 + n))
    path = tmp_path / "samples.nc"
    idata.to_netcdf(str(path))
    back = arviz.from_netcdf(str(path))
    assert back.posterior["d"].shape == (CONFIG.num_chains, CONFIG.num_samples, n)
    np.testing.assert_allclose(back.posterior["d"].sel(star=102).values, vmapped.samples["d"][2])
    np.testing.assert_array_equal(back.star_diagnostics["flags"].values, vmapped.flags)


@pytest.mark.slow
def test_sharded_over_two_devices_matches_single_device(tmp_path):
    """Forced 2 host devices (odd star count → padding): same posteriors as the 1-device run, statistically."""
    script = textwrap.dedent(
        f"""
        import numpy as np, jax, jax.numpy as jnp, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_inference_nuts import distance_model, STARS
        from jaxstars.inference import NUTSConfig, sample_stars
        assert jax.local_device_count() == 2
        data = {{k: v[:5] for k, v in STARS.items()}}
        res = sample_stars(distance_model, data, 0, config=NUTSConfig(num_warmup=300, num_samples=1000, batch_size=2))
        np.save({str(tmp_path / "d.npy")!r}, res.samples["d"])
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=600)
    two = np.load(tmp_path / "d.npy")
    assert two.shape == (5, 1, 1000)
    for i in range(5):
        truth_mean, truth_std = quadrature_moments(float(STARS["parallax"][i]), float(STARS["parallax_error"][i]))
        assert abs(two[i].mean() - truth_mean) < 5 * mcse(two[i]) + 1e-3 * truth_mean, i
        assert two[i].std() == pytest.approx(truth_std, rel=0.2), i
