"""Sky and Galactic geometry: FLOWER's Galactocentric (R, Z) and ICRS ↔ Galactic conversion at the edges.

:func:`galactocentric_rz` is FLOWER's Eqs. 1–2 (O'Callaghan et al.) in pure ``jax.numpy``.  The equations place
the Sun in the Galactic mid-plane direction at ``R☉`` from the centre and simply add ``Z☉`` to the height: there
is no tilt of the Galactic plane for the Sun's height (astropy's ``Galactocentric`` frame tilts by
``asin(Z☉ / R☉)``, 0.18° for the defaults), and Eq. 1 uses ``|sin b|``, so ``Z`` is the *absolute* height of a
star at ``b > 0`` but ``2 Z☉ - z`` (not ``|z|``) for a star below the plane.  We implement the equations as
written, because the FLOWER flow is conditioned on exactly this quantity.

:func:`icrs_to_galactic` and :func:`galactic_to_icrs` use astropy (numpy in, numpy out; astropy ``Quantity``
accepted): use them on catalogues, not inside models.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from astropy import units as u

__all__ = ["R_SUN_PC", "Z_SUN_PC", "galactic_to_icrs", "galactocentric_rz", "icrs_to_galactic"]

#: Sun–Galactic-centre distance adopted by FLOWER (pc).
R_SUN_PC = 8000.0
#: Height of the Sun above the Galactic mid-plane adopted by FLOWER (pc).
Z_SUN_PC = 25.0


def galactocentric_rz(l_deg, b_deg, distance_pc, r_sun=R_SUN_PC, z_sun=Z_SUN_PC, signed=False):
    """Galactocentric cylindrical radius ``R`` and height ``Z`` (FLOWER Eqs. 1–2).

    ``Z = d |sin b| + Z☉`` (Eq. 1, FLOWER's conditioning variable; for b < 0 this is 2Z☉ − z, not the true
    height) and ``R = sqrt(R☉² + d² cos² b − 2 R☉ d cos b cos l)`` (Eq. 2).  With ``signed=True`` the true signed
    height ``Z = d sin b + Z☉`` is returned instead (what a Galaxy density model needs).

    Parameters
    ----------
    l_deg, b_deg : array_like
        Galactic longitude and latitude (degrees).
    distance_pc : array_like
        Heliocentric distance ``d`` (pc).
    r_sun, z_sun : float
        ``R☉`` and ``Z☉`` (pc); defaults 8 kpc and 25 pc as in FLOWER.
    signed : bool
        Return the signed height ``d sin b + Z☉`` rather than FLOWER's ``d |sin b| + Z☉``.

    Returns
    -------
    R, Z : Array
        In pc, broadcast over the inputs.

    Notes
    -----
    ``R`` is evaluated as ``hypot(d cos b cos l − R☉, d cos b sin l)``, algebraically identical to Eq. 2 but
    free of the cancellation that can make the radicand of Eq. 2 slightly negative near the Galactic centre; the
    square root is guarded so that its gradient is finite (zero) at ``R = 0``.
    """
    l_rad = jnp.deg2rad(jnp.asarray(l_deg))
    b_rad = jnp.deg2rad(jnp.asarray(b_deg))
    d = jnp.asarray(distance_pc)
    d_plane = d * jnp.cos(b_rad)
    x = d_plane * jnp.cos(l_rad) - r_sun
    y = d_plane * jnp.sin(l_rad)
    r2 = x**2 + y**2
    nonzero = r2 > 0
    radius = jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, r2, 1.0)), 0.0)
    sin_b = jnp.sin(b_rad)
    height = d * (sin_b if signed else jnp.abs(sin_b)) + z_sun
    return radius, height


def _degrees(x) -> np.ndarray:
    if isinstance(x, u.Quantity):
        return np.asarray(x.to_value(u.deg), dtype=float)
    return np.asarray(x, dtype=float)


def icrs_to_galactic(ra_deg, dec_deg):
    """ICRS (ra, dec) → Galactic (l, b), degrees, via astropy.

    Parameters
    ----------
    ra_deg, dec_deg : array_like or astropy Quantity
        Right ascension and declination (degrees if plain numbers).

    Returns
    -------
    l, b : numpy.ndarray
        Galactic longitude in [0, 360) and latitude (degrees, float64).
    """
    from astropy.coordinates import SkyCoord

    coord = SkyCoord(ra=_degrees(ra_deg) * u.deg, dec=_degrees(dec_deg) * u.deg, frame="icrs")
    gal = coord.galactic
    return np.asarray(gal.l.wrap_at(360 * u.deg).deg), np.asarray(gal.b.deg)


def galactic_to_icrs(l_deg, b_deg):
    """Galactic (l, b) → ICRS (ra, dec), degrees, via astropy.

    Parameters
    ----------
    l_deg, b_deg : array_like or astropy Quantity
        Galactic longitude and latitude (degrees if plain numbers).

    Returns
    -------
    ra, dec : numpy.ndarray
        Right ascension in [0, 360) and declination (degrees, float64).
    """
    from astropy.coordinates import SkyCoord

    coord = SkyCoord(l=_degrees(l_deg) * u.deg, b=_degrees(b_deg) * u.deg, frame="galactic")
    icrs = coord.icrs
    return np.asarray(icrs.ra.wrap_at(360 * u.deg).deg), np.asarray(icrs.dec.deg)
