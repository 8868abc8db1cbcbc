"""``jaxstars flower``: train FLOWER (O'Callaghan et al., paper 002), compute per-star dust posteriors, evaluate them.

Examples::

    jaxstars flower train --catalog zero_ext.parquet --out flower_model --bands gaia_ps1
    jaxstars flower infer --model flower_model --catalog stars.parquet --out dust.parquet
    jaxstars flower infer --model flower_model --catalog stars.parquet --out dust_nuts.parquet --method nuts \\
        --num-warmup 4000 --num-draws 10000 --target-accept 0.9             # the paper's sampler settings
    jaxstars flower evaluate --model flower_model --catalog validation.parquet --synthetic-ebv 0,0.1,0.2,0.3,0.4
    jaxstars infer flower_model stars.parquet -o dust.parquet              # the same job as `flower infer`

Catalogs are any file :func:`jaxstars.astro.catalog_io.read_catalog` reads (FITS, Parquet, CSV/ECSV, HDF5,
VOTable; ``infer`` also HATS folders) with the model's photometry in the canonical schema (``mag_G``/``mag_err_G``,
``mag_BP``, ``mag_RP``, ``mag_ps1_g`` … ``mag_ps1_y``, and ``mag_J``/``mag_H``/``mag_Ks`` for ``gaia_ps1_2mass``;
Gaia archive names are mapped too), ``parallax``/``parallax_error`` and sky positions (``l``/``b`` or ``ra``/``dec``)
for the Galactocentric ``(R, Z)`` the flow is conditioned on.

* ``train`` fits the conditional BNAF ``p_θ(x | R, Z)`` on (nearly) zero-extinction stars by the importance-sampled
  marginal likelihood with the contrastive term (:func:`~jaxstars.models.flower.train_flower`, Eqs. 17–25,
  Appendix A; §4.2 optimiser defaults) and writes ``DIR/flower.npz`` (:meth:`FlowerModel.save`),
  ``DIR/training.json`` (loss history, rows used and why the others were not, the arguments) and
  ``DIR/loss_curve.png``.  Rows are used when every band, the parallax, the position and the distance proposal
  ``q(d)`` (from ``--distance``/``--distance-error`` columns, else from the parallax) are usable and the leading
  band lies within its survey limits.
* ``infer`` runs :class:`~jaxstars.models.flower.processor.FlowerPosteriors` over the catalog with
  :func:`jaxstars.catalog.run_catalog` — the same job as ``jaxstars infer MODEL CATALOG -o OUT`` (identical run
  description, so either command resumes the other's interrupted run and the outputs are byte-identical): chunked,
  streamed, resumable (rerun the same command), optionally on Dask.  One row per input row, in input order:
  ``source_id``, ``ebv_mean``, ``ebv_std``, ``ebv_q2_5`` … ``ebv_q97_5`` [mag, E(B−V)], ``distance_mean``,
  ``distance_std``, ``distance_q2_5`` … ``distance_q97_5`` [pc], the posterior function's per-star diagnostics
  (fast path: e.g. ``log_evidence``, ``edge_mass``; NUTS: ``nuts_flags``, ``n_divergent``, ``accept_prob``,
  ``step_size``, ``num_steps``, ``rhat``, ``ess_bulk``), ``flags`` (bits of
  :data:`~jaxstars.models.flower.FLAGS`), ``flag_names`` and, with ``--samples S``, ``ebv_samples`` and
  ``distance_samples``.  Rows without a possible result are kept, flagged, with NaN results.
* ``evaluate`` computes the posteriors of a catalog with truth columns (``true_ebv``, optionally
  ``true_distance``) and prints the §5.1 metrics as JSON (:mod:`jaxstars.models.flower.metrics`); with
  ``--synthetic-ebv`` the stars (zero-extinction, or with ``true_ebv`` known) are first reddened by each value
  through the model's extinction law (:func:`~jaxstars.models.flower.metrics.add_synthetic_reddening`), and the
  metrics are given per value and over all of them.

Errors in the inputs (missing files, a corrupt model file, a catalog without the model's photometry or positions,
an output that exists without ``--overwrite``) end the command with a one-line message and exit code 2 (set
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
    require_file,
)

from .processor import (
    PRIOR_COLUMNS,
    FlowerCommandError,
    FlowerPosteriors,
    find_column,
    has_parallaxes,
    has_positions,
    load_model,
    model_file,
    parse_distance_prior,
    parse_posterior_options,
    parse_zero_point,
    present_bands,
    resolve_zero_point,
)

__all__ = ["BAND_SETS", "FlowerCommandError", "add_flower_arguments", "inference_hooks"]

#: ``--bands`` presets.
BAND_SETS = {"gaia_ps1": "GAIA_PS1", "gaia_ps1_2mass": "GAIA_PS1_2MASS"}

_METHODS = {"fast": "fast", "grid": "fast", "nuts": "nuts"}  # `jaxstars infer --method grid` is the fast path


# ------------------------------------------------------------------------------------------------ arguments


def add_flower_arguments(subparsers) -> argparse.ArgumentParser:
    """Add ``flower`` (with ``train``, ``infer``, ``evaluate``) to the ``jaxstars`` sub-command parsers.

    Parameters
    ----------
    subparsers : the object returned by ``ArgumentParser.add_subparsers`` of the main ``jaxstars`` parser.

    Returns
    -------
    argparse.ArgumentParser
        The ``flower`` parser (its ``func`` prints help and returns 2 when no sub-command is given).
    """
    flower, sub = command_group(
        subparsers,
        "flower",
        help="FLOWER (O'Callaghan et al.): train the zero-extinction flow, infer dust posteriors, evaluate",
        description="FLOWER: a conditional BNAF of zero-extinction stars p(x | R, Z), trained by an importance-"
        "sampled marginal likelihood, and per-star reddening + distance posteriors (O'Callaghan et al.).",
    )

    train = sub.add_parser("train", help="train the FLOWER flow on a catalog of (nearly) zero-extinction stars")
    train.add_argument("--catalog", required=True, help="training catalog (FITS, Parquet, CSV, HDF5, VOTable)")
    train.add_argument("--out", required=True, help="output folder for flower.npz, training.json, loss_curve.png")
    train.add_argument(
        "--bands",
        choices=tuple(BAND_SETS),
        default="gaia_ps1",
        help="band set: Gaia G/BP/RP + PS1 grizy (8 dims, default) or + 2MASS J/H/Ks (11 dims)",
    )
    opt = train.add_argument_group("optimisation (defaults: the paper's §4.2)")
    opt.add_argument("--epochs", type=int, default=1000, help="maximum epochs (default: %(default)s)")
    opt.add_argument("--batch-size", type=int, default=2**13, help="stars per minibatch (default: %(default)s)")
    opt.add_argument(
        "--learning-rate", type=float, default=1e-3, help="AdamW learning rate (default: %(default)s)"
    )
    opt.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default: %(default)s)")
    opt.add_argument(
        "--patience",
        type=int,
        default=50,
        help="early-stopping patience in epochs; 0: none (default: %(default)s)",
    )
    opt.add_argument("--val-fraction", type=float, default=0.1, help="validation fraction (default: %(default)s)")
    opt.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    loss = train.add_argument_group("loss (Appendix A, Eqs. 20-22)")
    loss.add_argument(
        "--importance-samples", type=int, default=32, help="K draws per star from q(d) q(x) (default: %(default)s)"
    )
    loss.add_argument(
        "--contrastive-weight",
        type=float,
        default=0.3,
        help="final weight λ of the contrastive term, ramped from 0 (default: %(default)s; 0: no contrastive term)",
    )
    loss.add_argument(
        "--distance", default=None, help="column of a distance estimate [pc] for q(d) (default: from the parallax)"
    )
    loss.add_argument("--distance-error", default=None, help="column of its 1-sigma width [pc] (needs --distance)")
    loss.add_argument("--ebv", default=None, help="column of a known training reddening E(B-V) (default: 0)")
    loss.add_argument(
        "--zero-point",
        default="auto",
        help="parallax zero-point: a number of mas (plx_obs = plx_true + zp), a column, or 'auto': the catalog's "
        "PLXZP metadata if any, else 0 (default: auto)",
    )
    loss.add_argument(
        "--min-parallax-snr", type=float, default=None, help="drop rows with a lower parallax S/N (default: none)"
    )
    net = train.add_argument_group("flow (conditional BNAF, §2.3)")
    net.add_argument("--flow-layers", type=int, default=2, help="BNAF layers (default: %(default)s)")
    net.add_argument("--flow-depth", type=int, default=3, help="depth of each BNAF layer (default: %(default)s)")
    net.add_argument("--block-dim", type=int, default=4, help="BNAF block dimension (default: %(default)s)")
    net.add_argument(
        "--activation", choices=("tanh", "leaky_tanh"), default="tanh", help="BNAF activation (default: tanh)"
    )
    train.add_argument("--max-stars", type=int, default=None, help="train on a random subset of this many rows")
    train.add_argument("--overwrite", action="store_true", help="replace an existing model in --out")
    train.add_argument("--no-progress", "--quiet", dest="quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=lambda args: guarded("jaxstars flower train", _train, args))

    infer = sub.add_parser(
        "infer",
        help="per-star E(B-V) and distance posteriors for a catalog (streamed, resumable, Dask-ready)",
        description="Per-star reddening and distance posteriors with a saved FLOWER model: the same job as "
        "'jaxstars infer MODEL CATALOG -o OUT'. An interrupted run resumes when the same command is run again.",
    )
    infer.add_argument(
        "--model", required=True, help="model folder (or flower.npz) written by 'jaxstars flower train'"
    )
    infer.add_argument("--catalog", required=True, help="input catalog (any readable format or a HATS folder)")
    infer.add_argument("--out", required=True, help="output table; format from the suffix (.parquet streams)")
    infer.add_argument(
        "--method",
        choices=("fast", "nuts"),
        default="fast",
        help="'fast': x marginalised by importance sampling on a zoomed (E, d) grid (default); 'nuts': per-star "
        "NUTS on Eq. 16, the paper's procedure",
    )
    infer.add_argument("--seed", type=int, default=0, help="random seed; same seed → same output (default: 0)")
    infer.add_argument("--samples", type=int, default=0, help="posterior draws per star to write (default: 0)")
    infer.add_argument("--chunk-rows", type=int, default=50_000, help="rows per chunk (default: %(default)s)")
    infer.add_argument("--overwrite", action="store_true", help="start again, replacing OUT and OUT.parts/")
    infer.add_argument("--keep-parts", action="store_true", help="keep OUT.parts/ after the merge")
    infer.add_argument("--quiet", action="store_true", help="no progress bar")
    scale = infer.add_argument_group("scale-out (Dask)")
    scale.add_argument(
        "--dask", type=int, default=None, metavar="N", help="run chunks on a local cluster of N workers"
    )
    scale.add_argument(
        "--scheduler", default=None, metavar="ADDRESS", help="run chunks on an existing Dask cluster"
    )
    _add_nuts_arguments(infer.add_argument_group("NUTS (--method nuts)"))
    _add_model_arguments(infer.add_argument_group("FLOWER posterior"))
    infer.set_defaults(func=lambda args: guarded("jaxstars flower infer", _infer, args))

    ev = sub.add_parser(
        "evaluate", help="posteriors + §5.1 reddening metrics (JSON) for a catalog with truth columns"
    )
    ev.add_argument("--model", required=True, help="model folder (or flower.npz)")
    ev.add_argument(
        "--catalog", required=True, help="catalog with true_ebv (or zero-extinction stars) [+ true_distance]"
    )
    ev.add_argument(
        "--synthetic-ebv",
        default=None,
        metavar="E1,E2,...",
        help="redden the stars by each E(B-V) through the model's law first (e.g. 0,0.1,0.2,0.3,0.4)",
    )
    ev.add_argument(
        "--intrinsic",
        choices=("auto", "truth", "observed"),
        default="auto",
        help="intrinsic colour for the synthetic reddening's law: true_absmag_* columns ('truth'), the observed "
        "colours dereddened by true_ebv ('observed'), or truth when present ('auto', default)",
    )
    ev.add_argument("--method", choices=("fast", "nuts"), default="fast", help="posterior method (default: fast)")
    ev.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    ev.add_argument("--max-stars", type=int, default=None, help="evaluate a random subset of this many rows")
    ev.add_argument("--out-json", default=None, help="also write the metrics to this JSON file")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_nuts_arguments(ev.add_argument_group("NUTS (--method nuts)"))
    _add_model_arguments(ev.add_argument_group("FLOWER posterior"), e_max=False)
    ev.set_defaults(func=lambda args: guarded("jaxstars flower evaluate", _evaluate, args))
    return flower


def _add_nuts_arguments(group) -> None:
    """The NUTS options with the dests and defaults of ``jaxstars infer`` (same defaults → same run description)."""
    from jaxstars.inference import NUTSConfig

    d = NUTSConfig()
    group.add_argument(
        "--num-warmup",
        type=int,
        default=d.num_warmup,
        help="warm-up iterations per chain (default: %(default)s; paper: 4000)",
    )
    group.add_argument(
        "--num-draws",
        type=int,
        default=d.num_samples,
        help="kept draws per chain (default: %(default)s; paper: 10000)",
    )
    group.add_argument(
        "--num-chains",
        type=int,
        default=d.num_chains,
        help="chains per star (R-hat needs >= 2; default: %(default)s)",
    )
    group.add_argument(
        "--target-accept",
        type=float,
        default=d.target_accept_prob,
        help="step-size target (default: %(default)s; paper: 0.9)",
    )
    group.add_argument(
        "--batch-size", type=int, default=d.batch_size, help="stars vmapped together (default: %(default)s)"
    )


def _add_model_arguments(group, e_max: bool = True) -> None:
    """FLOWER's posterior options (shared by ``flower infer``, ``flower evaluate`` and ``jaxstars infer``)."""
    group.add_argument(
        "--zero-point",
        default="auto",
        help="parallax zero-point: a number of mas (plx_obs = plx_true + zp), a column, or 'auto': the catalog's "
        "PLXZP metadata if any, else 0 (default: auto)",
    )
    group.add_argument(
        "--distance-prior",
        default="1300,1.5,0.8",
        metavar="L,ALPHA,BETA",
        help="generalized gamma distance prior, Eq. 13 (default: %(default)s); columns ggd_length, ggd_alpha, "
        "ggd_beta override it per star",
    )
    group.add_argument(
        "--mag-err-floor", type=float, default=0.0, help="added in quadrature to magnitude errors (default: 0)"
    )
    group.add_argument(
        "--posterior-option",
        action="append",
        default=None,
        metavar="NAME=VALUE",
        help="a FlowerPosteriorConfig setting (repeatable), e.g. n_e=24, node_hessians=2, e_max=0.8",
    )
    if e_max:
        group.add_argument(
            "--e-max-column",
            default=None,
            help="column of an external integrated E(B-V) per line of sight: flags stars that dust may have pushed "
            "into the sample (§2.9.2, flag dust_pushed)",
        )


