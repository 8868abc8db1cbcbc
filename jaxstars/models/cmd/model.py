"""The colour–magnitude model: a flow density over dereddened (absolute magnitude, colours) and per-star inputs.

Cranmer et al. §3: ``P(g, bp − rp, bp − g)`` is a normalising flow (MAF blocks MADE → BatchNorm → Reverse). Here
the flow sees the features after a fixed standardisation (``(f − shift) / scale``, set once from the training
catalogue), so the same flow hyper-parameters fit any band set; :meth:`CMDModel.log_density` returns the density
in the physical feature units (magnitudes), Jacobian included.

A star's photometric likelihood at distance d with reddening E is ``P(Λ m_obs − μ(d) e₀ − E k)``: the flow density
at the star's dereddened absolute features (no Jacobian: the map m ↦ f is a shift).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstars.astro.dust import DustMap, DustProfiles, get_map, profiles_from_moments, tabulate_profiles
from jaxstars.flows import Flow
from jaxstars.flows.io import FlowFileError, load_flow, save_flow

from .features import CMDFeatures

MODEL_FILE = "model.npz"
FORMAT = "jaxstars.cmd.v1"

# Per-row flags of CMD inputs and results (bit values).
FLAGS: dict[str, int] = {
    "missing_photometry": 1 << 0,  # fewer than n_required leading features observed: no result
    "no_parallax": 1 << 1,  # parallax or its error missing / non-positive error: photometry-only posterior
    "no_dust": 1 << 2,  # no position or outside the dust map: no result
    "grid_edge": 1 << 3,  # posterior mass at the ends of the distance range (result truncated)
    "outside_coverage": 1 << 4,  # photometry far outside the flow's training density at every distance
    "ruwe": 1 << 5,  # RUWE >= 1.4 (training only; evaluation still runs)
}
NO_RESULT = FLAGS["missing_photometry"] | FLAGS["no_dust"]


def flag_names(flags: int) -> list[str]:
    """The names of the bits set in one flag value."""
    return [name for name, bit in FLAGS.items() if int(flags) & bit]


@dataclass(frozen=True)
class CMDModel:
    """A trained (or to-be-trained) colour–magnitude model: features, flow, standardisation, parallax zero-point.

    Attributes
    ----------
    features : the modelled vector (:func:`~jaxstars.models.cmd.gaia_cmd_features` by default).
    flow : a jaxstars :class:`~jaxstars.flows.Flow` of dimension ``features.dim`` (any flow; exact marginals over
        missing trailing bands need one triangular in the data order, e.g. ``maf(..., reverse=False)``).
    shift, scale : per-feature standardisation applied before the flow.
    zero_point : parallax zero-point [mas] with ``ϖ_obs = ϖ_true + zero_point`` (Cranmer et al.: −0.029).
    log_density_floor : training stars' 0.1 % quantile of ``log P`` (set by training); stars whose best
        photometric density over all distances stays below it are flagged ``outside_coverage``.
    """

    features: CMDFeatures
    flow: Flow
    shift: tuple[float, ...]
    scale: tuple[float, ...]
    zero_point: float = 0.0
    log_density_floor: float = -np.inf
    info: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if self.flow.dim != self.features.dim:
            raise ValueError(f"flow of dimension {self.flow.dim} for {self.features.dim} features")
        if len(self.shift) != self.features.dim or len(self.scale) != self.features.dim:
            raise ValueError("shift and scale need one entry per feature")
        if not all(s > 0 for s in self.scale):
            raise ValueError("scale entries must be positive")

    @property
    def dim(self) -> int:
        return self.features.dim

    @property
    def feature_extinction(self) -> np.ndarray:
        return self.features.feature_extinction

    def init(self, key: jax.Array):
        return self.flow.init(key)

    # -- densities ------------------------------------------------------------------------------------------------
    def _standardise(self, f):
        shift = jnp.asarray(self.shift, dtype=f.dtype)
        scale = jnp.asarray(self.scale, dtype=f.dtype)
        return (f - shift) / scale, jnp.log(scale)

    def log_density(self, params, f: jax.Array, n_observed: jax.Array | None = None) -> jax.Array:
        """``log P(f)`` in magnitude units; with ``n_observed`` (per row), the marginal of the leading features.

        Rows with ``n_observed < dim`` need a triangular flow; their trailing entries may hold any finite value.
        """
        x, log_scale = self._standardise(jnp.asarray(f))
        if n_observed is None or (self.flow.dim == self.features.n_required and not self.flow.bijector.triangular):
            return self.flow.log_prob(params, x) - jnp.sum(log_scale)
        if not self.flow.bijector.triangular:
            return jnp.where(n_observed >= self.dim, self.flow.log_prob(params, x) - jnp.sum(log_scale), -jnp.inf)
        prefix = self.flow.prefix_log_probs(params, x) - jnp.cumsum(log_scale)
        index = jnp.clip(jnp.asarray(n_observed), 1, self.dim) - 1
        index = jnp.broadcast_to(index, prefix.shape[:-1])
        return jnp.take_along_axis(prefix, index[..., None], axis=-1)[..., 0]

    def log_density_train(self, params, f: jax.Array, weight: jax.Array, n_observed: jax.Array | None = None):
        """Training-mode ``log P(f)`` (BatchNorm batch statistics weighted by ``weight``): ``(log P, new_params)``.

        Rows missing trailing features are filled with the running mean (0 after standardisation) for the
        BatchNorm statistics; their density is the exact marginal only for triangular flows (the weight of such
        rows in the batch statistics is the caller's choice).
        """
        x, log_scale = self._standardise(jnp.asarray(f))
        if n_observed is not None:
            observed = jnp.arange(self.dim) < jnp.asarray(n_observed)[..., None]
            x = jnp.where(observed, x, 0.0)
        log_p, new_params = self.flow.log_prob_train(params, x, None, weight)
        return log_p - jnp.sum(log_scale), new_params

    def dereddened_features(self, y_obs, modulus, reddening):
        """``f = y_obs − μ e₀ − E k`` for broadcastable ``y_obs (..., F)``, ``modulus (...)``, ``reddening (...)``."""
        k = jnp.asarray(self.feature_extinction, dtype=jnp.result_type(y_obs))
        e0 = jnp.zeros(self.dim, k.dtype).at[0].set(1.0)
        return y_obs - jnp.asarray(modulus)[..., None] * e0 - jnp.asarray(reddening)[..., None] * k

    # -- persistence ----------------------------------------------------------------------------------------------
    def to_config(self) -> dict:
        return {
            "format": FORMAT,
            "features": self.features.to_config(),
            "shift": list(self.shift),
            "scale": list(self.scale),
            "zero_point": self.zero_point,
            "log_density_floor": None if not np.isfinite(self.log_density_floor) else self.log_density_floor,
            "info": self.info,
        }

    def save(self, directory: str | os.PathLike, params) -> str:
        """Write ``directory/model.npz`` (flow arrays + this config as JSON metadata); returns the path."""
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(os.fspath(directory), MODEL_FILE)
        save_flow(path, self.flow, params, metadata={"cmd": self.to_config()})
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> tuple[CMDModel, Any]:
        """Read a model written by :meth:`save` (a directory or the ``model.npz`` itself): ``(model, params)``.

        Raises ``FileNotFoundError`` when absent and :class:`~jaxstars.flows.io.FlowFileError` when the file is
        corrupt or not a CMD model.
        """
        path = os.fspath(directory)
        if os.path.isdir(path):
            path = os.path.join(path, MODEL_FILE)
        flow, params, metadata = load_flow(path)
        config = metadata.get("cmd") if isinstance(metadata, dict) else None
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise FlowFileError(f"{path!r} is a flow file but not a jaxstars CMD model ({FORMAT})")
        try:
            floor = config.get("log_density_floor")
            model = cls(
                features=CMDFeatures.from_config(config["features"]),
                flow=flow,
                shift=tuple(float(v) for v in config["shift"]),
                scale=tuple(float(v) for v in config["scale"]),
                zero_point=float(config["zero_point"]),
                log_density_floor=-np.inf if floor is None else float(floor),
                info=dict(config.get("info", {})),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise FlowFileError(f"{path!r}: invalid CMD model config: {err}") from err
        return model, params

    def describe(self) -> str:
        return json.dumps(self.to_config(), indent=2, default=str)


class CMDStars(NamedTuple):
    """Per-star inputs of a CMD model, as arrays with a leading star axis (a pytree: slice, vmap, shard).

    ``features`` are the observed (not dereddened, not distance-corrected) ``Λ m``; ``n_observed`` the number of
    leading features present; ``parallax``/``parallax_error`` in mas (``parallax_error = inf`` where missing: the
    parallax then carries no information); ``dust`` the tabulated reddening profiles; ``flags`` see :data:`FLAGS`.
    """

    features: Any
    n_observed: Any
    parallax: Any
    parallax_error: Any
    dust: DustProfiles
    flags: Any

    @property
    def n_stars(self) -> int:
        return int(np.shape(self.parallax)[0])

    def take(self, index) -> CMDStars:
        return CMDStars(
            self.features[index],
            self.n_observed[index],
            self.parallax[index],
            self.parallax_error[index],
            self.dust.take(index),
            self.flags[index],
        )


def _column(table, name, n):
    names = set(table.colnames) if hasattr(table, "colnames") else set(table.keys())
    if name not in names:
        return np.full(n, np.nan)
    col = table[name]
    if hasattr(col, "filled"):
        col = col.filled(np.nan)
    return np.asarray(col, dtype=np.float64)


def prepare_stars(
    features: CMDFeatures,
    table,
    *,
    dust_map: DustMap | str | None = "cranmer_gaussian",
    reddening: Any = None,
    reddening_error: Any = None,
    n_dust_draws: int = 1,
    dust_scale: float = 1.0,
    key: Any = None,
) -> CMDStars:
    """Arrays a CMD model needs, from a canonical catalogue (:mod:`jaxstars.astro.schema` column names).

    Dust comes either from a map queried along each sight line (``dust_map``: a :class:`DustMap` or registered
    name; needs ``l``/``b`` columns, or ``ra``/``dec``), or from a per-star reddening that does not depend on
    distance (``reddening`` + ``reddening_error``, e.g. Green et al.'s ``r`` column; then ``dust_map`` is
    ignored), or no dust at all (``dust_map=None`` and no reddening). Never raises on bad rows: they get flags.
    """
    n = len(table)
    y, n_obs = features.observed(table)
    flags = np.zeros(n, dtype=np.int64)
    flags[n_obs < features.n_required] |= FLAGS["missing_photometry"]
    plx = _column(table, "parallax", n)
    plx_err = _column(table, "parallax_error", n)
    good_plx = np.isfinite(plx) & np.isfinite(plx_err) & (plx_err > 0)
    flags[~good_plx] |= FLAGS["no_parallax"]
    plx = np.where(good_plx, plx, 0.0)
    plx_err = np.where(good_plx, plx_err, np.inf)

    if reddening is not None:
        r = np.asarray(reddening, dtype=np.float64).ravel()
        r_err = np.zeros(n) if reddening_error is None else np.asarray(reddening_error, dtype=np.float64).ravel()
        dust = profiles_from_moments(r, r_err, n_draws=n_dust_draws)
    elif dust_map is None:
        dust = profiles_from_moments(np.zeros(n), np.zeros(n), n_draws=1)
    else:
        dmap = get_map(dust_map) if isinstance(dust_map, str) else dust_map
        l_deg, b_deg = _column(table, "l", n), _column(table, "b", n)
        if not np.any(np.isfinite(l_deg)):
            ra, dec = _column(table, "ra", n), _column(table, "dec", n)
            if np.any(np.isfinite(ra)):
                from jaxstars.astro.geometry import icrs_to_galactic

                l_deg, b_deg = (np.asarray(v, dtype=np.float64) for v in icrs_to_galactic(ra, dec))
        dust = tabulate_profiles(dmap, l_deg, b_deg, n_draws=n_dust_draws, key=key, scale=dust_scale)
    flags[~np.asarray(dust.valid)] |= FLAGS["no_dust"]
    return CMDStars(
        features=y.astype(np.float32),
        n_observed=n_obs,
        parallax=plx.astype(np.float32),
        parallax_error=plx_err.astype(np.float32),
        dust=dust,
        flags=flags,
    )
