"""Astronomy foundations shared by every model: bands, extinction, astrometry, priors, geometry, quality cuts,
dust maps and catalog I/O.  Sub-modules:

* :mod:`jaxstars.astro.bands` — band registry, magnitude ↔ colour transforms (Green Eq. 5 B, FLOWER Eq. 4 Λ),
  distance modulus;
* :mod:`jaxstars.astro.extinction` — extinction laws as pure JAX functions (Cranmer, blackbody-through-curve,
  dustapprox tables, Zhang & Yuan 2023);
* :mod:`jaxstars.astro.astrometry` — parallax likelihood, zero-points, Cranmer Eq. 1 parallax samples;
* :mod:`jaxstars.astro.priors` — distance priors (flat, EDSD, generalized gamma) as log-densities and NumPyro
  distributions;
* :mod:`jaxstars.astro.geometry` — (l, b, d) → Galactocentric (R, Z) (FLOWER Eqs. 1–2), ICRS ↔ Galactic;
* :mod:`jaxstars.astro.quality` — quality cuts returning masks and reasons;
* :mod:`jaxstars.astro.dust` — dust maps behind one protocol;
* :mod:`jaxstars.astro.schema`, :mod:`jaxstars.astro.catalog_io` — canonical catalog schema, readers and writers;
* :mod:`jaxstars.astro.simulate` — the Gaia-like simulator with known truth (galaxy, Cranmer §4.1, M67-like cluster).
"""

from jaxstars.astro import (
    astrometry,
    bands,
    catalog_io,
    dust,
    extinction,
    geometry,
    priors,
    quality,
    schema,
    simulate,
)
from jaxstars.astro.astrometry import correct_parallax, parallax_log_likelihood, sample_truncated_parallax
from jaxstars.astro.bands import (
    colour_covariance,
    colour_matrix,
    distance_modulus,
    distance_modulus_from_parallax,
    get_band,
    to_colours,
    to_magnitudes,
)
from jaxstars.astro.catalog_io import read_catalog, read_green2020, write_catalog
from jaxstars.astro.dust import DustMap, DustQuery, available_maps, get_map
from jaxstars.astro.geometry import galactocentric_rz, icrs_to_galactic
from jaxstars.astro.priors import EDSDPrior, FlatDistancePrior, GeneralizedGammaPrior
from jaxstars.astro.quality import apply_cuts
from jaxstars.astro.simulate import read_simulation

__all__ = [
    "DustMap",
    "DustQuery",
    "EDSDPrior",
    "FlatDistancePrior",
    "GeneralizedGammaPrior",
    "apply_cuts",
    "astrometry",
    "available_maps",
    "bands",
    "catalog_io",
    "colour_covariance",
    "colour_matrix",
    "correct_parallax",
    "distance_modulus",
    "distance_modulus_from_parallax",
    "dust",
    "extinction",
    "galactocentric_rz",
    "geometry",
    "get_band",
    "get_map",
    "icrs_to_galactic",
    "parallax_log_likelihood",
    "priors",
    "quality",
    "read_catalog",
    "read_green2020",
    "read_simulation",
    "sample_truncated_parallax",
    "schema",
    "simulate",
    "to_colours",
    "to_magnitudes",
    "write_catalog",
]
