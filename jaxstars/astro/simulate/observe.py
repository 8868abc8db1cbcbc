"""From true stars to a Gaia-like catalogue: dust, extinction law, noise, detection, selection, table.

Every star's reddening is the chosen dust map's mean at its true (l, b, d) (``DustMap.query``); the extinction in
each band is ``A = E × law.coefficients(E, x)`` with ``x`` the star's Teff (or intrinsic BP − RP, whichever the law
takes); true apparent magnitudes are ``M + μ + A``. Observed magnitudes add Gaussian noise with the
:mod:`~jaxstars.astro.simulate.errors` uncertainties, bands outside their detection range become NaN (never a
dropped star), and parallaxes are ``1000 / d + zp`` plus Gaussian noise (negative values are kept).

Noise is Gaussian in magnitudes, a model that only makes sense near or above the detection limit: a PS1/2MASS band
is reported when its observed magnitude lies within the band's detection range *and* its true magnitude is at most
1 mag fainter than the 5σ limit (true signal-to-noise above 2); the G selection likewise requires the true G to be
within 5 σ_G of the limit.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import astropy.units as u
import jax
import jax.numpy as jnp
import numpy as np
from astropy.table import Table

from jaxstars.astro import schema
from jaxstars.astro.bands import distance_modulus
from jaxstars.astro.dust import DustMap, get_map
from jaxstars.astro.extinction import ExtinctionLaw, blackbody_law, zhang_yuan_law
from jaxstars.astro.geometry import galactic_to_icrs

from . import _random, errors
from .isochrones import SIM_BANDS

__all__ = ["Observer", "build_table", "resolve_dust_map", "resolve_law"]

# canonical schema band -> band registry name (what the extinction laws call it)
_REGISTRY_NAME = {b: b.removeprefix("ps1_") for b in schema.BANDS}
_GAIA = ("G", "BP", "RP")
_CHUNK = 1 << 15
_DETECTION_DEPTH = 1.0  # a band is never detected when its true magnitude is fainter than m5 + 1 (true S/N < 2)


def resolve_dust_map(dust_map: str | DustMap) -> DustMap:
    """A :class:`DustMap` from a registered name or an instance; the simulator needs a 3D map."""
    m = get_map(dust_map) if isinstance(dust_map, str) else dust_map
    if not isinstance(m, DustMap):
        raise TypeError(f"dust_map must be a registered map name or a DustMap, got {type(dust_map).__name__}")
    if not m.three_d:
        raise ValueError(
            f"dust map {m.name!r} is 2D (total column only): the simulator needs a 3D map so that nearby stars are "
            "less reddened than distant ones (e.g. 'exponential_disk', 'clouds', 'cranmer_gaussian')"
        )
    return m


def _normalise(text: str) -> str:
    return text.replace("−", "-").replace(" ", "").lower()


def resolve_law(law: str | ExtinctionLaw, bands, dust_map: DustMap) -> ExtinctionLaw:
    """The extinction law for ``bands`` (canonical names), checked against the map's reddening units.

    ``"zhang_yuan"`` is :func:`~jaxstars.astro.extinction.zhang_yuan_law` (Teff-dependent); ``"blackbody"`` is
    :func:`~jaxstars.astro.extinction.blackbody_law` in E(B−V) (O'Donnell 94, tabulated passbands, needs `pyphot`);
    an :class:`ExtinctionLaw` instance is used as given. Its entries must cover ``bands`` and its reddening
    quantity must be the one the map returns.
    """
    names = tuple(_REGISTRY_NAME[b] for b in bands)
    if isinstance(law, str):
        if law == "zhang_yuan":
            law = zhang_yuan_law(names, "teff")
        elif law == "blackbody":
            law = blackbody_law(names, reddening="E(B-V)")
        else:
            raise ValueError(f"unknown extinction law {law!r}; use 'zhang_yuan', 'blackbody' or an ExtinctionLaw")
    if not isinstance(law, ExtinctionLaw):
        raise TypeError(f"law must be a name or an ExtinctionLaw, got {type(law).__name__}")
    missing = [n for n in names if n not in law.entries]
    if missing:
        raise ValueError(f"extinction law {law.name!r} has no coefficient for {missing} (entries: {law.entries})")
    if not _normalise(dust_map.units).startswith(_normalise(law.reddening)):
        raise ValueError(
            f"the dust map {dust_map.name!r} returns {dust_map.units!r} but the law {law.name!r} expects "
            f"{law.reddening}: choose a matching map and law"
        )
    if law.argument not in (None, "Teff [K]", "intrinsic BP-RP [mag]"):
        raise ValueError(f"extinction law argument {law.argument!r} is not supported by the simulator")
    return law


def _apply_chunked(fn, *arrays) -> np.ndarray:
    """``fn`` on fixed-size padded chunks (one compilation), results stacked as float64."""
    n = arrays[0].shape[0]
    size = min(_CHUNK, 1 << max(n - 1, 0).bit_length()) if n else 1
    outs = []
    for start in range(0, n, size):
        parts = [a[start : start + size] for a in arrays]
        m = parts[0].shape[0]
        if m < size:
            parts = [np.concatenate([p, np.repeat(p[:1], size - m, axis=0)]) for p in parts]
        outs.append(np.asarray(fn(*(jnp.asarray(p) for p in parts)), dtype=np.float64)[:m])
    return np.concatenate(outs) if outs else np.zeros((0,) + np.shape(arrays[0])[1:])


@dataclass(frozen=True, eq=False)
class Observer:
    """Turns true stars into observations (module docstring).

    Attributes
    ----------
    dust_map : DustMap
    law : ExtinctionLaw
    g_limit : float or None
        Selection on observed G: a star is catalogued when ``G_obs < g_limit`` and its true G is below
        ``g_limit + g_margin()`` (5 σ_G at the limit; fainter stars would need a > 5σ fluctuation, and the Gaussian
        magnitude-error model is meaningless far below the detection limit).
    parallax_zero_point : float
        ``zp`` [mas] in ``ϖ_obs = 1000 / d + zp + noise`` (catalogue-bias convention of
        :mod:`jaxstars.astro.astrometry`).
    photometric_noise : bool
        Scatter the magnitudes by their uncertainties (the uncertainties are reported either way).
    """

    dust_map: DustMap
    law: ExtinctionLaw
    g_limit: float | None
    parallax_zero_point: float
    photometric_noise: bool = True

    def g_margin(self) -> float:
        """5 σ_G at the limit: how much fainter than the limit a true G can be and still pass (noise)."""
        if self.g_limit is None or not self.photometric_noise:
            return 1e-3
        return 5.0 * float(errors.gaia_mag_error("G", self.g_limit)) + 1e-3

    def observe(self, key: jax.Array, l_deg, b_deg, distance_pc, stars: dict[str, Any]) -> tuple[dict, np.ndarray]:
        """Observe stars; returns ``(columns, selected)`` with every column for every input star.

        ``stars`` holds ``absmag`` (n, len(SIM_BANDS)) and ``logteff`` (from
        :func:`~jaxstars.astro.simulate.isochrones.interpolate`).
        """
        n = distance_pc.size
        k_phot, k_plx = jax.random.split(key)
        mu = _apply_chunked(distance_modulus, np.asarray(distance_pc, dtype=np.float64))
        query = self.dust_map.query(l_deg, b_deg, distance_pc)
        if not np.all(query.valid):
            bad = int(np.sum(~query.valid))
            raise ValueError(f"dust map {self.dust_map.name!r} returned no reddening for {bad} simulated stars")
        ebv = np.asarray(query.mean, dtype=np.float64)
        absmag = np.asarray(stars["absmag"], dtype=np.float64)
        teff = 10.0 ** np.asarray(stars["logteff"], dtype=np.float64)
        if self.law.argument is None:
            x = np.zeros(n)
        elif self.law.argument == "Teff [K]":
            x = teff
        else:
            x = absmag[:, SIM_BANDS.index("BP")] - absmag[:, SIM_BANDS.index("RP")]
        order = [self.law.entries.index(_REGISTRY_NAME[b]) for b in SIM_BANDS]
        coefficients = (
            _apply_chunked(self.law.coefficients, ebv, x)[:, order] if n else np.zeros((0, len(SIM_BANDS)))
        )
        extinction = ebv[:, None] * coefficients
        true_mag = absmag + mu[:, None] + extinction

        sigma = np.empty_like(true_mag)
        g_true = true_mag[:, 0]
        for j, band in enumerate(SIM_BANDS):
            if band in _GAIA:
                sigma[:, j] = _apply_chunked(functools.partial(errors.gaia_mag_error, band), g_true)
            else:
                sigma[:, j] = _apply_chunked(functools.partial(errors.survey_mag_error, band), true_mag[:, j])
        eps = _random.normal(k_phot, n, (true_mag.shape[1],))
        obs = true_mag + sigma * eps if self.photometric_noise else true_mag.copy()
        for j, band in enumerate(SIM_BANDS):
            if band in _GAIA:
                continue
            bright, faint = errors.detection_limits(band)
            detectable = true_mag[:, j] <= faint + _DETECTION_DEPTH
            missing = ~((obs[:, j] >= bright) & (obs[:, j] <= faint) & detectable)
            obs[missing, j] = np.nan
            sigma[missing, j] = np.nan
        if self.g_limit is None:
            selected = np.ones(n, dtype=bool)
        else:
            selected = (obs[:, 0] < self.g_limit) & (g_true < self.g_limit + self.g_margin())

        plx_err = _apply_chunked(errors.gaia_parallax_error, g_true)
        plx_true = 1000.0 / np.asarray(distance_pc, dtype=np.float64)
        plx = plx_true + self.parallax_zero_point + plx_err * _random.normal(k_plx, n)
        columns = {
            "l": np.asarray(l_deg, dtype=np.float64),
            "b": np.asarray(b_deg, dtype=np.float64),
            "parallax": plx,
            "parallax_error": plx_err,
            "mag": obs,
            "mag_err": sigma,
            "true_distance": np.asarray(distance_pc, dtype=np.float64),
            "true_parallax": plx_true,
            "true_ebv": ebv,
            "true_absmag": absmag,
            "true_mag": true_mag,
            "true_teff": teff,
        }
        for name in ("mass_ini", "mass", "logg", "label", "mh", "logage"):
            columns[f"true_{name}"] = np.asarray(stars[name])
        return columns, selected


def take(columns: dict, index) -> dict:
    """Rows ``index`` of every column."""
    return {k: v[index] for k, v in columns.items()}


def concatenate(parts: list[dict]) -> dict:
    """Row-wise concatenation of column dicts with the same keys."""
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


_TRUTH_UNITS = {
    "true_distance": u.pc,
    "true_parallax": u.mas,
    "true_ebv": u.mag,
    "true_egr": u.mag,
    "true_teff": u.K,
    "true_mass_ini": u.M_sun,
    "true_mass": u.M_sun,
}
_TRUTH_DESCRIPTIONS = {
    "true_distance": "true heliocentric distance",
    "true_parallax": "true parallax 1000 / distance (no zero-point)",
    "true_ebv": "true E(B-V) from the dust map at (l, b, distance)",
    "true_egr": "true reddening, E(g-r)-like units of Cranmer et al. 2019 sec. 4.1",
    "true_teff": "effective temperature from the isochrone",
    "true_logg": "log10 surface gravity [cgs] from the isochrone",
    "true_mass_ini": "initial mass",
    "true_mass": "current mass",
    "true_mh": "[M/H] of the isochrone (grid node)",
    "true_log_age": "log10(age / yr) of the isochrone (grid node)",
    "true_label": "PARSEC evolutionary stage (0 PMS, 1 MS, 2 SGB, 3 RGB, 4-6 CHeB, 7 EAGB, 8 TP-AGB, 9 post-AGB)",
    "true_population": "population the star was drawn from",
    "true_member": "True for cluster members",
}


def build_table(columns: dict, bands, meta: dict) -> Table:
    """A canonical-schema table plus ``missing_bands`` and the ``true_*`` truth columns.

    ``columns`` holds ``l``, ``b``, ``parallax``, ``parallax_error``, ``mag``/``mag_err`` (n, len(bands)),
    ``true_absmag``/``true_mag`` (n, len(bands)) and any other ``true_*`` arrays.
    """
    n = columns["l"].size
    table = Table(meta={"SCHEMA": schema.SCHEMA_VERSION, **meta})
    table["source_id"] = np.arange(n, dtype=np.int64)
    ra, dec = galactic_to_icrs(columns["l"], columns["b"]) if n else (np.zeros(0), np.zeros(0))
    table["ra"], table["dec"] = ra, dec
    table["l"], table["b"] = columns["l"], columns["b"]
    table["parallax"], table["parallax_error"] = columns["parallax"], columns["parallax_error"]
    missing = np.zeros(n, dtype=np.int64)
    for k, band in enumerate(schema.BANDS):
        if band in bands:
            j = list(bands).index(band)
            mag, err = columns["mag"][:, j], columns["mag_err"][:, j]
        else:
            mag, err = np.full(n, np.nan), np.full(n, np.nan)
        table[schema.mag_column(band)] = mag
        table[schema.mag_err_column(band)] = err
        missing[~np.isfinite(mag)] |= 1 << k
    for name, spec in schema.SCHEMA.items():
        if name in table.colnames:
            table[name].unit = spec.unit
            table[name].description = spec.description
    table["flags"] = schema.compute_flags(table)
    table["flags"].description = schema.SCHEMA["flags"].description
    table["missing_bands"] = missing
    table["missing_bands"].description = "bit k set: band schema.BANDS[k] not observed (NaN magnitude)"
    for key in sorted(k for k in columns if k.startswith("true_") and k not in ("true_absmag", "true_mag")):
        name = "true_log_age" if key == "true_logage" else key
        table[name] = columns[key]
        table[name].unit = _TRUTH_UNITS.get(name)
        table[name].description = _TRUTH_DESCRIPTIONS.get(name, "")
    for prefix, what in (
        ("true_absmag", "absolute magnitude, no extinction"),
        ("true_mag", "apparent magnitude, noise-free"),
    ):
        for j, band in enumerate(bands):
            name = f"{prefix}_{band}"
            table[name] = columns[prefix][:, j]
            table[name].unit = u.mag
            approx = " (PS1 from SDSS: Tonry et al. 2012 approximation)" if band.startswith("ps1_") else ""
            table[name].description = f"true {what}{approx}"
    return table
