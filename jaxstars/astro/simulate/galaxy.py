"""The Galaxy model of the simulator: where stars are (density), what they are (populations), where we look (sky).

Density (Jurić et al. 2008, ApJ 673, 864, Table 10, bias-corrected best fit)
    Number density of stars relative to the thin disk at the Sun's Galactocentric radius in the mid-plane:

    * thin disk ``exp(−(R − R☉)/L₁ − |z|/H₁)`` with L₁ = 2600 pc, H₁ = 300 pc;
    * thick disk ``f exp(−(R − R☉)/L₂ − |z|/H₂)`` with f = 0.12, L₂ = 3600 pc, H₂ = 900 pc;
    * halo ``f_H (r☉ / r)^{n_H}`` with ``r = sqrt(R² + (z/q)² + r_c²)``, ``r☉ = sqrt(R☉² + r_c²)``,
      f_H = 0.0051, q = 0.64, n_H = 2.77, and a core r_c = 1 kpc (our addition: Jurić's power law diverges at the
      Galactic centre, which their data never reach).

    ``z = d sin b + Z☉`` is the signed height above the mid-plane (Jurić's ``Z + Z☉``) with Z☉ = 25 pc, and R the
    Galactocentric cylindrical radius from :func:`jaxstars.astro.geometry.galactocentric_rz` with R☉ = 8 kpc (the
    same R☉ and Z☉ as FLOWER Eqs. 1–2). Jurić et al. measured these normalisations on M dwarfs
    (0.1 < r − i < 1.4); we apply them to the number of stars formed with the same IMF in every population. No
    bulge, bar, warp or flare; distances stop at ``max_distance_pc`` (100 kpc).

Populations (after Robin et al. 2003, A&A 409, 523, Table 1)
    Ages and metallicities per population; every population has the Kroupa IMF.

    * thin disk: constant star formation over 0–10 Gyr in Robin et al.'s seven age bins (0–0.15, 0.15–1, 1–2, 2–3,
      3–5, 5–7, 7–10 Gyr) with mean [Fe/H] 0.01, 0.03, 0.03, 0.01, −0.07, −0.14, −0.37 and dispersions 0.12, 0.12,
      0.10, 0.11, 0.18, 0.17, 0.20 dex;
    * thick disk: a single burst at 11 Gyr, [Fe/H] = −0.78 ± 0.30;
    * halo: a single burst, [Fe/H] = −1.78 ± 0.50; Robin et al. use 14 Gyr, we take 13 Gyr (younger than the
      Universe).

    The metallicities are [Fe/H] and are used as the isochrones' [M/H] (alpha enhancement ignored). Ages and
    metallicities are mapped to the nearest node of the isochrone grid (:func:`isochrone_weights` integrates each
    distribution over the cells around the nodes), so the simulated labels take grid values; with a 0.12 dex
    log-age grid both 11 and 13 Gyr land on the 12.0 Gyr node.

Sky
    :class:`Field` caps ``(l, b, radius)``; positions are uniform over their union (or over the whole sky), drawn
    through equal-area :class:`SkyCells` so that the star sampler can weight directions by their star counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import ndtr

from jaxstars.astro.geometry import galactocentric_rz

from . import _random

__all__ = [
    "DEFAULT_POPULATIONS",
    "Field",
    "GalaxyModel",
    "Population",
    "SkyCells",
    "as_fields",
    "field_contains",
    "isochrone_weights",
    "population_density",
    "sky_cells",
]


@dataclass(frozen=True)
class GalaxyModel:
    """Stellar number-density model (Jurić et al. 2008 Table 10; see the module docstring).

    Distances in pc; ``thick_norm`` and ``halo_norm`` are the densities at (R☉, z = 0) relative to the thin disk.
    """

    r_sun_pc: float = 8000.0
    z_sun_pc: float = 25.0
    thin_scale_length_pc: float = 2600.0
    thin_scale_height_pc: float = 300.0
    thick_norm: float = 0.12
    thick_scale_length_pc: float = 3600.0
    thick_scale_height_pc: float = 900.0
    halo_norm: float = 0.0051
    halo_axis_ratio: float = 0.64
    halo_power: float = 2.77
    halo_core_pc: float = 1000.0
    max_distance_pc: float = 1.0e5

    def __post_init__(self):
        positive = (
            "r_sun_pc", "thin_scale_length_pc", "thin_scale_height_pc", "thick_scale_length_pc",
            "thick_scale_height_pc", "halo_axis_ratio", "halo_core_pc", "max_distance_pc",
        )  # fmt: skip
        bad = [name for name in positive if not getattr(self, name) > 0]
        bad += [name for name in ("thick_norm", "halo_norm", "halo_power") if not getattr(self, name) >= 0]
        if bad:
            raise ValueError(f"GalaxyModel parameters must be positive (norms, power: non-negative): {bad}")

    def components(self) -> dict[str, tuple[float, float, float, float]]:
        """Per population ``(norm, is_disk, scale_length_or_axis_ratio, scale_height_or_power)`` for the density."""
        return {
            "thin_disk": (1.0, 1.0, self.thin_scale_length_pc, self.thin_scale_height_pc),
            "thick_disk": (self.thick_norm, 1.0, self.thick_scale_length_pc, self.thick_scale_height_pc),
            "halo": (self.halo_norm, 0.0, self.halo_axis_ratio, self.halo_power),
        }


def population_density(l_deg, b_deg, distance_pc, params, model: GalaxyModel) -> jax.Array:
    """Relative number density of one population at (l, b, d) (pure ``jnp``; see the module docstring).

    Parameters
    ----------
    l_deg, b_deg, distance_pc : array_like
        Galactic position (degrees) and heliocentric distance (pc); broadcast together.
    params : tuple of array_like
        ``(norm, is_disk, a, c)`` from :meth:`GalaxyModel.components` (may be per-star arrays): a disk uses
        ``a`` = scale length and ``c`` = scale height, the halo ``a`` = axis ratio q and ``c`` = power n_H.
    model : GalaxyModel
        R☉, Z☉ and the halo core.
    """
    norm, is_disk, a, c = params
    radius, _ = galactocentric_rz(l_deg, b_deg, distance_pc, model.r_sun_pc, model.z_sun_pc)
    z = jnp.asarray(distance_pc) * jnp.sin(jnp.deg2rad(b_deg)) + model.z_sun_pc
    disk = jnp.exp(-(radius - model.r_sun_pc) / a - jnp.abs(z) / c)
    core2 = model.halo_core_pc**2
    r2 = radius**2 + (z / a) ** 2 + core2
    halo = jnp.exp(-0.5 * c * jnp.log(r2 / (model.r_sun_pc**2 + core2)))
    return norm * jnp.where(is_disk > 0, disk, halo)


# ------------------------------------------------------------------------------------------------ populations


@dataclass(frozen=True)
class Population:
    """Ages and metallicities of one population: a mixture of age bins.

    Attributes
    ----------
    name : str
        One of ``thin_disk``, ``thick_disk``, ``halo`` (selects the density law).
    age_bins_gyr : tuple of (float, float)
        Age ranges [Gyr], uniform within each (a zero-width range is a single age).
    weights : tuple of float
        Fraction of the population's stars formed in each bin.
    mh_mean, mh_sigma : tuple of float
        Gaussian [M/H] in each bin (dex).
    reference : str
    """

    name: str
    age_bins_gyr: tuple[tuple[float, float], ...]
    weights: tuple[float, ...]
    mh_mean: tuple[float, ...]
    mh_sigma: tuple[float, ...]
    reference: str = ""

    def __post_init__(self):
        n = len(self.age_bins_gyr)
        if not (n == len(self.weights) == len(self.mh_mean) == len(self.mh_sigma)) or n == 0:
            raise ValueError(
                f"population {self.name!r}: age bins, weights, mh_mean and mh_sigma must match in length"
            )
        if any(lo < 0 or hi < lo for lo, hi in self.age_bins_gyr):
            raise ValueError(f"population {self.name!r}: age bins must be 0 <= lo <= hi")
        if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ValueError(f"population {self.name!r}: weights must be non-negative with a positive sum")
        if any(s < 0 for s in self.mh_sigma):
            raise ValueError(f"population {self.name!r}: mh_sigma must be non-negative")


_THIN_BINS = ((0.0, 0.15), (0.15, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 5.0), (5.0, 7.0), (7.0, 10.0))
DEFAULT_POPULATIONS: tuple[Population, ...] = (
    Population(
        "thin_disk",
        _THIN_BINS,
        tuple(hi - lo for lo, hi in _THIN_BINS),  # constant star formation rate
        (0.01, 0.03, 0.03, 0.01, -0.07, -0.14, -0.37),
        (0.12, 0.12, 0.10, 0.11, 0.18, 0.17, 0.20),
        "Robin et al. 2003 Table 1",
    ),
    Population("thick_disk", ((11.0, 11.0),), (1.0,), (-0.78,), (0.30,), "Robin et al. 2003 Table 1"),
    Population(
        "halo", ((13.0, 13.0),), (1.0,), (-1.78,), (0.50,), "Robin et al. 2003 Table 1 (age 13, not 14 Gyr)"
    ),
)
"""The simulator's default populations (module docstring)."""


