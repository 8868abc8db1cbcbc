"""Drawing Galaxy stars that can pass a magnitude limit, without simulating the invisible ones.

Target distribution
    For population p, isochrone k (weight ``w_pk`` from :func:`~jaxstars.astro.simulate.galaxy.isochrone_weights`),
    initial mass m (Kroupa IMF ξ) and position (Ω, d), the number of stars is
    ``ρ_p(Ω, d) d² dd dΩ · w_pk ξ(m) dm`` (ρ_p from :func:`~jaxstars.astro.simulate.galaxy.population_density`),
    restricted to the chosen sky region and to ``d ≤ max_distance``. The catalogue keeps the stars whose observed
    G is below the limit.

Why not draw from it directly
    Almost every star of the Galaxy is fainter than any Gaia-like limit (an M dwarf with G < 20 must lie within a
    few hundred pc), so drawing stars blindly and cutting would waste >99 % of the work. Instead:

1.  Each star has a largest distance at which it can still pass the cut, ``d_max(M_G) = 10^{(G_lim + δ − M_G)/5 + 1}``
    pc (no extinction, which can only make it fainter; δ = 5 σ_G at the limit covers the photometric noise), capped
    at ``max_distance``.
2.  The number of stars of type (p, k, m) visible in direction Ω is ``C_p(Ω, d_max) = ∫₀^{d_max} ρ_p d² dd``.
    A bound ``B_p(d_max) ≥ C_p(Ω, d_max)`` over the whole sky region is tabulated once (maximum over
    :func:`~jaxstars.astro.simulate.galaxy.sky_test_directions`, times a safety factor of 1.3).
3.  Candidates are proposed as (p, k, mass interval) ∝ ``w_pk × IMF number × B_p(d_max of the interval's brighter
    end)``, the mass inside the interval from the IMF, Ω uniform over the region; a candidate is accepted with
    probability ``C_p(Ω, d_max(m)) / B_p(d_max interval)`` (rejection sampling, exact as long as the bound holds;
    candidates where it does not are counted and reported). Accepted stars get ``d`` drawn from ``ρ_p d²`` on
    ``[0, d_max]``: the joint law of accepted stars is the target restricted to ``d ≤ d_max``.
4.  The caller applies dust, noise and the exact observed-G cut, which only removes stars.

Line-of-sight quadrature
    ``ρ_p d²`` is evaluated at the star's exact (l, b) on a grid of :data:`N_DISTANCE_NODES` distances
    logarithmically spaced over ``[10⁻⁴ d_max, d_max]``; masses of the intervals between nodes are trapezoids
    (and ``ρ d_0³ / 3`` below the first node), and ``d`` is uniform inside the chosen interval (the density is
    piecewise constant on the 7 %-wide grid cells; ∝ d² inside the first).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from . import _random
from .galaxy import GalaxyModel, SkyCells, isochrone_weights, population_density
from .isochrones import IsochroneGrid, interpolate, interval_table, mass_in_interval

__all__ = ["N_DISTANCE_NODES", "GalaxySampler", "line_of_sight"]

N_DISTANCE_NODES = 128
"""Distance nodes per line of sight (log-spaced over four decades below d_max)."""
_T_NODES = np.logspace(-4.0, 0.0, N_DISTANCE_NODES)
_CHUNK = 1 << 14
_SAFETY = 1.3
_MIN_ISO_WEIGHT = 1e-7


@functools.partial(jax.jit, static_argnames=("model",))
def _line_of_sight_chunk(l_deg, b_deg, dmax, norm, is_disk, a, c, u, model):
    dtype = jnp.result_type(float)
    d = dmax[:, None] * jnp.asarray(_T_NODES, dtype=dtype)[None, :]
    params = (norm[:, None], is_disk[:, None], a[:, None], c[:, None])
    f = population_density(l_deg[:, None], b_deg[:, None], d, params, model) * d * d
    first = f[:, :1] * d[:, :1] / 3.0
    rest = 0.5 * (f[:, 1:] + f[:, :-1]) * (d[:, 1:] - d[:, :-1])
    masses = jnp.concatenate([first, rest], axis=1)
    cum = jnp.cumsum(masses, axis=1)
    total = cum[:, -1]
    target = u * total
    k = jnp.minimum(jnp.sum(cum < target[:, None], axis=1), N_DISTANCE_NODES - 1)
    take = functools.partial(jnp.take_along_axis, axis=1)
    prev = jnp.where(k > 0, take(cum, jnp.maximum(k - 1, 0)[:, None])[:, 0], 0.0)
    mass_k = take(masses, k[:, None])[:, 0]
    frac = jnp.clip((target - prev) / jnp.where(mass_k > 0, mass_k, 1.0), 0.0, 1.0)
    hi = take(d, k[:, None])[:, 0]
    lo = jnp.where(k > 0, take(d, jnp.maximum(k - 1, 0)[:, None])[:, 0], 0.0)
    dist = jnp.where(k == 0, hi * jnp.cbrt(jnp.maximum(frac, 1e-9)), lo + frac * (hi - lo))  # d > 0 even for u = 0
    return total, dist


def line_of_sight(l_deg, b_deg, dmax, params, u, model: GalaxyModel) -> tuple[np.ndarray, np.ndarray]:
    """Visible star count ``C = ∫₀^{d_max} ρ d² dd`` and a distance drawn from ``ρ d²`` on ``[0, d_max]``.

    Parameters
    ----------
    l_deg, b_deg, dmax : array_like, shape (n,)
        Direction (degrees) and largest distance (pc) per star.
    params : tuple of 4 arrays, shape (n,)
        Density parameters per star (see :func:`~jaxstars.astro.simulate.galaxy.population_density`).
    u : array_like, shape (n,)
        Uniform numbers in [0, 1) for the inverse-CDF draw.
    model : GalaxyModel

    Returns
    -------
    count, distance : numpy.ndarray (float64)
        Evaluated in fixed-size jitted chunks (one compilation per model).
    """
    arrays = [np.asarray(x) for x in (l_deg, b_deg, dmax, *params, u)]
    n = arrays[0].size
    count, dist = np.empty(n), np.empty(n)
    dtype = jnp.result_type(float)
    for start in range(0, n, _CHUNK):
        parts = [x[start : start + _CHUNK] for x in arrays]
        m = parts[0].size
        if m < _CHUNK:
            parts = [np.concatenate([p, np.repeat(p[:1], _CHUNK - m)]) for p in parts]
        c, dd = _line_of_sight_chunk(*(jnp.asarray(p, dtype=dtype) for p in parts), model=model)
        count[start : start + m] = np.asarray(c, dtype=np.float64)[:m]
        dist[start : start + m] = np.asarray(dd, dtype=np.float64)[:m]
    return count, dist


@dataclass(frozen=True)
class Candidates:
    """Stars accepted by :meth:`GalaxySampler.draw` (before dust, noise and the magnitude cut)."""

    l_deg: np.ndarray
    b_deg: np.ndarray
    distance_pc: np.ndarray
    population: np.ndarray  # index into GalaxySampler.population_names
    stars: dict  # from isochrones.interpolate
    n_proposed: int
    n_bound_violations: int


_N_BOUND_NODES = 64
_REFINE = 3  # fine-grid steps per bound node
_N_BELOW = 40  # fine-grid nodes over the four decades below the first bound node


class GalaxySampler:
    """Proposal tables for drawing Galaxy stars that can pass a G limit (module docstring).

    Parameters
    ----------
    grid : IsochroneGrid
    populations : sequence of Population
        Each ``name`` must be a component of ``model`` (``thin_disk``, ``thick_disk``, ``halo``).
    model : GalaxyModel
    cells : SkyCells
        Sky region.
    g_limit : float or None
        Apparent G limit (None: no limit, every star out to ``model.max_distance_pc``).
    g_margin : float
        δ added to the limit when bounding distances (photometric noise).

    Notes
    -----
    The bound is tabulated per population, sky cell and ``d_max`` node (64 nodes, log-spaced from the smallest
    ``d_max`` to ``max_distance``): ``B = 1.3 × max`` of ``C`` over the cell's 3 × 3 test directions, computed
    by a cumulative trapezoid on a log-spaced grid with three steps per node (and 40 over the four decades below). An interval uses the first node at or beyond its
    ``d_max``; cells are proposed ∝ B (all cells have the same solid angle).
    """

    def __init__(self, grid: IsochroneGrid, populations, model: GalaxyModel, cells: SkyCells, g_limit, g_margin):
        components = model.components()
        unknown = [p.name for p in populations if p.name not in components]
        if unknown or not populations:
            raise ValueError(f"populations must be among {sorted(components)}; got {unknown or 'none'}")
        self.grid, self.model, self.cells = grid, model, cells
        self.g_limit, self.g_margin = g_limit, float(g_margin)
        self.population_names = tuple(p.name for p in populations)
        self.params = np.array([components[p.name] for p in populations], dtype=np.float64)  # (n_pop, 4)

        pops, rows, f_lo, f_hi, target, bright = [], [], [], [], [], []
        i_age = np.searchsorted(grid.logage_nodes, grid.iso_logage)
        i_mh = np.searchsorted(grid.mh_nodes, grid.iso_mh)
        for j, pop in enumerate(populations):
            w_iso = isochrone_weights(pop, grid.mh_nodes, grid.logage_nodes)[i_age, i_mh]
            table = interval_table(grid, np.flatnonzero(w_iso > _MIN_ISO_WEIGHT * w_iso.max()))
            pops.append(np.full(table.row.size, j))
            rows.append(table.row)
            f_lo.append(table.f_lo)
            f_hi.append(table.f_hi)
            target.append(w_iso[table.iso] * table.imf_number)
            bright.append(table.brightest_g)
        pops, rows, f_lo, f_hi, target = (np.concatenate(x) for x in (pops, rows, f_lo, f_hi, target))
        dmax = self.dmax(np.concatenate(bright))

        # bound tables: (n_pop, n_nodes, n_cells)
        lo = max(float(dmax.min()), 1e-2)
        self.nodes = np.logspace(np.log10(lo), np.log10(model.max_distance_pc), _N_BOUND_NODES)
        self.nodes[-1] = model.max_distance_pc
        self.cell_bound = self._cell_bounds()
        node = np.minimum(np.searchsorted(self.nodes, dmax * (1.0 - 1e-12), side="left"), _N_BOUND_NODES - 1)
        totals = self.cell_bound.sum(axis=2)  # (n_pop, n_nodes)
        proposal = target * totals[pops, node]
        keep = proposal > 0
        if not keep.any():
            raise ValueError("no star can be visible: check the magnitude limit and the sky region")
        self.pop, self.row, self.f_lo, self.f_hi, self.node = (x[keep] for x in (pops, rows, f_lo, f_hi, node))
        self.cumulative = np.cumsum(proposal[keep])
        # per (pop, node) the cell CDF, flattened with an offset of 1 per row for a single searchsorted
        cdf = np.cumsum(self.cell_bound, axis=2)
        cdf = cdf / np.where(cdf[..., -1:] > 0, cdf[..., -1:], 1.0)
        cdf[..., -1] = 1.0
        offsets = np.arange(cdf.shape[0] * cdf.shape[1], dtype=np.float64).reshape(cdf.shape[:2])
        self._cell_cdf = (cdf + offsets[..., None]).ravel()

    def dmax(self, absmag_g) -> np.ndarray:
        """Largest distance [pc] at which a star of absolute G can pass the cut (no dust), capped."""
        m = np.asarray(absmag_g, dtype=np.float64)
        if self.g_limit is None:
            return np.full(m.shape, self.model.max_distance_pc)
        d = 10.0 ** ((self.g_limit + self.g_margin - m) / 5.0 + 1.0)
        return np.minimum(d, self.model.max_distance_pc)

    def _cell_bounds(self) -> np.ndarray:
        cells = self.cells
        tl, tb = cells.test_points()  # (cells, 9): a 3 x 3 lattice per cell, shared along cell edges
        offsets = np.array([0, 1, 2])
        lat_col = (2 * cells.col[:, None, None] + offsets[None, :, None]) % (2 * cells.n_cols)
        lat_row = 2 * cells.row[:, None, None] + offsets[None, None, :]
        key = (lat_col * (2 * cells.n_rows + 1) + lat_row).reshape(cells.size, 9)
        unique, first, inverse = np.unique(key.ravel(), return_index=True, return_inverse=True)
        pl, pb = tl.ravel()[first], tb.ravel()[first]
        # fine distance grid containing every bound node (3 sub-steps per node) plus 4 decades below
        log_nodes = np.log10(self.nodes)
        below = np.linspace(log_nodes[0] - 4.0, log_nodes[0], _N_BELOW, endpoint=False)
        within = np.linspace(log_nodes[0], log_nodes[-1], _REFINE * (_N_BOUND_NODES - 1) + 1)
        fine = 10.0 ** np.concatenate([below, within])
        fine[_N_BELOW + _REFINE * np.arange(_N_BOUND_NODES)] = self.nodes
        node_cols = _N_BELOW + _REFINE * np.arange(_N_BOUND_NODES)
        out = np.empty((len(self.population_names), _N_BOUND_NODES, cells.size))
        for j in range(len(self.population_names)):
            counts = _cumulative_counts(pl, pb, fine, tuple(self.params[j]), self.model)[:, node_cols]
            per_cell = counts[inverse.reshape(cells.size, 9)].max(axis=1)  # (cells, nodes)
            out[j] = _SAFETY * np.maximum.accumulate(per_cell, axis=1).T
        del unique
        return out

    def draw(self, key: jax.Array, n: int) -> Candidates:
        """Propose ``n`` candidates and return the accepted ones (module docstring, steps 1–3)."""
        ks = jax.random.split(key, 6)
        u = [_random.uniform(k, n) for k in ks[:5]]
        idx = np.minimum(
            np.searchsorted(self.cumulative, u[0] * self.cumulative[-1], side="right"), self.row.size - 1
        )
        pop, row, node = self.pop[idx], self.row[idx], self.node[idx]
        n_cells = self.cells.size
        table_row = pop * _N_BOUND_NODES + node
        flat = np.searchsorted(self._cell_cdf, table_row + u[4], side="right")
        cell = np.clip(flat - table_row * n_cells, 0, n_cells - 1)
        _, t = mass_in_interval(self.grid, row, self.f_lo[idx], self.f_hi[idx], u[1])
        g_abs = self.grid.absmag[row, 0] + t * (self.grid.absmag[row + 1, 0] - self.grid.absmag[row, 0])
        dmax = self.dmax(g_abs)
        l_deg, b_deg = self.cells.sample(ks[5], cell)
        in_region = self.cells.in_region(l_deg, b_deg)
        params = tuple(self.params[pop, i] for i in range(4))
        count, dist = line_of_sight(l_deg, b_deg, dmax, params, u[2], self.model)
        bound = self.cell_bound[pop, node, cell]
        ratio = count / bound
        accept = in_region & (u[3] < ratio)
        violations = int(np.sum(in_region & (ratio > 1.0)))
        keep = np.flatnonzero(accept)
        return Candidates(
            l_deg=l_deg[keep],
            b_deg=b_deg[keep],
            distance_pc=dist[keep],
            population=pop[keep],
            stars=interpolate(self.grid, row[keep], t[keep]),
            n_proposed=n,
            n_bound_violations=violations,
        )


@functools.partial(jax.jit, static_argnames=("model",))
def _cumulative_chunk(l_deg, b_deg, fine, norm, is_disk, a, c, model):
    d = fine[None, :]
    f = population_density(l_deg[:, None], b_deg[:, None], d, (norm, is_disk, a, c), model) * d * d
    first = f[:, :1] * d[:, :1] / 3.0
    rest = 0.5 * (f[:, 1:] + f[:, :-1]) * (d[:, 1:] - d[:, :-1])
    return jnp.cumsum(jnp.concatenate([first, rest], axis=1), axis=1)


def _cumulative_counts(l_deg, b_deg, fine, params, model) -> np.ndarray:
    """``∫₀^{d} ρ s² ds`` at every distance of ``fine`` for each direction (cumulative trapezoid), float64."""
    n = l_deg.size
    chunk = 1 << 12
    out = np.empty((n, fine.size))
    dtype = jnp.result_type(float)
    p = tuple(jnp.asarray(v, dtype=dtype) for v in params)
    fine_j = jnp.asarray(fine, dtype=dtype)
    for start in range(0, n, chunk):
        ll, bb = l_deg[start : start + chunk], b_deg[start : start + chunk]
        m = ll.size
        if m < chunk:
            ll, bb = (
                np.concatenate([ll, np.repeat(ll[:1], chunk - m)]),
                np.concatenate([bb, np.repeat(bb[:1], chunk - m)]),
            )
        out[start : start + m] = np.asarray(
            _cumulative_chunk(jnp.asarray(ll, dtype), jnp.asarray(bb, dtype), fine_j, *p, model=model), np.float64
        )[:m]
    return out


def warn_bound_violations(n_violations: int, n_proposed: int) -> None:
    """Warn when the rejection bound failed for some candidates (their directions are slightly under-sampled)."""
    if n_violations:
        warnings.warn(
            f"simulate: the line-of-sight count bound was exceeded for {n_violations} of {n_proposed} candidates; "
            "those directions are slightly under-represented (please report this)",
            RuntimeWarning,
            stacklevel=3,
        )
