"""Extinction laws: per-band coefficients ``A_band / E`` as pure JAX functions usable inside NUTS.

Every law is an :class:`ExtinctionLaw`: ``law.coefficients(E, x)`` returns the per-entry coefficients (shape
``(..., n_entries)``) for reddening ``E`` and a second argument ``x`` (effective temperature, intrinsic colour,
or ``None``); ``law.extinction(E, x) = E · coefficients``; ``law.in_range(E, x)`` returns a boolean flag per entry
telling whether the inputs lie inside the law's validity range (it never raises, so it is safe inside ``jit``).
Outside the range the coefficients are still finite (clipped or extrapolated as each law documents).

Laws
    :func:`cranmer_law`
        The fixed conversions of Cranmer et al. §3.2: ``A_G = 2.71 E(g−r)``, ``E(BP−RP) = 0.85 E(g−r)``,
        ``E(BP−G) = 0.39 E(g−r)`` (Gaia DR2; 7000 K blackbody, O'Donnell 1994, R_V = 3.1).
    :func:`blackbody_law`
        Coefficients from an extinction curve (O'Donnell 1994, Cardelli et al. 1989 or Fitzpatrick 1999, evaluated
        once with the `extinction` package) integrated through a passband with a blackbody source. Depends on
        ``Teff`` and, non-linearly, on the amount of dust (Green et al. Appendix B, Eqs. B19–B31): the attenuated
        spectrum is integrated inside JAX, so the law is differentiable in both.
    :func:`dustapprox_law`
        The Teff-, A0- and R0-dependent polynomial models of Fouesneau et al. (``dustapprox``; Kurucz atmospheres
        through the real Gaia (E)DR3, 2MASS and WISE passbands), read from the tables the package ships (no
        download) and evaluated in JAX.
    :func:`zhang_yuan_law`
        The empirical temperature- and reddening-dependent coefficients of Zhang & Yuan (2023, ApJS 264, 14,
        arXiv:2210.15918) that FLOWER (§2.8) uses: ``R = a T³ + b T² + c T + d E² + e E + f`` per band, with ``E =
        E(B−V)`` on the SFD scale and per-band Teff ranges.

Passbands
    :func:`tabulated_passband` reads real transmission curves from the filter library shipped inside the `pyphot`
    package (offline). The Gaia (E)DR3 curve (Riello et al. 2021) is not in that library: G/BP/RP (DR3) use the
    Maíz Apellániz & Weiler (2018) revised DR2 curves as an approximation (the bands differ by a few nm). Against
    dustapprox (real EDR3 curves, but also Kurucz spectra and another F99 implementation) the BP/G and RP/G
    coefficient ratios agree within 4 % and the coefficients within 12 % at 5000–7000 K: an upper bound on the
    cost of the approximation (see the tests). :func:`gaussian_passband`
    is a Gaussian with the registry's mean wavelength and RMS width (Green et al. Appendix B's approximation),
    usable without any passband library.

Note on Cranmer's numbers
    Integrating a 7000 K blackbody through the real Gaia DR2 and PS1 passbands with O'Donnell (1994), R_V = 3.1
    gives ``A_G/E(g−r) ≈ 2.96`` (Fitzpatrick 1999: 2.65) against Cranmer's 2.71, but ``E(BP−RP)/E(g−r) ≈ 1.51``
    and ``E(BP−G)/E(g−r) ≈ 0.69`` against Cranmer's 0.85 and 0.39. The empirical Zhang & Yuan (2023) single-valued
    coefficients give 2.67, 1.42 and 0.72, so Cranmer's two colour-excess numbers are not reproducible from the
    recipe the paper states; :func:`cranmer_law` keeps the published values for reproducing that paper.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from .bands import _canonical, get_band

__all__ = [
    "CRANMER_COEFFICIENTS",
    "ZHANG_YUAN_SIMPLE",
    "ExtinctionLaw",
    "Passband",
    "blackbody_law",
    "constant_law",
    "cranmer_law",
    "dustapprox_law",
    "extinction_curve",
    "gaussian_passband",
    "tabulated_passband",
    "zhang_yuan_law",
    "zhang_yuan_teff_from_bp_rp0",
]

Array = jnp.ndarray


@dataclass(frozen=True, eq=False)
class ExtinctionLaw:
    """A reddening law: pure JAX functions of (reddening, second argument).

    ``coefficients`` and ``in_range`` are jit-compiled once here; they are traceable, so they can be called inside
    a NumPyro model, ``jax.grad`` or ``jax.vmap``.

    Attributes
    ----------
    name : str
        Short description (law, curve, passbands).
    entries : tuple of str
        What each coefficient refers to: band names, or colours written ``"X-Y"``.
    reddening : str
        What ``E`` is (``"E(g-r)"``, ``"A_V"``, ``"E(B-V)"``, ``"A0"``).
    argument : str or None
        What the second argument ``x`` is (``"Teff [K]"``, ``"intrinsic BP-RP [mag]"``), or ``None`` if unused.
    coefficients : callable
        ``(E, x) -> (..., n_entries)``: ``A_entry / E``. Broadcasts ``E`` and ``x`` against each other.
    in_range : callable
        ``(E, x) -> (..., n_entries)`` bool: inputs inside the validity range of each entry.
    reference : str
        Citation.
    """

    name: str
    entries: tuple[str, ...]
    reddening: str
    argument: str | None
    coefficients: Callable[..., Array]
    in_range: Callable[..., Array]
    reference: str

    def __post_init__(self):
        object.__setattr__(self, "coefficients", jax.jit(self.coefficients))
        object.__setattr__(self, "in_range", jax.jit(self.in_range))

    def extinction(self, E, x=None) -> Array:
        """``A = E · coefficients(E, x)``, shape ``(..., n_entries)``."""
        return jnp.asarray(E)[..., None] * self.coefficients(E, x)

    def __repr__(self) -> str:
        return f"ExtinctionLaw({self.name!r}, entries={self.entries}, E={self.reddening}, x={self.argument})"


def _reddening_flag(E, n):
    E = jnp.asarray(E)
    ok = jnp.isfinite(E) & (E >= 0)
    return jnp.broadcast_to(ok[..., None], ok.shape + (n,))


def constant_law(
    name: str, entries: Sequence[str], coefficients: Sequence[float], reddening: str, reference: str
) -> ExtinctionLaw:
    """A law with fixed coefficients (no dependence on E or on the star); ``in_range`` flags finite ``E ≥ 0``.

    Parameters
    ----------
    name, entries, reddening, reference
        See :class:`ExtinctionLaw`.
    coefficients : sequence of float
        ``A_entry / E`` for each entry.
    """
    entries = tuple(entries)
    values = np.asarray(coefficients, dtype=float)
    if values.shape != (len(entries),):
        raise ValueError(f"{len(entries)} entries but coefficients of shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"non-finite coefficients {values}")

    def coefficients_fn(E, x=None):
        E = jnp.asarray(E)
        return jnp.broadcast_to(jnp.asarray(values, dtype=jnp.result_type(float)), E.shape + values.shape)

    def in_range(E, x=None):
        return _reddening_flag(E, len(entries))

    return ExtinctionLaw(name, entries, reddening, None, coefficients_fn, in_range, reference)


# --------------------------------------------------------------------------------------------------------------
# Cranmer et al. (paper 000) §3.2
# --------------------------------------------------------------------------------------------------------------

CRANMER_COEFFICIENTS = {"G_DR2": 2.71, "BP_DR2-RP_DR2": 0.85, "BP_DR2-G_DR2": 0.39}
"""Cranmer et al. §3.2: A_G, E(BP−RP), E(BP−G) per unit E(g−r) (Gaia DR2)."""


def cranmer_law() -> ExtinctionLaw:
    """Cranmer et al. §3.2 fixed conversions, entries ``(G, BP−RP, BP−G)`` per unit ``E(g−r)``.

    This is the order of Cranmer's modelled vector (G, BP−RP, BP−G). See the module note on how these
    numbers compare with a direct computation.
    """
    return constant_law(
        "Cranmer et al. 2021 fixed coefficients (7000 K blackbody, O'Donnell 94, R_V=3.1)",
        tuple(CRANMER_COEFFICIENTS),
        tuple(CRANMER_COEFFICIENTS.values()),
        "E(g-r)",
        "Cranmer et al. (paper 000) §3.2",
    )


# --------------------------------------------------------------------------------------------------------------
# Passbands and extinction curves (numpy, build time)
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Passband:
    """A transmission curve on a wavelength grid.

    Attributes
    ----------
    band : str
        Registry name.
    wavelength_nm, throughput : numpy.ndarray
        The curve (throughput ≥ 0, arbitrary normalisation).
    detector : {"photon", "energy"}
        Photon-counting curves weight the flux by ``λ`` (Green et al. Eq. B19); energy curves do not.
    source : str
        Provenance, including any approximation.
    """

    band: str
    wavelength_nm: np.ndarray
    throughput: np.ndarray
    detector: Literal["photon", "energy"]
    source: str


# registry name -> (pyphot library key, provenance)
_PYPHOT_CURVES = {
    "G_DR2": ("GaiaDR2_weiler_G", "Gaia DR2 G, Maíz Apellániz & Weiler (2018) revised curve"),
    "BP_DR2": ("GaiaDR2_weiler_BPfaint", "Gaia DR2 BP (faint regime), Maíz Apellániz & Weiler (2018)"),
    "RP_DR2": ("GaiaDR2_weiler_RP", "Gaia DR2 RP, Maíz Apellániz & Weiler (2018)"),
    "G": ("GaiaDR2_weiler_G", "APPROXIMATION: Gaia DR2 MAW (2018) G curve standing in for (E)DR3 G"),
    "BP": ("GaiaDR2_weiler_BPfaint", "APPROXIMATION: Gaia DR2 MAW (2018) BP (faint) curve for (E)DR3 BP"),
    "RP": ("GaiaDR2_weiler_RP", "APPROXIMATION: Gaia DR2 MAW (2018) RP curve for (E)DR3 RP"),
    **{b: (f"PS1_{b}", f"Pan-STARRS1 {b}, Tonry et al. (2012)") for b in "grizy"},
    **{b: (f"2MASS_{b}", f"2MASS {b}, Cohen et al. (2003)") for b in ("J", "H", "Ks")},
    "W1": ("WISE_RSR_W1", "WISE W1, Wright et al. (2010)"),
    "W2": ("WISE_RSR_W2", "WISE W2, Wright et al. (2010)"),
}
_UNIT_TO_NM = {"nm": 1.0, "nanometer": 1.0, "angstrom": 0.1, "aa": 0.1, "um": 1000.0, "micron": 1000.0}


def _package_dir(name: str, pip_hint: str) -> str:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the {name!r} package is not installed; install it with `{pip_hint}`")
    return next(iter(spec.submodule_search_locations))


@functools.cache
def tabulated_passband(band: str) -> Passband:
    """Real transmission curve from the filter library shipped inside `pyphot` (read offline with h5py).

    Gaia (E)DR3 G/BP/RP are approximated by the DR2 revised curves (see the module docstring).

    Raises
    ------
    ImportError
        If `pyphot` is not installed (``pip install pyphot``; ``--no-deps`` suffices, only its data file is read).
    KeyError
        Unknown band.
    """
    import h5py

    name = _canonical(band)
    key, source = _PYPHOT_CURVES[name]
    path = os.path.join(_package_dir("pyphot", "pip install pyphot"), "libs", "new_filters.hd5")
    if not os.path.exists(path):
        raise FileNotFoundError(f"pyphot's filter library {path} is missing (reinstall pyphot)")
    with h5py.File(path, "r") as lib:
        data = lib["filters"][key]
        unit = data.attrs["WAVELENGTH_UNIT"].decode().lower()
        detector = data.attrs["DETECTOR"].decode().lower()
        wavelength = np.asarray(data["WAVELENGTH"], dtype=float) * _UNIT_TO_NM[unit]
        throughput = np.clip(np.asarray(data["THROUGHPUT"], dtype=float), 0.0, None)
    order = np.argsort(wavelength)
    return Passband(name, wavelength[order], throughput[order], detector, source + " (pyphot library)")


def gaussian_passband(band: str, n_sigma: float = 3.0) -> Passband:
    """Gaussian approximation of a passband: the registry's mean wavelength and RMS width (Green et al. App. B).

    A documented approximation (photon-counting, truncated at ``±n_sigma``); it needs no passband library.
    """
    b = get_band(band)
    lam = np.linspace(b.wavelength_nm - n_sigma * b.width_nm, b.wavelength_nm + n_sigma * b.width_nm, 401)
    lam = lam[lam > 100.0]
    thr = np.exp(-0.5 * ((lam - b.wavelength_nm) / b.width_nm) ** 2)
    return Passband(b.name, lam, thr, "photon", f"APPROXIMATION: Gaussian {b.wavelength_nm} ± {b.width_nm} nm")


# documented validity of each curve in the `extinction` package [nm]
_CURVES = {
    "odonnell94": ("odonnell94", 100.0, 3333.3, "O'Donnell (1994), CCM-like IR/UV: 0.3–10 µm⁻¹"),
    "ccm89": ("ccm89", 100.0, 3333.3, "Cardelli, Clayton & Mathis (1989): 0.3–10 µm⁻¹"),
    "fitzpatrick99": ("fitzpatrick99", 91.0, 6000.0, "Fitzpatrick (1999): 910 Å – 6 µm"),
}


def extinction_curve(curve: str, wavelength_nm, r_v: float = 3.1) -> np.ndarray:
    """``A_λ / A_V`` from the `extinction` package (numpy; build time, not inside ``jit``).

    Parameters
    ----------
    curve : {"odonnell94", "ccm89", "fitzpatrick99"}
    wavelength_nm : array_like
        Wavelengths [nm].
    r_v : float
        ``R_V = A_V / E(B−V)``.

    Raises
    ------
    ValueError
        Unknown curve, or wavelengths outside the curve's documented range (the package itself extrapolates
        silently; use ``"fitzpatrick99"`` for WISE bands).
    """
    import extinction

    if curve not in _CURVES:
        raise ValueError(f"unknown extinction curve {curve!r}; choose one of {sorted(_CURVES)}")
    fname, lo, hi, doc = _CURVES[curve]
    lam = np.atleast_1d(np.asarray(wavelength_nm, dtype=float))
    if lam.min() < lo or lam.max() > hi:
        raise ValueError(
            f"wavelengths {lam.min():.0f}–{lam.max():.0f} nm outside the range of {doc} ({lo:.0f}–{hi:.0f} nm)"
        )
    return getattr(extinction, fname)(lam * 10.0, 1.0, r_v)


# --------------------------------------------------------------------------------------------------------------
# Blackbody through passband and curve, Teff- and dust-dependent (Green et al. Appendix B)
# --------------------------------------------------------------------------------------------------------------

_HC_OVER_K_NM_K = 1.438776877e7  # h c / k_B [nm K]
_LINEAR_LIMIT = 1e-4  # |A_V| below which the linear (small-dust) limit is used


def _log_expm1(x):
    safe = jnp.minimum(x, 30.0)
    return jnp.where(x > 30.0, x, jnp.log(jnp.expm1(jnp.maximum(safe, 1e-30))))


def blackbody_law(
    bands: Sequence[str],
    curve: str = "odonnell94",
    r_v: float = 3.1,
    passbands: Literal["tabulated", "gaussian"] = "tabulated",
    reddening: Literal["A_V", "E(B-V)"] = "A_V",
    n_points: int = 256,
) -> ExtinctionLaw:
    """Coefficients from an extinction curve integrated through passbands with a blackbody source.

    For band ``b`` with transmission ``T``, photon weight ``w(λ) = T(λ) λ B_λ(λ, Teff)`` (energy counters: no
    ``λ``) and curve ``a(λ) = A_λ / A_V``,

    ``A_b(A_V, Teff) = −2.5 log10[ ∫ w 10^(−0.4 A_V a) dλ / ∫ w dλ ]``   (Green et al. Eq. B19)

    and the law returns ``A_b / A_V`` (or ``A_b / E(B−V) = R_V A_b / A_V``). As ``A_V → 0`` this tends to the
    weighted mean of ``a`` (used for ``|A_V| < 1e-4``); at larger ``A_V`` the coefficient falls (the non-linear
    term of Green Eq. B30). The curve and passbands are fixed numpy arrays computed here once; the blackbody and
    the integral are pure JAX, so the law is jit/grad-able in both arguments.

    Parameters
    ----------
    bands : sequence of str or Passband
        Registry band names (their curve is chosen by ``passbands``), or :class:`Passband` objects used as given.
    curve : {"odonnell94", "ccm89", "fitzpatrick99"}
        Extinction curve from the `extinction` package (Cranmer et al. used O'Donnell 94).
    r_v : float
        ``R_V``.
    passbands : {"tabulated", "gaussian"}
        :func:`tabulated_passband` (real curves; needs `pyphot`) or :func:`gaussian_passband` (approximation).
    reddening : {"A_V", "E(B-V)"}
        Unit of ``E`` (with ``A_V = R_V E(B−V)``).
    n_points : int
        Quadrature points per band.

    Returns
    -------
    ExtinctionLaw
        ``coefficients(E, teff)``; ``in_range`` flags ``E ≥ 0`` and ``teff > 0`` (finite).
    """
    if reddening not in ("A_V", "E(B-V)"):
        raise ValueError(f"reddening must be 'A_V' or 'E(B-V)', got {reddening!r}")
    make = {"tabulated": tabulated_passband, "gaussian": gaussian_passband}.get(passbands)
    if make is None:
        raise ValueError(f"passbands must be 'tabulated' or 'gaussian', got {passbands!r}")
    curves = [b if isinstance(b, Passband) else make(_canonical(b)) for b in bands]
    names = tuple(pb.band for pb in curves)
    lam_rows, w0_rows, a_rows = [], [], []
    for pb in curves:
        if pb.detector not in ("photon", "energy"):
            raise ValueError(f"passband {pb.band!r}: unknown detector type {pb.detector!r}")
        support = pb.wavelength_nm[pb.throughput > 1e-3 * pb.throughput.max()]
        lam = np.linspace(support.min(), support.max(), n_points)
        thr = np.interp(lam, pb.wavelength_nm, pb.throughput)
        dl = np.gradient(lam)  # uniform grid: trapezoid-like weights
        dl[[0, -1]] *= 0.5
        w0 = thr * dl * (lam if pb.detector == "photon" else 1.0)
        lam_rows.append(lam)
        w0_rows.append(w0 / w0.max())
        a_rows.append(extinction_curve(curve, lam, r_v))
    lam_nm, w0, a_lam = (np.stack(r) for r in (lam_rows, w0_rows, a_rows))
    scale = r_v if reddening == "E(B-V)" else 1.0

    def coefficients(E, teff):
        dtype = jnp.result_type(float)
        E = jnp.asarray(E, dtype=dtype)
        teff = jnp.asarray(teff, dtype=dtype)
        lam = jnp.asarray(lam_nm, dtype=dtype)
        a = jnp.asarray(a_lam, dtype=dtype)
        t = jnp.where(teff > 0, teff, 1.0)[..., None, None]  # (..., 1, 1)
        log_bb = -5.0 * jnp.log(lam) - _log_expm1(_HC_OVER_K_NM_K / (lam * t))
        log_bb = log_bb - jnp.max(log_bb, axis=-1, keepdims=True)
        w = jnp.asarray(w0, dtype=dtype) * jnp.exp(log_bb)
        w = w / jnp.sum(w, axis=-1, keepdims=True)  # (..., n_bands, n_points)
        linear = jnp.sum(w * a, axis=-1)
        a_v = (scale * E)[..., None]
        big = jnp.abs(a_v) > _LINEAR_LIMIT
        a_v_safe = jnp.where(big, a_v, 1.0)
        a_band = -2.5 * jnp.log10(jnp.sum(w * 10.0 ** (-0.4 * a_v_safe[..., None] * a), axis=-1))
        return scale * jnp.where(big, a_band / a_v_safe, linear)

    def in_range(E, teff):
        E, teff = jnp.asarray(E), jnp.asarray(teff)
        ok = jnp.isfinite(E) & jnp.isfinite(teff) & (E >= 0) & (teff > 0)
        return jnp.broadcast_to(ok[..., None], ok.shape + (len(names),))

    return ExtinctionLaw(
        f"blackbody through {passbands} passbands, {curve} R_V={r_v}",
        names,
        reddening,
        "Teff [K]",
        coefficients,
        in_range,
        f"Green et al. (paper 001) App. B Eq. B19; curve {_CURVES[curve][3]} via the `extinction` package",
    )


# --------------------------------------------------------------------------------------------------------------
# dustapprox (Fouesneau et al.): Teff-, A0- and R0-dependent polynomials
# --------------------------------------------------------------------------------------------------------------

_DUSTAPPROX_NAMES = {
    "G": "GAIA_GAIA3.G",
    "BP": "GAIA_GAIA3.Gbp",
    "RP": "GAIA_GAIA3.Grp",
    "J": "2MASS_2MASS.J",
    "H": "2MASS_2MASS.H",
    "Ks": "2MASS_2MASS.Ks",
    "W1": "WISE_WISE.W1",
    "W2": "WISE_WISE.W2",
}
_DUSTAPPROX_CURVES = ("F99", "G23")
_DUSTAPPROX_VARIABLES = ("A0", "R0", "teffnorm")
_DUSTAPPROX_STATS = ("passband", "mae", "rmse", "mean_residuals", "std_residuals")  # non-coefficient columns


def _parse_monomial(feature: str) -> tuple[int, int, int]:
    """``"A0^2 teffnorm"`` -> exponents of (A0, R0, teffnorm); ``"1"`` -> (0, 0, 0)."""
    powers = dict.fromkeys(_DUSTAPPROX_VARIABLES, 0)
    if feature.strip() != "1":
        for token in feature.split():
            var, _, power = token.partition("^")
            if var not in powers:
                raise ValueError(f"unexpected dustapprox feature {feature!r}")
            powers[var] += int(power or 1)
    return tuple(powers[v] for v in _DUSTAPPROX_VARIABLES)


@functools.cache
def _dustapprox_tables(curve: str):
    """All shipped (A0, R0, teff) polynomial rows for ``curve``: passband -> (exponents, coefs, meta, file)."""
    from astropy.table import Table

    root = os.path.join(_package_dir("dustapprox", "pip install dustapprox"), "data", "precomputed", "polynomial")
    rows = {}
    for path in sorted(glob.glob(os.path.join(root, "**", "*.ecsv"), recursive=True)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the files declare the passband column as 'object'
            table = Table.read(path, format="ascii.ecsv")
        meta = table.meta
        if meta.get("extinction", {}).get("source") != curve:
            continue
        if list(meta.get("model", {}).get("feature_names", [])) != list(_DUSTAPPROX_VARIABLES):
            continue
        features = [c for c in table.colnames if c not in _DUSTAPPROX_STATS]
        exponents = np.array([_parse_monomial(f) for f in features], dtype=int)
        for row in table:
            coefs = np.array([float(row[f]) for f in features])
            rows[str(row["passband"])] = (exponents, coefs, meta, os.path.basename(path))
    if not rows:
        raise FileNotFoundError(f"no dustapprox (A0, R0, teff) model tables for curve {curve!r} under {root}")
    return rows


def dustapprox_law(bands: Sequence[str], curve: Literal["F99", "G23"] = "F99", r_v: float = 3.1) -> ExtinctionLaw:
    """Teff- and A0-dependent coefficients ``k_x = A_x / A0`` from the `dustapprox` precomputed polynomials.

    dustapprox (Fouesneau et al.) fits, per passband, a degree-3 polynomial in ``(A0, R0, Teff/5040 K)`` to
    synthetic photometry of Kurucz atmospheres through the real passbands, ``A0`` being the extinction at 550 nm.
    The coefficient tables ship inside the package (read here with astropy; nothing is downloaded), and the
    polynomial is evaluated in JAX.

    Parameters
    ----------
    bands : sequence of str
        Among G, BP, RP (Gaia (E)DR3), J, H, Ks, W1, W2. (dustapprox has no PS1 or Gaia DR2 models: use
        :func:`blackbody_law` for those.)
    curve : {"F99", "G23"}
        Fitzpatrick (1999) or Gordon et al. (2023) extinction curve.
    r_v : float
        ``R0`` (≈ ``R_V``), fixed for the law.

    Returns
    -------
    ExtinctionLaw
        ``coefficients(A0, teff)``; ``in_range`` flags ``0 ≤ A0 ≤ A0_max`` and Teff within the model grid (and is
        all-False if ``r_v`` is outside the grid's R0 range). The tables are fitted for A0 ≥ 0.01; 0 ≤ A0 < 0.01
        is accepted as the smooth small-dust limit.

    Raises
    ------
    ImportError
        dustapprox not installed (``pip install dustapprox``; only its data files are read).
    KeyError
        A band without a dustapprox model.
    """
    if curve not in _DUSTAPPROX_CURVES:
        raise ValueError(f"curve must be one of {_DUSTAPPROX_CURVES}, got {curve!r}")
    names = tuple(_canonical(b) for b in bands)
    tables = _dustapprox_tables(curve)
    rows = []
    for name in names:
        key = _DUSTAPPROX_NAMES.get(name)
        if key is None or key not in tables:
            raise KeyError(
                f"dustapprox has no model for band {name!r}; available: {sorted(_DUSTAPPROX_NAMES)} "
                "(use blackbody_law for the others)"
            )
        rows.append(tables[key])
    # one monomial basis for all bands (the files share it, but do not rely on that)
    basis = sorted({tuple(e) for r in rows for e in r[0]})
    index = {e: i for i, e in enumerate(basis)}
    weights = np.zeros((len(names), len(basis)))
    for k, (exps, coefs, _meta, _file) in enumerate(rows):
        for e, c in zip(exps, coefs):
            weights[k, index[tuple(e)]] += c
    exponents = np.array(basis, dtype=int)  # (n_monomials, 3)
    teff_lo = max(float(r[2]["atmosphere"]["teff"][0]) for r in rows)
    teff_hi = min(float(r[2]["atmosphere"]["teff"][1]) for r in rows)
    a0_hi = min(float(r[2]["extinction"]["A0"][1]) for r in rows)
    r0_lo = max(float(r[2]["extinction"]["R0"][0]) for r in rows)
    r0_hi = min(float(r[2]["extinction"]["R0"][1]) for r in rows)
    r0_ok = bool(r0_lo - 1e-6 <= r_v <= r0_hi + 1e-6)
    max_power = int(exponents.max())

    def _powers(v):  # (..., max_power + 1) = [1, v, v², …] without pow (finite gradients at v = 0)
        out = [jnp.ones_like(v)]
        for _ in range(max_power):
            out.append(out[-1] * v)
        return jnp.stack(out, axis=-1)

    def coefficients(A0, teff):
        dtype = jnp.result_type(float)
        A0 = jnp.asarray(A0, dtype=dtype)
        teff = jnp.asarray(teff, dtype=dtype)
        A0, teff = jnp.broadcast_arrays(A0, teff)
        variables = (A0, jnp.full_like(A0, r_v), teff / 5040.0)
        monomials = jnp.ones(A0.shape + (len(basis),), dtype=dtype)
        for j, v in enumerate(variables):
            monomials = monomials * jnp.take(_powers(v), jnp.asarray(exponents[:, j]), axis=-1)
        return monomials @ jnp.asarray(weights.T, dtype=dtype)

    def in_range(A0, teff):
        A0, teff = jnp.broadcast_arrays(jnp.asarray(A0), jnp.asarray(teff))
        ok = (A0 >= 0) & (A0 <= a0_hi) & (teff >= teff_lo) & (teff <= teff_hi) & jnp.asarray(r0_ok)
        return jnp.broadcast_to(ok[..., None], ok.shape + (len(names),))

    files = sorted({r[3] for r in rows})
    return ExtinctionLaw(
        f"dustapprox {curve} Kurucz polynomials, R0={r_v}",
        names,
        "A0",
        "Teff [K]",
        coefficients,
        in_range,
        f"Fouesneau et al. dustapprox precomputed models ({', '.join(files)})",
    )


# --------------------------------------------------------------------------------------------------------------
# Zhang & Yuan (2023): the law FLOWER uses
# --------------------------------------------------------------------------------------------------------------

# Zhang & Yuan 2023, ApJS 264, 14 (arXiv:2210.15918): per entry
#   [single-valued R, a, b, c, d, e, f] with R(T, E) = a T^3 + b T^2 + c T + d E^2 + e E + f,
# and the Teff range [K] of validity. Values as distributed by the authors in their `extinction_coefficient`
# package (v1.7/1.8, github.com/vnohhf/extinction_coefficient, whose README points to the paper's Table 4 for the
# Teff ranges); FLOWER's public code (extinction_law.py) carries the same table.
_ZHANG_YUAN = {
    "g": ((3.248, -8.98e-11, 1.72e-06, -0.0108, -0.556, -0.712, 25.885), (4000.0, 8000.0)),
    "r": ((2.363, -5.76e-11, 1.11e-06, -0.00704, -0.273, -0.542, 17.255), (4000.0, 8000.0)),
    "i": ((1.791, -3.56e-11, 6.91e-07, -0.00443, -0.417, -0.250, 11.249), (4000.0, 8000.0)),
    "z": ((1.398, -3.12e-11, 6.0e-07, -0.00381, -0.876, 0.253, 9.372), (4000.0, 9000.0)),
    "y": ((1.146, -2.67e-11, 5.05e-07, -0.00317, -0.957, 0.407, 7.699), (4000.0, 8000.0)),
    "J": ((0.748, -3.99e-12, 7.3e-08, -0.000448, 0.055, -0.176, 1.720), (4000.0, 8000.0)),
    "H": ((0.453, 3.85e-13, -9.67e-09, 7.91e-05, -0.366, 0.225, 0.213), (4000.0, 8000.0)),
    "Ks": ((0.306, 0.0, 0.0, 0.0, 0.0, 0.0, 0.306), (4000.0, 8000.0)),
    "W1": ((0.194, -7.18e-13, 1.11e-08, -5.18e-05, 0.128, -0.038, 0.261), (4000.0, 8000.0)),
    "W2": ((0.138, 5.4e-12, -9.97e-08, 0.000615, 0.030, 0.062, -1.149), (4000.0, 8000.0)),
    "BP": ((2.998, -1.27e-11, 2.76e-07, -0.00188, -0.673, -0.531, 7.185), (4000.0, 10000.0)),
    "G": ((2.364, -1.05e-11, 2.24e-07, -0.00145, -0.681, -0.381, 5.376), (4000.0, 10000.0)),
    "RP": ((1.737, -7.88e-12, 1.76e-07, -0.00126, -0.630, -0.057, 4.670), (4000.0, 9000.0)),
    "BP-RP": ((1.261, -4.864e-12, 1.006e-07, -6.201e-04, -4.329e-02, -4.741e-01, 2.515), (4000.0, 9000.0)),
}
_ZHANG_YUAN_EBV_MAX = 0.5
# Teff = polyval(coefs, (BP−RP)_0), valid for (BP−RP)_0 ≤ 1.61 (authors' package; FLOWER's code uses it too)
_ZHANG_YUAN_TEFF_POLY = (1187.26193963, -4925.6478914, 8268.06749031, -9038.59055765, 9693.00903561)
_ZHANG_YUAN_BPRP0_MAX = 1.61

ZHANG_YUAN_SIMPLE = {k: v[0][0] for k, v in _ZHANG_YUAN.items()}
"""Zhang & Yuan (2023) single-valued coefficients A_entry / E(B−V) (Teff- and E-independent)."""


def zhang_yuan_teff_from_bp_rp0(bp_rp0) -> Array:
    """Teff [K] from intrinsic Gaia (BP−RP)₀ with Zhang & Yuan's quartic (valid for (BP−RP)₀ ≤ 1.61).

    Redder colours than 1.61 return 4000 K, as in the authors' package.
    """
    x = jnp.asarray(bp_rp0, dtype=jnp.result_type(float))
    teff = jnp.polyval(jnp.asarray(_ZHANG_YUAN_TEFF_POLY, dtype=x.dtype), x)
    return jnp.where(x > _ZHANG_YUAN_BPRP0_MAX, 4000.0, teff)


def zhang_yuan_law(bands: Sequence[str], argument: Literal["teff", "bp_rp0"] = "teff") -> ExtinctionLaw:
    """Zhang & Yuan (2023) temperature- and reddening-dependent coefficients ``R(E, C) = A / E(B−V)`` (FLOWER §2.8).

    ``R = a T³ + b T² + c T + d E² + e E + f`` per entry, with ``E = E(B−V)`` (SFD scale) and ``T = Teff``.
    No extrapolation: ``T`` is clipped to each entry's Teff range and ``E`` to ``[0, 0.5]`` mag, the fit range
    (the authors' package clips ``T`` and ``E > 0.5``; FLOWER's code also clips ``E < 0``); ``in_range`` reports
    when clipping happened.

    Parameters
    ----------
    bands : sequence of str
        Among G, BP, RP (Gaia (E)DR3 — the published fit is for those passbands, not DR2), g r i z y (PS1),
        J H Ks, W1 W2, and the colour ``"BP-RP"`` (fitted directly by the authors).
    argument : {"teff", "bp_rp0"}
        Second argument of the law: ``Teff`` [K], or the intrinsic colour (BP−RP)₀ converted with
        :func:`zhang_yuan_teff_from_bp_rp0` (what FLOWER does with its flow's intrinsic colour).

    Returns
    -------
    ExtinctionLaw
        ``coefficients(ebv, x)`` and per-entry ``in_range(ebv, x)``.
    """
    if argument not in ("teff", "bp_rp0"):
        raise ValueError(f"argument must be 'teff' or 'bp_rp0', got {argument!r}")
    names = []
    for b in bands:
        name = b if b == "BP-RP" else _canonical(b)
        if name not in _ZHANG_YUAN:
            raise KeyError(
                f"Zhang & Yuan (2023) give no coefficients for {b!r}; available: {sorted(_ZHANG_YUAN)} "
                "(Gaia names are the (E)DR3 passbands)"
            )
        names.append(name)
    names = tuple(names)
    poly = np.array([_ZHANG_YUAN[n][0][1:] for n in names])  # (n, 6)
    ranges = np.array([_ZHANG_YUAN[n][1] for n in names])  # (n, 2)

    def _teff(x):
        x = jnp.asarray(x, dtype=jnp.result_type(float))
        return zhang_yuan_teff_from_bp_rp0(x) if argument == "bp_rp0" else x

    def coefficients(ebv, x):
        dtype = jnp.result_type(float)
        ebv = jnp.clip(jnp.asarray(ebv, dtype=dtype), 0.0, _ZHANG_YUAN_EBV_MAX)[..., None]
        t = jnp.clip(_teff(x)[..., None], jnp.asarray(ranges[:, 0], dtype), jnp.asarray(ranges[:, 1], dtype))
        a, b, c, d, e, f = (jnp.asarray(poly[:, k], dtype=dtype) for k in range(6))
        return ((a * t + b) * t + c) * t + (d * ebv + e) * ebv + f

    def in_range(ebv, x):
        ebv = jnp.asarray(ebv)[..., None]
        t = _teff(x)[..., None]
        ok = (ebv >= 0) & (ebv <= _ZHANG_YUAN_EBV_MAX) & (t >= ranges[:, 0]) & (t <= ranges[:, 1])
        if argument == "bp_rp0":
            ok = ok & (jnp.asarray(x)[..., None] <= _ZHANG_YUAN_BPRP0_MAX)
        return ok

    return ExtinctionLaw(
        "Zhang & Yuan 2023 R(Teff, E(B-V))",
        names,
        "E(B-V)",
        "Teff [K]" if argument == "teff" else "intrinsic BP-RP [mag]",
        coefficients,
        in_range,
        "Zhang & Yuan 2023, ApJS 264, 14 (arXiv:2210.15918), Table 4 / authors' extinction_coefficient package",
    )