# ------------------------------------------------------------------------------------------------ helpers


def _features(preset: str):
    from . import features as feats

    return feats.FlowerFeatures(bands=getattr(feats, BAND_SETS[preset]))


def _column_name(raw, name: str | None, option: str, catalog: Path) -> str | None:
    """The catalog's spelling of the column given to ``option`` (matched without regard to case)."""
    if name is None:
        return None
    found = find_column(raw.colnames, name)
    if found is None:
        raise FlowerCommandError(
            f"{option} {name}: catalog {catalog} has no such column; columns present: {', '.join(raw.colnames)}"
        )
    return found


def _check_photometry(raw, features, catalog: Path, *, all_bands: bool) -> tuple[str, ...]:
    """The model bands the catalog has columns for; :class:`FlowerCommandError` when too few (or, for training,
    not all) are present."""
    bands = features.catalog_bands
    present = present_bands(raw, bands)
    missing = [b for b in bands if b not in present]
    lead = bands[0]
    if (all_bands and missing) or lead not in present or len(present) < 2:
        need = [lead] if not all_bands and lead not in present else missing
        raise FlowerCommandError(
            f"catalog {catalog} lacks column(s) {', '.join(f'mag_{b}/mag_err_{b}' for b in need)} "
            f"(the model's bands are {', '.join(features.bands)}; "
            + ("training needs all of them" if all_bands else f"inference needs at least {lead} and one colour")
            + f"); columns present: {', '.join(raw.colnames)}"
        )
    if not has_positions(raw):
        raise FlowerCommandError(
            f"catalog {catalog} has no sky positions (l/b or ra/dec) for the Galactocentric (R, Z) of the flow's "
            f"context; columns present: {', '.join(raw.colnames)}"
        )
    return present


