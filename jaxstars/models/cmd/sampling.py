"""Distance posteriors by per-star NUTS through the shared engine (:func:`jaxstars.inference.sample_stars`).

The grid posterior (:func:`~jaxstars.models.cmd.distance_posteriors`) is the fast path; this is the same target
— :func:`~jaxstars.models.cmd.distance_model`, a NumPyro model over ``log d`` — sampled with NUTS for every star
of a batch at once (vmapped, per-star adaptation), for checking the grid and for users who want MCMC draws. Output
columns match the grid path's (``distance_mean`` … ``distance_samples``, ``flags``) plus the sampler diagnostics.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from jaxstars.inference.nuts import NUTSConfig, sample_stars

from .model import NO_RESULT, CMDModel, CMDStars
from .posterior import PosteriorConfig, distance_model, photometric_quadrature, star_arrays

__all__ = ["nuts_distance_posteriors"]


@functools.lru_cache(maxsize=16)
def _star_model(cmd_model: CMDModel, prior, d_min: float, d_max: float):
    """``model(star, params, grid, weights)`` for the engine (one object per settings, so it compiles once)."""

    def model(star, params, grid, weights):
        distance_model(cmd_model, params, star, grid, weights, prior, d_min, d_max)

    return model


@functools.lru_cache(maxsize=16)
def _start_at_inverse_parallax(d_min: float, d_max: float):
    """Start each star at 1/ϖ (1 kpc without a positive parallax), clipped inside the distance range."""

    def init(star):
        plx, err = star["parallax"], star["parallax_error"]
        ok = jnp.isfinite(err) & (plx > 0)
        start = jnp.where(ok, 1000.0 / jnp.where(ok, plx, 1.0), 1000.0)
        return {"log_distance": jnp.log(jnp.clip(start, d_min * 1.01, d_max / 1.01))}

    return init


def nuts_distance_posteriors(
    model: CMDModel,
    params,
    stars: CMDStars,
    *,
    key=0,
    prior=None,
    config: PosteriorConfig | None = None,
    nuts: NUTSConfig | None = None,
    row_ids=None,
    photometric_cov=None,
) -> dict:
    """Distance posteriors for every star by vmapped per-star NUTS on :func:`distance_model`.

    Parameters
    ----------
    model, params : CMDModel, pytree
        The trained colour–magnitude model (:meth:`CMDModel.load`).
    stars : CMDStars
        Prepared stars (:func:`~jaxstars.models.cmd.prepare_stars`).
    key : int or jax.random key
        Base key; star ``i`` uses ``fold_in(key, row_ids[i])``.
    prior : distance prior, optional
        As for the grid path (flat in ``d`` by default).
    config : PosteriorConfig, optional
        Distance range (``d_min``, ``d_max``), reported quantiles and ``n_samples`` kept per star.
    nuts : NUTSConfig, optional
        Sampler settings; the default is 500 warm-up + 1000 draws, one chain.
    row_ids : array-like of int, optional
        Global row ids (keys), default ``0..n-1``.
    photometric_cov : array_like, shape (n, F, F), optional
        Convolve the flow density with each star's photometric noise, as in
        :func:`~jaxstars.models.cmd.distance_posteriors` (``config.photometric_nodes``/``photometric_axes``).

    Returns
    -------
    dict of str to ndarray
        ``distance_mean``, ``distance_std``, ``distance_q*``, ``distance_samples`` (``config.n_samples`` evenly
        thinned draws), ``flags`` (:data:`~jaxstars.models.cmd.FLAGS`; ``NO_RESULT`` rows are not sampled and
        are NaN), ``nuts_flags`` (:data:`~jaxstars.inference.NUTS_FLAGS`), ``n_divergent``, ``accept_prob``,
        ``step_size``, ``num_steps``, ``rhat``, ``ess_bulk``.
    """
    config = PosteriorConfig() if config is None else config
    nuts = NUTSConfig() if nuts is None else nuts
    flags = np.asarray(stars.flags, dtype=np.int64).copy()
    valid = (flags & NO_RESULT) == 0
    n = stars.n_stars
    if n == 0:
        return {"distance_mean": np.zeros(0), "flags": flags}
    data = star_arrays(stars, np.arange(n))
    if photometric_cov is not None:
        cov = np.asarray(photometric_cov, dtype=np.float64)
        if cov.shape != (n, model.dim, model.dim):
            raise ValueError(f"photometric_cov must have shape {(n, model.dim, model.dim)}, got {cov.shape}")
        offsets, log_w = photometric_quadrature(cov, config.photometric_nodes, config.photometric_axes)
        data["phot_offsets"] = jnp.asarray(offsets, dtype=jnp.float32)
        data["phot_log_weights"] = jnp.asarray(np.broadcast_to(log_w, (n, log_w.size)), dtype=jnp.float32)
    shared = (
        params,
        jnp.asarray(stars.dust.modulus_grid, dtype=jnp.float32),
        jnp.asarray(stars.dust.weights, dtype=jnp.float32),
    )
    result = sample_stars(
        _star_model(model, prior, float(config.d_min), float(config.d_max)),
        data,
        key,
        shared=shared,
        config=nuts,
        row_ids=row_ids,
        valid=valid,
        init_fn=_start_at_inverse_parallax(float(config.d_min), float(config.d_max)),
    )
    summary = result.summary(sites=["distance"], quantiles=config.quantiles, keep_samples=config.n_samples)
    out = {k: np.asarray(v, dtype=np.float64) for k, v in summary.items() if k.startswith("distance")}
    nuts_flags = summary["flags"]
    no_result = ~valid | ((nuts_flags & 1) != 0)  # rows not sampled, or no finite starting point
    for k, v in out.items():
        out[k] = np.where(no_result.reshape((-1,) + (1,) * (v.ndim - 1)), np.nan, v)
    out["flags"] = flags
    out["nuts_flags"] = nuts_flags
    for k in ("n_divergent", "accept_prob", "step_size", "num_steps", "rhat", "ess_bulk"):
        out[k] = summary[k]
    return out
