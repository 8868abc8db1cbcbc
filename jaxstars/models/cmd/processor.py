"""The Cranmer colour–magnitude model as a catalog-runner processor: distances for one chunk of stars.

:class:`CMDDistances` is what ``jaxstars cmd distances`` and ``jaxstars infer`` run on every chunk: a picklable
recipe (model path, prior, dust source, method, seed) whose :meth:`~CMDDistances.setup` loads the model once per
process (so it can be shipped to Dask workers), and which returns the output columns of a chunk — from the grid
posterior (:func:`~jaxstars.models.cmd.distance_posteriors`, default) or from vmapped per-star NUTS
(:func:`~jaxstars.models.cmd.nuts_distance_posteriors`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from jaxstars.catalog.distributed import ChunkProcessor
from jaxstars.infer import InferError

__all__ = ["CMDCommandError", "CMDDistances", "DustSource", "parse_prior"]


class CMDCommandError(InferError):
    """An input problem reported by ``jaxstars cmd`` as a one-line message (exit code 2)."""


def parse_prior(text: str):
    """The distance prior named by ``--prior``: ``"flat"`` or ``"edsd:L"`` (L in pc; ``"edsd"`` alone: 1000 pc)."""
    from jaxstars.astro.priors import EDSDPrior, FlatDistancePrior

    spec = text.strip().lower()
    if spec == "flat":
        return FlatDistancePrior()
    if spec == "edsd" or spec.startswith("edsd:"):
        value = spec.partition(":")[2] or "1000"
        try:
            length = float(value)
        except ValueError:
            length = float("nan")
        if not (math.isfinite(length) and length > 0):
            raise CMDCommandError(f"--prior {text!r}: the EDSD length scale must be a positive number of pc")
        return EDSDPrior(length)
    raise CMDCommandError(f"unknown --prior {text!r}: use 'flat' or 'edsd:L' (L in pc, e.g. edsd:1000)")


def _find_column(colnames, name: str) -> str | None:
    lower = {c.lower(): c for c in colnames}
    return lower.get(name.lower())


def _build_dust_map(name: str):
    from jaxstars.astro.dust import get_map

    try:
        return get_map(name)
    except KeyError as err:
        raise CMDCommandError(err.args[0] if err.args else f"unknown dust map {name!r}") from None
    except TypeError as err:
        raise CMDCommandError(f"cannot build dust map {name!r} without options: {err}") from None


@dataclasses.dataclass
class DustSource:
    """Where reddening comes from: a map (or none) or per-star columns."""

    map_name: str | None = "cranmer_gaussian"
    reddening_column: str | None = None
    reddening_error_column: str | None = None
    dust_map: Any = None

    def describe(self) -> str:
        if self.reddening_column:
            err = f" ± {self.reddening_error_column}" if self.reddening_error_column else ""
            return f"reddening column {self.reddening_column}{err}"
        return f"dust map {self.map_name}" if self.map_name else "no dust"

    def extra_columns(self) -> list[str]:
        return [c for c in (self.reddening_column, self.reddening_error_column) if c]

    def stars(self, features, table):
        """:func:`prepare_stars` for one canonical block."""
        from jaxstars.models.cmd import prepare_stars

        if self.reddening_column:
            red = _float_column(table, self.reddening_column)
            red_err = _float_column(table, self.reddening_error_column) if self.reddening_error_column else None
            return prepare_stars(features, table, reddening=red, reddening_error=red_err)
        if self.map_name and self.dust_map is None:
            self.dust_map = _build_dust_map(self.map_name)
        return prepare_stars(features, table, dust_map=self.dust_map)

    def __getstate__(self):
        """Pickle the recipe only: a named map is rebuilt where it is used (a dust map can be large)."""
        state = dict(self.__dict__)
        if state.get("map_name"):
            state["dust_map"] = None
        return state


def _float_column(table, name: str) -> np.ndarray:
    col = table[_find_column(table.colnames, name)]
    values = np.array(np.ma.getdata(col), dtype=np.float64)
    values[np.ma.getmaskarray(col)] = np.nan
    return values


def _flag_strings(flags: np.ndarray) -> np.ndarray:
    """``|``-joined flag names per row (empty string for no flag)."""
    from jaxstars.models.cmd import flag_names

    flags = np.asarray(flags, dtype=np.int64)
    unique, inverse = np.unique(flags, return_inverse=True)
    names = np.array(["|".join(flag_names(int(v))) for v in unique] or [""], dtype=str)
    return names[inverse.reshape(-1)] if flags.size else np.zeros(0, dtype="U1")


def _result_table(block, res: dict, n_samples: int):
    """The output columns of one block (``source_id`` is added by :func:`~jaxstars.catalog.run_catalog`)."""
    import astropy.units as u
    from astropy.table import Table

    out = Table()
    n = len(block)
    columns = [
        ("distance_mean", u.pc, "posterior mean distance"),
        ("distance_std", u.pc, "posterior standard deviation of the distance"),
        ("distance_q2_5", u.pc, "2.5 % quantile of the distance posterior"),
        ("distance_q16", u.pc, "16 % quantile of the distance posterior"),
        ("distance_q50", u.pc, "median distance"),
        ("distance_q84", u.pc, "84 % quantile of the distance posterior"),
        ("distance_q97_5", u.pc, "97.5 % quantile of the distance posterior"),
        ("log_evidence", None, "log marginal likelihood of the star's data under the model"),
        ("reddening_mean", u.mag, "posterior mean reddening along the sight line (model units, e.g. E(g-r))"),
    ]
    nuts = "nuts_flags" in res
    if nuts:  # the sampler's diagnostics instead of the grid's evidence and reddening
        columns = columns[:7] + [
            ("nuts_flags", None, "bit field of jaxstars.inference.NUTS_FLAGS (sampler diagnostics)"),
            ("n_divergent", None, "divergent NUTS transitions after warm-up"),
            ("accept_prob", None, "mean NUTS acceptance probability"),
            ("rhat", None, "split R-hat (several chains only)"),
            ("ess_bulk", None, "bulk effective sample size of the distance draws"),
        ]
    for name, unit, description in columns:
        values = np.asarray(res[name]) if name in res else np.full(n, np.nan)
        if name not in ("nuts_flags", "n_divergent"):
            values = values.astype(np.float64)
        out[name] = values
        out[name].unit = unit
        out[name].description = description
    out["flags"] = np.asarray(res["flags"], dtype=np.int64)
    out["flags"].description = "bit field of jaxstars.models.cmd.FLAGS"
    out["flag_names"] = _flag_strings(out["flags"])
    out["flag_names"].description = "names of the flags set, |-separated"
    if n_samples > 0:
        samples = res.get("distance_samples", np.full((n, n_samples), np.nan))
        out["distance_samples"] = np.asarray(samples, dtype=np.float32).reshape(n, n_samples)
        out["distance_samples"].unit = u.pc
        out["distance_samples"].description = "draws from the distance posterior"
    return out


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (model identity in run manifests)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class CMDDistances(ChunkProcessor):
    """Distance posteriors of one catalog chunk with a saved colour–magnitude model.

    Parameters
    ----------
    model_file : str or path-like
        ``model.npz`` written by :meth:`~jaxstars.models.cmd.CMDModel.save`.
    dust : DustSource
        Where the reddening comes from (a named map, per-star columns, or none).
    prior : str
        ``"flat"`` or ``"edsd:L"`` (:func:`parse_prior`).
    dust_mode : str
        ``"profile"`` (marginalise the reddening at every distance) or ``"iterative"`` (the paper's evaluation).
    seed : int
        Base random seed; draws are keyed by row id, so output does not depend on the chunking.
    samples : int
        Posterior draws per star to write (``distance_samples``), 0 for none.
    method : str
        ``"grid"`` (vectorised grid posterior, default) or ``"nuts"`` (vmapped per-star NUTS, shared engine).
    nuts : dict, optional
        :class:`~jaxstars.inference.NUTSConfig` fields for ``method="nuts"``.
    posterior : dict, optional
        Further :class:`~jaxstars.models.cmd.PosteriorConfig` fields (e.g. ``n_coarse``, ``n_fine``, ``d_max``).
    photometric_errors : bool
        Convolve the flow density with each star's G/BP/RP errors (the chunk's ``mag_err_*`` columns, via
        :func:`~jaxstars.models.cmd.posterior.photometric_covariance`; a missing error counts as 0). Off by
        default: the paper evaluates the density at the observed photometry.
    """

    def __init__(
        self,
        model_file,
        dust: DustSource,
        *,
        prior: str = "flat",
        dust_mode: str = "profile",
        seed: int = 0,
        samples: int = 0,
        method: str = "grid",
        nuts: dict | None = None,
        posterior: dict | None = None,
        photometric_errors: bool = False,
    ):
        if method not in ("grid", "nuts"):
            raise CMDCommandError(f"unknown method {method!r}: use 'grid' or 'nuts'")
        if samples < 0:
            raise CMDCommandError("the number of samples must be >= 0")
        parse_prior(prior)  # fail early on a bad prior
        self.model_file = str(model_file)
        self.dust = dust
        self.prior = prior
        self.dust_mode = dust_mode
        self.seed = int(seed)
        self.samples = int(samples)
        self.method = method
        self.nuts = dict(nuts or {})
        self.posterior = dict(posterior or {})
        self.photometric_errors = bool(photometric_errors)
        if method == "nuts":
            from jaxstars.inference import NUTSConfig

            NUTSConfig(**self.nuts)  # validate now, not on a worker

    def setup(self) -> None:
        """Load the model and build the prior and posterior settings (once per process)."""
        from jaxstars.inference import NUTSConfig
        from jaxstars.models.cmd import CMDModel, PosteriorConfig

        self.model, self.params = CMDModel.load(self.model_file)
        self.prior_object = parse_prior(self.prior)
        self.posterior_config = PosteriorConfig(dust=self.dust_mode, n_samples=self.samples, **self.posterior)
        self.nuts_config = NUTSConfig(**self.nuts)

    def __call__(self, table, row_ids):
        """Output columns for one chunk: summaries, flags (and draws with ``samples > 0``)."""
        from jaxstars.models.cmd import distance_posteriors, nuts_distance_posteriors
        from jaxstars.models.cmd.posterior import photometric_covariance

        stars = self.dust.stars(self.model.features, table)
        cov = photometric_covariance(self.model.features, table) if self.photometric_errors else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if self.method == "nuts":
                res = nuts_distance_posteriors(
                    self.model,
                    self.params,
                    stars,
                    key=self.seed,
                    prior=self.prior_object,
                    config=self.posterior_config,
                    nuts=self.nuts_config,
                    row_ids=row_ids,
                    photometric_cov=cov,
                )
            else:
                res = distance_posteriors(
                    self.model,
                    self.params,
                    stars,
                    key=self.seed,
                    prior=self.prior_object,
                    config=self.posterior_config,
                    row_ids=row_ids,
                    photometric_cov=cov,
                )
        return _result_table(table, res, self.samples)

    def config(self) -> dict:
        """Everything the results depend on (stored in the run manifest: a resumed run must match)."""
        out = {
            "model": str(Path(self.model_file).resolve()),
            "model_sha256": file_sha256(self.model_file),
            "method": self.method,
            "prior": self.prior,
            "dust_mode": self.dust_mode,
            "dust": self.dust.describe(),
            "seed": self.seed,
            "samples": self.samples,
        }
        if self.posterior:
            out["posterior"] = dict(sorted(self.posterior.items()))
        if self.photometric_errors:  # only when on: manifests of earlier runs stay valid
            out["photometric_errors"] = True
        if self.method == "nuts":
            from jaxstars.inference import NUTSConfig

            out["nuts"] = dataclasses.asdict(NUTSConfig(**self.nuts))
        return out