# ------------------------------------------------------------------------------------------------ train


def _train_reasons(table, features, arrays_kw: dict, limits) -> dict[str, int]:
    """Why rows cannot be used for training (a row may have several reasons): counts per reason."""
    n = len(table)

    def col(name):
        if name is None or name not in table.colnames:
            return np.full(n, np.nan)
        return np.array(np.ma.filled(np.ma.asarray(table[name], dtype=float), np.nan), dtype=float).reshape(n)

    reasons: dict[str, int] = {}
    with np.errstate(invalid="ignore"):
        for band in features.catalog_bands:
            mag, err = col(f"mag_{band}"), col(f"mag_err_{band}")
            reasons[f"missing_{band}"] = int(np.count_nonzero(~(np.isfinite(mag) & np.isfinite(err) & (err > 0))))
        plx, plx_err = col("parallax"), col("parallax_error")
        reasons["no_parallax"] = int(np.count_nonzero(~(np.isfinite(plx) & np.isfinite(plx_err) & (plx_err > 0))))
        zp = arrays_kw["zero_point"]
        zp_values = col(zp) if isinstance(zp, str) else np.full(n, float(zp))
        if arrays_kw["distance"] is None:
            reasons["non_positive_parallax"] = int(np.count_nonzero(plx - zp_values <= 0))
        else:
            d, s = col(arrays_kw["distance"]), col(arrays_kw["distance_error"])
            reasons["no_distance_estimate"] = int(
                np.count_nonzero(~(np.isfinite(d) & (d > 0) & np.isfinite(s) & (s > 0)))
            )
        if arrays_kw["ebv"] is not None:
            reasons["no_ebv"] = int(np.count_nonzero(~np.isfinite(col(arrays_kw["ebv"]))))
        if limits is not None:
            lead = col(f"mag_{features.catalog_bands[0]}")
            reasons["outside_magnitude_limits"] = int(np.count_nonzero((lead <= limits[0]) | (lead >= limits[1])))
        reasons["no_position"] = int(np.count_nonzero(~(np.isfinite(col("l")) & np.isfinite(col("b")))))
        if arrays_kw.get("min_parallax_snr") is not None:
            snr = (plx - zp_values) / plx_err
            reasons["low_parallax_snr"] = int(np.count_nonzero(~(snr >= arrays_kw["min_parallax_snr"])))
    return {k: v for k, v in reasons.items() if v}


