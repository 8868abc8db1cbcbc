"""Synthetic APOGEE-like red giants with known parallaxes: the full-size test problem (D = 7,414).

Stars
    Red-giant-branch points (PARSEC stage 3) with ``0 < log g < 2.2`` of the PARSEC isochrones shipped with the
    simulator (:func:`jaxstars.astro.simulate.parsec_grid`), ages 1–12.6 Gyr and −1.5 ≤ [M/H] ≤ 0.3, drawn with
    the Kroupa IMF by the simulator's interval sampler (:func:`~jaxstars.astro.simulate.isochrones.interval_table`,
    ``mass_in_interval``, ``interpolate``): absolute G, BP, RP, J, H, Ks, Teff, log g, [M/H] are the isochrones'.
    W1 and W2 are not in the grid: ``Ks − W1 = 0.06 + 0.10 (J − Ks − 0.7)`` and ``Ks − W2 = 0.03 + 0.05 (J − Ks − 0.7)``
    (a documented approximation of the red-giant locus, enough for a linear model of magnitudes).
Positions and dust
    Distances log-uniform in [0.8, 20] kpc; an APOGEE-like selection ``H < 12.2`` (redrawn until N stars pass);
    ``A_V = (d / 1 kpc) · 0.35 · Gamma(2, 1/2)`` (patchy, growing with distance) with fixed ``A_b / A_V`` of
    :data:`EXTINCTION_RATIOS` (approximate Cardelli-like values for a 4500 K giant).
Astrometry
    ``ϖ_true = 1000 / d`` mas; ``ϖ_Gaia = ϖ_true − ϖ₀ + σ ε`` with the simulator's Gaia parallax error at the
    observed G times ``parallax_error_scale`` (DR2 was ~1.5× worse than EDR3) and the zero-point offset ϖ₀
    (default 0.03 mas): distant stars get negative parallaxes, which are kept. Magnitude errors: Gaia from the
    simulator, 2MASS/WISE 0.02–0.03 mag.
Spectra
    ``L`` pixels (default 7,405) log-uniform in wavelength over 1.51–1.70 µm; ``n_lines`` Gaussian absorption lines
    (width 1.5 pixels), each with an optical depth linear in the labels, ``τ_i = max(0, a_i + b_i ΔT + c_i Δlog g +
    e_i [M/H])`` (ΔT = (Teff − 4300 K) / 500 K, Δlog g = log g − 1.5), and ``f = exp(−Σ_i τ_i φ_i(λ))`` with
    Gaussian noise of 1/SNR, SNR log-uniform in [50, 300]. Pixels farther than 4 line widths from every line carry
    no information (``pixel_signal == False``): the L1 should zero them.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
from astropy.table import Table

__all__ = ["EXTINCTION_RATIOS", "SyntheticSpectrophot", "apogee_wavelengths", "make_synthetic"]

EXTINCTION_RATIOS: dict[str, float] = {
    "G": 0.79,
    "BP": 1.02,
    "RP": 0.59,
    "J": 0.28,
    "H": 0.18,
    "Ks": 0.12,
    "W1": 0.07,
    "W2": 0.05,
}
"""A_band / A_V used for the synthetic stars (approximate, for a cool giant)."""

_BANDS = ("G", "BP", "RP", "J", "H", "Ks", "W1", "W2")


def apogee_wavelengths(n_pixels: int = 7405) -> np.ndarray:
    """An APOGEE-like wavelength grid [µm]: ``n_pixels`` log-uniform over 1.51–1.70 µm."""
    return np.exp(np.linspace(np.log(1.51), np.log(1.70), n_pixels))


@dataclass(frozen=True)
class SyntheticSpectrophot:
    """A synthetic sample (see the module docstring).

    Attributes
    ----------
    table : astropy.table.Table
        Canonical columns ``mag_<b>``/``mag_err_<b>`` for the 8 bands, ``parallax``, ``parallax_error``,
        ``teff``, ``logg``, ``feh`` (+ ``*_err``), ``flux``/``flux_err`` (2-D, N × L), and the truth
        ``true_parallax``, ``true_distance`` [pc], ``true_av``, ``snr_spec``.
    wavelength : numpy.ndarray (L,)
    pixel_signal : numpy.ndarray of bool (L,)
        Pixels within 4 widths of a line (the only pixels that carry information).
    zero_point : float
        The true ϖ₀ [mas] (``ϖ_Gaia + ϖ₀`` is unbiased).
    """

    table: Table
    wavelength: np.ndarray
    pixel_signal: np.ndarray
    zero_point: float


def _draw_giants(n: int, rng: np.random.Generator):
    from jaxstars.astro.simulate.isochrones import interpolate, interval_table, mass_in_interval, parsec_grid

    grid = parsec_grid()
    isos = np.flatnonzero((grid.iso_logage >= 9.0) & (grid.iso_logage <= 10.1) & (grid.iso_mh >= -1.5))
    table = interval_table(grid, isos)
    lo, hi = table.row, table.row + 1
    ok = (grid.label[lo] == 3) & (grid.label[hi] == 3)
    ok &= (grid.logg[lo] < 2.2) & (grid.logg[hi] < 2.2) & (grid.logg[lo] > 0) & (grid.logg[hi] > 0)
    weight = np.where(ok, table.imf_number, 0.0)
    pick = rng.choice(weight.size, size=n, p=weight / weight.sum())
    _, t = mass_in_interval(grid, table.row[pick], table.f_lo[pick], table.f_hi[pick], rng.uniform(size=n))
    q = interpolate(grid, table.row[pick], t)
    idx = [grid.band_index(b) for b in ("G", "BP", "RP", "J", "H", "Ks")]
    absmag = q["absmag"][:, idx]
    jk = absmag[:, 3] - absmag[:, 5]
    w1 = absmag[:, 5] - (0.06 + 0.10 * (jk - 0.7))
    w2 = absmag[:, 5] - (0.03 + 0.05 * (jk - 0.7))
    return np.column_stack([absmag, w1, w2]), 10 ** q["logteff"], q["logg"], q["mh"]


def make_synthetic(
    n_stars: int,
    key=0,
    *,
    n_pixels: int = 7405,
    n_lines: int = 600,
    zero_point: float = 0.03,
    parallax_error_scale: float = 1.5,
    h_limit: float = 12.2,
    dtype=np.float32,
) -> SyntheticSpectrophot:
    """Draw ``n_stars`` synthetic giants with spectra (module docstring). Same key → same sample."""
    seed = int(jax.random.randint(jax.random.PRNGKey(key) if isinstance(key, int) else key, (), 0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    from jaxstars.astro.simulate.errors import gaia_mag_error, gaia_parallax_error

    absmag, teff, logg, mh = [], [], [], []
    dist, av, app = [], [], []
    have = 0
    while have < n_stars:
        m = max(2 * (n_stars - have), 256)
        a, t, g, z = _draw_giants(m, rng)
        d = np.exp(rng.uniform(np.log(800.0), np.log(20000.0), m))
        ext = d / 1000.0 * 0.35 * rng.gamma(2.0, 0.5, m)
        mag = a + 5 * np.log10(d / 10.0)[:, None] + ext[:, None] * np.array([EXTINCTION_RATIOS[b] for b in _BANDS])
        keep = np.flatnonzero(mag[:, 4] < h_limit)[: n_stars - have]
        for lst, v in zip((absmag, teff, logg, mh, dist, av, app), (a, t, g, z, d, ext, mag), strict=True):
            lst.append(v[keep])
        have += keep.size
    absmag, teff, logg, mh, dist, av, app = (np.concatenate(v) for v in (absmag, teff, logg, mh, dist, av, app))
    n = n_stars

    mag_err = np.empty_like(app)
    for k, b in enumerate(("G", "BP", "RP")):
        mag_err[:, k] = np.asarray(gaia_mag_error(b, app[:, 0]))
    mag_err[:, 3:6] = 0.02 + 0.01 * rng.uniform(size=(n, 3))
    mag_err[:, 6:8] = 0.025 + 0.01 * rng.uniform(size=(n, 2))
    mags = app + mag_err * rng.standard_normal(app.shape)

    true_plx = 1000.0 / dist
    plx_err = parallax_error_scale * np.asarray(gaia_parallax_error(app[:, 0]))
    plx = true_plx - zero_point + plx_err * rng.standard_normal(n)

    labels_true = np.column_stack([teff, logg, mh])
    label_err = np.column_stack([np.full(n, 50.0), np.full(n, 0.05), np.full(n, 0.03)])
    labels_obs = labels_true + label_err * rng.standard_normal(labels_true.shape)

    wave = apogee_wavelengths(n_pixels)
    pix = np.arange(n_pixels)
    centres = rng.uniform(5, n_pixels - 5, n_lines)
    width = 1.5
    coef = np.column_stack(
        [
            rng.uniform(0.05, 0.6, n_lines),
            rng.normal(0.0, 0.15, n_lines),
            rng.normal(0.0, 0.08, n_lines),
            rng.normal(0.0, 0.15, n_lines),
        ]
    )
    profiles = np.exp(-0.5 * ((pix[None, :] - centres[:, None]) / width) ** 2)
    profiles[profiles < np.exp(-0.5 * 16.0)] = 0.0
    signal = profiles.max(0) > 0
    design = np.column_stack([np.ones(n), (teff - 4300.0) / 500.0, logg - 1.5, mh])
    tau = np.maximum(design @ coef.T, 0.0)  # (n, n_lines)
    snr = np.exp(rng.uniform(np.log(50.0), np.log(300.0), n))
    flux = np.empty((n, n_pixels), dtype=dtype)
    profiles32 = profiles.astype(np.float32)
    for i in range(0, n, 2048):
        sl = slice(i, i + 2048)
        f = np.exp(-(tau[sl].astype(np.float32) @ profiles32))
        noise = rng.standard_normal(f.shape, dtype=np.float32) / snr[sl, None].astype(np.float32)
        flux[sl] = f + noise
    flux_err = np.broadcast_to((1.0 / snr)[:, None].astype(dtype), flux.shape)

    table = Table()
    for k, b in enumerate(_BANDS):
        table[f"mag_{b}"] = mags[:, k]
        table[f"mag_err_{b}"] = mag_err[:, k]
    table["parallax"] = plx
    table["parallax_error"] = plx_err
    for k, name in enumerate(("teff", "logg", "feh")):
        table[name] = labels_obs[:, k]
        table[f"{name}_err"] = label_err[:, k]
    table["flux"] = flux
    table["flux_err"] = np.ascontiguousarray(flux_err)
    table["true_parallax"] = true_plx
    table["true_distance"] = dist
    table["true_av"] = av
    table["true_teff"], table["true_logg"], table["true_feh"] = teff, logg, mh
    table["snr_spec"] = snr
    table.meta.update({"SOURCE": "jaxstars.models.spectrophot.synthetic", "PLXZP": zero_point})
    return SyntheticSpectrophot(table, wave, signal, zero_point)