def _cell_edges(nodes: np.ndarray) -> np.ndarray:
    mid = 0.5 * (nodes[1:] + nodes[:-1])
    return np.concatenate([[-np.inf], mid, [np.inf]])


def isochrone_weights(population: Population, mh_nodes, logage_nodes, n_age: int = 4000) -> np.ndarray:
    """Probability that a star of ``population`` is assigned to each (log-age node, [M/H] node) of the grid.

    Ages are binned to the nearest log-age node (quadrature: ``n_age`` evenly spaced ages per bin, mid-point
    rule; a zero-width bin is one age); [M/H] to the nearest [M/H] node by integrating the bin's Gaussian over
    the node's cell (tails go to the edge nodes).

    Returns
    -------
    numpy.ndarray, shape (len(logage_nodes), len(mh_nodes))
        Sums to 1.
    """
    mh_nodes = np.asarray(mh_nodes, dtype=np.float64)
    logage_nodes = np.asarray(logage_nodes, dtype=np.float64)
    age_edges, mh_edges = _cell_edges(logage_nodes), _cell_edges(mh_nodes)
    weights = np.asarray(population.weights, dtype=np.float64)
    weights = weights / weights.sum()
    out = np.zeros((logage_nodes.size, mh_nodes.size))
    for (lo, hi), w, mu, sigma in zip(population.age_bins_gyr, weights, population.mh_mean, population.mh_sigma):
        if hi > lo:
            ages = lo + (np.arange(n_age) + 0.5) / n_age * (hi - lo)
        else:
            ages = np.array([lo])
        log_ages = np.log10(np.maximum(ages, 1e-6) * 1e9)
        cell = np.clip(np.searchsorted(age_edges, log_ages, side="right") - 1, 0, logage_nodes.size - 1)
        age_p = np.bincount(cell, minlength=logage_nodes.size) / ages.size
        if sigma > 0:
            mh_p = np.diff(ndtr((mh_edges - mu) / sigma))
        else:
            mh_p = np.zeros(mh_nodes.size)
            mh_p[int(np.argmin(np.abs(mh_nodes - mu)))] = 1.0
        out += w * age_p[:, None] * mh_p[None, :]
    return out / out.sum()


