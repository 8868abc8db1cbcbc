"""The FLOWER density ``p_θ(x | R, Z)``: a conditional BNAF over standardised features (paper 002, §2.3).

:class:`FlowerModel` wraps a :class:`~jaxstars.flows.Flow` (conditional on the standardised Galactocentric
``(R, Z)`` of Eqs. 1–2) with the standardisation of ``x``; :meth:`FlowerModel.log_density` includes the
Jacobian of that standardisation, so it is the density of ``x`` in magnitude units (Eq. 8).  The training
``(R, Z)`` coverage (§2.6, §4.1.3) is stored with the model and checked by :meth:`FlowerModel.in_coverage`.

Files: ``directory/flower.npz`` written by :func:`jaxstars.flows.save_flow` with metadata
``{"flower": {"format": "jaxstars.flower.v1", ...}}``; anything else raises
:class:`~jaxstars.flows.FlowFileError` on load.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxstars.astro.extinction import ExtinctionLaw
from jaxstars.flows import Flow, FlowFileError, bnaf, load_flow, save_flow

from .features import FlowerFeatures

__all__ = ["FORMAT", "MODEL_FILE", "FlowerModel", "coverage_from_rz", "default_flower_flow"]

FORMAT = "jaxstars.flower.v1"
MODEL_FILE = "flower.npz"


def default_flower_flow(
    dim: int, block_dim: int = 4, depth: int = 3, activation: str = "tanh", *, n_layers: int = 2
) -> Flow:
    """FLOWER's conditional BNAF (§2.3): ``n_layers`` BNAF layers of depth 3, block dimension 4, tanh, context 2.

    ``activation="leaky_tanh"`` gives a flow that can be sampled everywhere (see :func:`jaxstars.flows.bnaf`).
    """
    return Flow(bnaf(dim, 2, n_layers=n_layers, depth=depth, block_dim=block_dim, activation=activation))


def coverage_from_rz(R, Z, *, bins: int = 24, min_count: int = 3) -> dict:
    """Training coverage of ``(R, Z)`` (§2.6): the bounding box and an occupancy grid over it.

    Returns ``{"R": [min, max], "Z": [min, max], "R_edges": [...], "Z_edges": [...], "occupied": [[bool]]}``;
    a cell is occupied when it holds at least ``min_count`` training points.  The number of cells per axis is
    reduced for small samples (about 20 points per cell on average at most).  Pass the (R, Z) of the training
    stars at their distance estimates.
    """
    R = np.asarray(R, float).ravel()
    Z = np.asarray(Z, float).ravel()
    ok = np.isfinite(R) & np.isfinite(Z)
    R, Z = R[ok], Z[ok]
    if R.size == 0:
        raise ValueError("no finite (R, Z) to build the coverage from")
    bins = int(max(1, min(bins, math.sqrt(R.size / 20.0))))
    r_edges = np.linspace(R.min(), R.max(), bins + 1)
    z_edges = np.linspace(Z.min(), Z.max(), bins + 1)
    if r_edges[-1] == r_edges[0]:
        r_edges = r_edges[0] + np.linspace(-0.5, 0.5, bins + 1)
    if z_edges[-1] == z_edges[0]:
        z_edges = z_edges[0] + np.linspace(-0.5, 0.5, bins + 1)
    counts, _, _ = np.histogram2d(R, Z, bins=(r_edges, z_edges))
    return {
        "R": [float(R.min()), float(R.max())],
        "Z": [float(Z.min()), float(Z.max())],
        "R_edges": r_edges.tolist(),
        "Z_edges": z_edges.tolist(),
        "occupied": (counts >= min_count).tolist(),
    }


def _floats(values, n: int, name: str) -> tuple[float, ...]:
    out = tuple(float(v) for v in np.asarray(values, float).ravel())
    if len(out) != n:
        raise ValueError(f"{name} needs {n} values, got {len(out)}")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite, got {out}")
    return out


@dataclass(frozen=True, eq=False)
class FlowerModel:
    """``p_θ(x | R, Z)`` (Eq. 8) with standardisation, coverage and I/O.

    Attributes
    ----------
    features : FlowerFeatures
    flow : Flow
        Conditional flow over ``(x − x_shift) / x_scale`` with context ``((R, Z) − ctx_shift) / ctx_scale``.
    x_shift, x_scale : tuple of float
        Standardisation of ``x`` (length ``features.dim``; scales > 0).
    ctx_shift, ctx_scale : tuple of float
        Standardisation of ``(R, Z)`` in pc.
    coverage : dict
        Training ``(R, Z)`` coverage (:func:`coverage_from_rz`); keys ``"R"``, ``"Z"`` (ranges) and optionally
        the occupancy grid ``"R_edges"``, ``"Z_edges"``, ``"occupied"``.  Empty dict: no coverage check.
    info : dict
        Free-form JSON-serialisable provenance (training settings, losses).
    """

    features: FlowerFeatures
    flow: Flow
    x_shift: tuple[float, ...]
    x_scale: tuple[float, ...]
    ctx_shift: tuple[float, float] = (0.0, 0.0)
    ctx_scale: tuple[float, float] = (1.0, 1.0)
    coverage: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        dim = self.features.dim
        if self.flow.dim != dim or self.flow.context_dim != 2:
            raise ValueError(
                f"the flow must have dim {dim} and context_dim 2, got {self.flow.dim} and {self.flow.context_dim}"
            )
        object.__setattr__(self, "x_shift", _floats(self.x_shift, dim, "x_shift"))
        object.__setattr__(self, "x_scale", _floats(self.x_scale, dim, "x_scale"))
        object.__setattr__(self, "ctx_shift", _floats(self.ctx_shift, 2, "ctx_shift"))
        object.__setattr__(self, "ctx_scale", _floats(self.ctx_scale, 2, "ctx_scale"))
        if min(self.x_scale) <= 0 or min(self.ctx_scale) <= 0:
            raise ValueError("x_scale and ctx_scale must be positive")

    # -- construction ---------------------------------------------------------------------------------------------
    @classmethod
    def from_data(
        cls, features: FlowerFeatures, flow: Flow | None, x, R, Z, *, coverage: dict | None = None, info=None
    ) -> FlowerModel:
        """A model standardised on example features ``x`` ``(n, dim)`` and their ``(R, Z)`` (pc).

        Shifts are medians and scales ``1.4826 × MAD`` (robust to outliers, floored at 1e-3); the coverage is
        :func:`coverage_from_rz` of ``(R, Z)`` unless given.  ``flow=None`` uses :func:`default_flower_flow`.
        """
        x = np.asarray(x, float)
        R = np.asarray(R, float).ravel()
        Z = np.asarray(Z, float).ravel()
        ok = np.all(np.isfinite(x), axis=1) & np.isfinite(R) & np.isfinite(Z)
        if not np.any(ok):
            raise ValueError("no finite rows to standardise on")
        x, R, Z = x[ok], R[ok], Z[ok]

        def robust(a):
            med = np.median(a, axis=0)
            mad = 1.4826 * np.median(np.abs(a - med), axis=0)
            return med, np.maximum(mad, 1e-3)

        x_shift, x_scale = robust(x)
        c_shift, c_scale = robust(np.stack([R, Z], axis=1))
        flow = default_flower_flow(features.dim) if flow is None else flow
        return cls(
            features=features,
            flow=flow,
            x_shift=tuple(x_shift),
            x_scale=tuple(x_scale),
            ctx_shift=tuple(c_shift),
            ctx_scale=tuple(c_scale),
            coverage=coverage_from_rz(R, Z) if coverage is None else coverage,
            info=dict(info or {}),
        )

    def init(self, key) -> Any:
        """Fresh flow parameters."""
        return self.flow.init(key)

    # -- standardisation ------------------------------------------------------------------------------------------
    def standardise(self, x) -> jnp.ndarray:
        return (jnp.asarray(x) - jnp.asarray(self.x_shift)) / jnp.asarray(self.x_scale)

    def unstandardise(self, u) -> jnp.ndarray:
        return jnp.asarray(u) * jnp.asarray(self.x_scale) + jnp.asarray(self.x_shift)

    def context(self, R, Z) -> jnp.ndarray:
        """Standardised flow context ``(..., 2)`` from ``R`` and ``Z`` (pc), broadcast."""
        R, Z = jnp.broadcast_arrays(jnp.asarray(R, float), jnp.asarray(Z, float))
        rz = jnp.stack([R, Z], axis=-1)
        return (rz - jnp.asarray(self.ctx_shift)) / jnp.asarray(self.ctx_scale)

    @property
    def log_scale_jacobian(self) -> float:
        """``Σ log x_scale``: subtracted from the flow's log density of standardised ``x``."""
        return float(np.sum(np.log(self.x_scale)))

    # -- density and sampling (Eq. 8) -----------------------------------------------------------------------------
    def log_density(self, params, x, R, Z) -> jnp.ndarray:
        """``log p_θ(x | R, Z)`` in magnitude units: ``(..., dim)`` and ``(...)`` → ``(...)`` (broadcast)."""
        return self.flow.log_prob(params, self.standardise(x), self.context(R, Z)) - self.log_scale_jacobian

    def sample(self, params, key, R, Z, n: int) -> jnp.ndarray:
        """``n`` draws of ``x`` per ``(R, Z)``: shape ``(n,) + broadcast(R, Z).shape + (dim,)``.

        BNAF sampling inverts the network numerically; with ``tanh`` activations a latent draw far in the tails can
        fall outside a layer's image and give NaN (use ``activation="leaky_tanh"`` if sampling matters).
        """
        u = self.flow.sample(params, key, shape=(n,), context=self.context(R, Z))
        return self.unstandardise(u)

    # -- coverage (§2.6) ------------------------------------------------------------------------------------------
    def in_coverage(self, R, Z) -> jnp.ndarray:
        """Whether ``(R, Z)`` lies inside the training coverage: box and, if stored, an occupied grid cell.

        Pure ``jax.numpy`` (usable under ``jit``/``vmap``); ``True`` everywhere when no coverage is stored.
        """
        R, Z = jnp.broadcast_arrays(jnp.asarray(R, float), jnp.asarray(Z, float))
        cov = self.coverage
        if not cov:
            return jnp.ones(R.shape, bool)
        (r_lo, r_hi), (z_lo, z_hi) = cov["R"], cov["Z"]
        inside = (R >= r_lo) & (R <= r_hi) & (Z >= z_lo) & (Z <= z_hi) & jnp.isfinite(R) & jnp.isfinite(Z)
        if "occupied" in cov:
            r_edges = jnp.asarray(cov["R_edges"], float)
            z_edges = jnp.asarray(cov["Z_edges"], float)
            grid = jnp.asarray(np.asarray(cov["occupied"], bool))
            i = jnp.clip(jnp.searchsorted(r_edges, R, side="right") - 1, 0, grid.shape[0] - 1)
            j = jnp.clip(jnp.searchsorted(z_edges, Z, side="right") - 1, 0, grid.shape[1] - 1)
            inside = inside & grid[i, j]
        return inside

    # -- I/O ------------------------------------------------------------------------------------------------------
    def to_config(self) -> dict:
        return {
            "format": FORMAT,
            "features": self.features.to_config(),
            "x_shift": list(self.x_shift),
            "x_scale": list(self.x_scale),
            "ctx_shift": list(self.ctx_shift),
            "ctx_scale": list(self.ctx_scale),
            "coverage": self.coverage,
            "info": self.info,
        }

    def save(self, directory: str | os.PathLike, params) -> str:
        """Write ``directory/flower.npz`` (flow arrays + this config as metadata ``{"flower": ...}``)."""
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(os.fspath(directory), MODEL_FILE)
        config = json.loads(json.dumps(self.to_config(), default=_json_default))
        save_flow(path, self.flow, params, metadata={"flower": config})
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike, *, law: ExtinctionLaw | None = None) -> tuple[FlowerModel, Any]:
        """Read a model written by :meth:`save` (the directory or the ``.npz`` itself): ``(model, params)``.

        Raises ``FileNotFoundError`` when absent and :class:`~jaxstars.flows.FlowFileError` when the file is
        corrupt, not a FLOWER model, or of another FLOWER format version.
        """
        path = os.fspath(directory)
        if os.path.isdir(path):
            path = os.path.join(path, MODEL_FILE)
        flow, params, metadata = load_flow(path)
        config = metadata.get("flower") if isinstance(metadata, dict) else None
        if not isinstance(config, dict):
            raise FlowFileError(f"{path!r} is a flow file but not a jaxstars FLOWER model (no 'flower' metadata)")
        if config.get("format") != FORMAT:
            raise FlowFileError(
                f"{path!r} has FLOWER format {config.get('format')!r}; this jaxstars reads {FORMAT}"
            )
        try:
            model = cls(
                features=FlowerFeatures.from_config(config["features"], law=law),
                flow=flow,
                x_shift=config["x_shift"],
                x_scale=config["x_scale"],
                ctx_shift=config["ctx_shift"],
                ctx_scale=config["ctx_scale"],
                coverage=dict(config.get("coverage") or {}),
                info=dict(config.get("info") or {}),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise FlowFileError(f"{path!r}: invalid FLOWER model config: {err}") from err
        return model, params

    def describe(self) -> str:
        return json.dumps(self.to_config(), indent=2, default=_json_default)


def _json_default(obj):
    if isinstance(obj, np.generic | jax.Array | np.ndarray):
        return np.asarray(obj).tolist()
    return str(obj)
