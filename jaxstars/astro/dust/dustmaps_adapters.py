"""Adapters to the ``dustmaps`` package (Green 2018, JOSS 3, 695) for maps whose files the user has fetched.

* :class:`Bayestar19Map` — the Bayestar19 3D map (Green et al. 2019, ApJ 887, 93) with its posterior samples
  (``BayestarQuery(...).query(coords, mode='samples')``).
* :class:`SFD98Map` — the full-resolution SFD98 2D map (Schlegel, Finkbeiner & Davis 1998).

Nothing is downloaded at run time: when ``dustmaps`` or the map files are absent, building the map raises a clear
error naming the install or fetch command.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .base import DustMap, DustMapFileNotFoundError
from .sfd_lowres import sfd_std

__all__ = ["BAYESTAR_FETCH_COMMAND", "SFD_FETCH_COMMAND", "Bayestar19Map", "SFD98Map"]

BAYESTAR_FETCH_COMMAND = 'python -c "import dustmaps.bayestar; dustmaps.bayestar.fetch()"'
SFD_FETCH_COMMAND = 'python -c "import dustmaps.sfd; dustmaps.sfd.fetch()"'
_DATA_DIR_HINT = (
    "dustmaps looks in its configured data directory; to point it elsewhere: "
    "python -c \"from dustmaps.config import config; config['data_dir'] = '/path/to/maps'\" "
    "(or pass path=... here, --map-path on the command line)"
)


def _import_dustmaps(module: str, fetch: str) -> Any:
    """Import ``dustmaps.<module>`` quietly (it warns when its config file is absent), or explain how to install it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(f"dustmaps.{module}")
    except ImportError as err:
        raise ImportError(
            f"this dust map is read through the optional 'dustmaps' package, which is not importable ({err}); "
            f"install it with: pip install dustmaps ; then fetch the map files with: {fetch}"
        ) from err


def _dustmaps_data_dir() -> Path:
    std_paths = _import_dustmaps("std_paths", "")
    return Path(std_paths.data_dir())


def _galactic_coords(l_deg: np.ndarray, b_deg: np.ndarray, distance_pc: np.ndarray | None) -> Any:
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    if distance_pc is None:
        return SkyCoord(l=l_deg * u.deg, b=b_deg * u.deg, frame="galactic")
    return SkyCoord(l=l_deg * u.deg, b=b_deg * u.deg, distance=distance_pc * u.pc, frame="galactic")


class Bayestar19Map(DustMap):
    """The Bayestar19 3D map through ``dustmaps.bayestar.BayestarQuery``, with all its posterior samples.

    Units: Bayestar19's own reddening unit (arbitrary; convert to extinctions with Table 1 of Green et al. 2019).
    ``mean``/``std`` are the mean and standard deviation over the map's samples at each star (linear interpolation
    in distance modulus between the map's distance bins, as dustmaps does); ``samples`` are those samples.  Footprint:
    δ > −30°; outside it, ``valid`` is False.  ``flags`` carries dustmaps' ``converged`` and ``reliable_dist``.
    ``distance_pc=None`` returns the reddening beyond the farthest distance bin (the total column the map resolves).

    Parameters
    ----------
    path : str or Path, optional
        The ``bayestar2019.h5`` file; default ``<dustmaps data_dir>/bayestar/bayestar2019.h5``.
    max_samples : int, optional
        Load only this many samples (the full file holds ~4 GB of samples).
    version : str
        dustmaps version string, ``'bayestar2019'`` by default.
    """

    name = "bayestar19"
    units = "Bayestar19 reddening [arbitrary unit; Green et al. 2019 Table 1 converts to extinctions]"
    three_d = True
    reference = "Green et al. 2019, ApJ 887, 93; read with dustmaps (Green 2018, JOSS 3, 695)"

    def __init__(
        self, path: str | Path | None = None, max_samples: int | None = None, version: str = "bayestar2019"
    ):
        bayestar = _import_dustmaps("bayestar", BAYESTAR_FETCH_COMMAND)
        self.path = Path(path) if path is not None else _dustmaps_data_dir() / "bayestar" / f"{version}.h5"
        if not self.path.is_file():
            raise DustMapFileNotFoundError(
                f"Bayestar map file not found: {self.path}. Fetch it (several GB) with: {BAYESTAR_FETCH_COMMAND} — "
                f"{_DATA_DIR_HINT}"
            )
        with contextlib.redirect_stdout(io.StringIO()):  # BayestarQuery prints its loading progress
            self._query_obj = bayestar.BayestarQuery(
                map_fname=str(self.path), max_samples=max_samples, version=version
            )
        self.far_distance_pc = float(self._query_obj.distances[-1].to_value("pc")) * 1.01

    def _query(self, l_deg, b_deg, distance_pc, key):
        d = np.full_like(l_deg, self.far_distance_pc) if distance_pc is None else distance_pc
        coords = _galactic_coords(l_deg, b_deg, d)
        with np.errstate(divide="ignore", invalid="ignore"):  # d = 0 → distance modulus −inf → reddening 0
            samples, qa = self._query_obj.query(coords, mode="samples", return_flags=True)
        samples = np.asarray(samples, dtype=np.float64).reshape(l_deg.size, -1)
        inside = np.all(np.isfinite(samples), axis=1)
        mean = np.full(l_deg.size, np.nan)
        std = np.full(l_deg.size, np.nan)
        mean[inside] = samples[inside].mean(axis=1)
        std[inside] = samples[inside].std(axis=1)
        flags = {
            "converged": np.asarray(qa["converged"], dtype=bool),
            "reliable_dist": np.asarray(qa["reliable_dist"], dtype=bool),
        }
        return mean, std, samples, flags


class SFD98Map(DustMap):
    """The full-resolution SFD98 E(B−V) map through ``dustmaps.sfd.SFDQuery`` (bilinear interpolation).

    Units: E(B−V) [mag] on the SFD98 scale (× 0.86 for Schlafly & Finkbeiner 2011).  2D: distances are ignored.
    ``std`` is :func:`~jaxstars.astro.dust.sfd_lowres.sfd_std` (full resolution); no samples.

    Parameters
    ----------
    path : str or Path, optional
        Folder holding ``SFD_dust_4096_ngp.fits`` and ``SFD_dust_4096_sgp.fits``; default ``<dustmaps data_dir>/sfd``.
    """

    name = "sfd"
    units = "E(B-V) [mag], SFD98 scale"
    three_d = False
    reference = "Schlegel, Finkbeiner & Davis 1998, ApJ 500, 525; read with dustmaps (Green 2018, JOSS 3, 695)"
    _FILES = ("SFD_dust_4096_ngp.fits", "SFD_dust_4096_sgp.fits")

    def __init__(self, path: str | Path | None = None):
        sfd = _import_dustmaps("sfd", SFD_FETCH_COMMAND)
        self.path = Path(path) if path is not None else _dustmaps_data_dir() / "sfd"
        missing = [f for f in self._FILES if not (self.path / f).is_file()]
        if missing:
            raise DustMapFileNotFoundError(
                f"SFD map files not found in {self.path}: {', '.join(missing)}. Fetch them with: {SFD_FETCH_COMMAND}"
                f" — {_DATA_DIR_HINT}. (The embedded low-resolution SFD map, 'sfd_lowres', needs no download.)"
            )
        self._query_obj = sfd.SFDQuery(map_dir=str(self.path))

    def _query(self, l_deg, b_deg, distance_pc, key):
        ebv = np.asarray(self._query_obj.query(_galactic_coords(l_deg, b_deg, None)), dtype=np.float64).ravel()
        return ebv, sfd_std(ebv), None, {}