# ------------------------------------------------------------------------------------------------ sky


@dataclass(frozen=True)
class Field:
    """A circular sky region: centre (l, b) and radius, degrees."""

    l_deg: float
    b_deg: float
    radius_deg: float

    def __post_init__(self):
        if not (np.isfinite(self.l_deg) and -90.0 <= self.b_deg <= 90.0 and 0.0 < self.radius_deg <= 180.0):
            raise ValueError(f"invalid field {self}: need finite l, |b| <= 90 and 0 < radius <= 180 degrees")

    @property
    def solid_angle_sr(self) -> float:
        return 2.0 * np.pi * (1.0 - np.cos(np.deg2rad(self.radius_deg)))


def as_fields(fields) -> tuple[Field, ...] | None:
    """``None`` (all sky) or a tuple of :class:`Field` from Fields or ``(l, b, radius)`` triples."""
    if fields is None:
        return None
    out = []
    for f in fields:
        if isinstance(f, Field):
            out.append(f)
        else:
            values = tuple(f)
            if len(values) != 3:
                raise ValueError(f"a field is (l, b, radius) in degrees, got {f!r}")
            out.append(Field(*(float(v) for v in values)))
    if not out:
        raise ValueError("fields must be None (all sky) or a non-empty list of (l, b, radius)")
    return tuple(out)


