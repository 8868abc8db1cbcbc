"""FLOWER as a catalog-runner processor: per-star reddening and distance posteriors for one chunk of stars.

:class:`FlowerPosteriors` is what ``jaxstars flower infer`` and ``jaxstars infer`` (model kind ``flower``) run on
every chunk of a catalog: a picklable recipe (model file, method, seed, zero-point, prior, …) whose
:meth:`~FlowerPosteriors.setup` loads the model once per process (so it can be shipped to Dask workers), and which
returns the output columns of a chunk — from the fast path (:func:`~jaxstars.models.flower.flower_posteriors`,
default) or from vmapped per-star NUTS (:func:`~jaxstars.models.flower.nuts_flower_posteriors`, the paper's
procedure).  Random draws are keyed by the global row id, so the output does not depend on the chunking.

The helpers here (option parsing, catalog probing, the cached model loader) are shared with
:mod:`jaxstars.models.flower.cli`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from jaxstars.catalog.distributed import ChunkProcessor
from jaxstars.cli_support import probe_canonical
from jaxstars.infer import InferError

__all__ = [
    "FlowerCommandError",
    "FlowerPosteriors",
    "load_model",
    "model_file",
    "parse_distance_prior",
    "parse_posterior_options",
    "parse_zero_point",
    "present_bands",
    "resolve_zero_point",
]

#: Per-star generalized-gamma prior columns :func:`~jaxstars.models.flower.prepare_flower_stars` reads when present.
PRIOR_COLUMNS = ("ggd_length", "ggd_alpha", "ggd_beta")


class FlowerCommandError(InferError):
    """An input problem reported by ``jaxstars flower`` / ``jaxstars infer`` as a one-line message (exit code 2)."""


# ------------------------------------------------------------------------------------------------ option parsing


def parse_distance_prior(text: str) -> tuple[float, float, float]:
    """``--distance-prior L,ALPHA,BETA``: the generalized gamma prior of Eq. 13 (L in pc, α > 0, β > −1)."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise FlowerCommandError(f"--distance-prior {text!r}: give three numbers L,ALPHA,BETA (e.g. 1300,1.5,0.8)")
    length, alpha, beta = values
    if not (length > 0 and alpha > 0 and beta > -1):
        raise FlowerCommandError(f"--distance-prior {text!r}: need L > 0, ALPHA > 0 and BETA > -1")
    return values


def parse_zero_point(text) -> float | str:
    """``--zero-point``: ``"auto"``, a number of mas (catalogue-bias sign, ``ϖ_obs = ϖ_true + zp``) or a column."""
    if text is None:
        return "auto"
    spec = str(text).strip()
    if spec.lower() == "auto":
        return "auto"
    try:
        value = float(spec)
    except ValueError:
        if not spec:
            raise FlowerCommandError("--zero-point must be 'auto', a number of mas or a column name") from None
        return spec
    if not math.isfinite(value):
        raise FlowerCommandError(f"--zero-point {text!r} must be finite")
    return value


def resolve_zero_point(spec: float | str, meta) -> float | str:
    """``"auto"`` → the catalog's ``PLXZP`` metadata (as written by ``jaxstars simulate``) if any, else 0."""
    if spec != "auto":
        return spec
    value = (meta or {}).get("PLXZP", 0.0)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise FlowerCommandError(
            f"the catalog's PLXZP metadata {value!r} is not a number: give --zero-point"
        ) from None
    if not math.isfinite(value):
        raise FlowerCommandError(f"the catalog's PLXZP metadata {value!r} is not finite: give --zero-point")
    return value


_NOT_OPTIONS = ("n_samples", "log_selection")  # set by --samples / not expressible on a command line


