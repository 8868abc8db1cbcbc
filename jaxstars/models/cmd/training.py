"""Training the colour–magnitude flow with iterative dust estimation (Cranmer et al. §3.2).

Per star and minibatch (all vectorised, inside one jitted step):

1. draw 32 parallaxes from the positive-truncated normal (Eq. 1) around the zero-point-corrected parallax,
   ``d_i = 1000 / ϖ_i``, start from ``d_best = mean(d_i)``;
2. 5 times (10 in evaluation): reddening ``E(d_best)`` from the star's dust profile → dereddened colours and
   ``g_i = G − μ(d_i) − A_G E`` → flow densities ``P(g_i, colours)`` as weights → ``d_best = Σ d_i P_i / Σ P_i``
   (Eq. 2);
3. at the final ``d_best``: ``g_best = mean(g_i)`` (from the raw parallax samples, not from ``d_best``: the paper's
   guard against a density feedback loop), ``σ_g² = Var(g_i) + σ²_{G,dust}``, colour variances from the dust
   map, ``σ_P² = σ_g² + Σ σ_colour²``;
4. loss ``−(1/σ_P²) log P(g_best, colours_best)``, summed over stars — here divided by ``Σ 1/σ_P²`` of the batch
   so the scale does not depend on the batch; the optimum is the same.

``d_best`` is treated as a constant for the gradient (an estimation step, not part of the density being fitted).
``σ_P`` is floored (``sigma_floor``, our choice; the paper gives none) so one star with a tiny σ_P cannot dominate.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstars.astro.astrometry import sample_truncated_parallax
from jaxstars.astro.dust import interpolate_profile
from jaxstars.flows import Flow, fit, maf, recalibrate_batchnorm
from jaxstars.flows.train import FitResult

from .features import CMDFeatures, gaia_cmd_features
from .model import FLAGS, NO_RESULT, CMDModel, CMDStars, prepare_stars


def distance_modulus(d):
    """``μ = 5 log10(d / 10 pc)``."""
    return 5.0 * jnp.log10(d) - 5.0


def parallax_distance_samples(model: CMDModel, key, parallax, parallax_error, n_samples: int = 32):
    """``(n_stars, n_samples)`` distances ``1000 / ϖ_i`` with ϖ_i from Eq. 1 (zero-point corrected).

    Stars without a parallax (infinite error) get ``n_samples`` copies of 1 kpc; their weights then come from
    photometry alone, which cannot move a distance with no spread — such stars are excluded from training.
    """
    finite = jnp.isfinite(parallax_error)
    err = jnp.where(finite, parallax_error, 1.0)
    plx = sample_truncated_parallax(key, parallax, err, n_samples, model.zero_point).T
    return jnp.where(finite[:, None], 1000.0 / plx, 1000.0)


_interp_rows = jax.vmap(interpolate_profile, in_axes=(None, 0, 0))


def iterate_best_distance(model: CMDModel, params, batch: dict, d_samples, modulus_grid, n_iterations: int):
    """Eq. 2 iterated ``n_iterations`` times: the P-weighted mean of the distance samples, dust re-read each time.

    ``batch`` holds ``features``, ``n_observed`` and ``dust_mean`` ``(n_stars, n_grid)``; returns ``d_best``.
    Stars whose samples all have zero density keep their previous estimate.
    """
    mu = distance_modulus(d_samples)

    def step(_, d_best):
        E = _interp_rows(modulus_grid, batch["dust_mean"], distance_modulus(d_best))
        f = model.dereddened_features(batch["features"][:, None, :], mu, E[:, None])
        log_p = model.log_density(params, f, batch["n_observed"][:, None])
        finite = jnp.isfinite(log_p)
        any_finite = jnp.any(finite, axis=1)
        w = jax.nn.softmax(jnp.where(finite, log_p, -jnp.inf), axis=1)
        new = jnp.sum(jnp.where(finite, w * d_samples, 0.0), axis=1)
        return jnp.where(any_finite, new, d_best)

    return jax.lax.fori_loop(0, n_iterations, step, jnp.mean(d_samples, axis=1))


class BestEstimate(NamedTuple):
    """Cranmer et al. §3.2 per-star point estimates: dereddened features, ``σ_P²``, ``d_best`` and its dust."""

    features: Any
    sigma_p2: Any
    distance: Any
    reddening: Any


def best_estimates(
    model: CMDModel, params, batch: dict, key, modulus_grid, *, n_samples: int = 32, n_iterations: int = 5
) -> BestEstimate:
    """Steps 1–3 of the module docstring for a batch (dict of arrays, see :func:`training_arrays`)."""
    d = parallax_distance_samples(model, key, batch["parallax"], batch["parallax_error"], n_samples)
    d_best = jax.lax.stop_gradient(
        iterate_best_distance(model, jax.lax.stop_gradient(params), batch, d, modulus_grid, n_iterations)
    )
    mu_best = distance_modulus(d_best)
    E = _interp_rows(modulus_grid, batch["dust_mean"], mu_best)
    E_std = _interp_rows(modulus_grid, batch["dust_std"], mu_best)
    k = jnp.asarray(model.feature_extinction, dtype=E.dtype)
    g_i = batch["features"][:, :1] - distance_modulus(d) - E[:, None] * k[0]
    colours = batch["features"][:, 1:] - E[:, None] * k[1:]
    observed = jnp.arange(1, model.dim) < batch["n_observed"][:, None]
    var_g = jnp.var(g_i, axis=1) + (k[0] * E_std) ** 2
    var_c = jnp.sum(jnp.where(observed, (k[1:] * E_std[:, None]) ** 2, 0.0), axis=1)
    f = jnp.concatenate([jnp.mean(g_i, axis=1, keepdims=True), colours], axis=1)
    sigma_p2 = var_g + var_c
    if "phot_var" in batch:  # optional: the features' photometric variance (not in the paper's σ_P)
        sigma_p2 = sigma_p2 + batch["phot_var"]
    return BestEstimate(f, sigma_p2, d_best, E)


def loss_weights(sigma_p2, sigma_floor: float = 0.01, weight_power: float = 1.0):
    """Per-star loss weights ``1 / max(σ_P², σ_floor²)^γ`` (``γ = weight_power``; Cranmer et al. §3.2: γ = 1).

    Returns a jax array (numpy input accepted).
    """
    return 1.0 / jnp.maximum(jnp.asarray(sigma_p2), float(sigma_floor) ** 2) ** weight_power


def cranmer_loss(
    model: CMDModel,
    modulus_grid,
    *,
    n_samples: int = 32,
    n_iterations: int = 5,
    sigma_floor: float = 0.01,
    weight_power: float = 1.0,
    train: bool = True,
):
    """The training loss ``loss(flow, params, batch, key)`` for :func:`jaxstars.flows.fit` (see module docstring).

    Each star's weight is :func:`loss_weights` of its ``σ_P²`` (the paper: ``1/σ_P²``). With ``train=False`` the
    density uses BatchNorm running statistics (validation).
    """
    grid = np.asarray(modulus_grid, dtype=np.float32)

    def loss(flow: Flow, params, batch: dict, key):
        est = best_estimates(model, params, batch, key, grid, n_samples=n_samples, n_iterations=n_iterations)
        weight = loss_weights(est.sigma_p2, sigma_floor, weight_power)
        if train:
            log_p, new_params = model.log_density_train(params, est.features, weight)
        else:
            log_p, new_params = model.log_density(params, est.features), params
        value = -jnp.sum(weight * log_p) / jnp.sum(weight)
        return (value, new_params) if train else value

    return loss


def training_arrays(stars: CMDStars, photometric_variance=None) -> dict:
    """The dict of per-star arrays the loss reads (dust as mean and σ profiles).

    ``photometric_variance`` (optional, shape ``(n,)``): each star's photometric variance of its features, added to
    ``σ_P²`` (key ``phot_var``; see :func:`train_cmd`).
    """
    out = {
        "features": np.asarray(stars.features, dtype=np.float32),
        "n_observed": np.asarray(stars.n_observed, dtype=np.int32),
        "parallax": np.asarray(stars.parallax, dtype=np.float32),
        "parallax_error": np.asarray(stars.parallax_error, dtype=np.float32),
        "dust_mean": np.asarray(stars.dust.mean, dtype=np.float32),
        "dust_std": np.asarray(stars.dust.std, dtype=np.float32),
    }
    if photometric_variance is not None:
        out["phot_var"] = np.asarray(photometric_variance, dtype=np.float32).reshape(-1)
    return out


def _standardisation(model_features: CMDFeatures, arrays: dict, modulus_grid) -> tuple[tuple, tuple]:
    """Median and robust width of the features of high-S/N stars (inverse-parallax distance, map dust there)."""
    plx, err = arrays["parallax"], arrays["parallax_error"]
    snr = np.where(np.isfinite(err), plx / err, -np.inf)
    use = snr > 5
    if use.sum() < 50:
        use = plx > 0
    if use.sum() < 2:
        raise ValueError("need at least two training stars with positive parallax to set the feature scale")
    d = 1000.0 / plx[use]
    mu = 5.0 * np.log10(d) - 5.0
    E = np.asarray(_interp_rows(jnp.asarray(modulus_grid), jnp.asarray(arrays["dust_mean"][use]), jnp.asarray(mu)))
    k = model_features.feature_extinction
    f = arrays["features"][use] - mu[:, None] * np.eye(model_features.dim)[0] - E[:, None] * k
    shift = np.median(f, axis=0)
    scale = np.maximum(1.4826 * np.median(np.abs(f - shift), axis=0), 0.05)
    return tuple(float(v) for v in shift), tuple(float(v) for v in scale)


def default_flow(dim: int, triangular: bool = False, n_blocks: int = 8, hidden: int = 128) -> Flow:
    """Cranmer et al.'s block scheme MADE → BatchNorm → Reverse (``triangular=True`` drops Reverse so missing
    trailing bands can be marginalised exactly). The paper: 35 × 500 (real data), 8 × 256 (simulation)."""
    return Flow(maf(dim, n_blocks=n_blocks, hidden=hidden, reverse=not triangular))


@dataclass
class TrainedCMD:
    """What :func:`train_cmd` returns: the model spec, its parameters, the fit history and the rows used."""

    model: CMDModel
    params: Any
    fit: FitResult
    used: np.ndarray
    flags: np.ndarray


def train_cmd(
    table=None,
    *,
    stars: CMDStars | None = None,
    features: CMDFeatures | None = None,
    flow: Flow | None = None,
    dust_map: Any = "cranmer_gaussian",
    reddening: Any = None,
    reddening_error: Any = None,
    zero_point: float = 0.0,
    ruwe_max: float | None = 1.4,
    n_samples: int = 32,
    n_iterations: int = 5,
    sigma_floor: float = 0.01,
    weight_power: float = 1.0,
    photometric_variance: bool = False,
    epochs: int = 20,
    batch_size: int = 2048,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    val_fraction: float = 0.1,
    patience: int | None = 10,
    key: Any = 0,
    params: Any = None,
    progress: bool = True,
    recalibrate: bool = True,
) -> TrainedCMD:
    """Train a colour–magnitude flow on a catalogue exactly as Cranmer et al. §3.2 (see the module docstring).

    Parameters
    ----------
    table : canonical catalogue (``mag_G``, ``mag_BP``, ``mag_RP`` [+ extra bands], ``parallax``,
        ``parallax_error``, ``l``/``b`` for the dust map, optional ``ruwe``); or give ``stars`` directly.
    features : default :func:`gaia_cmd_features` (Cranmer's ``(M_G, BP−RP, BP−G)``).
    flow : default :func:`default_flow` (8 blocks × 128 hidden; triangular when there are extra bands).
    dust_map, reddening, reddening_error : where the dust comes from (see :func:`prepare_stars`).
    zero_point : global parallax zero-point in mas (Cranmer et al.: −0.029 for DR2).
    ruwe_max : RUWE cut (rows at or above it are not used; ``None`` keeps all). No parallax cut: negative
        parallaxes are used as measured.
    n_samples, n_iterations : parallax samples per star (32) and dust iterations (5) in training.
    sigma_floor : floor on σ_P [mag].
    weight_power : γ of the loss weights ``1/max(σ_P², σ_floor²)^γ`` (:func:`loss_weights`); 1 is the paper's
        inverse-variance weighting, 0 weights every star equally.
    photometric_variance : add each star's photometric variance ``tr(Λ diag(σ_m²) Λᵀ)`` (from the table's
        ``mag_err_*`` columns, :func:`~jaxstars.models.cmd.posterior.photometric_covariance`) to ``σ_P²``. Not in
        the paper, whose ``σ_P`` holds only the parallax and dust-map variances; needs ``table``.
    epochs, batch_size (2048 as the paper), learning_rate, weight_decay, val_fraction, patience : see
        :func:`jaxstars.flows.fit`.
    key : PRNG key or integer seed.
    recalibrate : after training, set the BatchNorm running statistics from the whole training set (weighted by
        1/σ_P² at the final best estimates) instead of the last minibatches' moving averages.

    Notes
    -----
    Rows that cannot be used (missing photometry or dust, no parallax, RUWE, or missing optional bands, which
    are only marginalised at evaluation) are counted in ``flags``/``used`` of the result, never silently dropped.
    """
    features = gaia_cmd_features() if features is None else features
    if photometric_variance and table is None:
        raise ValueError("photometric_variance=True needs the catalogue table (its mag_err_* columns)")
    key = jax.random.PRNGKey(key) if isinstance(key, (int, np.integer)) else key
    if stars is None:
        if table is None:
            raise ValueError("give a catalogue table or prepared stars")
        stars = prepare_stars(
            features, table, dust_map=dust_map, reddening=reddening, reddening_error=reddening_error
        )
    flags = np.asarray(stars.flags).copy()
    if table is not None and ruwe_max is not None and "ruwe" in getattr(table, "colnames", []):
        ruwe = np.asarray(table["ruwe"], dtype=np.float64)
        flags[~(ruwe < ruwe_max)] |= FLAGS["ruwe"]
    complete = np.asarray(stars.n_observed) >= features.dim
    used = ((flags & (NO_RESULT | FLAGS["no_parallax"] | FLAGS["ruwe"])) == 0) & complete
    if used.sum() < 10:
        raise ValueError(f"only {int(used.sum())} usable training stars (flags: {np.bincount(flags)[:8]})")
    if (~used).any():
        warnings.warn(f"train_cmd: {int((~used).sum())} of {used.size} rows not used (see TrainedCMD.flags)")
    phot_var = None
    if photometric_variance:
        from .posterior import photometric_covariance

        phot_var = np.trace(photometric_covariance(features, table), axis1=1, axis2=2)
    arrays = {k: v[used] for k, v in training_arrays(stars, phot_var).items()}
    grid = np.asarray(stars.dust.modulus_grid, dtype=np.float32)
    shift, scale = _standardisation(features, arrays, grid)
    flow = default_flow(features.dim, triangular=features.dim > features.n_required) if flow is None else flow
    model = CMDModel(features, flow, shift, scale, float(zero_point))
    k_init, k_fit, k_floor = jax.random.split(key, 3)
    params = jax.jit(model.init)(k_init) if params is None else params
    opts = {
        "n_samples": n_samples,
        "n_iterations": n_iterations,
        "sigma_floor": sigma_floor,
        "weight_power": weight_power,
    }
    result = fit(
        flow,
        arrays,
        key=k_fit,
        params=params,
        loss=cranmer_loss(model, grid, train=True, **opts),
        val_loss=cranmer_loss(model, grid, train=False, **opts),
        epochs=epochs,
        batch_size=min(batch_size, int(used.sum())),
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        val_fraction=val_fraction,
        patience=patience,
        progress=progress,
    )
    params = result.params
    if recalibrate:
        params = recalibrate_cmd_batchnorm(
            model, params, arrays, grid, k_floor, n_iterations, sigma_floor, weight_power=weight_power
        )
    floor = training_log_density_floor(model, params, arrays, grid, k_floor, n_iterations=n_iterations)
    model = CMDModel(
        features,
        flow,
        shift,
        scale,
        float(zero_point),
        log_density_floor=floor,
        info={
            "n_train": int(used.sum()),
            "epochs_run": result.epochs_run,
            "best_epoch": int(result.best_epoch),
            "n_samples": n_samples,
            "n_iterations": n_iterations,
            "sigma_floor": sigma_floor,
            "weight_power": weight_power,
            "photometric_variance": bool(photometric_variance),
        },
    )
    return TrainedCMD(model, params, result, used, flags)


def batched_best_estimates(model, params, arrays: dict, modulus_grid, key, *, n_iterations=10, chunk=4096):
    """:func:`best_estimates` over many stars in fixed-size chunks (numpy in, numpy out)."""
    grid = jnp.asarray(modulus_grid, dtype=jnp.float32)
    fn = jax.jit(lambda p, b, k: best_estimates(model, p, b, k, grid, n_iterations=n_iterations))
    n = len(arrays["parallax"])
    chunk = max(1, min(chunk, n))
    out = []
    for start in range(0, n, chunk):
        part = {k: v[start : start + chunk] for k, v in arrays.items()}
        size = len(part["parallax"])
        if size < chunk:  # pad to a static shape: one compilation
            part = {k: np.concatenate([v, np.repeat(v[-1:], chunk - size, axis=0)]) for k, v in part.items()}
        est = fn(params, part, jax.random.fold_in(key, start))
        out.append(BestEstimate(*(np.asarray(a)[:size] for a in est)))
    return BestEstimate(*(np.concatenate([getattr(e, f) for e in out]) for f in BestEstimate._fields))


def recalibrate_cmd_batchnorm(
    model, params, arrays, modulus_grid, key, n_iterations=5, sigma_floor=0.01, max_stars=50_000, weight_power=1.0
):
    """BatchNorm running statistics from (up to ``max_stars``) training stars' best estimates, weighted as in the
    loss (:func:`loss_weights`)."""
    n = len(arrays["parallax"])
    if n > max_stars:
        pick = np.asarray(jax.random.choice(jax.random.fold_in(key, 1), n, (max_stars,), replace=False))
        arrays = {k: v[pick] for k, v in arrays.items()}
    est = batched_best_estimates(model, params, arrays, modulus_grid, key, n_iterations=n_iterations)
    weight = np.asarray(loss_weights(est.sigma_p2, sigma_floor, weight_power))
    x = (est.features - np.asarray(model.shift)) / np.asarray(model.scale)
    return recalibrate_batchnorm(model.flow, params, x.astype(np.float32), weight=weight.astype(np.float32))


def training_log_density_floor(model, params, arrays, modulus_grid, key, *, n_iterations=5, quantile=1e-3):
    """The ``quantile`` of ``log P`` at the training stars' best estimates: the coverage threshold.

    Uses the stars with parallax S/N > 5 when there are at least 100 (their best estimates are accurate; noisy
    stars' estimates scatter far from the sequence and would drag the quantile down), else all.
    """
    snr = arrays["parallax"] / arrays["parallax_error"]
    if np.sum(snr > 5) >= 100:
        arrays = {k: v[snr > 5] for k, v in arrays.items()}
    est = batched_best_estimates(model, params, arrays, modulus_grid, key, n_iterations=n_iterations)
    log_p = np.asarray(jax.jit(model.log_density)(params, jnp.asarray(est.features)))
    log_p = log_p[np.isfinite(log_p)]
    return float(np.quantile(log_p, quantile)) if log_p.size else -np.inf