def _train(args: argparse.Namespace) -> int:
    from jaxstars.astro.catalog_io import read_table, to_canonical

    from .model import MODEL_FILE, default_flower_flow
    from .training import flower_training_arrays, malmquist_limits, train_flower

    for name in ("epochs", "batch_size", "importance_samples", "flow_layers", "flow_depth", "block_dim"):
        if getattr(args, name) < 1:
            raise FlowerCommandError(f"--{name.replace('_', '-')} must be at least 1")
    if args.patience < 0:
        raise FlowerCommandError("--patience must be >= 0 (0: no early stopping)")
    if args.max_stars is not None and args.max_stars < 2:
        raise FlowerCommandError("--max-stars must be at least 2")
    for name in ("learning_rate", "weight_decay", "contrastive_weight"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0) or (name == "learning_rate" and value == 0):
            kind = "positive" if name == "learning_rate" else "non-negative"
            raise FlowerCommandError(f"--{name.replace('_', '-')} must be a {kind} number")
    if not 0.0 <= args.val_fraction < 1.0:
        raise FlowerCommandError("--val-fraction must be in [0, 1)")
    if (args.distance is None) != (args.distance_error is None):
        raise FlowerCommandError("--distance and --distance-error go together (q(d) needs a centre and a width)")
    out = Path(args.out)
    catalog = require_file(args.catalog, "catalog")
    if (out / MODEL_FILE).exists() and not args.overwrite:
        raise FileExistsError(f"{out / MODEL_FILE} exists; pass --overwrite to replace it")
    features = _features(args.bands)
    zero_point = parse_zero_point(args.zero_point)

    started = time.perf_counter()
    raw = read_table(catalog)
    _check_photometry(raw, features, catalog, all_bands=True)
    if not has_parallaxes(raw):
        raise FlowerCommandError(
            f"catalog {catalog} has no parallax/parallax_error columns (the training likelihood, Eq. 6, needs them); "
            f"columns present: {', '.join(raw.colnames)}"
        )
    distance = _column_name(raw, args.distance, "--distance", catalog)
    distance_error = _column_name(raw, args.distance_error, "--distance-error", catalog)
    ebv = _column_name(raw, args.ebv, "--ebv", catalog)
    zero_point = resolve_zero_point(zero_point, raw.meta)
    if isinstance(zero_point, str):
        zero_point = _column_name(raw, zero_point, "--zero-point", catalog)
    n_catalog = len(raw)
    if args.max_stars is not None and args.max_stars < n_catalog:
        rows = np.sort(np.random.default_rng(args.seed).choice(n_catalog, args.max_stars, replace=False))
        raw = raw[rows]
    extra = [c for c in dict.fromkeys([distance, distance_error, ebv, zero_point]) if isinstance(c, str)]
    table = to_canonical(raw, extra_columns=extra)
    del raw
    arrays_kw = {
        "distance": distance,
        "distance_error": distance_error,
        "ebv": ebv,
        "zero_point": zero_point,
        "min_parallax_snr": args.min_parallax_snr,
    }
    arrays, used = flower_training_arrays(table, features, **arrays_kw)
    limits = malmquist_limits(features, "auto")
    reasons = _train_reasons(table, features, arrays_kw, limits)
    n_used = int(np.count_nonzero(used))
    if n_used < 2:
        why = ", ".join(f"{k} {v}" for k, v in reasons.items()) or "none"
        raise FlowerCommandError(
            f"only {n_used} of {len(table)} rows are usable for training (rows not usable: {why}) — check the "
            "catalog's photometry, parallaxes and positions"
        )
    flow = default_flower_flow(
        features.dim,
        block_dim=args.block_dim,
        depth=args.flow_depth,
        activation=args.activation,
        n_layers=args.flow_layers,
    )
    q_text = f"q(d) from {distance} ± {distance_error}" if distance else "q(d) from the parallax"
    print(
        f"jaxstars flower train: {len(table)} stars from {catalog}; bands {args.bands} ({features.dim} dims); "
        f"BNAF {args.flow_layers} layer(s) × depth {args.flow_depth} (block {args.block_dim}, {args.activation}); "
        f"up to {args.epochs} epochs; {q_text}, zero-point {zero_point}"
    )
    trained = train_flower(
        arrays,
        features=features,
        flow=flow,
        epochs=args.epochs,
        batch_size=args.batch_size,
        key=args.seed,
        n_samples=args.importance_samples,
        contrastive_weight=args.contrastive_weight,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        patience=args.patience or None,
        val_fraction=args.val_fraction,
        progress=not args.quiet,
    )
    elapsed = time.perf_counter() - started
    info = {
        **trained.model.info,
        "catalog": str(catalog),
        "bands_preset": args.bands,
        "zero_point": zero_point,
        "distance_column": distance,
        "distance_error_column": distance_error,
        "ebv_column": ebv,
    }
    model = dataclasses.replace(trained.model, info=jsonable(info))
    out.mkdir(parents=True, exist_ok=True)
    model_path = model.save(out, trained.params)

    fit = trained.fit
    train_loss = np.asarray(fit.train_loss, dtype=float)
    val_loss = np.asarray(fit.val_loss, dtype=float)
    best_epoch = int(np.ravel(fit.best_epoch)[0])
    summary = {
        "catalog": str(catalog),
        "model": str(model_path),
        "bands": list(features.bands),
        "rows": {
            "n_catalog": int(n_catalog),
            "n_considered": len(table),
            "n_used": n_used,
            "n_not_used": int(len(table) - n_used),
            "not_used_because": reasons,
        },
        "train_loss": jsonable(train_loss),
        "val_loss": jsonable(val_loss),
        "best_epoch": best_epoch,
        "epochs_run": int(fit.epochs_run),
        "stopped_early": bool(fit.stopped_early),
        "coverage": {"R": model.coverage.get("R"), "Z": model.coverage.get("Z")},
        "elapsed_s": round(elapsed, 3),
        "arguments": arguments_json(args),
    }
    (out / "training.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    png = plot_loss(
        train_loss,
        val_loss,
        best_epoch,
        out / "loss_curve.png",
        ylabel="λ log C − log L per star [nats]",
        title="FLOWER loss (Eq. 22)",
    )
    best = val_loss[best_epoch] if 0 <= best_epoch < val_loss.size and np.isfinite(val_loss[best_epoch]) else None
    not_used = ", ".join(f"{k} {v}" for k, v in reasons.items())
    print(
        f"  used {n_used} of {len(table)} rows{f' (not used: {not_used})' if not_used else ''}; "
        f"{fit.epochs_run} epochs in {elapsed:.1f} s; best validation loss "
        f"{'n/a' if best is None else f'{best:.4f}'} at epoch {best_epoch}"
    )
    print(f"  wrote {model_path}, {out / 'training.json'} and {png}")
    return 0


