"""Per-star inputs of the stellar model: floors, masks and flags (Green et al. §3.1–3.3).

:func:`prepare_stars` turns a star table (plain arrays, e.g. from
:func:`~jaxstars.models.stellar.release.read_release_catalog`) into :class:`StellarStars`, the arrays the
covariance (Eq. 4), the χ² (Eqs. 11–14) and the reddening update (Eqs. 8–9) consume:

* photometric errors get 0.02 mag added in quadrature (§3.2); a band that is unobserved (NaN), has an error above
  0.2 mag, or a non-finite / non-positive error is *unobserved* (infinite variance: it drops out of the χ²);
* a parallax with ``ϖ/σ_ϖ < 5`` (including every negative parallax — valid data, never cut) does not constrain the
  absolute magnitude (``σ_ϖ = ∞``): the reference-band entry ``c_0`` of ``c = B m`` is then unobserved, the colours
  still count (§2, §3.2); otherwise ``μ = 10 − 5 log10 ϖ`` (naive conversion, App. A) with variance
  ``(5/ln 10 · σ_ϖ/ϖ)²`` (Eq. 4);
* θ variances get (10 K)², (0.05 dex)², (0.03 dex)² added (§3.1), the reddening error 0.02 mag in quadrature (§3.3).

Floors: ``floors="auto"`` (default) adds each floor only when the data do not already carry it (the release's
files ship errors with the floors applied: every finite error is already ≥ the floor); ``"add"`` always adds,
``"none"`` never does.

Rows that cannot be used get a :data:`STAR_FLAGS` bit instead of being dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np

from jaxstars.astro.bands import get_band

__all__ = [
    "INVALID_FLAGS",
    "MAX_MAG_ERR",
    "MIN_PARALLAX_SNR",
    "STAR_FLAGS",
    "StellarStars",
    "prepare_stars",
    "star_flag_names",
]

#: §3.2: bands with larger errors count as unobserved; parallaxes below this S/N do not constrain μ.
MAX_MAG_ERR = 0.2
MIN_PARALLAX_SNR = 5.0
MAG_FLOOR = 0.02
E_FLOOR = 0.02
THETA_FLOOR = (10.0, 0.05, 0.03)

STAR_FLAGS = {
    "no_reference_band": 1,  # reference band (G) unobserved: no colours can be formed
    "bad_theta": 2,  # non-finite θ or θ covariance (needed for training / evaluation only)
    "bad_reddening": 4,  # non-finite reddening estimate or error (training / evaluation only)
    "too_few_bands": 8,  # fewer than two observed entries of c = B m: nothing left after fitting E
    "bad_band_error": 16,  # some band had a zero, negative or non-finite error (that band treated as unobserved)
    "no_parallax": 32,  # parallax missing or ϖ/σ < 5: colours only (informational)
}
#: Flags that make a row unusable for training / χ² evaluation.
INVALID_FLAGS = (
    STAR_FLAGS["no_reference_band"]
    | STAR_FLAGS["bad_theta"]
    | STAR_FLAGS["bad_reddening"]
    | STAR_FLAGS["too_few_bands"]
)


def star_flag_names(value: int) -> list[str]:
    """Names of the :data:`STAR_FLAGS` bits set in ``value``."""
    return [name for name, bit in STAR_FLAGS.items() if int(value) & bit]


@dataclass(frozen=True)
class StellarStars:
    """Arrays of a prepared star sample (row-aligned, NumPy; NaN-free where the model reads them).

    Attributes
    ----------
    bands : tuple of str
    theta, theta_cov : (n, 3), (n, 3, 3)
        Physical θ and its covariance (floored); zeros on ``bad_theta`` rows.
    mag, mag_var : (n, b)
        Apparent magnitudes and variances; 0 and 1 (placeholders) where ``band_obs`` is False.
    band_obs : (n, b) bool
    parallax, parallax_err : (n,)
        As given (NaN allowed).
    plx_ok : (n,) bool
        ``ϖ/σ_ϖ ≥ 5``: the absolute magnitude is constrained.
    mu, mu_var : (n,)
        Naive distance modulus and its variance (0 where not ``plx_ok``).
    E0, E0_var : (n,)
        Reddening estimate and variance (floored): the fixed prior of the reddening update (Eqs. 8–9).
    flags : (n,) int
        :data:`STAR_FLAGS` bitfield.
    labels : dict
        Extra per-row columns carried along (e.g. ``atm_source``).
    """

    bands: tuple[str, ...]
    theta: np.ndarray
    theta_cov: np.ndarray
    mag: np.ndarray
    mag_var: np.ndarray
    band_obs: np.ndarray
    parallax: np.ndarray
    parallax_err: np.ndarray
    plx_ok: np.ndarray
    mu: np.ndarray
    mu_var: np.ndarray
    E0: np.ndarray
    E0_var: np.ndarray
    flags: np.ndarray
    labels: dict

    def __len__(self) -> int:
        return int(self.flags.shape[0])

    @property
    def valid(self) -> np.ndarray:
        """Rows usable for training and χ² evaluation."""
        return (self.flags & INVALID_FLAGS) == 0

    @property
    def colour_obs(self) -> np.ndarray:
        """``(n, b)`` mask of the observed entries of ``c = B m`` (entry 0 needs the parallax)."""
        ref = self.band_obs[:, :1]
        obs = self.band_obs & ref
        return np.concatenate([obs[:, :1] & self.plx_ok[:, None], obs[:, 1:]], axis=1)

    def subset(self, index) -> StellarStars:
        """Rows ``index`` (boolean mask or integer indices)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "bands":
                out[f.name] = value
            elif f.name == "labels":
                out[f.name] = {k: np.asarray(v)[index] for k, v in value.items()}
            else:
                out[f.name] = value[index]
        return StellarStars(**out)

    def with_reddening(self, E0, E0_var) -> StellarStars:
        """A copy with another reddening prior."""
        return replace(self, E0=np.asarray(E0, float), E0_var=np.asarray(E0_var, float))


