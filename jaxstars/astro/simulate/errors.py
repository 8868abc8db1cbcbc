"""Uncertainty and detection models of the simulator: Gaia-like parallax and photometric errors, PS1 and 2MASS.

All error functions are pure ``jnp`` (usable inside models, e.g. for a selection function), vectorised, and take
*true* magnitudes.

Gaia (E)DR3 parallax (Gaia science-performance relation for (E)DR3, the sky-averaged 5-parameter uncertainty)
    ``σ_ϖ = sqrt(40 + 800 z + 30 z²) µas`` with ``z = 10^{0.4 (max(G, 13) − 15)}``. It gives 0.029, 0.079, 0.62
    and 1.45 mas at G = 15, 17, 20, 21, against the typical values 0.02–0.03, 0.07, 0.5 and 1.3 mas quoted in
    the Gaia EDR3 release summary (Gaia Collaboration, Brown et al. 2021, A&A 649, A1) and Lindegren et al.
    (2021, A&A 649, A2).

Gaia G, BP, RP
    ``σ² = a + b z + c z²`` (same ``z``; photon noise ∝ z, background ∝ z², a calibration floor), with (a, b, c)
    solved so that σ passes exactly through the median uncertainties quoted in the Gaia EDR3 release summary:
    G 0.3, 1, 6 mmag; BP 0.9, 12, 108 mmag; RP 0.6, 6, 52 mmag at G = 13 (and brighter), 17 and 20. BP and RP
    are modelled as functions of G only (their colour dependence is ignored).

PS1 and 2MASS (background-limited detections)
    ``σ = sqrt(σ_floor² + (1.0857 / 5 · 10^{0.4 (m − m₅)})²)``: signal-to-noise 5 at the 5σ limiting magnitude
    m₅ and ∝ flux fainter than the floor. m₅ for PS1 g r i z y is the 3π stacked 5σ depth in the band registry
    (23.3, 23.2, 23.1, 22.3, 21.4; FLOWER §3.2); for 2MASS J H Ks the registry gives the 10σ depth (15.8, 15.1, 14.3;
    Green et al. §3.2), so m₅ = m₁₀ + 2.5 log₁₀ 2. Floors (our choice): 0.01 mag for PS1 (the order of its
    calibration accuracy, Schlafly et al. 2012), 0.02 mag for 2MASS.

Range
    The Gaia relations are evaluated at ``min(max(G, 13), 21)``: constant brighter than 13 (the calibration floor)
    and fainter than 21, where Gaia publishes nothing (only a simulation without a magnitude limit has such stars).

Detection
    A PS1 or 2MASS magnitude is reported when the *observed* magnitude lies between the band's saturation limit
    (registry ``bright_limit``: PS1 13.5/13.5/13.5/13.0/12.0; none for 2MASS) and m₅; otherwise the band is
    missing (NaN). Gaia G/BP/RP are reported for every star passing the G selection.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxstars.astro.bands import get_band

__all__ = [
    "GAIA_EDR3_MEDIAN_ERRORS_MMAG",
    "GAIA_FAINT_LIMIT",
    "SURVEY_ERROR_FLOORS",
    "detection_limits",
    "gaia_mag_error",
    "gaia_parallax_error",
    "survey_mag_error",
]

_BRIGHT_FLOOR_G = 13.0
GAIA_FAINT_LIMIT = 21.0
"""Gaia G beyond which the Gaia error models are held constant (Gaia catalogues nothing fainter)."""
_ANCHOR_G = (13.0, 17.0, 20.0)

GAIA_EDR3_MEDIAN_ERRORS_MMAG: dict[str, tuple[float, float, float]] = {
    "G": (0.3, 1.0, 6.0),
    "BP": (0.9, 12.0, 108.0),
    "RP": (0.6, 6.0, 52.0),
}
"""Median Gaia EDR3 photometric uncertainties [mmag] at G = 13 (and brighter), 17, 20 (EDR3 release summary)."""

SURVEY_ERROR_FLOORS: dict[str, float] = {
    **{f"ps1_{b}": 0.01 for b in "grizy"},
    **{b: 0.02 for b in ("J", "H", "Ks")},
}
"""Error floors [mag] of the PS1 and 2MASS models (our choice, see the module docstring)."""

_SNR5 = 2.5 / np.log(10.0) / 5.0  # σ_m at signal-to-noise 5


def _z(g):
    g = jnp.asarray(g, dtype=jnp.result_type(float))
    return 10.0 ** (0.4 * (jnp.clip(g, _BRIGHT_FLOOR_G, GAIA_FAINT_LIMIT) - 15.0))


def gaia_parallax_error(g) -> jnp.ndarray:
    """Gaia (E)DR3 sky-averaged parallax uncertainty [mas] as a function of true G (module docstring)."""
    z = _z(g)
    return jnp.sqrt(40.0 + 800.0 * z + 30.0 * z * z) / 1000.0


def _gaia_coefficients() -> dict[str, np.ndarray]:
    zs = 10.0 ** (0.4 * (np.asarray(_ANCHOR_G) - 15.0))
    design = np.stack([np.ones(3), zs, zs**2], axis=1)
    return {
        band: np.linalg.solve(design, (np.asarray(s) / 1000.0) ** 2)
        for band, s in GAIA_EDR3_MEDIAN_ERRORS_MMAG.items()
    }


_GAIA_COEFFICIENTS = _gaia_coefficients()


def gaia_mag_error(band: str, g) -> jnp.ndarray:
    """Gaia G, BP or RP magnitude uncertainty [mag] as a function of true G (module docstring)."""
    if band not in _GAIA_COEFFICIENTS:
        raise ValueError(f"no Gaia error model for band {band!r}; expected G, BP or RP")
    a, b, c = (float(v) for v in _GAIA_COEFFICIENTS[band])
    z = _z(g)
    return jnp.sqrt(a + b * z + c * z * z)


def detection_limits(band: str) -> tuple[float, float]:
    """(saturation, 5σ limiting) magnitude of a PS1 (``ps1_x``) or 2MASS band; saturation ``-inf`` if none."""
    if band.startswith("ps1_"):
        b = get_band(band[4:])
        return float(b.bright_limit), float(b.faint_limit)
    if band in ("J", "H", "Ks"):
        b = get_band(band)
        bright = -np.inf if b.bright_limit is None else float(b.bright_limit)
        return bright, float(b.faint_limit) + 2.5 * np.log10(2.0)  # registry gives the 10σ depth
    raise ValueError(f"no detection model for band {band!r}; expected ps1_g … ps1_y, J, H or Ks")


def survey_mag_error(band: str, mag) -> jnp.ndarray:
    """PS1 / 2MASS magnitude uncertainty [mag] of a true magnitude (module docstring)."""
    _, m5 = detection_limits(band)
    floor = SURVEY_ERROR_FLOORS[band]
    m = jnp.asarray(mag, dtype=jnp.result_type(float))
    return jnp.sqrt(floor**2 + (_SNR5 * 10.0 ** (0.4 * (m - m5))) ** 2)