# ------------------------------------------------------------------------------------------------ infer


def _posterior_options(args: argparse.Namespace, raw, catalog: Path) -> dict:
    """Zero-point, distance prior, per-star prior columns and E_max column from the options and the catalog."""
    zero_point = resolve_zero_point(parse_zero_point(args.zero_point), raw.meta)
    if isinstance(zero_point, str):
        zero_point = _column_name(raw, zero_point, "--zero-point", catalog)
    e_max_column = _column_name(raw, getattr(args, "e_max_column", None), "--e-max-column", catalog)
    if not (math.isfinite(args.mag_err_floor) and args.mag_err_floor >= 0):
        raise FlowerCommandError("--mag-err-floor must be a non-negative number")
    return {
        "posterior": parse_posterior_options(args.posterior_option),
        "zero_point": zero_point,
        "e_max_column": e_max_column,
        "distance_prior": parse_distance_prior(args.distance_prior),
        "prior_columns": tuple(c for c in PRIOR_COLUMNS if c in raw.colnames),
        "mag_err_floor": float(args.mag_err_floor),
    }


def _nuts_settings(args: argparse.Namespace) -> dict:
    from jaxstars.infer import nuts_settings

    return nuts_settings(args)


def _inference_job(model_path: Path, args: argparse.Namespace, catalog: Path):
    """The :class:`~jaxstars.infer.InferenceJob` of ``flower infer`` / ``jaxstars infer`` for a FLOWER model."""
    from jaxstars.catalog import peek
    from jaxstars.infer import InferenceJob

    from .stars import FLAGS, flag_names

    if args.samples < 0:
        raise FlowerCommandError("--samples must be >= 0")
    if args.chunk_rows < 1:
        raise FlowerCommandError("--chunk-rows must be at least 1")
    method = _METHODS[getattr(args, "method", "fast")]
    file = model_file(model_path)
    model, _ = load_model(file)
    catalog = require_file(catalog, "catalog")
    if Path(args.out).resolve() == catalog.resolve():
        raise FlowerCommandError("--out must differ from the catalog")
    raw = peek(catalog, 1)
    present = _check_photometry(raw, model.features, catalog, all_bands=False)
    options = _posterior_options(args, raw, catalog)
    processor = FlowerPosteriors(
        file,
        method=method,
        seed=args.seed,
        samples=args.samples,
        nuts=_nuts_settings(args) if method == "nuts" else None,
        **options,
    )
    extra = processor.extra_columns()
    absent = [b for b in model.features.catalog_bands if b not in present]
    describe = (
        f"{method} posterior, bands {','.join(model.features.bands)}"
        + (f" (absent from the catalog, marginalised: {','.join(absent)})" if absent else "")
        + f", zero-point {options['zero_point']}"
        + ("" if has_parallaxes(raw) else ", no parallaxes (photometry only)")
    )
    return InferenceJob(
        processor=processor,
        config=processor.config(),
        flag_names=flag_names,
        flag_bits=FLAGS,
        result_column="ebv_mean",
        keep_columns=("source_id",),
        read_options={"extra_columns": extra} if extra else None,
        describe=describe,
    )


