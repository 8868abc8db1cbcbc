"""``jaxstars spectrophot``: fit spectrophotometric parallaxes (Hogg, Eilers & Rix, paper 003) and apply them.

Examples::

    jaxstars spectrophot fit --data green2020_sample.h5 --out sp_model
    jaxstars spectrophot fit --data APOGEE-allStar-v603-Hipparcos.fits.gz --out sp_hip --max-parallax-error none
    jaxstars spectrophot predict --model sp_model --data stars.fits --out predictions.parquet

Data files: FITS, Parquet, CSV/ECSV, HDF5 or VOTable tables, and the Green et al. release HDF5 as distributed
(see :mod:`jaxstars.models.spectrophot.inputs`). Expected columns (canonical names, or the survey names
:func:`jaxstars.astro.catalog_io.to_canonical` maps):

* photometry ``mag_<band>``/``mag_err_<band>`` for bands among G, BP, RP, J, H, Ks, W1, W2 (Gaia archive
  ``phot_g_mean_mag`` …, 2MASS ``j_m``/``j_msigcom`` …, APOGEE ``J``/``J_ERR``/``K``, AllWISE ``w1mpro`` …);
* ``parallax``/``parallax_error`` [mas] (Gaia names, or Hipparcos ``Plx``/``e_Plx``) — for ``fit``;
* spectral features: a 2-D ``flux`` column (N × L normalised fluxes) with ``flux_err``, and/or labels ``teff``,
  ``logg``, ``feh`` (APOGEE ``TEFF``/``LOGG``/``PARAM_M_H``, −9999 = missing) with ``*_err``;
* ``logg`` for the parent-sample cut; optional Gaia ``visibility_periods_used``, ``astrometric_chi2_al``,
  ``astrometric_n_good_obs_al`` for the training cuts (skipped, and said so, when absent).

``fit`` selects the Parent Sample (0 < log g < ``--max-logg``, complete features, Eqs. 6–7 when the bands
exist) and the Training Set (Eq. 10-style quality cuts; never a cut on ϖ or ϖ/σ), assigns A/B folds, chooses λ
and ϖ₀ on the grids by two-fold cross-validation and writes ``DIR/spectrophot.npz`` (the two θ), ``DIR/catalog.fits``
(every input row: ``parallax_sp``, ``parallax_sp_error``, ``fold``, ``training``, ``flags``) and ``DIR/fit.json``
(the CV grid, cut counts, sparsity, fractional scatter at ϖ/σ > 20 and > 10, A/B consistency).

``predict`` applies a saved model to any table with the same features: a row with a ``fold`` column value A/B is
predicted with the other fold's θ; otherwise with both (``parallax_sp_A``, ``parallax_sp_B``) and their geometric
mean as ``parallax_sp`` (Eq. 5 uncertainty with the mean θ). Rows lacking a feature get NaN and flag bit 1.

Errors in the inputs end the command with a one-line message and exit code 2 (``JAXSTARS_DEBUG=1``: traceback).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from jaxstars.cli_support import arguments_json, command_group, guarded, jsonable, require_file

__all__ = ["add_spectrophot_arguments"]


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err


def add_spectrophot_arguments(subparsers) -> argparse.ArgumentParser:
    """Add ``spectrophot`` (with ``fit`` and ``predict``) to the ``jaxstars`` sub-command parsers.

    Parameters
    ----------
    subparsers : the object returned by ``ArgumentParser.add_subparsers`` of the main ``jaxstars`` parser.

    Returns
    -------
    argparse.ArgumentParser
        The ``spectrophot`` parser (prints help and returns 2 without a sub-command).
    """
    sp, sub = command_group(
        subparsers,
        "spectrophot",
        help="spectrophotometric parallaxes with linear models (Hogg, Eilers & Rix): fit, predict",
        description="ϖ_sp = exp(θ·x) fitted to raw parallaxes with an L1 penalty on spectral coefficients, "
        "trained two-fold (A/B) so no star's parallax enters its own prediction.",
    )

    fit = sub.add_parser("fit", help="select, cross-validate λ and ϖ₀, fit θ_A and θ_B, write model + catalog")
    fit.add_argument("--data", required=True, help="input table (FITS, Parquet, CSV, HDF5 incl. the Green h5)")
    fit.add_argument("--out", required=True, help="output folder (spectrophot.npz, catalog.fits, fit.json)")
    feats = fit.add_argument_group("features (Eq. 11)")
    feats.add_argument("--bands", default="auto", help="comma-separated bands, or 'auto': those of G,BP,RP,J,H,"
                       "Ks,W1,W2 observed for >= 80%% of rows (default)")  # fmt: skip
    feats.add_argument("--labels", default="auto", help="comma-separated label columns standing in for spectra, "
                       "'none', or 'auto': teff,logg,feh when present and no spectrum (default)")  # fmt: skip
    feats.add_argument("--no-spectra", action="store_true", help="ignore a 'flux' column")
    sel = fit.add_argument_group("selection (§4)")
    sel.add_argument("--max-logg", type=float, default=2.2, help="parent sample 0 < logg < this (default 2.2)")
    sel.add_argument("--no-colour-cuts", action="store_true", help="skip Eqs. 6-7")
    sel.add_argument(
        "--max-parallax-error", default="0.1", help="training σ_ϖ limit [mas] or 'none' (default 0.1)"
    )
    cv = fit.add_argument_group("regularisation and cross-validation")
    cv.add_argument("--lambda-grid", type=_floats, default=_floats("1,3,10,30,100,300"),
                    help="λ values to cross-validate (default 1,3,10,30,100,300; one value = no search)")  # fmt: skip
    cv.add_argument("--zero-point-grid", type=_floats, default=_floats("0.029"),
                    help="ϖ₀ [mas] added to the parallaxes: one value = given (default 0.029, the Gaia DR2 offset "
                    "of Lindegren et al. 2018; use the release's published value), several = chosen by CV, which "
                    "is weakly identified and prefers too large offsets on synthetic data (see the docs)")  # fmt: skip
    cv.add_argument("--method", choices=("newton", "fista"), default="newton", help="optimiser (default newton)")
    cv.add_argument("--seed", type=int, default=0, help="seed of the A/B assignment (default 0)")
    fit.add_argument("--overwrite", action="store_true", help="replace an existing model in --out")
    fit.set_defaults(func=lambda args: guarded("jaxstars spectrophot fit", _fit, args))

    pr = sub.add_parser("predict", help="spectrophotometric parallaxes for a table with a saved model")
    pr.add_argument("--model", required=True, help="model folder (or spectrophot.npz) from 'spectrophot fit'")
    pr.add_argument("--data", required=True, help="input table with the model's features")
    pr.add_argument("--out", required=True, help="output table; format from the suffix")
    pr.add_argument("--overwrite", action="store_true", help="replace an existing output")
    pr.set_defaults(func=lambda args: guarded("jaxstars spectrophot predict", _predict, args))
    return sp


def _features_config(table, args) -> dict:
    from .inputs import LABELS, resolve_bands

    bands = resolve_bands(table, args.bands)
    spectra = "flux" in table.colnames and not args.no_spectra
    if args.labels == "auto":
        labels = () if spectra else tuple(n for n in LABELS if n in table.colnames)
    elif args.labels == "none":
        labels = ()
    else:
        labels = tuple(v.strip() for v in args.labels.split(",") if v.strip())
    if not bands and not labels and not spectra:
        raise ValueError("no features: the data have none of the bands, labels or a spectrum")
    return {"bands": list(bands), "labels": list(labels), "spectra": bool(spectra)}


def _fit(args) -> int:
    from jaxstars.astro.catalog_io import write_table
    from jaxstars.astro.quality import apply_cuts

    from .inputs import load_table, table_features
    from .model import MODEL_FILE
    from .selection import parent_sample_cuts, training_cuts
    from .training import assign_folds, cross_validate, fractional_scatter, spectrophot_catalog

    out = Path(args.out)
    if (out / MODEL_FILE).exists() and not args.overwrite:
        raise FileExistsError(f"{out / MODEL_FILE} exists (use --overwrite)")
    table = load_table(require_file(args.data, "data file"))
    for col in ("parallax", "parallax_error"):
        if col not in table.colnames:
            raise ValueError(
                f"the data have no {col} column (Gaia parallax/parallax_error or Hipparcos Plx/e_Plx)"
            )
    if "logg" not in table.colnames:
        raise ValueError("the data have no logg column for the parent-sample cut")
    config = _features_config(table, args)
    mpe = None if args.max_parallax_error.lower() == "none" else float(args.max_parallax_error)
    parent = apply_cuts(parent_sample_cuts(table, config["bands"], max_logg=args.max_logg,
                                           colours=not args.no_colour_cuts))  # fmt: skip
    tcuts, skipped = training_cuts(table, mpe)
    training_summary = apply_cuts(tcuts)
    fm = table_features(table, config["bands"], config["labels"], spectra=config["spectra"])
    training = parent.mask & training_summary.mask & fm.valid
    if training.sum() < 10:
        raise ValueError(f"only {int(training.sum())} training stars pass the cuts")
    plx = np.asarray(table["parallax"], float)
    err = np.asarray(table["parallax_error"], float)
    folds = assign_folds(len(table), args.seed)
    t0 = time.perf_counter()
    dtype = np.float32 if config["spectra"] else np.float64
    cv = cross_validate(fm, plx, err, training, folds, args.lambda_grid, args.zero_point_grid,
                        method=args.method, dtype=dtype, config={**config, "data": str(args.data)})  # fmt: skip
    result = cv["result"]
    model_path = result.model.save(out)
    catalog = spectrophot_catalog(result, fm, plx, err, training, parent.mask)
    write_table(catalog, out / "catalog.fits", overwrite=True)
    zp = result.model.zero_point
    sp = result.parallax_sp[parent.mask]
    report = {
        "data": str(args.data),
        "features": config,
        "n_rows": len(table),
        "parent_sample": {"n": int(parent.mask.sum()), "failed": parent.counts},
        "training_set": {"n": int(training.sum()), "failed": training_summary.counts, "skipped_cuts": skipped},
        "cross_validation": cv["grid"],
        "chosen": cv["best"],
        "scatter_snr20": fractional_scatter(sp, plx[parent.mask], err[parent.mask], zp),
        "scatter_snr10": fractional_scatter(sp, plx[parent.mask], err[parent.mask], zp, 10.0),
        "ab_consistency": _ab_consistency(result, fm, parent.mask),
        "seconds": time.perf_counter() - t0,
        "arguments": arguments_json(args),
    }
    (out / "fit.json").write_text(json.dumps(jsonable(report), indent=2))
    print(f"model: {model_path}; λ = {cv['best']['lam']:g}, ϖ₀ = {zp:g} mas; {int(training.sum())} training stars")
    return 0


def _ab_consistency(result, fm, rows) -> dict:
    """Median and robust scatter of ln(ϖ_A / ϖ_B) (both folds' θ on the same stars)."""
    from .training import predict

    pa, _ = predict(result.model.thetas["A"], fm)
    pb, _ = predict(result.model.thetas["B"], fm)
    lr = np.log(pa[rows] / pb[rows])
    lr = lr[np.isfinite(lr)]
    if lr.size == 0:
        return {"n": 0}
    return {"n": int(lr.size), "median_ln_ratio": float(np.median(lr)),
            "robust_scatter": float(1.4826 * np.median(np.abs(lr - np.median(lr))))}  # fmt: skip


def _predict(args) -> int:
    from astropy.table import Table

    from jaxstars.astro.catalog_io import write_table

    from .inputs import load_table, table_features
    from .model import SpectrophotModel, SpectrophotModelError
    from .training import FLAGS, predict

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists (use --overwrite)")
    model = SpectrophotModel.load(require_file(args.model, "model"))
    table = load_table(require_file(args.data, "data file"))
    cfg = model.config
    fm = table_features(table, cfg.get("bands", []), cfg.get("labels", []), spectra=cfg.get("spectra", False))
    if fm.names != model.feature_names:
        raise SpectrophotModelError(f"the data give features {len(fm.names)} that differ from the model's "
                                    f"{len(model.feature_names)}")  # fmt: skip
    res = Table()
    folds = np.asarray(table["fold"]).astype(str) if "fold" in table.colnames else np.full(len(table), "")
    if set(model.thetas) == {"A", "B"}:
        pa, sa = predict(model.thetas["A"], fm)
        pb, sb = predict(model.thetas["B"], fm)
        mean_theta = 0.5 * (model.thetas["A"] + model.thetas["B"])
        plx, sig = predict(mean_theta, fm)
        plx = np.where(folds == "A", pb, np.where(folds == "B", pa, plx))
        sig = np.where(folds == "A", sb, np.where(folds == "B", sa, sig))
        res["parallax_sp_A"], res["parallax_sp_B"] = pa, pb
    else:
        plx, sig = predict(model.thetas["all"], fm)
    res["parallax_sp"], res["parallax_sp_error"] = plx, sig
    res["flags"] = np.where(fm.valid, 0, FLAGS["missing_feature"]).astype(np.int64)
    res["missing_features"] = np.asarray(fm.missing, dtype=str)
    if "parallax" in table.colnames:
        res["parallax"], res["parallax_error"] = table["parallax"], table["parallax_error"]
    res.meta.update({"LAMBDA": model.lam, "PLXZP": model.zero_point})
    write_table(res, out, overwrite=args.overwrite)
    print(f"{int(fm.valid.sum())} of {len(table)} rows predicted -> {out}")
    return 0
