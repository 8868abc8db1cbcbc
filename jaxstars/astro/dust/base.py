"""The dust-map protocol (:class:`DustMap`, :class:`DustQuery`) and the registry of maps by name.

Every map, whatever its source, answers one question: given Galactic (l, b) and optionally distances, what is the
reddening (mean, standard deviation, posterior samples where the map has them)?  Inputs are checked here, once, for
every map: rows with a non-finite or out-of-range position or distance get NaN and ``valid = False``, never a
silently wrong number.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DustMap",
    "DustMapFileNotFoundError",
    "DustQuery",
    "available_maps",
    "get_map",
    "register_map",
]


class DustMapFileNotFoundError(FileNotFoundError):
    """A map's data files (or the package that reads them) are absent; the message names the fetch command."""


@dataclass(frozen=True)
class DustQuery:
    """Reddening at a set of stars, as returned by :meth:`DustMap.query`.

    Attributes
    ----------
    mean, std : numpy.ndarray
        Mean reddening and its standard deviation, in ``units``; NaN where ``valid`` is False.
    samples : numpy.ndarray or None
        Posterior samples of the reddening, shape ``mean.shape + (n_samples,)``, or None where the map has no samples
        (or, for maps that draw them, when no ``key`` was given).
    valid : numpy.ndarray of bool
        False where no reddening could be computed: non-finite or out-of-range position or distance, or a position
        outside the map's footprint.
    units : str
        The map's reddening units (e.g. ``"E(B-V) [mag], SFD98 scale"``).
    flags : dict of str to numpy.ndarray
        Map-specific per-star quality flags (e.g. Bayestar's ``converged`` and ``reliable_dist``).
    """

    mean: np.ndarray
    std: np.ndarray
    samples: np.ndarray | None
    valid: np.ndarray
    units: str = ""
    flags: Mapping[str, np.ndarray] = field(default_factory=dict)


def _to_unit(value: Any, unit: str) -> np.ndarray:
    """A float64 array from a number, array or astropy Quantity (converted to ``unit``)."""
    if hasattr(value, "unit") and hasattr(value, "to_value"):
        return np.asarray(value.to_value(unit), dtype=np.float64)
    if np.ma.isMaskedArray(value):
        return np.ma.filled(np.ma.asarray(value, dtype=np.float64), np.nan)
    return np.asarray(value, dtype=np.float64)


class DustMap(abc.ABC):
    """A dust map: reddening as a function of Galactic position and (for 3D maps) distance.

    Subclasses set ``name``, ``units``, ``three_d`` and ``reference``, and implement :meth:`_query` on clean rows only;
    :meth:`query` does the unit conversion, broadcasting and validation for every map.

    Notes
    -----
    * Angles in degrees (Galactic l, b), distances in pc; astropy Quantities are accepted and converted.
    * ``distance_pc=None`` on a 3D map means the total column along the sight line (reddening to infinity, where the
      map defines it); a 2D map ignores distances and always returns the total column.
    """

    name: str = ""
    units: str = ""
    three_d: bool = False
    reference: str = ""

    def query(self, l_deg: Any, b_deg: Any, distance_pc: Any = None, key: Any = None) -> DustQuery:
        """Reddening at Galactic (l, b) and optional distances.

        Parameters
        ----------
        l_deg, b_deg : array_like or Quantity
            Galactic longitude and latitude in degrees (any broadcastable shapes).
        distance_pc : array_like or Quantity, optional
            Heliocentric distances in pc; None for the total column.
        key : jax.random.PRNGKey, optional
            Used by maps that draw samples (identical key → identical samples); ignored by the others.

        Returns
        -------
        DustQuery
            ``mean``/``std``/``valid`` have the broadcast shape of the inputs; ``samples`` one trailing axis more.
        """
        lon = _to_unit(l_deg, "deg")
        lat = _to_unit(b_deg, "deg")
        arrays = [lon, lat] if distance_pc is None else [lon, lat, _to_unit(distance_pc, "pc")]
        arrays = np.broadcast_arrays(*arrays)
        shape = arrays[0].shape
        flat = [a.ravel() for a in arrays]
        good = np.isfinite(flat[0]) & np.isfinite(flat[1]) & (np.abs(flat[1]) <= 90.0)
        dist = None
        if distance_pc is not None:
            dist = flat[2]
            good &= np.isfinite(dist) & (dist >= 0.0)
        n = flat[0].size
        mean = np.full(n, np.nan)
        std = np.full(n, np.nan)
        samples = None
        flags: dict[str, np.ndarray] = {}
        if good.any():
            m, s, smp, flg = self._query(
                np.mod(flat[0][good], 360.0), flat[1][good], None if dist is None else dist[good], key
            )
            mean[good] = m
            std[good] = s
            if smp is not None:
                samples = np.full((n, smp.shape[-1]), np.nan)
                samples[good] = smp
            for fname, fval in flg.items():
                full = np.zeros(n, dtype=bool)
                full[good] = fval
                flags[fname] = full.reshape(shape)
        valid = good & np.isfinite(mean)
        return DustQuery(
            mean=mean.reshape(shape),
            std=std.reshape(shape),
            samples=None if samples is None else samples.reshape(shape + (samples.shape[-1],)),
            valid=valid.reshape(shape),
            units=self.units,
            flags=flags,
        )

    @abc.abstractmethod
    def _query(
        self, l_deg: np.ndarray, b_deg: np.ndarray, distance_pc: np.ndarray | None, key: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
        """(mean, std, samples or None, flags) on 1-D rows already checked finite (l in [0, 360), |b| ≤ 90, d ≥ 0)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, units={self.units!r}, three_d={self.three_d})"


_REGISTRY: dict[str, Callable[..., DustMap]] = {}


def register_map(name: str, factory: Callable[..., DustMap], *, overwrite: bool = False) -> None:
    """Register a map factory (a class or function returning a :class:`DustMap`) under ``name``.

    Factories are called lazily by :func:`get_map`, so maps whose files are absent can be registered safely.
    """
    key = name.lower()
    if not callable(factory):
        raise TypeError(f"factory for dust map {name!r} must be callable, got {type(factory).__name__}")
    if key in _REGISTRY and not overwrite:
        raise ValueError(f"a dust map named {name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[key] = factory


def available_maps() -> list[str]:
    """Names of all registered dust maps, sorted."""
    return sorted(_REGISTRY)


def get_map(name: str, **kwargs: Any) -> DustMap:
    """Build the registered map ``name`` (case-insensitive), passing ``kwargs`` to its factory.

    Raises
    ------
    KeyError
        Unknown name; the message lists the registered names.
    DustMapFileNotFoundError
        The map needs files (or a package) that are absent; the message names the fetch command.
    """
    try:
        factory = _REGISTRY[name.lower()]
    except KeyError:
        raise KeyError(f"unknown dust map {name!r}; registered maps: {', '.join(available_maps())}") from None
    return factory(**kwargs)