def _infer(args: argparse.Namespace) -> int:
    from jaxstars.infer import run_inference

    if args.dask is not None and args.scheduler is not None:
        raise FlowerCommandError("give either --dask N or --scheduler ADDRESS, not both")
    if args.dask is not None and args.dask < 1:
        raise FlowerCommandError("--dask needs at least 1 worker")
    catalog = require_file(args.catalog, "catalog")
    job = _inference_job(Path(args.model), args, catalog)
    # the run description `jaxstars infer` gives this job: the two commands are one job (same output bytes, and
    # either one resumes the other's interrupted run)
    job.config = {"command": "jaxstars infer", "kind": "flower", **job.config}
    return run_inference(job, catalog, Path(args.out), args, command="jaxstars flower infer")


def inference_hooks():
    """``jaxstars infer`` hooks for FLOWER models: ``(detect, add_arguments, build)`` (see
    :class:`jaxstars.infer.ModelKind`)."""

    def detect(path: Path) -> bool:
        """A FLOWER model file (or a folder holding ``flower.npz``): a flow file with ``flower`` metadata.

        A corrupt file raises :class:`~jaxstars.flows.FlowFileError` (reported as such); a FLOWER file of another
        format version is detected here and refused with a clear message when loaded.
        """
        from jaxstars.flows.io import NotAFlowFileError, flow_metadata

        from .model import MODEL_FILE

        file = path / MODEL_FILE if path.is_dir() else path
        if not (file.is_file() and file.suffix == ".npz"):
            return False
        try:
            return "flower" in flow_metadata(file)
        except NotAFlowFileError:  # some other .npz: not ours
            return False

    def add_arguments(group) -> None:
        _add_model_arguments(group)

    return detect, add_arguments, _inference_job