def _unit(l_deg, b_deg):
    lr, br = np.deg2rad(l_deg), np.deg2rad(b_deg)
    return np.stack([np.cos(br) * np.cos(lr), np.cos(br) * np.sin(lr), np.sin(br)], axis=-1)


def field_contains(field: Field, l_deg, b_deg) -> np.ndarray:
    """Whether (l, b) lies inside ``field`` (angular distance ≤ radius)."""
    cosang = _unit(l_deg, b_deg) @ _unit(field.l_deg, field.b_deg)
    return cosang >= np.cos(np.deg2rad(field.radius_deg)) - 1e-12


_ALL_SKY_COLS, _ALL_SKY_ROWS = 180, 90  # 2° in l; Δ sin b = 1/45 (1.27° in b at the plane)


@dataclass(frozen=True, eq=False)
class SkyCells:
    """Equal-area cells (uniform in l and in sin b) covering the sky region; directions are drawn cell by cell.

    The sphere is cut into ``n_cols`` × ``n_rows`` cells of equal solid angle; only the cells that touch the
    region are kept (all of them for the whole sky). A direction drawn uniformly in a kept cell is *in the region*
    when it lies inside at least one field: each direction of the union of fields then has the same probability,
    whatever the overlaps, because the cells do not overlap.

    Attributes
    ----------
    n_cols, n_rows : int
        Grid size over the whole sphere.
    col, row : numpy.ndarray of int
        The kept cells.
    fields : tuple of Field or None
    """

    n_cols: int
    n_rows: int
    col: np.ndarray
    row: np.ndarray
    fields: tuple[Field, ...] | None

    @property
    def size(self) -> int:
        return int(self.col.size)

    def _edges(self, col, row):
        dl = 360.0 / self.n_cols
        ds = 2.0 / self.n_rows
        return col * dl, dl, -1.0 + row * ds, ds

    def test_points(self) -> tuple[np.ndarray, np.ndarray]:
        """A 3 × 3 lattice of directions per cell (corners, edge mid-points, centre): shape (size, 9)."""
        l0, dl, s0, ds = self._edges(self.col, self.row)
        f = np.array([0.0, 0.5, 1.0])
        ll = (l0[:, None, None] + dl * f[None, :, None]) + 0.0 * f[None, None, :]
        ss = (s0[:, None, None] + 0.0 * f[None, :, None]) + ds * f[None, None, :]
        ll = np.mod(ll, 360.0).reshape(self.size, 9)
        bb = np.rad2deg(np.arcsin(np.clip(ss, -1.0, 1.0))).reshape(self.size, 9)
        return ll, bb

    def sample(self, key: jax.Array, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One direction uniform (in solid angle) inside each of ``cells`` (indices into the kept cells)."""
        k_l, k_s = jax.random.split(key)
        n = cells.size
        l0, dl, s0, ds = self._edges(self.col[cells], self.row[cells])
        u_l, u_s = _random.uniform(k_l, n), _random.uniform(k_s, n)
        l_deg = np.mod(l0 + dl * u_l, 360.0)
        b_deg = np.rad2deg(np.arcsin(np.clip(s0 + ds * u_s, -1.0, 1.0)))
        return l_deg, b_deg

    def in_region(self, l_deg, b_deg) -> np.ndarray:
        """Whether each direction lies in the region (inside any field; always True for the whole sky)."""
        l_deg = np.asarray(l_deg, dtype=np.float64)
        if self.fields is None:
            return np.ones(l_deg.shape, dtype=bool)
        inside = np.zeros(l_deg.shape, dtype=bool)
        for f in self.fields:
            inside |= field_contains(f, l_deg, b_deg)
        return inside


def sky_cells(fields: Sequence[Field] | None) -> SkyCells:
    """The :class:`SkyCells` of a region: the whole sky (180 × 90 cells), or the cells touching the fields.

    For fields the cell size is half the smallest field radius (at most 2°, at least 0.01°); a cell is kept when
    its centre is within (radius + the cell's half-diagonal) of a field centre, so every part of a field is covered.
    """
    if fields is None:
        cols, rows = np.meshgrid(np.arange(_ALL_SKY_COLS), np.arange(_ALL_SKY_ROWS), indexing="ij")
        return SkyCells(_ALL_SKY_COLS, _ALL_SKY_ROWS, cols.ravel(), rows.ravel(), None)
    fields = tuple(fields)
    size = float(np.clip(min(f.radius_deg for f in fields) / 2.0, 0.01, 2.0))
    n_cols = int(np.ceil(360.0 / size))
    n_rows = int(np.ceil(2.0 / np.deg2rad(size)))
    dl, ds = 360.0 / n_cols, 2.0 / n_rows
    keep = set()
    for f in fields:
        margin = f.radius_deg + 3.0 * max(size, np.rad2deg(ds))
        s_lo = np.sin(np.deg2rad(max(f.b_deg - margin, -90.0)))
        s_hi = np.sin(np.deg2rad(min(f.b_deg + margin, 90.0)))
        rows = np.arange(max(int(np.floor((s_lo + 1.0) / ds)), 0), min(int(np.ceil((s_hi + 1.0) / ds)), n_rows))
        near_pole = abs(f.b_deg) + margin >= 89.0
        if near_pole or margin >= 90.0:
            cols = np.arange(n_cols)
        else:
            half = np.rad2deg(
                np.arcsin(min(1.0, np.sin(np.deg2rad(margin)) / np.cos(np.deg2rad(abs(f.b_deg) + margin))))
            )
            c_lo = int(np.floor((f.l_deg - half) / dl))
            c_hi = int(np.ceil((f.l_deg + half) / dl))
            cols = np.mod(np.arange(c_lo, c_hi + 1), n_cols)
        cc, rr = np.meshgrid(np.unique(cols), rows, indexing="ij")
        cc, rr = cc.ravel(), rr.ravel()
        # centre and half-diagonal of each cell
        cells = SkyCells(n_cols, n_rows, cc, rr, None)
        tl, tb = cells.test_points()
        centre = _unit(tl[:, 4], tb[:, 4])
        corners = _unit(tl[:, [0, 2, 6, 8]], tb[:, [0, 2, 6, 8]])
        half_diag = np.rad2deg(np.arccos(np.clip(np.einsum("nk,njk->nj", centre, corners), -1.0, 1.0))).max(axis=1)
        dist = np.rad2deg(np.arccos(np.clip(centre @ _unit(f.l_deg, f.b_deg), -1.0, 1.0)))
        ok = dist <= f.radius_deg + half_diag + 1e-9
        keep.update(zip(cc[ok].tolist(), rr[ok].tolist()))
    pairs = np.array(sorted(keep), dtype=np.int64).reshape(-1, 2)
    return SkyCells(n_cols, n_rows, pairs[:, 0], pairs[:, 1], fields)
