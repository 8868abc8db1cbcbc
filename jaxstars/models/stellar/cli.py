"""``jaxstars stellar train | evaluate | infer``: the Green et al. stellar model from the command line.

Input catalogs are HDF5 files in the release's format (``green2020_sample.h5``: a structured ``data`` dataset with
``atm_param``, ``atm_param_cov``, ``mag``, ``mag_err``, ``parallax``, ``parallax_err``, ``r``, ``r_err``).
``--model`` takes a directory written by ``train``, ``released`` (the released network from the real-data folder)
or a path to the release's Keras ``.h5``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from jaxstars.cli_support import (
    CommandError,
    arguments_json,
    command_group,
    guarded,
    jsonable,
    require_file,
)

__all__ = ["add_stellar_arguments"]

PREFIX = "jaxstars stellar"


def add_stellar_arguments(subparsers) -> argparse.ArgumentParser:
    """Add ``stellar`` (with ``train``, ``evaluate``, ``infer``) to the ``jaxstars`` sub-command parsers.

    Returns the ``stellar`` parser (without a sub-command it prints its help and returns 2).
    """
    stellar, sub = command_group(
        subparsers,
        "stellar",
        help="Green et al. data-driven stellar model: train, evaluate (χ²/dof), photometric posteriors",
        description="Green et al. (2021): a neural network θ=(Teff, logg, [Fe/H]) → absolute magnitude, colours "
        "and reddening vector, trained with per-star error propagation; photometric posteriors of θ, μ, E.",
    )

    train = sub.add_parser("train", help="train a stellar model on a catalog in the release format")
    train.add_argument("--data", required=True, help="HDF5 catalog in the release format")
    train.add_argument("--out", required=True, help="output folder (stellar.npz, training.json)")
    train.add_argument("--bands", nargs="+", default=None, help="bands to model (default: all; first = reference)")
    train.add_argument("--iterations", type=int, default=20, help="outer iterations (default: %(default)s)")
    train.add_argument("--epochs", type=int, default=25, help="epochs per iteration (default: %(default)s)")
    train.add_argument("--batch-size", type=int, default=1024, help="stars per Adam step (default: %(default)s)")
    train.add_argument("--learning-rate", type=float, default=1e-3, help="initial learning rate (default: 1e-3)")
    train.add_argument("--seed", type=int, default=0, help="initialisation / shuffling seed")
    train.add_argument("--split-seed", type=int, default=0, help="seed of the fixed 70/20/10 split")
    train.add_argument("--quiet", action="store_true", help="no per-iteration progress on stderr")
    train.set_defaults(func=lambda args: guarded(f"{PREFIX} train", _train, args))

    evaluate = sub.add_parser("evaluate", help="print JSON fit metrics of a model on a catalog")
    evaluate.add_argument("--model", required=True, help="model folder, 'released', or a release Keras .h5")
    evaluate.add_argument("--data", required=True, help="HDF5 catalog in the release format")
    evaluate.add_argument(
        "--subset", choices=("all", "train", "validation", "test"), default="all",
        help="rows to evaluate: all, or a part of the fixed split (default: all)",
    )  # fmt: skip
    evaluate.add_argument("--split-seed", type=int, default=0, help="seed of the fixed split (as in train)")
    evaluate.add_argument("--cut", type=float, default=5.0, help="χ²/dof exclusion cut (default: %(default)s)")
    evaluate.set_defaults(func=lambda args: guarded(f"{PREFIX} evaluate", _evaluate, args))

    infer = sub.add_parser("infer", help="NUTS posteriors of Teff, logg, [Fe/H], distance and E per star")
    infer.add_argument("--model", required=True, help="model folder, 'released', or a release Keras .h5")
    infer.add_argument("--data", required=True, help="HDF5 catalog in the release format")
    infer.add_argument("--out", required=True, help="output table (.parquet, .fits, .csv, .ecsv)")
    infer.add_argument("--rows", type=int, default=None, help="only the first N rows")
    infer.add_argument("--use-reddening-prior", action="store_true", help="use the catalog's r ± r_err as E prior")
    infer.add_argument("--warmup", type=int, default=250, help="NUTS warm-up steps (default: %(default)s)")
    infer.add_argument("--samples", type=int, default=200, help="NUTS draws per chain (default: %(default)s)")
    infer.add_argument(
        "--chains",
        type=int,
        default=4,
        help="dispersed NUTS chains per star, minor-mode chains pruned (default: %(default)s; 1 under-covers)",
    )
    infer.add_argument("--batch-size", type=int, default=64, help="stars per compiled batch (default: 64)")
    infer.add_argument("--seed", type=int, default=0)
    infer.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    infer.set_defaults(func=lambda args: guarded(f"{PREFIX} infer", _infer, args))
    return stellar


def _read(path):
    from .release import read_release_catalog

    return read_release_catalog(require_file(path, "catalog"))


def _train(args) -> int:
    from .stars import prepare_stars
    from .training import StellarTrainConfig, train_stellar

    table = _read(args.data)
    stars = prepare_stars(table, args.bands)
    config = StellarTrainConfig(
        n_iterations=args.iterations,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        split_seed=args.split_seed,
    )

    def progress(entry):
        if not args.quiet:
            print(
                f"iteration {entry['iteration']}: train loss {entry['train_loss']:.4f}, validation loss "
                f"{entry['val_loss']:.4f}, χ² cut {entry['threshold']:.1f}, excluded "
                f"{entry['excluded_fraction_train']:.3f}",
                file=sys.stderr,
            )

    result = train_stellar(stars, config, progress=progress)
    out = Path(args.out)
    result.model.save(out)
    summary = {
        "arguments": arguments_json(args),
        "history": result.history,
        "split": {k: len(v) for k, v in result.split.items()},
    }
    (out / "training.json").write_text(json.dumps(jsonable(summary), indent=1))
    print(json.dumps(jsonable({k: result.history[-1][k] for k in ("train_loss", "val_loss", "threshold")})))
    return 0


def _evaluate(args) -> int:
    from .metrics import evaluate_stellar
    from .model import load_stellar_model
    from .stars import prepare_stars
    from .training import split_indices

    model = load_stellar_model(args.model)
    table = _read(args.data)
    stars = prepare_stars(table, model.bands)
    index = None
    if args.subset != "all":
        index = split_indices(len(stars), seed=args.split_seed)[args.subset]
    metrics = evaluate_stellar(model, stars, index, cut=args.cut)
    metrics["model"] = str(args.model)
    metrics["data"] = str(args.data)
    print(json.dumps(jsonable(metrics), indent=1))
    return 0


def _infer(args) -> int:
    from astropy.table import Table

    from jaxstars.inference import NUTSConfig

    from .model import load_stellar_model
    from .posterior import stellar_posteriors, summarise_posteriors
    from .stars import prepare_stars

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists (use --overwrite)")
    model = load_stellar_model(args.model)
    table = _read(args.data)
    if args.rows is not None:
        if args.rows < 1:
            raise CommandError("--rows must be >= 1")
        table = {k: (v[: args.rows] if isinstance(v, np.ndarray) else v) for k, v in table.items()}
    stars = prepare_stars(table, model.bands)
    config = NUTSConfig(
        num_warmup=args.warmup, num_samples=args.samples, num_chains=args.chains, batch_size=args.batch_size
    )
    result = stellar_posteriors(model, stars, args.seed, config=config, use_E_prior=args.use_reddening_prior)
    cols = summarise_posteriors(result, model)
    cols["star_flags"] = stars.flags
    out.parent.mkdir(parents=True, exist_ok=True)
    Table({k: np.asarray(v) for k, v in cols.items()}).write(out, overwrite=True)
    print(json.dumps({"stars": len(stars), "flagged": int(np.sum(result.flags != 0)), "out": str(out)}))
    return 0
