"""Upsampling (Lim et al. §3.3, sampling steps i–iv) and the ICRS view of upsampled stars (§5.1, Figs. 3–5)."""

from __future__ import annotations

import jax
import numpy as np

from .model import GalaxyFlow


def selection_mask(positions, velocities, centre, r_max: float, v_max: float | None) -> np.ndarray:
    """§3.3 (iv): keep stars within ``r_max`` of ``centre`` and (if ``v_max``) with speed ``<= v_max``."""
    keep = np.linalg.norm(np.asarray(positions) - np.asarray(centre), axis=1) <= r_max
    if v_max is not None:
        keep &= np.linalg.norm(np.asarray(velocities), axis=1) <= v_max
    return keep & np.all(np.isfinite(positions), axis=1) & np.all(np.isfinite(velocities), axis=1)


def upsample(model: GalaxyFlow, key: jax.Array, factor: float, n_particles: int | None = None):
    """Draw ``factor`` stars per particle-equivalent and apply the §3.3 (iv) cut.

    ``n_particles`` defaults to the number the model was trained on; ``round(factor * n_particles)`` stars are
    drawn from the ensemble mixture, mapped back to physical units, and those outside the selection sphere or faster
    than the training sample's maximum speed are dropped.  Returns ``(positions, velocities, acceptance)``.
    """
    if n_particles is None:
        n_particles = int(model.info.get("n_particles", 0))
    n = round(factor * n_particles)
    if n < 1:
        raise ValueError(f"factor × n_particles must be >= 1, got {factor} × {n_particles}")
    pos, vel = model.sample(key, n)
    keep = selection_mask(pos, vel, model.sun_position, model.r_max, model.v_max)
    return pos[keep], vel[keep], float(keep.mean())


def to_icrs(positions, velocities, sun_position, sun_velocity) -> dict:
    """Galactocentric ``(x, y, z)`` kpc and ``v`` km/s → ICRS via astropy.

    The frame is astropy's ``Galactocentric`` with ``galcen_distance = |r☉|``, ``z_sun = z☉`` and
    ``galcen_v_sun = v☉`` (the paper's Auriga orientation coincides with it: Sun on ``-x``, rotation ``+y``).
    Returns a dict of arrays: ``ra``, ``dec`` (deg), ``distance`` (kpc), ``pmra`` (µα*), ``pmdec`` (mas/yr) and
    ``radial_velocity`` (km/s).
    """
    import astropy.coordinates as coord
    import astropy.units as u

    pos = np.asarray(positions, np.float64)
    vel = np.asarray(velocities, np.float64)
    sun = np.asarray(sun_position, np.float64)
    frame = coord.Galactocentric(
        galcen_distance=float(np.linalg.norm(sun)) * u.kpc,
        z_sun=float(sun[2]) * u.kpc,
        galcen_v_sun=coord.CartesianDifferential(np.asarray(sun_velocity, np.float64) * u.km / u.s),
        roll=0 * u.deg,
    )
    galcen = coord.SkyCoord(
        x=pos[:, 0] * u.kpc,
        y=pos[:, 1] * u.kpc,
        z=pos[:, 2] * u.kpc,
        v_x=vel[:, 0] * u.km / u.s,
        v_y=vel[:, 1] * u.km / u.s,
        v_z=vel[:, 2] * u.km / u.s,
        frame=frame,
    )
    icrs = galcen.transform_to(coord.ICRS())
    return {
        "ra": icrs.ra.to_value(u.deg),
        "dec": icrs.dec.to_value(u.deg),
        "distance": icrs.distance.to_value(u.kpc),
        "pmra": icrs.pm_ra_cosdec.to_value(u.mas / u.yr),
        "pmdec": icrs.pm_dec.to_value(u.mas / u.yr),
        "radial_velocity": icrs.radial_velocity.to_value(u.km / u.s),
    }


def sky_window(ra, dec, centre=(167.47, -4.2), radius: float = 15.0) -> np.ndarray:
    """Stars within ``radius`` degrees of ``centre`` = (ra, dec) (the paper's Fig. 1–5 window)."""
    ra0, dec0 = np.radians(centre)
    ra, dec = np.radians(ra), np.radians(dec)
    cos_sep = np.sin(dec) * np.sin(dec0) + np.cos(dec) * np.cos(dec0) * np.cos(ra - ra0)
    return cos_sep >= np.cos(np.radians(radius))
