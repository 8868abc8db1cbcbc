"""Per-star NUTS for any NumPyro model, vmapped over a batch of stars and compiled once.

A catalog posterior is millions of small independent posteriors: one NumPyro model, one set of per-star data.
:func:`sample_stars` runs NumPyro's NUTS kernel (its functional ``hmc(..., algo="NUTS")`` interface: dual-averaging
step size and windowed mass-matrix adaptation) for every star at once:

* **pure functions** — initialisation (:func:`initial_values`), warm-up and sampling are ``lax.scan`` loops over
  the kernel inside one ``jit``; no Python loop per star or per step;
* **per-star adaptation** — each star (and each chain) carries its own step size and inverse mass matrix in its
  kernel state, so a star with a 0.01 posterior width and one with a width of 100 are both sampled efficiently;
* **bounded memory** — stars are processed ``batch_size`` at a time (per device), one compiled call per batch;
  a catalog is fed in chunks by the catalog runner (:func:`jaxstars.catalog.run_catalog`);
* **devices** — with several local devices the stars are split across them with ``shard_map`` (one program per
  device, no communication); on one CPU this is a no-op;
* **reproducible** — star ``i`` uses ``fold_in(key, row_ids[i])`` and always runs at lane ``row_ids[i] %
  batch_size`` of a batch of the same shape (XLA's CPU kernels round differently at different lanes of a vmapped
  batch, and NUTS trajectories amplify rounding), so its draws are bit-identical whatever chunk or batch it is in.
  A batch is padded to full size, so a single star costs a whole batch: for one-star calls use ``batch_size=1``.

NUTS trees have data-dependent sizes; vmapped, a batch advances at the pace of its slowest star (``while_loop``
under ``vmap``), which is why ``batch_size`` is modest by default.

Diagnostics per star: divergent transitions after warm-up, mean acceptance probability, final step size, mean
leapfrog steps, split-R̂ and bulk ESS (:mod:`numpyro.diagnostics`, over chains when ``num_chains > 1``). A
``flags`` bitfield (:data:`NUTS_FLAGS`) marks stars whose diagnostics fail the thresholds of :class:`NUTSConfig`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from numpyro.distributions.transforms import biject_to
from numpyro.handlers import seed, trace
from numpyro.infer.hmc import hmc
from numpyro.infer.util import constrain_fn, potential_energy

__all__ = [
    "NUTS_FLAGS",
    "NUTSConfig",
    "NUTSResult",
    "latent_sites",
    "nuts_flag_names",
    "sample_stars",
    "sequential_nuts",
]

#: Bits of the ``flags`` column written by :func:`sample_stars`.
NUTS_FLAGS = {
    "init_failed": 1,  # no finite log density found at the start (bad data): results are NaN
    "divergent": 2,  # at least one divergent transition after warm-up
    "high_rhat": 4,  # split-R̂ above NUTSConfig.max_rhat (needs num_chains > 1)
    "low_ess": 8,  # bulk ESS below NUTSConfig.min_ess
    "low_acceptance": 16,  # mean acceptance probability below NUTSConfig.min_accept_prob
    "max_tree_depth": 32,  # more than 10% of the trajectories hit max_tree_depth
    "invalid_input": 64,  # the caller marked the row invalid (``valid=False``): not sampled, results NaN
}


def nuts_flag_names(value: int) -> list[str]:
    """Names of the :data:`NUTS_FLAGS` bits set in ``value``."""
    return [name for name, bit in NUTS_FLAGS.items() if int(value) & bit]


@dataclasses.dataclass(frozen=True)
class NUTSConfig:
    """Settings of the per-star sampler and of its diagnostic thresholds.

    Attributes
    ----------
    num_warmup, num_samples, num_chains : int
        Warm-up iterations (adaptation), kept draws per chain, chains per star.
    target_accept_prob : float
        Dual-averaging target of the step-size adaptation.
    max_tree_depth : int
        NUTS maximum tree depth (at most ``2**max_tree_depth - 1`` leapfrog steps per draw).
    dense_mass : bool
        Adapt a dense (rather than diagonal) inverse mass matrix.
    batch_size : int
        Stars vmapped together in one compiled call (padded to full size); batches run one after another.
    max_init_tries : int
        Uniform(−2, 2) restarts in unconstrained space when the first initial point has no finite density.
    max_rhat, min_ess, min_accept_prob, max_tree_depth_fraction : float
        Flag thresholds (see :data:`NUTS_FLAGS`).
    """

    num_warmup: int = 500
    num_samples: int = 1000
    num_chains: int = 1
    target_accept_prob: float = 0.8
    max_tree_depth: int = 10
    dense_mass: bool = False
    batch_size: int = 64
    max_init_tries: int = 100
    max_rhat: float = 1.05
    min_ess: float = 100.0
    min_accept_prob: float = 0.5
    max_tree_depth_fraction: float = 0.1

    def __post_init__(self):
        for name in ("num_warmup", "num_samples", "num_chains", "max_tree_depth", "batch_size", "max_init_tries"):
            value = getattr(self, name)
            minimum = 0 if name == "num_warmup" else 1
            if not isinstance(value, (int, np.integer)) or value < minimum:
                raise ValueError(f"NUTSConfig.{name} must be an integer >= {minimum}, got {value!r}")
        if not 0.0 < self.target_accept_prob < 1.0:
            raise ValueError(f"NUTSConfig.target_accept_prob must be in (0, 1), got {self.target_accept_prob}")


@dataclasses.dataclass
class NUTSResult:
    """Draws and diagnostics for a batch of stars.

    Attributes
    ----------
    samples : dict of str to ndarray
        Constrained draws of every latent and deterministic site, shape ``(n_stars, num_chains, num_samples,
        *site_shape)``; NaN for flagged ``init_failed`` / ``invalid_input`` stars.
    diagnostics : dict of str to ndarray
        Per-star ``n_divergent``, ``accept_prob``, ``step_size``, ``num_steps``, ``rhat`` (max over parameters
        of the latent sites; NaN with one chain), ``ess_bulk`` (min over parameters).
    flags : ndarray of int
        :data:`NUTS_FLAGS` bitfield per star.
    latent : tuple of str
        Names of the sampled sites (the others in ``samples`` are deterministic sites).
    """

    samples: dict[str, np.ndarray]
    diagnostics: dict[str, np.ndarray]
    flags: np.ndarray
    latent: tuple[str, ...]

    @property
    def n_stars(self) -> int:
        """Number of stars."""
        return len(self.flags)

    def summary(
        self,
        sites=None,
        quantiles=(0.025, 0.16, 0.5, 0.84, 0.975),
        keep_samples: int = 0,
    ) -> dict[str, np.ndarray]:
        """Per-star summary columns: ``{site}_mean``, ``_std``, ``_q2_5`` … ``_q97_5``, diagnostics, ``flags``.

        Parameters
        ----------
        sites : sequence of str, optional
            Sites to summarise (default: all). Vector sites get one column per element, ``{site}_{i}_mean`` …
        quantiles : sequence of float
            Quantile levels; column suffix ``q`` + the percentage with ``.`` replaced by ``_``.
        keep_samples : int
            With ``> 0``, also a ``{site}_samples`` column of that many draws per star (pooled over chains,
            evenly thinned): full samples in a Parquet output.

        Returns
        -------
        dict of str to ndarray
            Columns with one row per star, ready for :func:`jaxstars.catalog.run_catalog`.
        """
        out: dict[str, np.ndarray] = {}
        for name in self.samples if sites is None else sites:
            draws = self.samples[name]
            flat = draws.reshape(draws.shape[0], -1, *draws.shape[3:])  # (stars, chains*samples, *shape)
            flat = flat.reshape(flat.shape[0], flat.shape[1], -1)
            n_elem = flat.shape[2]
            for j in range(n_elem):
                label = name if n_elem == 1 and draws.ndim == 3 else f"{name}_{j}"
                x = flat[:, :, j]
                out[f"{label}_mean"] = x.mean(axis=1)
                out[f"{label}_std"] = x.std(axis=1, ddof=1) if x.shape[1] > 1 else np.zeros(len(x))
                qs = np.quantile(x, quantiles, axis=1)
                for level, values in zip(quantiles, qs):
                    out[f"{label}_q{_percent(level)}"] = values
                if keep_samples:
                    idx = np.linspace(0, x.shape[1] - 1, keep_samples).round().astype(int)
                    out[f"{label}_samples"] = x[:, idx]
        out.update(self.diagnostics)
        out["flags"] = self.flags
        return out

    def to_arviz(self, row_ids=None):
        """The draws as an ArviZ ``InferenceData`` with a ``star`` dimension (needs ``arviz``).

        Parameters
        ----------
        row_ids : array-like, optional
            Coordinates of the ``star`` dimension (default ``0..n_stars-1``).

        Returns
        -------
        arviz.InferenceData
            ``posterior`` group with dims ``(chain, draw, star, *site dims)`` and a ``sample_stats`` group with
            the per-star diagnostics; write it with ``.to_netcdf(path)``.
        """
        try:
            import arviz as az
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("NUTSResult.to_arviz needs arviz: pip install arviz") from exc
        stars = np.arange(self.n_stars) if row_ids is None else np.asarray(row_ids)
        posterior = {name: np.moveaxis(x, 0, 2) for name, x in self.samples.items()}  # (chain, draw, star, ...)
        dims = {
            name: ["star"] + [f"{name}_dim_{i}" for i in range(x.ndim - 3)] for name, x in self.samples.items()
        }
        idata = az.from_dict(posterior=posterior, coords={"star": stars}, dims=dims)
        stats = {k: ("star", np.asarray(v)) for k, v in self.diagnostics.items()}
        stats["flags"] = ("star", np.asarray(self.flags))
        import xarray as xr

        idata.add_groups({"star_diagnostics": xr.Dataset(stats, coords={"star": stars})})
        return idata


def _percent(level: float) -> str:
    text = f"{100 * level:g}"
    return text.replace(".", "_")


def latent_sites(model: Callable, example_data, shared=()) -> dict[str, Any]:
    """Sampled (unobserved) sites of ``model(example_data, *shared)``: name → (support transform, value shape).

    Parameters
    ----------
    model : callable
        NumPyro model called as ``model(data, *shared)``.
    example_data : pytree
        One star's data.
    shared : tuple
        Arguments shared by all stars.

    Returns
    -------
    dict
        ``{name: (transform, shape)}`` with ``transform`` the bijection from unconstrained space to the site's
        support and ``shape`` the constrained value's shape, in model order.
    """
    tr = trace(seed(model, 0)).get_trace(example_data, *shared)
    sites = {}
    for name, site in tr.items():
        if site["type"] == "sample" and not site["is_observed"]:
            if site["fn"].support.is_discrete:
                raise ValueError(f"site {name!r} is discrete: per-star NUTS needs continuous latent variables")
            sites[name] = (biject_to(site["fn"].support), jnp.shape(site["value"]))
    if not sites:
        raise ValueError("the model has no latent sample site to sample")
    return sites


def initial_values(
    model, sites, data, shared, key, init_values: Mapping[str, Any] | None, max_tries: int
) -> tuple[dict, jax.Array]:
    """Unconstrained starting point for one chain: the given values, else Uniform(−2, 2) with restarts.

    Returns the point and whether its potential energy is finite. Pure: jit/vmap over ``data`` and ``key``.
    """

    def potential(z):
        return potential_energy(model, (data, *shared), {}, z)

    def uniform(k):
        keys = jax.random.split(k, len(sites))
        return {
            name: jax.random.uniform(kk, transform.inverse_shape(shape), minval=-2.0, maxval=2.0)
            for kk, (name, (transform, shape)) in zip(keys, sites.items())
        }

    key, first = jax.random.split(key)
    z0 = uniform(first)
    if init_values:
        z0 = {
            name: (transform.inv(jnp.asarray(init_values[name])) if name in init_values else z0[name])
            for name, (transform, _) in sites.items()
        }

    def ok(z):
        energy, grad = jax.value_and_grad(potential)(z)
        finite = jnp.isfinite(energy)
        for g in jax.tree_util.tree_leaves(grad):
            finite &= jnp.all(jnp.isfinite(g))
        return finite

    def cond(carry):
        _, tries, good, _ = carry
        return (~good) & (tries < max_tries)

    def body(carry):
        _, tries, _, k = carry
        k, sub = jax.random.split(k)
        z = uniform(sub)
        return z, tries + 1, ok(z), k

    z, _, good, _ = jax.lax.while_loop(cond, body, (z0, 0, ok(z0), key))
    return z, good


def _one_chain(model, sites, config: NUTSConfig, data, shared, key, init_values):
    """Warm-up then sampling for one star and one chain; returns draws (unconstrained) and per-draw stats."""
    init_kernel, sample_kernel = hmc(
        potential_fn_gen=lambda data_, *shared_: functools.partial(potential_energy, model, (data_, *shared_), {}),
        algo="NUTS",
    )
    k_init, k_run = jax.random.split(key)
    z0, good = initial_values(model, sites, data, shared, k_init, init_values, config.max_init_tries)
    state = init_kernel(
        z0,
        config.num_warmup,
        target_accept_prob=config.target_accept_prob,
        max_tree_depth=config.max_tree_depth,
        dense_mass=config.dense_mass,
        model_args=(data, *shared),
        rng_key=k_run,
    )

    def step(state, _):
        state = sample_kernel(state, model_args=(data, *shared))
        return state, (state.z, state.diverging, state.accept_prob, state.num_steps)

    if config.num_warmup:
        state, _ = jax.lax.scan(step, state, None, length=config.num_warmup)
    state, (zs, diverging, accept, steps) = jax.lax.scan(step, state, None, length=config.num_samples)
    stats = {
        "n_divergent": jnp.sum(diverging),
        "accept_prob": jnp.mean(accept),
        "step_size": state.adapt_state.step_size,
        "num_steps": jnp.mean(steps.astype(jnp.float32)),
        "tree_depth_hits": jnp.mean((steps >= 2**config.max_tree_depth - 1).astype(jnp.float32)),
    }
    return zs, stats, good


def _one_star(model, sites, config: NUTSConfig, init_fn, data, shared, key):
    """All chains of one star (vmapped over chains); draws constrained, deterministic sites included."""
    init_values = init_fn(data) if init_fn is not None else None
    keys = jax.random.split(key, config.num_chains)
    zs, stats, good = jax.vmap(lambda k: _one_chain(model, sites, config, data, shared, k, init_values))(keys)

    def constrain(z):
        return constrain_fn(model, (data, *shared), {}, z, return_deterministic=True)

    # zs leaves: (chains, samples, ...) → constrained dict with the same leading axes
    values = jax.vmap(jax.vmap(constrain))(zs)
    stats = {
        "n_divergent": jnp.sum(stats["n_divergent"]),
        "accept_prob": jnp.mean(stats["accept_prob"]),
        "step_size": jnp.mean(stats["step_size"]),
        "num_steps": jnp.mean(stats["num_steps"]),
        "tree_depth_hits": jnp.mean(stats["tree_depth_hits"]),
    }
    return values, stats, jnp.all(good)


@functools.lru_cache(maxsize=32)
def _compiled(model, config: NUTSConfig, init_fn, n_devices: int, treedef_key):
    """One jitted sampler per (model, config, init function, device count, data structure)."""
    del treedef_key  # part of the cache key only: sites are re-derived per call inside the trace

    def run(data, shared, keys, sites_example):
        sites = latent_sites(model, sites_example, shared)
        per_star = functools.partial(_one_star, model, sites, config, init_fn)

        def local(data, keys):
            return jax.lax.map(
                lambda args: per_star(args[0], shared, args[1]), (data, keys), batch_size=config.batch_size
            )

        if n_devices > 1:
            from jax.sharding import Mesh, PartitionSpec

            mesh = Mesh(np.array(jax.local_devices()[:n_devices]), ("stars",))
            spec = PartitionSpec("stars")
            local = jax.shard_map(local, mesh=mesh, in_specs=(spec, spec), out_specs=spec, check_vma=False)
        return local(data, keys)

    return jax.jit(run)


def sample_stars(
    model: Callable,
    data,
    key,
    *,
    shared: tuple = (),
    config: NUTSConfig = NUTSConfig(),
    row_ids=None,
    valid=None,
    init_fn: Callable | None = None,
    devices: int | None = None,
) -> NUTSResult:
    """Run NUTS independently for every star of a batch (vmapped, compiled once per model and settings).

    Parameters
    ----------
    model : callable
        NumPyro model ``model(star_data, *shared)`` for ONE star. Close non-array settings over with
        :func:`functools.partial` (keep the same partial object between calls to reuse the compiled sampler).
    data : pytree of arrays
        Per-star data, every leaf with a leading axis of length ``n_stars``.
    key : jax.random key or int
        Base key; star ``i`` uses ``fold_in(key, row_ids[i])``.
    shared : tuple of arrays / pytrees
        Arguments common to all stars (network weights, grids): passed to the compiled function, not baked in.
    config : NUTSConfig
        Sampler settings and diagnostic thresholds.
    row_ids : array-like of int, optional
        Global ids of the stars (default ``0..n_stars-1``): keys depend on them only, so a star's draws are the
        same whichever batch or chunk it is in.
    valid : array-like of bool, optional
        Rows to sample; the others are flagged ``invalid_input`` with NaN draws (their data are replaced by a
        valid row's before sampling, so bad values never reach the sampler).
    init_fn : callable, optional
        ``init_fn(star_data) -> {site: constrained value}``: a per-star starting point (pure JAX), e.g. the
        inverse parallax for a distance; sites it omits start Uniform(−2, 2) in unconstrained space.
    devices : int, optional
        Local devices to spread the stars over (default: all).

    Returns
    -------
    NUTSResult
        Draws, per-star diagnostics and flags.

    Raises
    ------
    ValueError
        Inconsistent leading axes in ``data``, or a model without continuous latent sites.
    """
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError("data has no arrays")
    n = int(np.shape(leaves[0])[0]) if np.ndim(leaves[0]) else 0
    if n == 0 or any(np.ndim(x) == 0 or np.shape(x)[0] != n for x in leaves):
        raise ValueError("every leaf of data needs the same leading (star) axis of length >= 1")
    row_ids = np.arange(n) if row_ids is None else np.asarray(row_ids, dtype=np.int64)
    if row_ids.shape != (n,):
        raise ValueError(f"row_ids must have shape ({n},), got {row_ids.shape}")
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, dtype=bool)
    if valid.shape != (n,):
        raise ValueError(f"valid must have shape ({n},), got {valid.shape}")

    if not valid.any():
        return _all_invalid(model, data, shared, n, config)

    # replace invalid rows by the first valid one, so the sampler only ever sees good data
    first = int(np.flatnonzero(valid)[0])
    data = jax.tree_util.tree_map(lambda x: jnp.where(_expand(valid, x), x, jnp.asarray(x)[first]), data)

    n_devices = min(devices or jax.local_device_count(), jax.local_device_count())
    # Every star runs at the same place of a batch of the same shape, whatever else is sampled with it: at lane
    # row_id % step of a batch of `step` stars. (XLA's CPU kernels round differently at different lanes of a
    # vmapped batch and NUTS trajectories amplify rounding, so this is what makes draws independent of chunking.)
    step = config.batch_size * n_devices
    blocks, block_of = np.unique(row_ids // step, return_inverse=True)
    slots = block_of.reshape(-1) * step + row_ids % step
    if np.unique(slots).size != n:  # repeated row ids: fall back to consecutive slots
        slots = np.arange(n)
        size = n + (-n) % step
    else:
        size = blocks.size * step
    fill = np.zeros(size, dtype=np.int64)  # padding: copies of star 0 (valid after the replacement above)
    fill[slots] = np.arange(n)
    padded_ids = row_ids[fill]
    data = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[fill], data)
    if isinstance(key, (int, np.integer)):
        key = jax.random.PRNGKey(int(key))
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(padded_ids % (2**31 - 1), jnp.uint32))

    example = jax.tree_util.tree_map(lambda x: x[0], data)
    treedef_key = str(jax.tree_util.tree_structure((data, shared)))
    run = _compiled(model, config, init_fn, n_devices, treedef_key)
    outs = [
        run(jax.tree_util.tree_map(lambda x, s=s: x[s : s + step], data), shared, keys[s : s + step], example)
        for s in range(0, size, step)
    ]
    values = {k: np.concatenate([np.asarray(o[0][k]) for o in outs])[slots] for k in outs[0][0]}
    stats = {k: np.concatenate([np.asarray(o[1][k]) for o in outs])[slots] for k in outs[0][1]}
    good = np.concatenate([np.asarray(o[2]) for o in outs])[slots]
    latent = tuple(latent_sites(model, example, shared))
    return _finish(values, stats, good, valid, latent, config)


def _expand(mask: np.ndarray, x) -> np.ndarray:
    return mask.reshape((-1,) + (1,) * (np.ndim(x) - 1))


def _all_invalid(model, data, shared, n, config):
    example = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[0], data)
    tr = trace(seed(model, 0)).get_trace(example, *shared)
    latent = tuple(latent_sites(model, example, shared))
    values = {
        name: np.full((n, config.num_chains, config.num_samples, *np.shape(site["value"])), np.nan)
        for name, site in tr.items()
        if (site["type"] == "sample" and not site["is_observed"]) or site["type"] == "deterministic"
    }
    stats = {
        k: np.full(n, np.nan) for k in ("n_divergent", "accept_prob", "step_size", "num_steps", "tree_depth_hits")
    }
    return _finish(values, stats, np.zeros(n, bool), np.zeros(n, bool), latent, config)


def _finish(values, stats, good, valid, latent, config: NUTSConfig) -> NUTSResult:
    """NaN-out failed rows, compute R̂ / ESS over chains (numpy, vectorised over stars) and the flags."""
    n = len(good)
    usable = good & valid
    rhat = np.full(n, np.nan)
    ess = np.full(n, np.nan)
    if usable.any():
        per_param_rhat, per_param_ess = [], []
        for name in latent:
            x = np.asarray(values[name], dtype=np.float64)[usable]  # (stars, chains, samples, ...)
            x = np.moveaxis(x, 0, 2).reshape(x.shape[1], x.shape[2], -1)  # (chains, samples, stars*params)
            n_params = x.shape[2] // int(usable.sum())
            if x.shape[0] > 1 and x.shape[1] >= 4:
                per_param_rhat.append(split_gelman_rubin(x).reshape(-1, n_params))
            per_param_ess.append(effective_sample_size(x).reshape(-1, n_params))
        if per_param_rhat:
            rhat[usable] = np.max(np.concatenate(per_param_rhat, axis=1), axis=1)
        ess[usable] = np.min(np.concatenate(per_param_ess, axis=1), axis=1)
    flags = np.zeros(n, np.int64)
    flags[~valid] |= NUTS_FLAGS["invalid_input"]
    flags[valid & ~good] |= NUTS_FLAGS["init_failed"]
    with np.errstate(invalid="ignore"):
        flags[usable & (stats["n_divergent"] > 0)] |= NUTS_FLAGS["divergent"]
        flags[usable & (rhat > config.max_rhat)] |= NUTS_FLAGS["high_rhat"]
        flags[usable & (ess < config.min_ess)] |= NUTS_FLAGS["low_ess"]
        flags[usable & (stats["accept_prob"] < config.min_accept_prob)] |= NUTS_FLAGS["low_acceptance"]
        flags[usable & (stats["tree_depth_hits"] > config.max_tree_depth_fraction)] |= NUTS_FLAGS["max_tree_depth"]
    values = {k: np.where(_expand(usable, v), v, np.nan) for k, v in values.items()}
    diagnostics = {
        "n_divergent": np.where(usable, stats["n_divergent"], -1).astype(np.int64),
        "accept_prob": np.where(usable, stats["accept_prob"], np.nan),
        "step_size": np.where(usable, stats["step_size"], np.nan),
        "num_steps": np.where(usable, stats["num_steps"], np.nan),
        "rhat": rhat,
        "ess_bulk": ess,
    }
    return NUTSResult(values, diagnostics, flags, latent)


def sequential_nuts(
    model: Callable, data, key, *, shared: tuple = (), config: NUTSConfig = NUTSConfig(), init_fn=None
) -> list[dict[str, np.ndarray]]:
    """Reference path: NumPyro's ``MCMC`` driver run star by star (a Python loop; slow, re-compiles per star).

    Same model, same kernel settings as :func:`sample_stars`; used by the tests and benchmarks to show that the
    vmapped engine reproduces it. Returns one ``{site: draws (num_chains, num_samples, ...)}`` per star.
    """
    from numpyro.infer import MCMC, NUTS, init_to_uniform, init_to_value

    n = int(np.shape(jax.tree_util.tree_leaves(data)[0])[0])
    if isinstance(key, (int, np.integer)):
        key = jax.random.PRNGKey(int(key))
    out = []
    for i in range(n):
        star = jax.tree_util.tree_map(lambda x, i=i: jnp.asarray(x)[i], data)
        strategy = init_to_uniform
        if init_fn is not None:
            strategy = init_to_value(values={k: np.asarray(v) for k, v in init_fn(star).items()})
        kernel = NUTS(
            model,
            init_strategy=strategy,
            target_accept_prob=config.target_accept_prob,
            max_tree_depth=config.max_tree_depth,
            dense_mass=config.dense_mass,
        )
        mcmc = MCMC(
            kernel,
            num_warmup=config.num_warmup,
            num_samples=config.num_samples,
            num_chains=config.num_chains,
            chain_method="sequential",
            progress_bar=False,
        )
        mcmc.run(jax.random.fold_in(key, i), star, *shared)
        out.append({k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()})
    return out
