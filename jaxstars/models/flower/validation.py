"""FLOWER's validation experiments (O'Callaghan et al., paper 002, §5) on simulated and real stars.

* :func:`zero_extinction_catalog` — simulator stars with no dust at all (the training and validation samples of a
  simulated §5.1: FLOWER trains on zero-extinction stars).
* :func:`synthetic_reddening_experiment` — §5.1.1–5.1.2: zero-extinction validation stars reddened by
  ``E ∈ {0, 0.1, 0.2, 0.3, 0.4}`` through the model's law (:func:`~jaxstars.models.flower.metrics.add_synthetic_reddening`),
  fast-path posteriors, and per-``E`` metrics (:func:`~jaxstars.models.flower.metrics.reddening_metrics`: mean
  residual of the posterior-mean ``E``, mean posterior std, 68 % / 95 % interval coverage).
* :func:`green_low_reddening_stars` — the real-photometry check: stars of the Green et al. (2021) release with
  ``r < 0.02`` placed on a fixed high-latitude line of sight (the release has no positions; see
  :data:`GREEN_SIGHT_LINE`), split into training and validation halves.
* :func:`two_cloud_experiment` — §5.2 analogue: a simulated sight line through
  :func:`~jaxstars.astro.dust.analytic.flower_two_cloud_map` (clouds at ≈ 370 pc and ≈ 1.7 kpc); posterior-mean
  ``E`` against posterior-mean distance, and the mean ``E`` before, between and after the clouds.
* :func:`fast_vs_nuts` — the fast path against the NUTS reference (the paper's sampler settings by default) on the
  same stars: ``|Δmean| / σ`` and the std ratio of ``E`` and ``d``.
* :func:`importance_grid_reference` — a second, sampler-free reference: at every node of the fast path's own
  ``(E, ln d)`` grid, ``∫ p(E, d, x | data) dx`` by importance sampling over ``x`` (no Laplace approximation), so
  the Laplace values and the moments built on them are checked node by node.

``examples/flower_validation.py`` runs them all and writes ``docs/results/flower_validation.json`` and the figures
of ``docs/models/flower.md``.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import numpy as np

from jaxstars.astro.dust.analytic import CloudsMap, flower_two_cloud_map
from jaxstars.astro.simulate import simulate_galaxy

from .metrics import add_synthetic_reddening, reddening_metrics
from .posterior import (
    PAPER_NUTS,
    FlowerPosteriorConfig,
    _modulus,
    _precision,
    _x_hat,
    flower_posteriors,
    grid_summary,
    log_joint,
    mixture_importance_marginal,
    nuts_flower_posteriors,
    star_arrays,
)
from .stars import prepare_flower_stars

__all__ = [
    "GREEN_SIGHT_LINE",
    "SYNTHETIC_EBV",
    "TWO_CLOUD_SIGHT_LINE",
    "ZERO_DUST",
    "fast_vs_nuts",
    "green_low_reddening_stars",
    "importance_grid_reference",
    "nuts_reference",
    "synthetic_reddening_experiment",
    "two_cloud_experiment",
    "zero_extinction_catalog",
]

#: The synthetic reddening values of §5.1.1.
SYNTHETIC_EBV = (0.0, 0.1, 0.2, 0.3, 0.4)

#: A 3D map with no dust anywhere (the simulator needs a 3D map): zero-extinction stars.
ZERO_DUST = CloudsMap(distances_pc=[100.0], ebv=[0.0], ebv_std=[0.0], distance_std_pc=[1.0], name="zero")

#: (l, b) in degrees given to the Green et al. stars, which have no positions: a high-latitude line of sight
#: (b = 60°) where a low-reddening sample would be drawn; it only sets the flow's (R, Z) context.
GREEN_SIGHT_LINE = (180.0, 60.0)

#: FLOWER §5.2's two-cloud region (l, b, radius) in degrees.
TWO_CLOUD_SIGHT_LINE = (104.08, 22.31, 1.0)

_ZP = -0.017  # the simulator's default parallax zero-point (catalogue-bias convention)


def zero_extinction_catalog(n: int, seed: int, *, mag_limit: float = 19.0, fields=None):
    """``n`` simulated Galaxy stars with Gaia + PS1 + 2MASS photometry and no dust (``true_ebv`` = 0)."""
    return simulate_galaxy(n, key=seed, dust_map=ZERO_DUST, mag_limit=mag_limit, fields=fields)


def _posterior_table_metrics(result: dict, truth) -> dict:
    return reddening_metrics(
        truth,
        result["ebv_mean"],
        result["ebv_std"],
        result["ebv_q2_5"],
        result["ebv_q16"],
        result["ebv_q84"],
        result["ebv_q97_5"],
        flags=result["flags"],
    )


def synthetic_reddening_experiment(
    model,
    params,
    table,
    *,
    ebvs=SYNTHETIC_EBV,
    key: int = 0,
    config: FlowerPosteriorConfig | None = None,
    parallax_zero_point=_ZP,
    truth_column: str = "true_ebv",
) -> dict:
    """§5.1: redden zero-extinction ``table`` by each ``E`` in ``ebvs``, infer with the fast path, score.

    Parameters
    ----------
    model, params : FlowerModel and its parameters.
    table : astropy Table
        Validation stars (canonical columns); their known reddening ``E₀`` in ``truth_column`` (absent: 0).
    ebvs : sequence of float
        Added reddening values.
    key : int
        Fast-path key (the same for every ``E``).
    config : FlowerPosteriorConfig
    parallax_zero_point : float or str

    Returns
    -------
    dict
        ``{"per_ebv": [{"ebv": E, **metrics}, ...], "overall": metrics over all rows, "n_stars": n}`` with the
        metrics of :func:`~jaxstars.models.flower.metrics.reddening_metrics`; ``"results"`` holds the per-``E``
        posterior columns (``ebv_mean``, ``ebv_std``, ``true_ebv``, flags, colour) for the figures.
    """
    cols = ("ebv_mean", "ebv_std", "ebv_q2_5", "ebv_q16", "ebv_q84", "ebv_q97_5", "flags")
    config = FlowerPosteriorConfig() if config is None else config
    per, rows = [], {k: [] for k in ("true_ebv", "bp_rp", "mag_G", *cols)}
    for e in ebvs:
        reddened = add_synthetic_reddening(model, table, float(e), truth_column=truth_column)
        stars = prepare_flower_stars(model.features, reddened, parallax_zero_point=parallax_zero_point)
        res = flower_posteriors(model, params, stars, key, config)
        truth = np.asarray(reddened["true_ebv"], float)
        per.append({"ebv": float(e), **_posterior_table_metrics(res, truth)})
        rows["true_ebv"].append(truth)
        for k in cols:
            rows[k].append(res[k])
        rows["bp_rp"].append(np.asarray(table["mag_BP"], float) - np.asarray(table["mag_RP"], float))
        rows["mag_G"].append(np.asarray(table["mag_G"], float))
    cat = {k: np.concatenate(v) for k, v in rows.items()}
    overall = _posterior_table_metrics(cat, cat["true_ebv"])
    return {"per_ebv": per, "overall": overall, "n_stars": len(table), "results": cat}


def green_low_reddening_stars(max_r: float = 0.02, train_fraction: float = 0.75, seed: int = 0, path=None):
    """Green et al. (2021) release stars with reddening ``r < max_r`` on :data:`GREEN_SIGHT_LINE`, split in two.

    The release file has no sky positions, so every star gets ``(l, b) = GREEN_SIGHT_LINE`` (only the flow's
    ``(R, Z)`` context depends on it).  Its ``r`` (SFD-like E(B−V)) is kept as ``true_ebv`` (the known training
    reddening ``E₀``: :func:`~jaxstars.models.flower.training.flower_training_arrays` takes it with
    ``ebv="true_ebv"``; :func:`add_synthetic_reddening` adds to it).

    Returns
    -------
    (train, validation) : astropy Tables
    """
    from jaxstars.astro.catalog_io import read_green2020

    table = read_green2020(path)
    table = table[np.asarray(table["r"], float) < max_r]
    table["l"] = np.full(len(table), GREEN_SIGHT_LINE[0])
    table["b"] = np.full(len(table), GREEN_SIGHT_LINE[1])
    table["true_ebv"] = np.asarray(table["r"], float)
    perm = np.random.default_rng(seed).permutation(len(table))
    n_train = round(train_fraction * len(table))
    return table[np.sort(perm[:n_train])], table[np.sort(perm[n_train:])]


def two_cloud_experiment(
    model,
    params,
    n: int,
    *,
    seed: int = 7,
    key: int = 0,
    mag_limit: float = 19.0,
    config: FlowerPosteriorConfig | None = None,
) -> dict:
    """§5.2 analogue: stars simulated on the two-cloud sight line, fast-path posteriors, the two steps.

    Returns
    -------
    dict
        ``cloud_distances_pc``, ``cloud_ebv``; ``bins``: mean posterior-mean ``E`` (and its standard error, n) of
        unflagged stars by posterior-mean distance before the first cloud, between the clouds and beyond the
        second (edges at the clouds' distances ± 2σ of their distance spread); ``steps``: the differences of
        those means (truth: the clouds' E(B−V)); ``results``: per-star ``distance_mean``, ``ebv_mean``,
        ``ebv_std``, ``true_distance``, ``true_ebv``, ``flags`` for the figure.
    """
    config = FlowerPosteriorConfig() if config is None else config
    dmap = flower_two_cloud_map()
    table = simulate_galaxy(n, key=seed, fields=[TWO_CLOUD_SIGHT_LINE], dust_map=dmap, mag_limit=mag_limit)
    stars = prepare_flower_stars(model.features, table, parallax_zero_point=_ZP)
    res = flower_posteriors(model, params, stars, key, config)
    d1, d2 = 370.0, 1695.0
    s1, s2 = 24.0, 445.0
    edges = [(0.0, d1 - 2 * s1), (d1 + 2 * s1, d2 - 2 * s2), (d2 + 2 * s2, np.inf)]
    good = np.isfinite(res["ebv_mean"]) & ((res["flags"] & _FAST_PROBLEMS) == 0)
    bins = []
    for lo, hi in edges:
        sel = good & (res["distance_mean"] >= lo) & (res["distance_mean"] < hi)
        e = res["ebv_mean"][sel]
        bins.append(
            {
                "d_lo": lo,
                "d_hi": None if not np.isfinite(hi) else hi,
                "n": int(sel.sum()),
                "mean_ebv": float(e.mean()) if e.size else None,
                "sem_ebv": float(e.std(ddof=1) / np.sqrt(e.size)) if e.size > 1 else None,
                "mean_true_ebv": float(np.mean(np.asarray(table["true_ebv"])[sel])) if e.size else None,
            }
        )
    steps = [
        None if a["mean_ebv"] is None or b["mean_ebv"] is None else b["mean_ebv"] - a["mean_ebv"]
        for a, b in itertools.pairwise(bins)
    ]
    return {
        "cloud_distances_pc": [d1, d2],
        "cloud_ebv": [0.16, 0.03],
        "n_stars": int(n),
        "n_used": int(good.sum()),
        "bins": bins,
        "steps": steps,
        "results": {
            "distance_mean": res["distance_mean"],
            "ebv_mean": res["ebv_mean"],
            "ebv_std": res["ebv_std"],
            "true_distance": np.asarray(table["true_distance"], float),
            "true_ebv": np.asarray(table["true_ebv"], float),
            "flags": res["flags"],
        },
    }


def _fast_problem_bits() -> int:
    from .stars import FLAGS

    return FLAGS["grid_edge"] | FLAGS["low_ess"] | FLAGS["grid_unresolved"] | FLAGS["outside_coverage"]


_FAST_PROBLEMS = _fast_problem_bits()


def _reference_fingerprint(params, stars, key, nuts, config) -> str:
    """SHA-256 over what a NUTS reference depends on: the flow parameters, the stars, the key, the sampler settings
    (batch size excepted: the draws do not depend on it), the prior bounds / Malmquist limits and the NUTS
    coordinates."""
    import hashlib

    import jax

    h = hashlib.sha256()
    for leaf in [*jax.tree_util.tree_leaves(params), *stars]:
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(str((a.dtype, a.shape)).encode())
        h.update(a.tobytes())
    settings = (key, nuts.num_warmup, nuts.num_samples, nuts.num_chains, nuts.target_accept_prob, nuts.dense_mass,
                nuts.max_tree_depth, config.e_min, config.e_max, config.mag_limits, config.nuts_coordinates)  # fmt: skip
    h.update(repr(settings).encode())
    return h.hexdigest()


def nuts_reference(
    model, params, stars, *, key: int = 0, nuts=PAPER_NUTS, config=None, cache=None, cached_only: bool = False
) -> dict:
    """NUTS posteriors of ``stars`` (:func:`nuts_flower_posteriors`, ``nuts.batch_size`` stars per call), optionally
    cached: with ``cache`` (a ``.npz`` path) every finished batch is saved with its row positions (``row_index``)
    and a rerun computes only the missing rows.  ``cached_only``: no NUTS run, only the cached rows.

    The cache records a fingerprint of what its draws depend on (flow parameters, stars, key, sampler settings,
    prior bounds): a cache made with anything else raises ``ValueError`` instead of being mixed in.  Results do not
    depend on the batching (keys by row id), so a resumed run equals an uninterrupted one.
    Returns per-star arrays in row order and ``row_index`` (the rows they belong to).
    """
    config = FlowerPosteriorConfig() if config is None else config
    fingerprint = _reference_fingerprint(params, stars, key, nuts, config)
    done: dict = {}
    if cache is not None and Path(cache).exists():
        with np.load(cache) as f:
            done = {k: f[k] for k in f.files}
        if str(done.pop("fingerprint", "")) != fingerprint:
            raise ValueError(
                f"{cache} holds NUTS draws for another model, star set, key or sampler setting; move it away (or "
                "point cache elsewhere) to start a new reference"
            )
    have = set(done.get("row_index", np.zeros(0, int)).tolist())
    todo = np.array([] if cached_only else [i for i in range(stars.n) if i not in have], dtype=int)
    for start in range(0, todo.size, nuts.batch_size):
        rows = todo[start : start + nuts.batch_size]
        part = nuts_flower_posteriors(model, params, stars.take(rows), key, nuts, config)
        part = {k: np.asarray(v) for k, v in part.items() if np.asarray(v).shape[:1] == (len(rows),)}
        part["row_index"] = rows
        done = part if not done else {k: np.concatenate([done[k], part[k]]) for k in part}
        if cache is not None:
            Path(cache).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(cache).with_suffix(".tmp.npz")
            np.savez(tmp, fingerprint=np.asarray(fingerprint), **done)
            tmp.replace(cache)
        print(f"NUTS reference: {len(done['row_index'])} / {stars.n} stars", flush=True)
    if not done:
        return {"row_index": np.zeros(0, int)}
    order = np.argsort(done["row_index"])
    return {k: v[order] for k, v in done.items()}


def _agreement(result: dict, reference: dict) -> dict:
    """Per quantity (``ebv``, ``distance``): ``(result − reference) / σ_reference`` and the std ratio per star,
    their medians and maxima, and the fraction of stars meeting the issue's criteria (0.1 σ, 10 %)."""
    ok = np.isfinite(result["ebv_mean"]) & np.isfinite(reference["ebv_mean"])
    out = {}
    for name in ("ebv", "distance"):
        dm = (result[f"{name}_mean"] - reference[f"{name}_mean"]) / reference[f"{name}_std"]
        ratio = result[f"{name}_std"] / reference[f"{name}_std"]
        out[name] = {
            "dmean_over_sigma": dm,
            "std_ratio": ratio,
            "median_abs_dmean_over_sigma": float(np.median(np.abs(dm[ok]))),
            "max_abs_dmean_over_sigma": float(np.max(np.abs(dm[ok]))),
            "fraction_dmean_below_0_1": float(np.mean(np.abs(dm[ok]) < 0.1)),
            "median_std_ratio": float(np.median(ratio[ok])),
            "fraction_std_within_10pct": float(np.mean(np.abs(ratio[ok] - 1.0) < 0.1)),
        }
    return out


def fast_vs_nuts(
    model,
    params,
    stars,
    *,
    key: int = 0,
    nuts=PAPER_NUTS,
    config=None,
    cache=None,
    cached_only: bool = False,
    importance_draws: int = 0,
) -> dict:
    """The fast path against NUTS on the same stars (the issue's criterion: ``|Δmean| < 0.1 σ``, std within 10 %).

    ``cache``, ``cached_only``: see :func:`nuts_reference` (with ``cached_only`` only the cached stars are compared).
    ``importance_draws > 0``: also the sampler-free :func:`importance_grid_reference` with that many draws per node,
    and both the fast path and NUTS against it (``importance``).

    Returns
    -------
    dict
        Per quantity (``ebv``, ``distance``): ``dmean_over_sigma`` (fast − NUTS, in NUTS posterior std) and
        ``std_ratio`` (fast / NUTS) per star, their medians and maxima, the fraction of stars meeting each
        criterion; the NUTS diagnostics (divergences, R̂, ESS); with ``importance_draws`` also ``importance``:
        the reference's per-star summaries and diagnostics, ``fast_path`` and ``nuts`` (each against it, as above).
        Timings are added by the caller.
    """
    config = FlowerPosteriorConfig() if config is None else config
    ref = nuts_reference(model, params, stars, key=key + 1, nuts=nuts, config=config, cache=cache,
                         cached_only=cached_only)  # fmt: skip
    stars = stars.take(ref["row_index"])
    fast = flower_posteriors(model, params, stars, key, config, return_grids=importance_draws > 0)
    out = {
        "n_stars": int(stars.n),
        "rows": ref["row_index"],
        "nuts": {k: np.asarray(ref[k]) for k in ("n_divergent", "rhat", "ess_bulk")},
    }
    out |= _agreement(fast, ref)
    if importance_draws:
        imp = importance_grid_reference(model, params, stars, fast, config=config, draws=importance_draws)
        summary = {k: imp[k] for k in ("ebv_mean", "ebv_std", "distance_mean", "distance_std", "min_ess",
                                       "max_node_diff")}  # fmt: skip
        out["importance"] = {"draws": importance_draws, "stars": summary, "fast_path": _agreement(fast, imp),
                             "nuts": _agreement(ref, imp)}  # fmt: skip
        fast = {k: v for k, v in fast.items() if not k.startswith("grid_")}
    out["fast"], out["reference"] = fast, ref
    return out


def _photometric_x_precision_chol(model, star, missing_scale: float):
    """Lower Cholesky factor of the precision of ``x = Λ m`` under the photometric errors alone (observed bands),
    with ``N(·, (missing_scale · x_scale)²)`` for the features of missing bands."""
    import jax.numpy as jnp

    lam = jnp.asarray(model.features.matrix, star["mag_err"].dtype)
    obs = star["observed"]
    err = jnp.where(obs, star["mag_err"], 0.0)
    missing = (missing_scale * jnp.asarray(model.x_scale, err.dtype)) ** 2
    cov = (lam * err**2) @ lam.T
    cov = jnp.where(obs[:, None] & obs[None, :], cov, 0.0) + jnp.diag(jnp.where(obs, 0.0, missing))
    return jnp.linalg.cholesky(jnp.linalg.inv(cov))


@functools.lru_cache(maxsize=8)
def _importance_grid_function(model, config, draws: int, inflate: float, seed: int):
    """The jitted per-star function of :func:`importance_grid_reference` (cached: compiled once per setting)."""
    import jax
    import jax.numpy as jnp

    floor = 1.0 / (config.missing_scale * jnp.asarray(model.x_scale)) ** 2
    dim = model.features.dim
    eps = jax.random.normal(jax.random.PRNGKey(seed), (draws, dim))
    component = (jnp.arange(draws) % 2).astype(jnp.int32)
    weights = jnp.array([0.5, 0.5])

    @jax.jit
    def one_star(params, star, e_grid, u_grid, grid_x):
        phot_chol = _photometric_x_precision_chol(model, star, config.missing_scale) / inflate

        def node(args):
            e, u, x_star = args
            d = jnp.exp(u)

            def g(x):
                return log_joint(model, params, star, e, d, x, config)

            laplace_chol = jnp.linalg.cholesky(_precision(jax.hessian(g)(x_star), floor)) / inflate
            x_hat = _x_hat(model, star, e, _modulus(d), config.fixed_point_iterations)
            means, chols = jnp.stack([x_hat, x_star]), jnp.stack([phot_chol, laplace_chol])
            log_marginal, ess = mixture_importance_marginal(g, means, chols, weights, eps, component)
            return log_marginal + u, ess  # + ln d: the Jacobian of the ln d grid, as in the fast path

        ee, uu = jnp.meshgrid(e_grid, u_grid, indexing="ij")
        lp, ess = jax.lax.map(node, (ee.ravel(), uu.ravel(), grid_x.reshape(-1, dim)))
        shape = ee.shape
        lp = jnp.where(jnp.isfinite(lp), lp, -jnp.inf).reshape(shape)
        summary, _, _ = grid_summary(e_grid, u_grid, lp, config.quantiles)
        return summary, lp, ess.reshape(shape)

    return one_star


def importance_grid_reference(
    model, params, stars, fast: dict, *, config=None, draws: int = 4000, inflate: float = 1.5, seed: int = 0
) -> dict:
    """Check the fast path's grid without its Laplace approximation: importance-sampled ``∫ p dx`` at every node.

    At each node ``(E, ln d)`` of every star's fast-path grid (``fast`` from ``flower_posteriors(...,
    return_grids=True)``) the marginal ``log ∫ p(E, d, x, data) dx`` (Eq. 16) is estimated by importance sampling
    over ``x`` from an equal mixture of two Gaussians, both ``inflate`` times wider than what they are built from:
    the photometric ellipse around ``x̂(E, d)`` (the photometry alone, independent of the flow and of the fast
    path) and the node's Laplace Gaussian around the fast path's ``x*`` (which follows the stellar locus where the
    photometric ellipse misses it).  Importance sampling is unbiased whatever the proposal; the effective sample
    size says where it can be trusted.  The same ``draws`` seeds serve every node (a smooth surface).

    Returns
    -------
    dict (one row per star; NaN where the fast path has no result)
        ``ebv_mean``, ``ebv_std``, ``distance_mean``, ``distance_std`` from the importance-sampled grid (the same
        quadrature as the fast path); ``min_ess`` (smallest ESS over nodes holding more than 10⁻⁴ of the posterior);
        ``max_node_diff`` (largest ``|Laplace − importance|`` in nats over those nodes, after removing the mean
        offset, which cancels in the posterior); ``grid_log_post`` (n, n_e, n_d) and ``grid_ess``.
    """
    config = FlowerPosteriorConfig() if config is None else config
    import jax.numpy as jnp

    one_star = _importance_grid_function(model, config, draws, inflate, seed)
    n = stars.n
    keys = ("ebv_mean", "ebv_std", "distance_mean", "distance_std", "min_ess", "max_node_diff")
    out = {k: np.full(n, np.nan) for k in keys}
    out["grid_log_post"] = np.full(np.shape(fast["grid_log_post"]), np.nan)
    out["grid_ess"] = np.full(np.shape(fast["grid_log_post"]), np.nan)
    data = star_arrays(stars)
    for i in np.flatnonzero(np.isfinite(fast["ebv_mean"])):
        star = {k: jnp.asarray(v[i]) for k, v in data.items()}
        summary, lp, ess = one_star(
            params,
            star,
            jnp.asarray(fast["grid_ebv"][i], jnp.float32),
            jnp.asarray(fast["grid_log_distance"][i], jnp.float32),
            jnp.asarray(fast["grid_x"][i], jnp.float32),
        )
        lp, ess = np.asarray(lp, np.float64), np.asarray(ess, np.float64)
        for k in ("ebv_mean", "ebv_std", "distance_mean", "distance_std"):
            out[k][i] = float(summary[k])
        laplace = np.asarray(fast["grid_log_post"][i], np.float64)
        w = np.exp(lp - lp.max())
        heavy = w / w.sum() > 1e-4
        diff = (laplace - lp)[heavy]
        out["min_ess"][i] = ess[heavy].min()
        out["max_node_diff"][i] = np.abs(diff - diff.mean()).max()
        out["grid_log_post"][i], out["grid_ess"][i] = lp, ess
    return out