def parse_posterior_options(items) -> dict:
    """``--posterior-option NAME=VALUE`` (repeatable) → :class:`~jaxstars.models.flower.FlowerPosteriorConfig` fields.

    Values are converted to the field's type: numbers, strings (e.g. ``proposal=photometric``), ``true``/``false``,
    comma-separated numbers for tuples (``quantiles=0.05,0.5,0.95``, ``mag_limits=5,21``) and ``none`` for the
    optional ones.  The configuration is validated as a whole.
    """
    from .posterior import FlowerPosteriorConfig

    fields = {f.name: f for f in dataclasses.fields(FlowerPosteriorConfig) if f.name not in _NOT_OPTIONS}
    defaults = FlowerPosteriorConfig()
    out: dict = {}
    for item in items or ():
        name, sep, text = str(item).partition("=")
        name, text = name.strip(), text.strip()
        if not sep or name not in fields:
            known = ", ".join(fields)
            raise FlowerCommandError(f"--posterior-option {item!r}: use NAME=VALUE with NAME one of {known}")
        default = getattr(defaults, name)
        try:
            if text.lower() == "none" and default is None:
                value = None
            elif isinstance(default, bool):
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                value = text.lower() in ("true", "1")
            elif isinstance(default, int):
                value = int(text)
            elif isinstance(default, float):
                value = float(text)
            elif isinstance(default, str):
                value = text
            else:  # tuples (quantiles) and optional tuples (absmag_range, mag_limits)
                value = tuple(float(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise FlowerCommandError(f"--posterior-option {item!r}: cannot read {text!r} for {name}") from None
        out[name] = value
    try:
        FlowerPosteriorConfig(**out)
    except (TypeError, ValueError) as err:
        raise FlowerCommandError(f"--posterior-option: {err}") from None
    return out


def find_column(colnames, name: str) -> str | None:
    """``name`` among ``colnames`` without regard to case (the catalog readers match extra columns that way)."""
    lower = {c.lower(): c for c in colnames}
    return lower.get(str(name).lower())


# ------------------------------------------------------------------------------------------------ models


def model_file(path: str | os.PathLike) -> Path:
    """The ``flower.npz`` behind ``--model`` (a folder or the file itself); ``FileNotFoundError`` if absent."""
    from .model import MODEL_FILE

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model {path} not found")
    file = path / MODEL_FILE if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"model {path} holds no {MODEL_FILE}")
    return file


_LOADED: dict[tuple, tuple[Any, Any]] = {}
_MAX_LOADED = 4


def load_model(path: str | os.PathLike):
    """``FlowerModel.load`` with a small per-process cache keyed by the file's path, size and modification time.

    Every run in one process then uses the same model object, and the compiled posterior functions (cached per
    model object) are reused instead of being compiled again.  Corrupt files raise
    :class:`~jaxstars.flows.FlowFileError`.
    """
    from .model import FlowerModel

    file = model_file(path)
    stat = file.stat()
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    loaded = _LOADED.get(key)
    if loaded is None:
        loaded = FlowerModel.load(file)
        while len(_LOADED) >= _MAX_LOADED:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = loaded
    return loaded


# ------------------------------------------------------------------------------------------------ catalogs


def present_bands(raw, catalog_bands) -> tuple[str, ...]:
    """The catalogue bands (``G``, ``ps1_g`` …) of ``catalog_bands`` for which ``raw`` has magnitude and error columns."""
    canonical = probe_canonical(raw)

    def finite(name):
        return name in canonical.colnames and bool(np.isfinite(np.asarray(canonical[name], float)[0]))

    return tuple(b for b in catalog_bands if finite(f"mag_{b}") and finite(f"mag_err_{b}"))


def has_positions(raw) -> bool:
    """Whether ``raw`` has sky positions (``l``/``b`` or ``ra``/``dec`` under any accepted name)."""
    canonical = probe_canonical(raw)
    return all(
        name in canonical.colnames and np.isfinite(np.asarray(canonical[name], float)[0]) for name in ("l", "b")
    )


def has_parallaxes(raw) -> bool:
    canonical = probe_canonical(raw)
    return all(
        name in canonical.colnames and np.isfinite(np.asarray(canonical[name], float)[0])
        for name in ("parallax", "parallax_error")
    )


def _float_column(table, name: str) -> np.ndarray:
    col = table[find_column(table.colnames, name)]
    values = np.array(np.ma.getdata(col), dtype=np.float64).reshape(len(table))
    values[np.ma.getmaskarray(col).reshape(len(table))] = np.nan
    return values


# ------------------------------------------------------------------------------------------------ output


def percent_name(level: float) -> str:
    """Quantile level → column suffix: 0.025 → ``"2_5"``, 0.16 → ``"16"`` (as the posterior functions name them)."""
    return f"{100 * level:g}".replace(".", "_")


def flag_strings(flags: np.ndarray) -> np.ndarray:
    """``|``-joined :data:`~jaxstars.models.flower.FLAGS` names per row (empty string for no flag)."""
    from .stars import flag_names

    flags = np.asarray(flags, dtype=np.int64)
    unique, inverse = np.unique(flags, return_inverse=True)
    names = np.array(["|".join(flag_names(int(v))) for v in unique] or [""], dtype=str)
    return names[inverse.reshape(-1)] if flags.size else np.zeros(0, dtype="U1")


def _ordinal(level: float) -> str:
    return f"{100 * level:g} %"


#: Descriptions of the per-star diagnostics the posterior functions return (others get a generic one).
DIAGNOSTICS = {
    "ebv_logd_corr": "posterior correlation of E(B-V) and ln d",
    "log_evidence": "log marginal likelihood of the star's data, log p(data) (fast path)",
    "edge_mass": "posterior mass in the grid's edge nodes: distance edges, E edges inside the prior (fast path)",
    "node_gain": "largest log-p gain of the last Newton step in x at grid nodes within 10 nats of the best (fast"
    " path; well above 1: Laplace marginals not converged there)",
    "retried": "1 where the fast path was recomputed with a finer E scan after too much mass on the grid's edge",
    "nuts_flags": "bit field of jaxstars.inference.NUTS_FLAGS (sampler diagnostics)",
    "n_divergent": "divergent NUTS transitions after warm-up",
    "accept_prob": "mean NUTS acceptance probability",
    "step_size": "adapted NUTS step size",
    "num_steps": "mean leapfrog steps per NUTS draw",
    "rhat": "split R-hat, max over parameters (several chains only)",
    "ess_bulk": "bulk effective sample size, min over parameters",
}
_SAMPLES = ("ebv_samples", "distance_samples")


def summary_columns(quantiles) -> list[tuple[str, Any, str]]:
    """``(name, unit, description)`` of the posterior summary columns, in output order."""
    import astropy.units as u

    cols: list[tuple[str, Any, str]] = []
    for name, unit, what in (("ebv", u.mag, "E(B-V)"), ("distance", u.pc, "distance")):
        cols.append((f"{name}_mean", unit, f"posterior mean {what}"))
        cols.append((f"{name}_std", unit, f"posterior standard deviation of the {what}"))
        for q in quantiles:
            cols.append((f"{name}_q{percent_name(q)}", unit, f"{_ordinal(q)} quantile of the {what} posterior"))
    return cols


def result_table(res: dict, n: int, quantiles, n_samples: int):
    """The output columns of one chunk (``source_id`` is added by :func:`~jaxstars.catalog.run_catalog`).

    The summaries (:func:`summary_columns`), then every other per-star value the posterior function returned
    (its diagnostics, in its order: which ones depends on the method, not on the data, so every chunk has the
    same columns), ``flags``, ``flag_names`` and, with ``n_samples``, the draws.
    """
    import astropy.units as u
    from astropy.table import Table

    out = Table()
    summary = summary_columns(quantiles)
    for name, unit, description in summary:
        values = np.asarray(res[name], dtype=np.float64) if name in res else np.full(n, np.nan)
        out[name] = values.reshape(n)
        out[name].unit = unit
        out[name].description = description
    skip = {c[0] for c in summary} | {"flags", *_SAMPLES}
    for name, values in res.items():
        values = np.asarray(values)
        if name in skip or values.shape != (n,):
            continue
        out[name] = values.astype(np.int64) if values.dtype.kind in "iub" else values.astype(np.float64)
        out[name].description = DIAGNOSTICS.get(name, "per-star diagnostic of the posterior computation")
    out["flags"] = np.asarray(res["flags"], dtype=np.int64).reshape(n)
    out["flags"].description = "bit field of jaxstars.models.flower.FLAGS"
    out["flag_names"] = flag_strings(out["flags"])
    out["flag_names"].description = "names of the flags set, |-separated"
    if n_samples > 0:
        for name, unit, what in (("ebv_samples", u.mag, "E(B-V)"), ("distance_samples", u.pc, "distance")):
            samples = res.get(name, np.full((n, n_samples), np.nan))
            out[name] = np.asarray(samples, dtype=np.float32).reshape(n, n_samples)
            out[name].unit = unit
            out[name].description = f"draws from the {what} posterior"
    return out


def file_sha256(path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------ processor


class FlowerPosteriors(ChunkProcessor):
    """Reddening and distance posteriors (Eq. 16) of one catalog chunk with a saved FLOWER model.

    Parameters
    ----------
    model_file : str or path-like
        ``flower.npz`` written by :meth:`~jaxstars.models.flower.FlowerModel.save` (or its folder).
    method : {"fast", "nuts"}
        ``"fast"``: :func:`~jaxstars.models.flower.flower_posteriors` (x marginalised by importance sampling on a
        zoomed (E, d) grid); ``"nuts"``: :func:`~jaxstars.models.flower.nuts_flower_posteriors` (the paper's
        procedure, vmapped per-star NUTS on the shared engine).
    seed : int
        Base random seed; star ``i`` uses ``fold_in(seed, row_id)``.
    samples : int
        Posterior draws per star to write (``ebv_samples``, ``distance_samples``); 0 for none.
    zero_point : float or str
        Parallax zero-point ``zp`` [mas] (catalogue-bias sign, ``ϖ_obs = 1000/d + zp``) or a per-star column.
    e_max_column : str, optional
        Column of an external integrated reddening ``E_max`` along each line of sight: enables the §2.9.2 check
        (flag ``dust_pushed``).
    distance_prior : (L, alpha, beta)
        Generalized gamma prior (Eq. 13); per-star columns ``ggd_length``/``ggd_alpha``/``ggd_beta`` override it
        when listed in ``prior_columns``.
    prior_columns : sequence of str
        Per-star prior columns present in the catalog (read along with the chunk).
    mag_err_floor : float
        Added in quadrature to every magnitude error (default 0, as in the paper).
    nuts : dict, optional
        :class:`~jaxstars.inference.NUTSConfig` fields for ``method="nuts"`` (``dense_mass`` defaults to True, as in
        :data:`~jaxstars.models.flower.PAPER_NUTS`).
    posterior : dict, optional
        Further :class:`~jaxstars.models.flower.FlowerPosteriorConfig` fields (grid sizes, prior bounds, …).
    """

    def __init__(
        self,
        model_file,
        *,
        method: str = "fast",
        seed: int = 0,
        samples: int = 0,
        zero_point: float | str = 0.0,
        e_max_column: str | None = None,
        distance_prior=(1300.0, 1.5, 0.8),
        prior_columns=(),
        mag_err_floor: float = 0.0,
        nuts: dict | None = None,
        posterior: dict | None = None,
    ):
        from .posterior import FlowerPosteriorConfig

        if method not in ("fast", "nuts"):
            raise FlowerCommandError(f"unknown method {method!r}: use 'fast' or 'nuts'")
        if samples < 0:
            raise FlowerCommandError("the number of samples must be >= 0")
        if not (math.isfinite(mag_err_floor) and mag_err_floor >= 0):
            raise FlowerCommandError("--mag-err-floor must be a non-negative number")
        self.model_file = str(model_file)
        self.method = method
        self.seed = int(seed)
        self.samples = int(samples)
        self.zero_point = zero_point if isinstance(zero_point, str) else float(zero_point)
        self.e_max_column = e_max_column
        self.distance_prior = tuple(float(v) for v in distance_prior)
        self.prior_columns = tuple(prior_columns)
        self.mag_err_floor = float(mag_err_floor)
        self.nuts = {"dense_mass": True, **dict(nuts or {})}
        self.posterior = dict(posterior or {})
        try:  # validate now, not on a worker
            FlowerPosteriorConfig(**self._posterior_fields())
            if method == "nuts":
                from jaxstars.inference import NUTSConfig

                NUTSConfig(**self.nuts)
        except (TypeError, ValueError) as err:
            raise FlowerCommandError(f"invalid posterior settings: {err}") from None

    def _posterior_fields(self) -> dict:
        fields = dict(self.posterior)
        if self.method == "fast":
            fields.setdefault("n_samples", self.samples)
        return fields

    def extra_columns(self) -> list[str]:
        """Non-canonical input columns the chunks must carry (zero-point, E_max, per-star prior)."""
        cols = [self.zero_point] if isinstance(self.zero_point, str) else []
        if self.e_max_column:
            cols.append(self.e_max_column)
        cols += [c for c in self.prior_columns if c not in cols]
        return cols

    def setup(self) -> None:
        """Load the model (cached per process) and build the posterior settings (once per process)."""
        from jaxstars.inference import NUTSConfig

        from .posterior import FlowerPosteriorConfig

        self.model, self.params = load_model(self.model_file)
        self.posterior_config = FlowerPosteriorConfig(**self._posterior_fields())
        self.nuts_config = NUTSConfig(**self.nuts)

    def __call__(self, table, row_ids):
        """Output columns for one chunk: summaries, diagnostics, flags (and draws with ``samples > 0``)."""
        from .posterior import dust_pushed, flower_posteriors, nuts_flower_posteriors
        from .stars import FLAGS, prepare_flower_stars

        n = len(table)
        if isinstance(self.zero_point, str):
            zp_values = _float_column(table, self.zero_point)
            # prepare_flower_stars reads a per-star zero-point from a column of the table it is given
            table = table.copy(copy_data=False)
            table["__flower_zero_point"] = zp_values
            zero_point: float | str = "__flower_zero_point"
        else:
            zero_point = self.zero_point
        stars = prepare_flower_stars(
            self.model.features,
            table,
            parallax_zero_point=zero_point,
            distance_prior=self.distance_prior,
            mag_err_floor=self.mag_err_floor,
            row_ids=np.asarray(row_ids, dtype=np.int64),
        )
        e_max = _float_column(table, self.e_max_column) if self.e_max_column else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if self.method == "nuts":
                res = nuts_flower_posteriors(
                    self.model,
                    self.params,
                    stars,
                    self.seed,
                    nuts=self.nuts_config,
                    config=self.posterior_config,
                    keep_samples=self.samples,
                )
                if e_max is not None:
                    res["flags"] = np.asarray(res["flags"], np.int64).copy()
                    pushed = dust_pushed(self.model.features, stars, e_max)
                    res["flags"][pushed] |= FLAGS["dust_pushed"]
            else:
                res = flower_posteriors(
                    self.model, self.params, stars, self.seed, self.posterior_config, e_max=e_max
                )
        return result_table(res, n, self.posterior_config.quantiles, self.samples)

    def config(self) -> dict:
        """Everything the results depend on (stored in the run manifest: a resumed run must match)."""
        out = {
            "model": str(Path(self.model_file).resolve()),
            "model_sha256": file_sha256(self.model_file),
            "method": self.method,
            "seed": self.seed,
            "samples": self.samples,
            "zero_point": self.zero_point,
            "e_max_column": self.e_max_column,
            "distance_prior": list(self.distance_prior),
            "prior_columns": list(self.prior_columns),
            "mag_err_floor": self.mag_err_floor,
        }
        if self.posterior:
            out["posterior"] = {k: _plain(v) for k, v in sorted(self.posterior.items())}
        if self.method == "nuts":
            from jaxstars.inference import NUTSConfig

            out["nuts"] = dataclasses.asdict(NUTSConfig(**self.nuts))
        return out


def _plain(value):
    if isinstance(value, tuple):
        return list(value)
    return value