# ------------------------------------------------------------------------------------------------ evaluate


def _parse_ebv_list(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise FlowerCommandError(f"--synthetic-ebv {text!r}: give comma-separated numbers, e.g. 0,0.1,0.2,0.3,0.4")
    return values


def _posteriors(model, params, stars, args, posterior: dict, e_max=None) -> dict:
    """Fast-path or NUTS posteriors of prepared stars (same settings as the ``infer`` processor)."""
    from jaxstars.inference import NUTSConfig

    from .posterior import FlowerPosteriorConfig, flower_posteriors, nuts_flower_posteriors

    config = FlowerPosteriorConfig(**posterior)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if args.method == "nuts":
            nuts = NUTSConfig(**{"dense_mass": True, **_nuts_settings(args)})
            return nuts_flower_posteriors(model, params, stars, args.seed, nuts=nuts, config=config)
        return flower_posteriors(model, params, stars, args.seed, config, e_max=e_max)


def _evaluate(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from jaxstars.astro.catalog_io import read_table, to_canonical

    from . import metrics
    from .stars import FLAGS, prepare_flower_stars

    synthetic = _parse_ebv_list(args.synthetic_ebv)
    if args.max_stars is not None and args.max_stars < 1:
        raise FlowerCommandError("--max-stars must be at least 1")
    if args.method == "nuts":
        try:
            from jaxstars.inference import NUTSConfig

            NUTSConfig(**_nuts_settings(args))
        except ValueError as err:
            raise FlowerCommandError(f"invalid NUTS settings: {err}") from None
    file = model_file(args.model)
    model, params = load_model(file)
    catalog = require_file(args.catalog, "catalog")
    raw = read_table(catalog)
    _check_photometry(raw, model.features, catalog, all_bands=False)
    options = _posterior_options(args, raw, catalog)
    if "quantiles" in options["posterior"]:
        raise FlowerCommandError("evaluate uses the default quantiles (its coverage needs q2.5, q16, q84, q97.5)")
    truth_ebv = find_column(raw.colnames, "true_ebv")
    truth_distance = find_column(raw.colnames, "true_distance")
    if synthetic is None and truth_ebv is None:
        raise FlowerCommandError(
            f"catalog {catalog} has no true_ebv column: give --synthetic-ebv to redden its (zero-extinction) stars"
        )
    truth_absmag = [f"true_absmag_{b}" for b in model.features.catalog_bands]
    wanted = [truth_ebv, truth_distance, *truth_absmag, *[f"true_mag_{b}" for b in model.features.catalog_bands]]
    wanted += [
        options["zero_point"] if isinstance(options["zero_point"], str) else None,
        *options["prior_columns"],
    ]
    extra = [c for c in dict.fromkeys(find_column(raw.colnames, w) for w in wanted if w) if c]
    n_catalog = len(raw)
    if args.max_stars is not None and args.max_stars < n_catalog:
        rows = np.sort(np.random.default_rng(args.seed).choice(n_catalog, args.max_stars, replace=False))
        raw = raw[rows]
    table = to_canonical(raw, extra_columns=extra)
    # the truth under its canonical names, whatever the catalog's spelling
    for found, canonical in ((truth_ebv, "true_ebv"), (truth_distance, "true_distance")):
        if found and found != canonical:
            table.rename_column(found, canonical)
    zero_point = options["zero_point"]

    started = time.perf_counter()
    runs = [None] if synthetic is None else synthetic
    blocks = []
    for ebv in tqdm(runs, desc="evaluate", unit="E value", disable=args.quiet, file=sys.stderr, leave=False):
        block = (
            table if ebv is None else metrics.add_synthetic_reddening(model, table, ebv, intrinsic=args.intrinsic)
        )
        stars = prepare_flower_stars(
            model.features,
            block,
            parallax_zero_point=zero_point,
            distance_prior=options["distance_prior"],
            mag_err_floor=options["mag_err_floor"],
        )
        res = _posteriors(model, params, stars, args, options["posterior"])
        blocks.append((ebv, block, res))

    def ebv_metrics(parts):
        cat = {k: np.concatenate([np.asarray(r[k]) for _, _, r in parts]) for k in _EBV_KEYS + ("flags",)}
        truth = np.concatenate([_truth(b, "true_ebv") for _, b, _ in parts])
        return metrics.reddening_metrics(
            truth,
            cat["ebv_mean"],
            cat["ebv_std"],
            cat["ebv_q2_5"],
            cat["ebv_q16"],
            cat["ebv_q84"],
            cat["ebv_q97_5"],
            flags=cat["flags"],
        )

    flags_all = np.concatenate([np.asarray(r["flags"], np.int64) for _, _, r in blocks])
    report: dict[str, Any] = {
        "catalog": str(catalog),
        "model": str(file),
        "bands": list(model.features.bands),
        "method": args.method,
        "seed": args.seed,
        "zero_point": options["zero_point"],
        "distance_prior": list(options["distance_prior"]),
        "posterior_options": options["posterior"],
        "n_stars": len(table),
        "synthetic_ebv": synthetic,
        "intrinsic": args.intrinsic if synthetic is not None else None,
        "assumed_zero_extinction": synthetic is not None and truth_ebv is None,
        "overall": ebv_metrics(blocks),
    }
    if synthetic is not None:
        report["per_ebv"] = [{"synthetic_ebv": part[0], **ebv_metrics([part])} for part in blocks]
    if truth_distance is not None:
        dist = {k: np.concatenate([np.asarray(r[k]) for _, _, r in blocks]) for k in _DISTANCE_KEYS}
        truth = np.concatenate([_truth(b, "true_distance") for _, b, _ in blocks])
        report["distance"] = metrics.distance_metrics(
            truth,
            dist["distance_mean"],
            dist["distance_q2_5"],
            dist["distance_q16"],
            dist["distance_q50"],
            dist["distance_q84"],
            dist["distance_q97_5"],
        )
    report["flag_counts"] = {name: int(np.count_nonzero(flags_all & bit)) for name, bit in FLAGS.items()}
    report["elapsed_s"] = round(time.perf_counter() - started, 3)
    text = json.dumps(jsonable(report), indent=2, allow_nan=False)
    if args.out_json:
        Path(args.out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out_json).write_text(text + "\n")
        print(f"jaxstars flower evaluate: wrote {args.out_json}", file=sys.stderr)
    print(text)
    return 0


_EBV_KEYS = ("ebv_mean", "ebv_std", "ebv_q2_5", "ebv_q16", "ebv_q84", "ebv_q97_5")
_DISTANCE_KEYS = (
    "distance_mean",
    "distance_q2_5",
    "distance_q16",
    "distance_q50",
    "distance_q84",
    "distance_q97_5",
)


def _truth(table, name: str) -> np.ndarray:
    n = len(table)
    if name not in table.colnames:
        return np.full(n, np.nan)
    col = table[name]
    return np.array(np.ma.filled(np.ma.asarray(col, dtype=float), np.nan), dtype=float).reshape(n)
