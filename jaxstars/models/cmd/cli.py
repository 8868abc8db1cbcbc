"""``jaxstars cmd``: train the Cranmer et al. colour–magnitude model, compute distance posteriors, evaluate them.

Examples::

    jaxstars simulate --mode cranmer --n 200000 -o sim.parquet
    jaxstars cmd train --catalog sim.parquet --out cmd_model --epochs 20
    jaxstars cmd distances --model cmd_model --catalog sim.parquet --out distances.parquet --prior edsd:1000
    jaxstars cmd evaluate --model cmd_model --catalog sim.parquet --out-json metrics.json

Catalogs are any file :func:`jaxstars.astro.catalog_io.read_catalog` reads (FITS, Parquet, CSV/ECSV, HDF5,
VOTable) with Gaia G/BP/RP photometry (canonical ``mag_G``/``mag_err_G``… or Gaia archive names), ``parallax``/
``parallax_error`` and sky positions (``l``/``b`` or ``ra``/``dec``) for the dust map.

* ``train`` fits the flow with :func:`~jaxstars.models.cmd.train_cmd` (Cranmer et al. §3.2) and writes
  ``DIR/model.npz`` (:meth:`CMDModel.save`), ``DIR/training.json`` (loss history, rows used and why the others
  were not, the arguments) and ``DIR/loss_curve.png``. The dust source (map name or reddening columns) is stored
  in the model and is the default of ``distances``/``evaluate``.
* ``distances`` runs the catalog through :func:`jaxstars.catalog.run_catalog` in blocks of ``--chunk-rows``:
  :func:`~jaxstars.models.cmd.prepare_stars` and :func:`~jaxstars.models.cmd.distance_posteriors` on each (random
  draws keyed by the global row index, so the output does not depend on ``--chunk-rows``), and writes one row per
  input row, in input order: ``source_id`` (when the catalog has it), ``distance_mean``, ``distance_std``,
  ``distance_q2_5`` … ``distance_q97_5`` [pc], ``log_evidence``, ``reddening_mean`` [mag of the model's
  reddening, E(g−r) for Cranmer's coefficients], ``flags`` (bits of :data:`~jaxstars.models.cmd.FLAGS`),
  ``flag_names`` (the same as ``|``-separated names) and, with ``--samples S``, ``distance_samples`` (S draws per
  row; one column per draw in CSV). Rows that cannot be evaluated are kept, flagged, with NaN results.
  ``--photometric-errors`` convolves the CMD density with each star's G/BP/RP errors (``mag_err_*`` columns;
  :func:`~jaxstars.models.cmd.posterior.photometric_covariance`), which the paper does not do.
  The run is resumable: finished blocks are kept in ``OUT.parts/`` (with a manifest of the settings), so after an
  interruption the same command carries on where it stopped; different settings are refused until
  ``--overwrite`` is given, which starts again. The blocks are merged into ``OUT`` at the end (Parquet and CSV
  stream; other formats are collected in memory), and ``OUT.parts/`` is removed unless ``--keep-parts``.
* ``evaluate`` computes the same posteriors and prints a JSON document of metrics
  (:mod:`jaxstars.models.cmd.metrics`): Cranmer et al. Table 1's SNR table when the catalog has parallaxes,
  and, when it has a ``true_distance`` column (simulations), accuracy per parallax-SNR bin of the model's
  posterior mean and median against the EDSD parallax-only baseline and inverse parallax, plus the coverage of
  the 68 % and 95 % intervals.

Errors in the inputs (missing files, a corrupt model file, a catalog without G/BP/RP photometry, an unknown dust
map, an output that exists without ``--overwrite``) end the command with a one-line message and exit code 2 (set
``JAXSTARS_DEBUG=1`` to see the traceback instead).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from jaxstars.cli_support import (
    arguments_json,
    command_group,
    guarded,
    jsonable,
    plot_loss,
    probe_canonical,
    progress_bar,
    require_file,
)

__all__ = ["CMDCommandError", "add_cmd_arguments", "parse_prior"]

# moved to the processor module (shared with `jaxstars infer`); re-exported here
from .processor import (
    CMDCommandError,
    DustSource,
    _build_dust_map,
    _find_column,
    _float_column,
    parse_prior,
)

_GAIA_BANDS = ("G", "BP", "RP")


# ------------------------------------------------------------------------------------------------ arguments


def add_cmd_arguments(subparsers) -> argparse.ArgumentParser:
    """Add ``cmd`` (with ``train``, ``distances``, ``evaluate``) to the ``jaxstars`` sub-command parsers.

    Parameters
    ----------
    subparsers : the object returned by ``ArgumentParser.add_subparsers`` of the main ``jaxstars`` parser.

    Returns
    -------
    argparse.ArgumentParser
        The ``cmd`` parser (its ``func`` prints help and returns 2 when no sub-command is given).
    """
    cmd, sub = command_group(
        subparsers,
        "cmd",
        help="Cranmer et al. colour–magnitude model: train, distances, evaluate",
        description="Cranmer et al. (2019) colour–magnitude flow: train it on a catalog, compute per-star "
        "distance posteriors, evaluate them.",
    )

    train = sub.add_parser("train", help="train the colour–magnitude flow on a catalog")
    train.add_argument("--catalog", required=True, help="training catalog (FITS, Parquet, CSV, HDF5, VOTable)")
    train.add_argument("--out", required=True, help="output folder for model.npz, training.json, loss_curve.png")
    train.add_argument("--epochs", type=int, default=20, help="training epochs (default: %(default)s)")
    train.add_argument("--batch-size", type=int, default=2048, help="stars per minibatch (default: %(default)s)")
    train.add_argument("--blocks", type=int, default=8, help="MAF blocks (default: %(default)s)")
    train.add_argument(
        "--hidden", type=int, default=128, help="hidden units per MADE layer (default: %(default)s)"
    )
    train.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: %(default)s)")
    _add_dust_arguments(train, default_text="cranmer_gaussian")
    train.add_argument(
        "--zero-point",
        type=float,
        default=0.0,
        help="parallax zero-point [mas], plx_obs = plx_true + zp (default: 0)",
    )
    train.add_argument("--max-stars", type=int, default=None, help="train on a random subset of this many rows")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing model in --out")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=lambda args: guarded("jaxstars cmd train", _train, args))

    dist = sub.add_parser("distances", help="per-star distance posteriors for a catalog, streamed in chunks")
    dist.add_argument("--model", required=True, help="model folder (or model.npz) written by 'jaxstars cmd train'")
    dist.add_argument("--catalog", required=True, help="input catalog")
    dist.add_argument("--out", required=True, help="output table; format from the suffix (.parquet streams)")
    _add_posterior_arguments(dist)
    dist.add_argument(
        "--samples", type=int, default=0, help="posterior distance draws per star to write (default: none)"
    )
    dist.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the output file if it exists and discard the finished blocks of an earlier run",
    )
    dist.add_argument(
        "--keep-parts", action="store_true", help="keep the per-block results in OUT.parts/ after merging"
    )
    dist.set_defaults(func=lambda args: guarded("jaxstars cmd distances", _distances, args))

    ev = sub.add_parser(
        "evaluate", help="posteriors + metrics (Cranmer et al. Table 1; accuracy when truth is known)"
    )
    ev.add_argument("--model", required=True, help="model folder (or model.npz)")
    ev.add_argument("--catalog", required=True, help="catalog to evaluate on (true_distance enables accuracy)")
    ev.add_argument("--out-json", default=None, help="also write the metrics to this JSON file")
    _add_posterior_arguments(ev)
    ev.add_argument(
        "--edsd-length",
        type=float,
        default=1000.0,
        help="length scale [pc] of the EDSD parallax-only baseline (default: %(default)s)",
    )
    ev.set_defaults(func=lambda args: guarded("jaxstars cmd evaluate", _evaluate, args))
    return cmd


def _add_dust_arguments(parser: argparse.ArgumentParser, default_text: str) -> None:
    parser.add_argument(
        "--dust-map",
        default=None,
        help=f"dust map name (see 'jaxstars dust --help') or 'none' (default: {default_text})",
    )
    parser.add_argument(
        "--reddening-column",
        default=None,
        help="per-star reddening column (model units, e.g. E(g-r)) used instead of a dust map",
    )
    parser.add_argument("--reddening-error-column", default=None, help="its 1-sigma uncertainty column")


def _add_posterior_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--chunk-rows", type=int, default=50_000, help="catalog rows per block (default: %(default)s)"
    )
    parser.add_argument(
        "--prior",
        default="flat",
        help="distance prior: 'flat' (default) or 'edsd:L' with L in pc (e.g. edsd:1000)",
    )
    parser.add_argument(
        "--dust",
        choices=("iterative", "profile"),
        default="profile",
        help="'profile': marginalise the map's reddening at every distance (default); 'iterative': the paper's "
        "evaluation (dust fixed at the Eq. 2 best distance)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    _add_photometric_errors_argument(parser)
    _add_dust_arguments(parser, default_text="the one the model was trained with")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_photometric_errors_argument(parser) -> None:
    parser.add_argument(
        "--photometric-errors",
        action="store_true",
        help="convolve the CMD density with each star's G/BP/RP errors (mag_err_* columns; not in the paper, "
        "which evaluates it at the observed photometry; ~50x slower)",
    )


# ------------------------------------------------------------------------------------------------ helpers


def _probe_photometry(raw, catalog: Path, bands=_GAIA_BANDS, need_positions: bool = False) -> None:
    """Raise :class:`CMDCommandError` when the catalog has no input columns for a band's magnitude or its error
    (or, with ``need_positions``, for sky positions).

    Every numeric input column of a one-row copy is set to a valid-looking value and the copy is mapped to the
    canonical schema: a band whose magnitude or uncertainty is still NaN has no source column under any name
    :func:`~jaxstars.astro.catalog_io.to_canonical` accepts. (Checking the data instead would confuse a missing
    column with a block of stars that happen to lack the band.)
    """
    from jaxstars.astro.schema import mag_column, mag_err_column

    canonical = probe_canonical(raw)
    missing = [
        f"{mag_column(b)}/{mag_err_column(b)}"
        for b in bands
        if not (np.isfinite(canonical[mag_column(b)][0]) and np.isfinite(canonical[mag_err_column(b)][0]))
    ]
    if missing:
        raise CMDCommandError(
            f"catalog {catalog} lacks required column(s) {', '.join(missing)} (or the Gaia archive's "
            f"phot_*_mean_mag with phot_*_mean_flux_over_error); columns present: {', '.join(raw.colnames)}"
        )
    if need_positions and not ({"l", "b"} <= set(canonical.colnames) or {"ra", "dec"} <= set(canonical.colnames)):
        raise CMDCommandError(
            f"catalog {catalog} has no sky positions (l/b or ra/dec) for the dust map; give --dust-map none or "
            f"--reddening-column; columns present: {', '.join(raw.colnames)}"
        )


def _resolve_dust(args: argparse.Namespace, model_info: dict | None = None) -> DustSource:
    """The dust source from the options, defaulting to what the model was trained with (then cranmer_gaussian)."""
    if args.reddening_error_column and not args.reddening_column:
        raise CMDCommandError("--reddening-error-column needs --reddening-column")
    if args.reddening_column and args.dust_map is not None:
        raise CMDCommandError("give either --dust-map or --reddening-column, not both")
    if args.reddening_column:
        return DustSource(None, args.reddening_column, args.reddening_error_column)
    if args.dust_map is None and model_info and model_info.get("reddening_column"):
        return DustSource(None, model_info["reddening_column"], model_info.get("reddening_error_column"))
    if args.dust_map is not None:
        name = args.dust_map
    elif model_info and "dust_map" in model_info:
        name = model_info["dust_map"]
    else:
        name = "cranmer_gaussian"
    if name is None or str(name).lower() == "none":
        return DustSource(None)
    return DustSource(str(name), dust_map=_build_dust_map(str(name)))


def _check_extra_columns(raw, dust: DustSource, catalog: Path) -> None:
    missing = [c for c in dust.extra_columns() if _find_column(raw.colnames, c) is None]
    if missing:
        raise CMDCommandError(
            f"catalog {catalog} has no column(s) {', '.join(missing)}; columns present: {', '.join(raw.colnames)}"
        )


def _flag_counts(flags: np.ndarray) -> dict[str, int]:
    from jaxstars.models.cmd import FLAGS

    flags = np.asarray(flags, dtype=np.int64)
    return {name: int(np.count_nonzero(flags & bit)) for name, bit in FLAGS.items()}


def _load_model(path: str):
    from jaxstars.models.cmd import CMDModel

    return CMDModel.load(require_file(path, "model"))


def _posterior_blocks(
    args: argparse.Namespace, model, params, dust: DustSource, n_samples: int, desc: str, extra_columns=()
):
    """Yield ``(block, results)`` per catalog block: canonical rows and their :func:`distance_posteriors` dict."""
    from jaxstars.catalog import count_rows, iter_chunks
    from jaxstars.models.cmd import PosteriorConfig, distance_posteriors
    from jaxstars.models.cmd.posterior import photometric_covariance

    catalog = Path(args.catalog)
    prior = parse_prior(args.prior)
    config = PosteriorConfig(dust=args.dust, n_samples=n_samples)
    photometric_errors = getattr(args, "photometric_errors", False)
    if args.chunk_rows < 1:
        raise CMDCommandError("--chunk-rows must be at least 1")
    total = count_rows(catalog)
    with progress_bar(total, args.quiet, desc) as bar:
        for start, block in iter_chunks(
            catalog, args.chunk_rows, extra_columns=[*dust.extra_columns(), *extra_columns]
        ):
            n = len(block)
            stars = dust.stars(model.features, block)
            cov = photometric_covariance(model.features, block) if photometric_errors else None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                res = distance_posteriors(
                    model,
                    params,
                    stars,
                    key=args.seed,
                    prior=prior,
                    config=config,
                    row_ids=start + np.arange(n),
                    photometric_cov=cov,
                )
            bar.update(n)
            yield block, res


def _open_catalog(args: argparse.Namespace, dust: DustSource):
    """Check the catalog before any work: it exists and has G/BP/RP photometry and the columns asked for."""
    from jaxstars.catalog import peek

    catalog = require_file(args.catalog, "catalog")
    raw = peek(catalog, 1)
    _probe_photometry(raw, catalog, need_positions=dust.dust_map is not None)
    _check_extra_columns(raw, dust, catalog)
    return catalog, raw


# ------------------------------------------------------------------------------------------------ train


def _train(args: argparse.Namespace) -> int:
    from jaxstars.astro.catalog_io import read_table, to_canonical
    from jaxstars.models.cmd import default_flow, gaia_cmd_features, train_cmd

    for name in ("epochs", "batch_size", "blocks", "hidden"):
        if getattr(args, name) < 1:
            raise CMDCommandError(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_stars is not None and args.max_stars < 1:
        raise CMDCommandError("--max-stars must be at least 1")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise CMDCommandError("--lr must be a positive number")
    out = Path(args.out)
    catalog = require_file(args.catalog, "catalog")
    if (out / "model.npz").exists() and not args.overwrite:
        raise FileExistsError(f"{out / 'model.npz'} exists; pass --overwrite to replace it")
    dust = _resolve_dust(args)

    started = time.perf_counter()
    raw = read_table(catalog)
    _probe_photometry(raw, catalog, need_positions=dust.dust_map is not None)
    _check_extra_columns(raw, dust, catalog)
    n_catalog = len(raw)
    if args.max_stars is not None and args.max_stars < n_catalog:
        rows = np.sort(np.random.default_rng(args.seed).choice(n_catalog, args.max_stars, replace=False))
        raw = raw[rows]
    table = to_canonical(raw, extra_columns=dust.extra_columns())
    del raw
    features = gaia_cmd_features()
    stars = dust.stars(features, table)
    flow = default_flow(features.dim, n_blocks=args.blocks, hidden=args.hidden)
    print(
        f"jaxstars cmd train: {len(table)} stars from {catalog} ({dust.describe()}); "
        f"MAF {args.blocks} blocks × {args.hidden}, {args.epochs} epochs"
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="train_cmd: .* rows not used")
        try:
            trained = train_cmd(
                table,
                stars=stars,
                features=features,
                flow=flow,
                zero_point=args.zero_point,
                epochs=args.epochs,
                batch_size=args.batch_size,
                learning_rate=args.lr,
                key=args.seed,
                progress=not args.quiet,
            )
        except ValueError as err:
            if "usable training stars" in str(err):
                raise CMDCommandError(
                    f"{err} — check the catalog's photometry, parallaxes and positions"
                ) from None
            raise
    elapsed = time.perf_counter() - started
    info = {
        **trained.model.info,
        "dust_map": dust.map_name,
        "reddening_column": dust.reddening_column,
        "reddening_error_column": dust.reddening_error_column,
        "catalog": str(catalog),
    }
    model = dataclasses.replace(trained.model, info=info)
    out.mkdir(parents=True, exist_ok=True)
    model_path = model.save(out, trained.params)

    fit = trained.fit
    used = np.asarray(trained.used, dtype=bool)
    summary = {
        "catalog": str(catalog),
        "model": str(model_path),
        "rows": {
            "n_catalog": int(n_catalog),
            "n_considered": len(table),
            "n_used": int(used.sum()),
            "n_not_used": int((~used).sum()),
            "flag_counts": _flag_counts(trained.flags),
        },
        "train_loss": jsonable(np.asarray(fit.train_loss)),
        "val_loss": jsonable(np.asarray(fit.val_loss)),
        "best_epoch": jsonable(np.asarray(fit.best_epoch)),
        "epochs_run": int(fit.epochs_run),
        "stopped_early": bool(fit.stopped_early),
        "log_density_floor": jsonable(model.log_density_floor),
        "elapsed_s": round(elapsed, 3),
        "dust": dust.describe(),
        "arguments": arguments_json(args),
    }
    (out / "training.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    png = plot_loss(
        np.asarray(fit.train_loss),
        np.asarray(fit.val_loss),
        int(np.ravel(fit.best_epoch)[0]),
        out / "loss_curve.png",
        ylabel="weighted negative log density [nats/star]",
        title="Cranmer et al. §3.2 loss",
    )
    best = (
        summary["val_loss"][summary["best_epoch"]]
        if 0 <= summary["best_epoch"] < len(summary["val_loss"])
        else None
    )
    print(
        f"  used {int(used.sum())} of {len(table)} rows; {fit.epochs_run} epochs in {elapsed:.1f} s; "
        f"best validation loss {best if best is None else f'{best:.4f}'} at epoch {summary['best_epoch']}"
    )
    print(f"  wrote {model_path}, {out / 'training.json'} and {png}")
    return 0


# ------------------------------------------------------------------------------------------------ distances


def _model_file(path: str) -> Path:
    """The ``model.npz`` behind ``--model`` (a folder or the file itself)."""
    from jaxstars.models.cmd.model import MODEL_FILE

    path = require_file(path, "model")
    return path / MODEL_FILE if path.is_dir() else path


def _distances(args: argparse.Namespace) -> int:
    from jaxstars.infer import run_inference

    job = _inference_job(Path(args.model), args, Path(args.catalog))
    job.config = {"command": "jaxstars cmd distances", **job.config}
    return run_inference(job, Path(args.catalog), Path(args.out), args, command="jaxstars cmd distances")


def _inference_job(model_path: Path, args: argparse.Namespace, catalog: Path):
    """The :class:`~jaxstars.infer.InferenceJob` of ``cmd distances`` / ``jaxstars infer`` for a CMD model."""
    from jaxstars.infer import InferenceJob, nuts_settings
    from jaxstars.models.cmd import FLAGS, flag_names

    from .processor import CMDDistances

    if args.samples < 0:
        raise CMDCommandError("--samples must be >= 0")
    if args.chunk_rows < 1:
        raise CMDCommandError("--chunk-rows must be at least 1")
    model, _ = _load_model(str(model_path))
    model_file = _model_file(str(model_path))
    dust = _resolve_dust(args, model.info)
    args.catalog = str(catalog)
    catalog, _ = _open_catalog(args, dust)
    if Path(args.out).resolve() == catalog.resolve():
        raise CMDCommandError("--out must differ from --catalog")
    method = getattr(args, "method", "grid")
    processor = CMDDistances(
        model_file,
        dust,
        prior=args.prior,
        dust_mode=args.dust,
        seed=args.seed,
        samples=args.samples,
        method=method,
        nuts=nuts_settings(args) if method == "nuts" else None,
        photometric_errors=getattr(args, "photometric_errors", False),
    )
    extra = dust.extra_columns()
    return InferenceJob(
        processor=processor,
        config=processor.config(),
        flag_names=flag_names,
        flag_bits=FLAGS,
        result_column="distance_mean",
        keep_columns=("source_id",),
        read_options={"extra_columns": extra} if extra else None,
        describe=f"{method} posterior, prior {args.prior}, {dust.describe()}, dust mode {args.dust}"
        + (", photometric errors" if processor.photometric_errors else ""),
    )


def inference_hooks():
    """``jaxstars infer`` hooks for CMD models: ``(detect, add_arguments, build)`` (see :class:`jaxstars.infer.ModelKind`)."""

    def detect(path: Path) -> bool:
        """A CMD model file (or a folder holding one); a corrupt one raises FlowFileError (reported as such)."""
        from jaxstars.flows.io import NotAFlowFileError, flow_metadata
        from jaxstars.models.cmd.model import MODEL_FILE

        file = path / MODEL_FILE if path.is_dir() else path
        if not (file.is_file() and file.suffix == ".npz"):
            return False
        try:
            return "cmd" in flow_metadata(file)
        except NotAFlowFileError:  # some other .npz: not ours (a corrupt one still raises)
            return False

    def add_arguments(group) -> None:
        group.add_argument(
            "--prior", default="flat", help="distance prior: 'flat' (default) or 'edsd:L' with L in pc (edsd:1000)"
        )
        group.add_argument(
            "--dust-mode",
            dest="dust",
            choices=("iterative", "profile"),
            default="profile",
            help="'profile': marginalise the map's reddening at every distance (default); 'iterative': the paper's",
        )
        _add_photometric_errors_argument(group)
        _add_dust_arguments(group, default_text="the one the model was trained with")

    return detect, add_arguments, _inference_job


# ------------------------------------------------------------------------------------------------ evaluate


def _coverage(truth: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> dict:
    ok = np.isfinite(truth) & np.isfinite(lo) & np.isfinite(hi)
    return {
        "n": int(ok.sum()),
        "fraction": float(np.mean((truth[ok] >= lo[ok]) & (truth[ok] <= hi[ok]))) if ok.any() else None,
    }


def _evaluate(args: argparse.Namespace) -> int:
    from jaxstars.models.cmd import metrics

    model, params = _load_model(args.model)
    dust = _resolve_dust(args, model.info)
    parse_prior(args.prior)
    if not (args.edsd_length > 0 and math.isfinite(args.edsd_length)):
        raise CMDCommandError("--edsd-length must be a positive number of pc")
    catalog, raw = _open_catalog(args, dust)
    truth_name = _find_column(raw.colnames, "true_distance")
    started = time.perf_counter()
    keep = (
        "parallax",
        "parallax_error",
        "distance_mean",
        "distance_std",
        "distance_q16",
        "distance_q50",
        "distance_q84",
        "distance_q2_5",
        "distance_q97_5",
        "flags",
        "true_distance",
    )
    parts: dict[str, list] = {k: [] for k in keep}
    has_parallax = False
    for block, res in _posterior_blocks(
        args, model, params, dust, 0, "evaluate", extra_columns=[truth_name] if truth_name else []
    ):
        n = len(block)
        has_parallax |= "parallax" in block.colnames
        for name in ("parallax", "parallax_error"):
            parts[name].append(_float_column(block, name) if name in block.colnames else np.full(n, np.nan))
        parts["true_distance"].append(_float_column(block, truth_name) if truth_name else np.full(n, np.nan))
        for name in keep[2:-1]:
            parts[name].append(np.asarray(res[name]))
    data = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    flags = data["flags"].astype(np.int64)
    plx, plx_err = data["parallax"], data["parallax_error"]
    has_parallax = has_parallax and bool(np.isfinite(plx).any())

    report: dict[str, Any] = {
        "catalog": str(catalog),
        "model": str(args.model),
        "prior": args.prior,
        "dust": dust.describe(),
        "dust_mode": args.dust,
        "photometric_errors": bool(getattr(args, "photometric_errors", False)),
        "zero_point": model.zero_point,
        "n": len(flags),
        "n_with_posterior": int(np.count_nonzero(np.isfinite(data["distance_mean"]))),
        "flag_counts": _flag_counts(flags),
    }
    if has_parallax:
        report["snr"] = metrics.snr_table(plx, plx_err, data["distance_mean"], data["distance_std"])
    if truth_name:
        truth = data["true_distance"]
        estimates = {"model_mean": data["distance_mean"], "model_median": data["distance_q50"]}
        snr = np.full(len(truth), np.nan)
        if has_parallax:
            edsd = metrics.edsd_distances(plx, plx_err, length_scale=args.edsd_length, zero_point=model.zero_point)
            estimates["edsd_median"] = edsd["median"]
            estimates["edsd_mode"] = edsd["mode"]
            estimates["inverse_parallax"] = metrics.inverse_parallax_distances(plx, zero_point=model.zero_point)
            with np.errstate(divide="ignore", invalid="ignore"):
                snr = np.where(np.isfinite(plx_err) & (plx_err > 0), plx / plx_err, np.nan)
        report["accuracy"] = metrics.accuracy_by_snr(truth, estimates, snr)
        report["coverage"] = {
            "interval_68": _coverage(truth, data["distance_q16"], data["distance_q84"]),
            "interval_95": _coverage(truth, data["distance_q2_5"], data["distance_q97_5"]),
        }
    report["elapsed_s"] = round(time.perf_counter() - started, 3)
    text = json.dumps(jsonable(report), indent=2, allow_nan=False)
    if args.out_json:
        Path(args.out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out_json).write_text(text + "\n")
        print(f"jaxstars cmd evaluate: wrote {args.out_json}", file=sys.stderr)
    print(text)
    return 0