def _needs_floor(err, floor, mode):
    if mode == "add":
        return True
    if mode == "none":
        return False
    finite = err[np.isfinite(err) & (err > 0)]
    return finite.size == 0 or bool(np.min(finite) < floor * (1 - 1e-4))


def prepare_stars(
    table: Mapping[str, np.ndarray],
    bands: Sequence[str] | None = None,
    *,
    floors: str = "auto",
    max_mag_err: float = MAX_MAG_ERR,
    min_parallax_snr: float = MIN_PARALLAX_SNR,
) -> StellarStars:
    """Floors, masks and flags for a star table (§3).

    Parameters
    ----------
    table : mapping
        ``mag``, ``mag_err`` ``(n, b_table)``, ``bands`` (names of those columns), ``parallax``, ``parallax_err``
        [mas]; for training / evaluation also ``theta`` ``(n, 3)`` (Teff, logg, [Fe/H]), ``theta_cov``
        ``(n, 3, 3)`` and ``E``, ``E_err`` (reddening estimate). Missing optional keys are NaN (θ) or 0 ± ∞.
    bands : sequence of str, optional
        Subset / order of bands to model (default: all of ``table["bands"]``); the first is the reference band.
    floors : {"auto", "add", "none"}
        Whether to add the §3 error floors (see the module docstring).
    max_mag_err, min_parallax_snr : float
        §3.2 thresholds.

    Returns
    -------
    StellarStars
    """
    if floors not in ("auto", "add", "none"):
        raise ValueError(f"floors must be 'auto', 'add' or 'none', got {floors!r}")
    table_bands = [get_band(b).name for b in table["bands"]]
    bands = tuple(table_bands) if bands is None else tuple(get_band(b).name for b in bands)
    missing = [b for b in bands if b not in table_bands]
    if missing:
        raise ValueError(f"bands {missing} are not in the table (it has {table_bands})")
    cols = [table_bands.index(b) for b in bands]
    mag = np.asarray(table["mag"], float)
    mag_err = np.asarray(table["mag_err"], float)
    if mag.ndim != 2 or mag.shape != mag_err.shape or mag.shape[1] != len(table_bands):
        raise ValueError(f"mag and mag_err must be (n, {len(table_bands)}), got {mag.shape} and {mag_err.shape}")
    mag, mag_err = mag[:, cols], mag_err[:, cols]
    n = mag.shape[0]

    def column(name, default):
        if name in table and table[name] is not None:
            value = np.asarray(table[name], float)
            if value.shape[0] != n:
                raise ValueError(f"{name} has {value.shape[0]} rows, mag has {n}")
            return value
        return np.full(n, default) if np.ndim(default) == 0 else np.broadcast_to(default, (n, *np.shape(default)))

    flags = np.zeros(n, np.int64)
    # photometry (§3.2)
    bad_err = np.isfinite(mag) & ~(np.isfinite(mag_err) & (mag_err > 0))
    flags[bad_err.any(axis=1)] |= STAR_FLAGS["bad_band_error"]
    err = np.where(np.isfinite(mag_err) & (mag_err > 0), mag_err, np.nan)
    if _needs_floor(err, MAG_FLOOR, floors):
        err = np.sqrt(err**2 + MAG_FLOOR**2)
    band_obs = np.isfinite(mag) & np.isfinite(err) & (err <= max_mag_err)
    mag_out = np.where(band_obs, mag, 0.0)
    var_out = np.where(band_obs, err**2, 1.0)
    flags[~band_obs[:, 0]] |= STAR_FLAGS["no_reference_band"]

    # parallax (§3.2, App. A)
    plx = column("parallax", np.nan)
    plx_err = column("parallax_err", np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = plx / plx_err
        plx_ok = np.isfinite(snr) & (plx_err > 0) & (snr >= min_parallax_snr)
        mu = np.where(plx_ok, 10.0 - 5.0 * np.log10(np.where(plx_ok, plx, 1.0)), 0.0)
        mu_var = np.where(plx_ok, (5.0 / np.log(10.0) / np.where(plx_ok, snr, 1.0)) ** 2, 0.0)
    flags[~plx_ok] |= STAR_FLAGS["no_parallax"]

    # θ (§3.1)
    theta = column("theta", np.full(3, np.nan))
    theta_cov = column("theta_cov", np.zeros((3, 3)))
    good_theta = np.all(np.isfinite(theta), axis=1) & np.all(np.isfinite(theta_cov), axis=(1, 2))
    diag = np.where(good_theta[:, None], np.diagonal(theta_cov, axis1=1, axis2=2), 1.0)
    good_theta &= np.all(diag >= 0, axis=1)
    theta_cov = np.array(theta_cov, float)
    floor_theta = np.asarray(THETA_FLOOR) ** 2
    for k in range(3):
        std_k = np.sqrt(np.where(good_theta, diag[:, k], np.nan))
        if _needs_floor(std_k, THETA_FLOOR[k], floors):
            theta_cov[:, k, k] = theta_cov[:, k, k] + floor_theta[k]
    if good_theta.any():
        eig = np.linalg.eigvalsh(np.where(good_theta[:, None, None], theta_cov, np.eye(3)))
        good_theta &= eig.min(axis=1) > 0
    flags[~good_theta] |= STAR_FLAGS["bad_theta"]
    theta = np.where(good_theta[:, None], theta, 0.0)
    theta_cov = np.where(good_theta[:, None, None], theta_cov, np.diag(floor_theta))

    # reddening (§3.3)
    E = column("E", np.nan)
    E_err = column("E_err", np.nan)
    good_E = np.isfinite(E) & np.isfinite(E_err) & (E_err >= 0)
    E_err = np.where(good_E, E_err, np.nan)
    if _needs_floor(E_err, E_FLOOR, floors):
        E_err = np.sqrt(E_err**2 + E_FLOOR**2)
    good_E &= E_err > 0
    flags[~good_E] |= STAR_FLAGS["bad_reddening"]

    colour_count = (band_obs[:, 1:] & band_obs[:, :1]).sum(axis=1) + (band_obs[:, 0] & plx_ok)
    flags[colour_count < 2] |= STAR_FLAGS["too_few_bands"]

    labels = {k: np.asarray(table[k]) for k in ("atm_source", "r_source", "r_fit", "r_var") if k in table}
    return StellarStars(
        bands=bands,
        theta=theta,
        theta_cov=theta_cov,
        mag=mag_out,
        mag_var=var_out,
        band_obs=band_obs,
        parallax=plx,
        parallax_err=plx_err,
        plx_ok=plx_ok,
        mu=mu,
        mu_var=mu_var,
        E0=np.where(good_E, E, 0.0),
        E0_var=np.where(good_E, E_err**2, 1.0),
        flags=flags,
        labels=labels,
    )
