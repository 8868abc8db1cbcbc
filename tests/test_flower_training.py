"""FLOWER training: the importance-sampled marginal likelihood (Appendix A) against brute-force integration, its
unbiasedness, the Malmquist truncation (Eq. 9), the contrastive term (Eqs. 20–22) and a short training run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm as snorm
from scipy.stats import qmc

from jaxstars.astro.astrometry import parallax_log_likelihood
from jaxstars.astro.geometry import galactocentric_rz
from jaxstars.astro.priors import log_prior_generalized_gamma
from jaxstars.models.flower import (
    DEFAULT_PRIOR,
    FlowerFeatures,
    FlowerModel,
    contrastive_copies,
    default_flower_flow,
    flower_log_marginal,
    flower_loss,
    flower_loss_terms,
    flower_training_arrays,
    log_malmquist,
    malmquist_limits,
    train_flower,
)

FEATS = FlowerFeatures(bands=("G", "BP", "RP"))
L_DEG, B_DEG, ZP = 30.0, 50.0, -0.017


def _perturbed(params, scale=0.3, seed=1):
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [a + scale * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)]
    )


@pytest.fixture(scope="module")
def sharp_model():
    """A tiny, deliberately non-Gaussian flow whose density varies on the scale of the data errors."""
    flow = default_flower_flow(3, block_dim=2, depth=2)
    model = FlowerModel(FEATS, flow, (4.0, 0.3, -0.5), (0.3, 0.1, 0.1), (8000.0, 600.0), (300.0, 400.0))
    return model, _perturbed(model.init(jax.random.PRNGKey(0)))


def _star(plx=1.2, plx_err=0.2):
    mu0 = 5 * np.log10(800.0) - 5
    mhat = np.array([4.0, 4.35, 3.55]) + mu0
    sig = np.array([0.05, 0.08, 0.06])
    plx_c = plx - ZP
    star = {
        "mag": mhat[None],
        "mag_err": sig[None],
        "parallax": np.array([plx]),
        "parallax_error": np.array([plx_err]),
        "zero_point": np.array([ZP]),
        "l": np.array([L_DEG]),
        "b": np.array([B_DEG]),
        "dist_mean": np.array([1000.0 / plx_c]),
        "dist_std": np.array([1000.0 * plx_err / plx_c**2]),
    }
    return star, mhat, sig


def _repeat(star, n):
    return {k: np.repeat(v, n, axis=0) for k, v in star.items()}


def _log_selection(m_unext, l_deg, b_deg):
    # a smooth magnitude cut on BP, as a stand-in for a survey selection function
    return jax.nn.log_sigmoid((13.95 - m_unext[..., 1]) / 0.05)


def _brute_force(model, params, mhat, sig, limits, log_selection, plx, plx_err):
    """∫ dd p(ϖ̂|d) p(d) ∫ dx p(m̂|x,d) p_θ(x|Φ(d)) I(M|μ) S: trapezoid over d, quasi-MC over m ~ N(m̂, Σ)."""
    d = np.linspace(5.0, 2500.0, 400)
    mu = 5 * np.log10(d) - 5
    m = jnp.asarray(mhat + sig * snorm.ppf(qmc.Sobol(3, seed=0).random(2**12)))
    R, Z = galactocentric_rz(L_DEG, B_DEG, d)
    log_s = 0.0 if log_selection is None else log_selection(m, L_DEG, B_DEG)

    @jax.jit
    def inner(args):
        mu_i, r_i, z_i = args
        x = FEATS.intrinsic(m - mu_i)  # x = Λ(m − μ): p(m̂|x,d) as a density over x (unit Jacobian)
        lp = model.log_density(params, x, r_i, z_i) + log_malmquist(x[:, 0], mu_i, limits) + log_s
        return jax.scipy.special.logsumexp(lp) - np.log(m.shape[0])

    log_inner = np.asarray(jax.lax.map(inner, (jnp.asarray(mu), R, Z)))
    outer = log_inner + np.asarray(parallax_log_likelihood(plx, plx_err, d, ZP))
    outer = outer + np.asarray(log_prior_generalized_gamma(d, *DEFAULT_PRIOR))
    top = outer.max()
    return top + np.log(np.trapezoid(np.exp(outer - top), d))


def test_malmquist_truncation_formula():
    limits = (5.0, 21.0)
    M = jnp.array([-3.0, 0.0, 4.0, 10.9, 11.1, 4.0])
    mu = jnp.array([10.0, 10.0, 10.0, 10.0, 10.0, 0.5])
    got = np.asarray(log_malmquist(M, mu, limits))
    # I(M|μ) = U(M | m_bright − μ, m_faint − μ) = 1/16 on (−5, 11) for μ = 10 and on (4.5, 20.5) for μ = 0.5
    expected = np.array([np.log(1 / 16), np.log(1 / 16), np.log(1 / 16), np.log(1 / 16), -np.inf, -np.inf])
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(expected))
    np.testing.assert_allclose(got[np.isfinite(got)], expected[np.isfinite(expected)], rtol=1e-6)
    assert float(log_malmquist(-5.01, 10.0, limits)) == -np.inf
    assert np.all(np.asarray(log_malmquist(M, mu, None)) == 0)
    assert malmquist_limits(FEATS) == (5.0, 21.0)  # FLOWER §3.1 G limits from the band registry
    with pytest.raises(ValueError):
        malmquist_limits(FEATS, (21.0, 5.0))


@pytest.mark.parametrize("with_selection", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_importance_estimate_matches_brute_force(sharp_model, with_selection):
    model, params = sharp_model
    star, mhat, sig = _star()
    limits = (5.0, float(mhat[0]) + 0.03)  # the faint limit cuts ~27% of the photometric draws
    sel = _log_selection if with_selection else None
    truth = _brute_force(model, params, mhat, sig, limits, sel, 1.2, 0.2)
    reps, k = 24, 2048
    est = flower_log_marginal(
        model,
        params,
        _repeat(star, reps),
        jax.random.PRNGKey(5),
        n_samples=k,
        limits=limits,
        log_selection=sel,
        selection_norm="none",
    )
    lm = np.asarray(est.log_marginal, float)
    assert np.all(np.isfinite(lm)) and np.all(np.asarray(est.ess) > 5)
    ratio = np.exp(lm - truth)
    combined = np.log(ratio.mean()) + truth
    stderr = ratio.std(ddof=1) / np.sqrt(reps) / ratio.mean()
    assert abs(combined - truth) < 3 * stderr + 0.01, (combined, truth, stderr)
    # the truncation and the selection matter: dropping them changes the answer by far more than the error
    loose = flower_log_marginal(model, params, star, jax.random.PRNGKey(6), n_samples=k, limits=None)
    assert abs(float(loose.log_marginal[0]) - np.log(16.0 / 16.0) - truth) > 0.1


def test_estimator_is_unbiased_for_the_marginal_likelihood(sharp_model):
    model, params = sharp_model
    star, mhat, sig = _star(plx=1.2, plx_err=0.3)
    limits = (5.0, float(mhat[0]) + 0.05)
    truth = _brute_force(model, params, mhat, sig, limits, None, 1.2, 0.3)
    reps = 1500
    est = flower_log_marginal(
        model, params, _repeat(star, reps), jax.random.PRNGKey(11), n_samples=32, limits=limits
    )
    ratio = np.exp(np.asarray(est.log_marginal, float) - truth)
    stderr = ratio.std(ddof=1) / np.sqrt(reps)
    # E[exp(log L̂)] = L: the mean ratio is 1 within its standard error (and the brute-force error)
    assert abs(ratio.mean() - 1.0) < 3 * stderr + 0.01, (ratio.mean(), stderr)
    # whereas the log of a K = 32 estimate is biased low (Jensen), so the test can tell the two apart
    assert np.mean(np.log(ratio)) < 0
    # the paper's A5 approximation drops the parallax/proposal ratio: a different (biased) number here
    paper = flower_log_marginal(
        model, params, _repeat(star, 200), jax.random.PRNGKey(12), n_samples=32, limits=limits, estimator="paper"
    )
    assert abs(np.log(np.mean(np.exp(np.asarray(paper.log_marginal) - truth)))) > 0.1


@pytest.mark.slow  # long compile; default suite keeps the brute-force checks
def test_selection_normalisation_and_invalid_stars(sharp_model):
    model, params = sharp_model
    star, mhat, _ = _star()
    limits = (5.0, float(mhat[0]) + 0.03)
    key = jax.random.PRNGKey(3)
    num = flower_log_marginal(
        model, params, star, key, n_samples=256, limits=limits, log_selection=_log_selection, selection_norm="none"
    )
    auto = flower_log_marginal(
        model, params, star, key, n_samples=256, limits=limits, log_selection=_log_selection
    )
    # "auto" divides by the A6 estimate of Eq. 24 made with the same draws
    np.testing.assert_allclose(
        np.asarray(auto.log_marginal), np.asarray(num.log_marginal - auto.log_selection_norm), rtol=1e-5
    )
    assert float(auto.log_selection_norm[0]) != 0.0
    # a star entirely beyond the faint limit has no valid draw: −inf, ess 0, and a finite loss/gradient
    bad = _repeat(star, 2)
    bad["mag"] = bad["mag"].copy()
    bad["mag"][1] += 3.0
    res = flower_log_marginal(model, params, bad, key, n_samples=64, limits=limits)
    assert np.isfinite(res.log_marginal[0]) and res.log_marginal[1] == -np.inf and res.ess[1] == 0
    grads = jax.grad(lambda p: flower_loss(model, p, bad, key, n_samples=16, limits=limits))(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))


def test_contrastive_copies_and_zero_weight(sharp_model):
    model, params = sharp_model
    star, _, _ = _star()
    batch = _repeat(star, 4)
    copies = contrastive_copies(FEATS, batch, jax.random.PRNGKey(0), n_negatives=3)
    assert copies["mag"].shape == (12, 3)
    e = np.asarray(copies["ebv_added"])
    assert np.all((e >= 0.05) & (e <= 0.5))
    # each copy is ξ + A(E): the law at the star's intrinsic colour (E = 0 star: observed colour)
    x = FEATS.intrinsic(jnp.asarray(batch["mag"]))
    expected = np.repeat(batch["mag"], 3, axis=0) + np.asarray(
        FEATS.extinction(jnp.asarray(e), jnp.repeat(x, 3, axis=0))
    )
    np.testing.assert_allclose(np.asarray(copies["mag"]), expected, rtol=1e-6)
    np.testing.assert_allclose(
        copies["parallax"], np.repeat(batch["parallax"], 3)
    )  # (A(E), 0): parallax unchanged
    # λ = 0: the loss is the negative log marginal likelihood (the copies are not even evaluated)
    key = jax.random.PRNGKey(1)
    kw = {"n_samples": 16, "limits": None}
    zero = flower_loss_terms(model, params, batch, key, contrastive_weight=0.0, **kw)
    assert float(zero["loss"]) == float(zero["nll"]) and float(zero["contrastive"]) == 0.0
    # a traced λ evaluates the copies: the loss is nll + λ · mean log Ĉ, and equals the nll at λ = 0
    terms = jax.jit(lambda lam: flower_loss_terms(model, params, batch, key, contrastive_weight=lam, **kw))
    t0, t3 = terms(0.0), terms(0.3)
    assert float(t0["loss"]) == pytest.approx(float(zero["nll"]), rel=1e-6)
    assert float(t3["nll"]) == pytest.approx(float(zero["nll"]), rel=1e-6)
    assert float(t3["contrastive"]) < float(-t3["nll"])  # reddened copies are less likely than the star itself
    assert float(t3["loss"]) == pytest.approx(float(t3["nll"]) + 0.3 * float(t3["contrastive"]), rel=1e-6)


# -- short training on zero-extinction stars with a known Gaussian x-distribution -----------------------------------
X_MEAN = np.array([4.0, 0.35, -0.45])
X_STD = np.array([0.6, 0.08, 0.07])


def _zero_extinction_stars(n, seed=0):
    """Stars with x ~ N(X_MEAN, diag X_STD²) (colours correlated with M through a shared term), observed without
    dust: m̂ = Λ⁻¹x + μ(d) + noise, ϖ̂ = 1000/d + zp + noise."""
    rng = np.random.default_rng(seed)
    d = rng.uniform(200.0, 1200.0, n)
    x = X_MEAN + X_STD * rng.normal(size=(n, 3))
    mag_err = np.array([0.01, 0.02, 0.02])
    mags = np.asarray(FEATS.absolute(x)) + (5 * np.log10(d) - 5)[:, None] + mag_err * rng.normal(size=(n, 3))
    plx_err = np.full(n, 0.05)
    plx = 1000.0 / d + ZP + plx_err * rng.normal(size=n)
    cat = {
        "mag_G": mags[:, 0],
        "mag_BP": mags[:, 1],
        "mag_RP": mags[:, 2],
        "mag_err_G": np.full(n, mag_err[0]),
        "mag_err_BP": np.full(n, mag_err[1]),
        "mag_err_RP": np.full(n, mag_err[2]),
        "parallax": plx,
        "parallax_error": plx_err,
        "l": rng.uniform(0, 360, n),
        "b": rng.uniform(40, 80, n),
    }
    return cat, x, d


@pytest.mark.slow
def test_train_flower_smoke(tmp_path):
    """One compiled fit with the full loss (contrastive ramp included): the loss falls and the model round-trips."""
    cat, _, _ = _zero_extinction_stars(600, seed=3)
    res = train_flower(
        cat,
        features=FEATS,
        flow=default_flower_flow(3, block_dim=2, depth=2, n_layers=1),
        epochs=6,
        batch_size=128,
        key=1,
        n_samples=4,
        n_negatives=1,
        n_samples_negative=2,
        patience=None,
        progress=False,
        learning_rate=1e-2,
        contrastive_ramp_epochs=3,
        zero_point=ZP,
        val_fraction=0.0,
    )
    hist = np.asarray(res.fit.train_loss)
    assert hist.shape == (6,) and np.all(np.isfinite(hist))
    assert hist[-1] < hist[0]
    info = res.model.info["training"]
    assert info["contrastive_weight"] == 0.3 and info["n_stars"] > 550
    model, params = FlowerModel.load(res.model.save(tmp_path, res.params))
    assert model.info["training"]["epochs_run"] == 6
    x = jnp.asarray([X_MEAN])
    a = jax.jit(model.log_density)(params, x, 8000.0, 300.0)
    b = jax.jit(res.model.log_density)(res.params, x, 8000.0, 300.0)
    assert float(a[0]) == pytest.approx(float(b[0]), rel=1e-6)


@pytest.fixture(scope="module")
def trained():
    cat, _, _ = _zero_extinction_stars(1500)
    arrays, mask = flower_training_arrays(cat, FEATS, zero_point=ZP)
    assert mask.sum() >= 1450 and arrays["mag"].shape == (mask.sum(), 3)
    kw = {
        "features": FEATS,
        "flow": default_flower_flow(3, block_dim=4, depth=2, activation="leaky_tanh", n_layers=1),
        "epochs": 30,
        "batch_size": 256,
        "key": 0,
        "n_samples": 8,
        "n_samples_negative": 4,
        "patience": None,
        "progress": False,
        "learning_rate": 3e-3,
    }
    plain = train_flower(arrays, contrastive_weight=0.0, **kw)
    contrast = train_flower(arrays, contrastive_weight=0.3, contrastive_ramp_epochs=5, **kw)
    return arrays, plain, contrast


@pytest.mark.slow
def test_short_training_reduces_loss_and_recovers_gaussian(trained):
    arrays, plain, _ = trained
    hist = np.asarray(plain.fit.train_loss)
    assert hist[-1] < hist[0] - 0.5
    assert plain.fit.val_loss[-1] < plain.fit.val_loss[0]
    model, params = plain.model, plain.params
    R, Z = galactocentric_rz(L_DEG, 60.0, 600.0)
    xs = np.asarray(jax.jit(model.sample, static_argnums=4)(params, jax.random.PRNGKey(0), R, Z, 4000))
    xs = xs[np.all(np.isfinite(xs), axis=1)]
    assert len(xs) > 3900
    assert np.all(np.abs(xs.mean(0) - X_MEAN) < 0.25 * X_STD), xs.mean(0)
    np.testing.assert_allclose(xs.std(0), X_STD, rtol=0.25)
    assert model.info["training"]["n_stars"] == arrays["mag"].shape[0]
    assert bool(model.in_coverage(R, Z))


@pytest.mark.slow
def test_contrastive_training_lowers_density_of_reddened_stars(trained):
    _, plain, contrast = trained
    rng = np.random.default_rng(5)
    x = X_MEAN + X_STD * rng.normal(size=(2000, 3))
    R, Z = galactocentric_rz(L_DEG, 60.0, 600.0)
    reddened = x + np.asarray(FEATS.extinction_features(jnp.full(2000, 0.3), jnp.asarray(x)))
    lp = {
        name: (
            np.asarray(t.model.log_density(t.params, x, R, Z)),
            np.asarray(t.model.log_density(t.params, reddened, R, Z)),
        )
        for name, t in (("plain", plain), ("contrast", contrast))
    }
    # reddened stars become less probable with the contrastive term, and more so than clean stars: the density
    # gap between a clean star and its E = 0.3 copy widens
    assert np.median(lp["contrast"][1]) < np.median(lp["plain"][1]) - 1.0
    gap = {k: np.median(v[0] - v[1]) for k, v in lp.items()}
    assert gap["contrast"] > gap["plain"] + 1.0, gap
