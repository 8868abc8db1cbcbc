"""Photometric posteriors with a stellar model (Green et al. Eq. 19): ``p(θ, μ, E | m̂, ϖ̂) ∝ p(m̂ | θ, μ, E)
p(ϖ̂ | μ) p(θ) p(μ) p(E)``.

:func:`stellar_star_model` is the NumPyro model of ONE star (latent normalised θ, distance modulus μ — or a distance
with a user prior — and reddening E; Gaussian photometric likelihood over the observed bands with the model of
Eq. 2; Gaussian parallax likelihood on the raw parallax when given, negative parallaxes included).  Priors live in
:class:`StellarPrior` and can be swapped: a θ box or a Gaussian mixture fitted to a training sample
(:func:`fit_theta_mixture`), μ uniform or any NumPyro distance distribution (e.g.
:class:`jaxstars.astro.priors.EDSDPrior`), E uniform times an optional per-star Gaussian (a dust-map estimate).

:func:`stellar_posteriors` runs it with NUTS for every star of a catalog through the shared engine
(:func:`jaxstars.inference.sample_stars`: vmapped, compiled once).  :func:`simulate_photometry` draws photometry
and parallaxes from the model for known θ, μ, E (the truth-recovery test).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from jaxstars.inference import NUTSConfig, NUTSResult, sample_stars

from .model import StellarModel
from .network import StellarNetwork
from .stars import StellarStars, prepare_stars

__all__ = [
    "StellarPrior",
    "fit_theta_mixture",
    "posterior_data",
    "simulate_photometry",
    "stellar_init",
    "stellar_posteriors",
    "stellar_star_model",
    "summarise_posteriors",
]


@dataclasses.dataclass(frozen=True, eq=False)
class StellarPrior:
    """Priors of Eq. 19 (all swappable).

    Attributes
    ----------
    theta_low, theta_high : 3 floats
        Uniform box for physical ``(Teff, logg, [Fe/H])`` (used when ``theta_mixture`` is None).
    theta_mixture : dict, optional
        ``{"weights": (K,), "means": (K, 3), "covs": (K, 3, 3)}`` in physical units: a Gaussian-mixture prior
        on θ (e.g. :func:`fit_theta_mixture` of a spectroscopic sample).
    mu_low, mu_high : float
        Uniform distance-modulus range (used when ``distance`` is None).
    distance : numpyro Distribution, optional
        Prior on the distance in pc (then ``distance`` is the latent site and ``mu`` deterministic).
    E_max : float
        Upper end of the uniform reddening prior ``U(0, E_max)``; a star's own ``E_mean ± E_std`` (if given)
        multiplies it (a truncated Gaussian).
    """

    theta_low: tuple[float, float, float] = (3500.0, -0.5, -2.5)
    theta_high: tuple[float, float, float] = (8500.0, 5.5, 0.7)
    theta_mixture: dict | None = None
    mu_low: float = 0.0
    mu_high: float = 17.0
    distance: Any = None
    E_max: float = 5.0

    def theta_distribution(self, network: StellarNetwork):
        """Prior of the *normalised* θ (the latent site)."""
        med = np.asarray(network.theta_median)
        std = np.asarray(network.theta_std)
        if self.theta_mixture is None:
            lo = (np.asarray(self.theta_low) - med) / std
            hi = (np.asarray(self.theta_high) - med) / std
            return dist.Uniform(jnp.asarray(lo), jnp.asarray(hi)).to_event(1)
        w = np.asarray(self.theta_mixture["weights"], float)
        means = (np.asarray(self.theta_mixture["means"], float) - med) / std
        covs = np.asarray(self.theta_mixture["covs"], float) / (std[:, None] * std[None, :])
        return dist.MixtureSameFamily(
            dist.Categorical(probs=jnp.asarray(w / w.sum())),
            dist.MultivariateNormal(jnp.asarray(means), covariance_matrix=jnp.asarray(covs)),
        )


def fit_theta_mixture(theta, n_components: int = 8, *, n_iter: int = 200, seed: int = 0, reg: float = 1e-6):
    """Gaussian mixture fitted by EM to physical θ ``(n, 3)`` (a data-driven θ prior for Eq. 19).

    Returns ``{"weights", "means", "covs"}`` (plain lists, JSON-ready).
    """
    x = np.asarray(theta, float)
    x = x[np.all(np.isfinite(x), axis=1)]
    if x.shape[0] < n_components:
        raise ValueError(f"need at least {n_components} finite θ rows, got {x.shape[0]}")
    scale = x.std(axis=0)
    z = (x - x.mean(axis=0)) / scale
    rng = np.random.default_rng(seed)
    means = z[rng.choice(len(z), n_components, replace=False)]
    covs = np.repeat(np.eye(3)[None], n_components, axis=0)
    weights = np.full(n_components, 1.0 / n_components)
    for _ in range(n_iter):
        diff = z[:, None, :] - means[None]
        inv = np.linalg.inv(covs)
        _, logdet = np.linalg.slogdet(covs)
        maha = np.einsum("nki,kij,nkj->nk", diff, inv, diff)
        logp = np.log(weights) - 0.5 * (maha + logdet + 3 * np.log(2 * np.pi))
        logp -= logp.max(axis=1, keepdims=True)
        resp = np.exp(logp)
        resp /= resp.sum(axis=1, keepdims=True)
        nk = resp.sum(axis=0) + 1e-12
        weights = nk / nk.sum()
        means = resp.T @ z / nk[:, None]
        diff = z[:, None, :] - means[None]
        covs = np.einsum("nk,nki,nkj->kij", resp, diff, diff) / nk[:, None, None] + reg * np.eye(3)
    means_phys = means * scale + x.mean(axis=0)
    covs_phys = covs * scale[:, None] * scale[None, :]
    return {"weights": weights.tolist(), "means": means_phys.tolist(), "covs": covs_phys.tolist()}


def stellar_star_model(data: dict, params, *, network: StellarNetwork, prior: StellarPrior) -> None:
    """NumPyro model of one star (Eq. 19).

    Parameters
    ----------
    data : dict
        ``mag`` (b,), ``mag_err`` (b,), ``band_obs`` (b,) bool, ``parallax``, ``parallax_err``, ``has_parallax``,
        ``E_mean``, ``E_std``, ``has_E_prior`` (scalars) — see :func:`posterior_data`.
    params : pytree
        Network parameters (shared by all stars).
    network : StellarNetwork
    prior : StellarPrior

    Sites: ``theta_n`` (latent, normalised θ), ``theta`` (physical, deterministic), ``mu`` and ``distance``
    (one latent, the other deterministic), ``E`` (latent).
    """
    theta_n = numpyro.sample("theta_n", prior.theta_distribution(network))
    numpyro.deterministic("theta", network.denormalise(theta_n))
    if prior.distance is None:
        mu = numpyro.sample("mu", dist.Uniform(prior.mu_low, prior.mu_high))
        distance = numpyro.deterministic("distance", 10.0 ** (mu / 5.0 + 1.0))
    else:
        distance = numpyro.sample("distance", prior.distance)
        mu = numpyro.deterministic("mu", 5.0 * jnp.log10(distance / 10.0))
    E = numpyro.sample("E", dist.Uniform(0.0, prior.E_max))
    e_std = jnp.where(data["has_E_prior"], data["E_std"], 1.0)
    numpyro.factor("E_prior", jnp.where(data["has_E_prior"], dist.Normal(data["E_mean"], e_std).log_prob(E), 0.0))
    pred = network.magnitudes(params, theta_n, mu, E)  # Eq. 2
    numpyro.sample(
        "mag",
        dist.Normal(pred, data["mag_err"]).mask(data["band_obs"]).to_event(1),
        obs=data["mag"],
    )
    plx_err = jnp.where(data["has_parallax"], data["parallax_err"], 1.0)
    numpyro.sample(
        "parallax",
        dist.Normal(1000.0 / distance, plx_err).mask(data["has_parallax"]),
        obs=jnp.where(data["has_parallax"], data["parallax"], 0.0),
    )


def stellar_init(data: dict) -> dict:
    """Per-star NUTS starting point: θ at the normalisation centre, μ from the parallax (else 10), E at its prior."""
    plx = data["parallax"]
    good = data["has_parallax"] & (plx > 3.0 * data["parallax_err"])
    mu = jnp.where(good, 10.0 - 5.0 * jnp.log10(jnp.where(good, plx, 1.0)), 10.0)
    E = jnp.where(data["has_E_prior"], jnp.clip(data["E_mean"], 0.02, 4.0), 0.1)
    mu = jnp.clip(mu, 0.5, 16.5)
    return {"theta_n": jnp.zeros(3), "mu": mu, "distance": 10.0 ** (mu / 5.0 + 1.0), "E": E}


def posterior_data(stars: StellarStars, *, use_E_prior: bool = False, dtype=None) -> tuple[dict, np.ndarray]:
    """Per-star inputs of :func:`stellar_star_model` and the rows that can be sampled.

    Photometric errors are the floored ones of ``stars``; the raw parallax is used whenever it and its error are
    finite and the error positive (whatever its S/N or sign).  With ``use_E_prior``, the star's reddening estimate
    ``E0 ± σ0`` is a Gaussian prior factor on E.  A row without any observed band cannot be sampled.
    """
    dtype = dtype or jnp.result_type(float)
    has_plx = np.isfinite(stars.parallax) & np.isfinite(stars.parallax_err) & (stars.parallax_err > 0)
    has_E = np.full(len(stars), bool(use_E_prior)) & np.isfinite(stars.E0) & (stars.E0_var > 0)
    data = {
        "mag": jnp.asarray(stars.mag, dtype),
        "mag_err": jnp.asarray(np.sqrt(stars.mag_var), dtype),
        "band_obs": jnp.asarray(stars.band_obs),
        "parallax": jnp.asarray(np.where(has_plx, stars.parallax, 0.0), dtype),
        "parallax_err": jnp.asarray(np.where(has_plx, stars.parallax_err, 1.0), dtype),
        "has_parallax": jnp.asarray(has_plx),
        "E_mean": jnp.asarray(np.where(has_E, stars.E0, 0.0), dtype),
        "E_std": jnp.asarray(np.where(has_E, np.sqrt(stars.E0_var), 1.0), dtype),
        "has_E_prior": jnp.asarray(has_E),
    }
    valid = stars.band_obs.any(axis=1)
    return data, valid


#: Default sampler settings of :func:`stellar_posteriors`.
DEFAULT_NUTS = NUTSConfig(num_warmup=400, num_samples=400)


@functools.lru_cache(maxsize=16)
def _model_for(network: StellarNetwork, prior: StellarPrior):
    # one partial per (network, prior) so that sample_stars reuses its compiled sampler
    return functools.partial(stellar_star_model, network=network, prior=prior)


def stellar_posteriors(
    model: StellarModel,
    stars: StellarStars,
    key,
    *,
    prior: StellarPrior = StellarPrior(),
    config: NUTSConfig = DEFAULT_NUTS,
    use_E_prior: bool = False,
    row_ids=None,
) -> NUTSResult:
    """NUTS posteriors of θ, μ (distance) and E for every star (Eq. 19), vmapped over the catalog.

    Parameters
    ----------
    model : StellarModel
    stars : StellarStars
        From :func:`~jaxstars.models.stellar.stars.prepare_stars` with the model's bands (θ and reddening columns
        are not needed; with ``use_E_prior`` the reddening estimate becomes a prior).
    key : jax key or int
    prior : StellarPrior
    config : NUTSConfig
    use_E_prior : bool
    row_ids : array, optional
        Global row ids (reproducible draws per star whatever the chunking).

    Returns
    -------
    NUTSResult
        Sites ``theta_n``, ``theta`` (physical), ``mu``, ``distance``, ``E``; rows without photometry flagged
        ``invalid_input``.
    """
    if tuple(stars.bands) != tuple(model.bands):
        raise ValueError(f"the stars have bands {stars.bands}, the model {model.bands}")
    data, valid = posterior_data(stars, use_E_prior=use_E_prior)
    return sample_stars(
        _model_for(model.network, prior),
        data,
        key,
        shared=(model.params,),
        config=config,
        valid=valid,
        init_fn=stellar_init,
        row_ids=row_ids,
    )


def summarise_posteriors(result: NUTSResult, model: StellarModel | None = None, theta_for_coverage=None) -> dict:
    """Per-star summary columns (``teff_*``, ``logg_*``, ``feh_*``, ``mu_*``, ``distance_*``, ``E_*``, diagnostics).

    With ``model`` and the posterior-mean θ, ``in_coverage`` (§6 density flag) is added.
    """
    cols = result.summary(sites=["theta", "mu", "distance", "E"])
    out = {}
    for k, v in cols.items():
        for i, name in enumerate(("teff", "logg", "feh")):
            k = k.replace(f"theta_{i}_", f"{name}_")
        out[k] = v
    if model is not None and model.density is not None:
        theta = np.stack([out["teff_mean"], out["logg_mean"], out["feh_mean"]], axis=1)
        ok = np.all(np.isfinite(theta), axis=1)
        flag = np.zeros(len(theta), bool)
        if ok.any():
            flag[ok] = model.in_coverage(theta[ok])
        out["in_coverage"] = flag
    return out


def simulate_photometry(
    model: StellarModel,
    theta,
    mu,
    E,
    key,
    *,
    mag_err=0.03,
    parallax_err=0.05,
    missing_fraction: float = 0.0,
) -> dict:
    """Photometry and parallaxes drawn from the model for known truth (a table for :func:`prepare_stars`).

    Parameters
    ----------
    theta : (n, 3)
        Physical θ; ``mu``, ``E`` ``(n,)``.
    mag_err : float or (n, b)
        Reported photometric errors (the draws use exactly these; pass errors that already include any floor
        you want the inference to assume, and prepare the table with ``floors="none"``).
    parallax_err : float or (n,)
        Parallax errors [mas]; NaN gives no parallax.
    missing_fraction : float
        Probability that a non-reference band is unobserved (NaN).

    Returns
    -------
    dict
        ``mag``, ``mag_err``, ``parallax``, ``parallax_err``, ``bands``, and the truth ``theta``, ``mu``, ``E``,
        ``distance`` (with ``theta_cov`` = small diagonal and ``E_err`` = 0.02 so that the table is also valid
        training input).
    """
    theta = np.asarray(theta, float)
    n = theta.shape[0]
    mu = np.broadcast_to(np.asarray(mu, float), (n,))
    E = np.broadcast_to(np.asarray(E, float), (n,))
    nb = model.network.n_bands
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(key) if isinstance(key, int) else key, 3)
    true_mag = np.asarray(model.magnitudes(theta, mu, E), float)
    err = np.broadcast_to(np.asarray(mag_err, float), (n, nb)).copy()
    mag = true_mag + err * np.asarray(jax.random.normal(k1, (n, nb)), float)
    if missing_fraction > 0:
        drop = np.asarray(jax.random.uniform(k2, (n, nb)), float) < missing_fraction
        drop[:, 0] = False
        mag[drop] = np.nan
        err[drop] = np.nan
    distance = 10.0 ** (mu / 5.0 + 1.0)
    plx_err = np.broadcast_to(np.asarray(parallax_err, float), (n,)).copy()
    plx = 1000.0 / distance + plx_err * np.asarray(jax.random.normal(k3, (n,)), float)
    return {
        "mag": mag,
        "mag_err": err,
        "parallax": plx,
        "parallax_err": plx_err,
        "bands": model.bands,
        "theta": theta,
        "theta_cov": np.broadcast_to(np.diag([10.0, 0.05, 0.03]) ** 2, (n, 3, 3)).copy(),
        "E": E.copy(),
        "E_err": np.full(n, 0.02),
        "mu": mu.copy(),
        "distance": distance,
    }


def prepare_for_inference(model: StellarModel, table: dict, *, floors: str = "auto") -> StellarStars:
    """:func:`prepare_stars` restricted to the model's bands (θ / reddening columns optional)."""
    return prepare_stars(table, model.bands, floors=floors)
