"""``jaxstars quickstart``: the main job end to end, offline, in a few minutes on a laptop CPU.

What it does (every random choice comes from ``--seed``):

1. simulates a Gaia-like catalogue of Cranmer et al. (paper 000) §4.1's world
   (:func:`jaxstars.astro.simulate.simulate` with ``mode="cranmer"``: EDSD distances with L = 1 kpc, a line-like
   CMD with scatter, the Gaussian-over-sky dust map ``cranmer_gaussian``, ``σ_ϖ = d / 10 kpc``), splits it into
   training stars and stars to infer (disjoint, independent draws) and writes both to Parquet;
2. trains a small colour–magnitude flow on the training stars (:func:`jaxstars.models.cmd.train_cmd`: Cranmer
   et al. §3.2, parallax samples from Eq. 1, iterative dust from Eq. 2) and saves it to ``model/``;
3. infers a distance and dust posterior (flat distance prior, dust marginalised along the sight line) for
   every star to infer with the catalog runner
   (:func:`jaxstars.catalog.run_catalog`; per chunk :func:`~jaxstars.models.cmd.prepare_stars` +
   :func:`~jaxstars.models.cmd.distance_posteriors`), writing ``distances.parquet``;
4. compares the posterior means with the true distances, next to the two parallax-only baselines
   (inverse parallax and the EDSD-prior posterior mean, :func:`~jaxstars.models.cmd.metrics.edsd_distances`,
   with the simulation's own L = 1 kpc: the best a parallax-only method can do here),
   per parallax-SNR bin (:func:`~jaxstars.models.cmd.metrics.accuracy_by_snr`), checks the coverage of the
   posterior intervals, draws two figures and writes ``summary.json``.

Output folder (default ``quickstart-out``; existing files of these names are overwritten, others are left alone)::

    train_catalog.parquet    the simulated training stars (truth in ``true_*`` columns; read them back with
                             jaxstars.astro.simulate.read_simulation)
    stars_catalog.parquet    the simulated stars the posteriors are computed for (same format)
    model/model.npz          the trained model (load with jaxstars.models.cmd.CMDModel.load)
    distances.parquet        per star: row_id, source_id, distance mean/std/quantiles [pc],
                             reddening_mean [E(g−r)], flags (bits: jaxstars.models.cmd.FLAGS)
    cmd_before_after.png     CMD with inverse-parallax distances vs with posterior-mean distances, and the truth
    distance_accuracy.png    model vs true distance; median |Δd|/d vs parallax SNR for model, EDSD, 1/ϖ
    summary.json             the numbers printed at the end (accuracy, coverage, stars/s, timings, files)

Use :func:`run_quickstart` from Python, or ``jaxstars quickstart [--out DIR] [--seed N] [--quick]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "FILES",
    "FULL",
    "QUICK",
    "QuickstartSizes",
    "add_quickstart_arguments",
    "distance_accuracy",
    "format_summary",
    "make_chunk_processor",
    "plot_distance_accuracy",
    "quickstart_command",
    "run_quickstart",
]


@dataclass(frozen=True)
class QuickstartSizes:
    """Problem and model sizes of one quickstart run.

    Attributes
    ----------
    n_train : simulated stars to train on.
    n_stars : simulated stars to infer distances for (an independent draw).
    epochs : training epochs (early stopping may end sooner).
    n_blocks, hidden : MAF blocks and hidden units per MADE layer (:func:`~jaxstars.models.cmd.default_flow`).
    batch_size : training minibatch.
    chunk_rows : rows per catalog-runner chunk (a multiple of the posterior batch of 256 wastes no padding).
    """

    n_train: int = 20_000
    n_stars: int = 3_000
    epochs: int = 15
    n_blocks: int = 5
    hidden: int = 64
    batch_size: int = 1024
    chunk_rows: int = 1024


FULL = QuickstartSizes()
"""The default run: 20,000 training stars, 3,000 posteriors, a 5 × 64 MAF for 15 epochs (a few minutes)."""

QUICK = QuickstartSizes(
    n_train=4_000, n_stars=768, epochs=8, n_blocks=3, hidden=32, batch_size=256, chunk_rows=256
)
"""``--quick``: a pipeline check in well under a minute (tests); accuracy is lower but the model still beats
the inverse parallax at low parallax SNR by a wide margin."""

FILES = {
    "train_catalog": "train_catalog.parquet",
    "stars_catalog": "stars_catalog.parquet",
    "model": "model/model.npz",
    "results": "distances.parquet",
    "cmd_figure": "cmd_before_after.png",
    "accuracy_figure": "distance_accuracy.png",
    "summary": "summary.json",
}
"""What a run writes, relative to the output folder."""

SNR_BINS = (-math.inf, 1.0, 3.0, 5.0, 10.0, math.inf)
"""Parallax-SNR bins ``(lo, hi]`` of the summary table."""

METHODS = {
    "model": "CMD model (posterior mean)",
    "edsd": "EDSD prior, L = 1 kpc (mean)",
    "inverse_parallax": "1/ϖ",
}
"""Distance estimates compared with the truth: JSON key → label."""

RESULT_COLUMNS = (
    "distance_mean",
    "distance_std",
    "distance_q2_5",
    "distance_q16",
    "distance_q50",
    "distance_q84",
    "distance_q97_5",
    "reddening_mean",
    "flags",
)
"""Columns the chunk processor returns (besides the kept ``source_id``), in output order."""


# ------------------------------------------------------------------------------------------------------ CLI


def add_quickstart_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``quickstart`` options to ``parser`` and make it run :func:`quickstart_command`."""
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--out", default="quickstart-out", help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: %(default)s)")
    parser.add_argument(
        "--n-train",
        type=int,
        default=None,
        help=f"simulated training stars (default {FULL.n_train}; quick {QUICK.n_train})",
    )
    parser.add_argument(
        "--n-stars",
        type=int,
        default=None,
        help=f"stars to infer distances for (default {FULL.n_stars}; quick {QUICK.n_stars})",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help=f"training epochs (default {FULL.epochs}; quick {QUICK.epochs})"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and a smaller flow: checks the pipeline in well under a minute",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (the summary is still printed)"
    )
    parser.set_defaults(func=quickstart_command)
    return parser


def quickstart_command(args: argparse.Namespace) -> int:
    """``jaxstars quickstart``: run :func:`run_quickstart` with the command-line options; 0 on success."""
    base = QUICK if args.quick else FULL
    sizes = dataclasses.replace(
        base,
        **{
            name: value
            for name, value in (("n_train", args.n_train), ("n_stars", args.n_stars), ("epochs", args.epochs))
            if value is not None
        },
    )
    try:
        run_quickstart(args.out, seed=args.seed, sizes=sizes, progress=not args.no_progress)
    except (ValueError, OSError) as err:
        print(f"jaxstars quickstart: error: {err}")
        return 1
    return 0


# ------------------------------------------------------------------------------------------------------ main job


def _log(message: str, start: float) -> None:
    print(f"[{time.perf_counter() - start:6.1f} s] {message}", flush=True)


def _check_sizes(sizes: QuickstartSizes, seed: int) -> None:
    for name in ("n_train", "n_stars", "epochs", "n_blocks", "hidden", "batch_size", "chunk_rows"):
        value = getattr(sizes, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
    if sizes.n_train < 100:
        raise ValueError(f"n-train must be at least 100 to train a flow, got {sizes.n_train}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def make_chunk_processor(model, params, *, key=0, config=None):
    """The catalog runner's ``process_chunk(table, row_ids)`` for a trained CMD model.

    Per chunk: :func:`~jaxstars.models.cmd.prepare_stars` (dust from the model's default map,
    ``cranmer_gaussian``) and :func:`~jaxstars.models.cmd.distance_posteriors` with ``row_ids`` = the rows' indices
    in the whole catalogue, so each star's random draws do not depend on the chunking. Returns a dict of numpy
    arrays, one row per input row: the columns of :data:`RESULT_COLUMNS`.
    """
    from jaxstars.models.cmd import PosteriorConfig, distance_posteriors, prepare_stars

    config = PosteriorConfig(n_samples=0) if config is None else config

    def process_chunk(table, row_ids) -> dict:
        stars = prepare_stars(model.features, table)
        res = distance_posteriors(model, params, stars, key=key, config=config, row_ids=np.asarray(row_ids))
        return {name: np.asarray(res[name]) for name in RESULT_COLUMNS}

    return process_chunk


def run_quickstart(
    out: str | Path = "quickstart-out",
    *,
    seed: int = 0,
    sizes: QuickstartSizes = FULL,
    progress: bool = True,
    verbose: bool = True,
) -> dict:
    """Simulate, train, infer through the catalog runner, evaluate against the truth; write everything to ``out``.

    Parameters
    ----------
    out : output folder (created; files named in :data:`FILES` are overwritten, nothing else is touched).
    seed : seed of every random choice; the same seed gives the same catalogues, model and results (on the same
        machine and library versions).
    sizes : :data:`FULL` (default), :data:`QUICK` or any :class:`QuickstartSizes`.
    progress : show tqdm progress bars for training and inference.
    verbose : print the steps and the final summary.

    Returns
    -------
    dict
        The summary also written to ``summary.json`` (plain JSON types; see :func:`format_summary`).
    """
    import jax

    from jaxstars.astro.catalog_io import write_catalog
    from jaxstars.astro.simulate import simulate
    from jaxstars.catalog import run_catalog
    from jaxstars.models.cmd import PosteriorConfig, default_flow, flag_names, train_cmd

    _check_sizes(sizes, seed)
    t_start = time.perf_counter()
    log = (lambda message: _log(message, t_start)) if verbose else (lambda message: None)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / rel for name, rel in FILES.items()}
    root = jax.random.PRNGKey(seed)
    k_sim, k_fit, k_post = (jax.random.fold_in(root, i) for i in range(3))
    timings: dict[str, float] = {}

    # 1. simulate ----------------------------------------------------------------------------------------------
    t = time.perf_counter()
    log(
        f"simulating {sizes.n_train:,} training stars and {sizes.n_stars:,} stars to infer "
        "(Cranmer et al. §4.1 world)"
    )
    catalog = simulate(sizes.n_train + sizes.n_stars, mode="cranmer", key=k_sim)  # one draw (one compilation)
    train_cat, stars_cat = catalog[: sizes.n_train], catalog[sizes.n_train :]  # independent stars, unique ids
    for table in (train_cat, stars_cat):
        table.meta["SIMSEED"] = int(seed)
    train_cat.meta["QSROLE"] = "train"
    stars_cat.meta["QSROLE"] = "infer"
    write_catalog(train_cat, paths["train_catalog"], overwrite=True)
    write_catalog(stars_cat, paths["stars_catalog"], overwrite=True)
    timings["simulate"] = time.perf_counter() - t

    # 2. train -------------------------------------------------------------------------------------------------
    t = time.perf_counter()
    log(
        f"training a {sizes.n_blocks}-block × {sizes.hidden} MAF colour–magnitude flow for {sizes.epochs} epochs "
        f"(batch {sizes.batch_size})"
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="train_cmd: .* rows not used")
        trained = train_cmd(
            train_cat,
            flow=default_flow(3, n_blocks=sizes.n_blocks, hidden=sizes.hidden),
            epochs=sizes.epochs,
            batch_size=sizes.batch_size,
            key=k_fit,
            progress=progress,
        )
    model, params = trained.model, trained.params
    model.save(paths["model"].parent, params)
    fit = trained.fit
    best = int(np.ravel(fit.best_epoch)[0])
    training = {
        "n_used": int(np.sum(trained.used)),
        "epochs_run": int(fit.epochs_run),
        "best_epoch": best,
        "best_val_loss": _num(np.ravel(fit.val_loss)[best]) if best >= 0 else None,
        "flow": f"MAF {sizes.n_blocks} blocks × {sizes.hidden} hidden",
    }
    timings["train"] = time.perf_counter() - t
    log(
        f"  {training['epochs_run']} epochs; best validation loss {_fmt(training['best_val_loss'])} (epoch {best})"
    )

    # 3. infer through the catalog runner ----------------------------------------------------------------------
    t = time.perf_counter()
    post_config = PosteriorConfig(n_samples=0)
    log(
        f"inferring distance and dust posteriors for {sizes.n_stars:,} stars "
        f"(catalog runner, chunks of {sizes.chunk_rows})"
    )
    run = run_catalog(
        paths["stars_catalog"],
        paths["results"],
        make_chunk_processor(model, params, key=k_post, config=post_config),
        chunk_rows=sizes.chunk_rows,
        config={
            "job": "jaxstars quickstart",
            "model": str(paths["model"]),
            "seed": int(seed),
            "sizes": dataclasses.asdict(sizes),
            "posterior": dataclasses.asdict(post_config),
        },
        keep_columns=("source_id",),
        progress=progress,
        overwrite=True,
        label="stars",
        flag_names=flag_names,
    )
    timings["infer"] = time.perf_counter() - t

    # 4. evaluate against the truth ----------------------------------------------------------------------------
    t = time.perf_counter()
    results = _read_results(paths["results"], stars_cat)
    evaluation = distance_accuracy(stars_cat, results)
    _plot_cmd(model, stars_cat, results, paths["cmd_figure"])
    plot_distance_accuracy(
        evaluation["true_distance"], evaluation["estimates"], evaluation["snr"], paths["accuracy_figure"]
    )
    timings["evaluate"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start

    flags = np.asarray(results["flags"], dtype=np.int64)
    summary = {
        "job": "jaxstars quickstart",
        "out": str(out),
        "seed": int(seed),
        "sizes": dataclasses.asdict(sizes),
        "simulation": {"mode": "cranmer", "dust_map": str(stars_cat.meta.get("DUSTMAP", "cranmer_gaussian"))},
        "training": training,
        "inference": {
            "n_rows": int(run.n_rows),
            "n_chunks": int(run.n_chunks),
            "n_resumed_chunks": int(run.n_resumed_chunks),
            "seconds": _num(run.seconds),
            "stars_per_second": _num(run.rows_per_second),
            "flag_counts": {str(k): int(v) for k, v in dict(run.flag_counts or {}).items()},
            "n_flagged": int(np.sum(flags != 0)),
            "n_without_result": int(np.sum(~np.isfinite(np.asarray(results["distance_mean"], dtype=np.float64)))),
        },
        "methods": dict(METHODS),
        "accuracy_by_snr": evaluation["table"],
        "coverage": evaluation["coverage"],
        "timings_s": {k: _num(v) for k, v in timings.items()},
        "flag_bits": _flag_bits(),
        "files": [FILES[name] for name in FILES if name == "summary" or paths[name].exists()],
    }
    with open(paths["summary"], "w") as fh:
        json.dump(summary, fh, indent=2, allow_nan=False)
    if verbose:
        print(format_summary(summary), flush=True)
    return summary


def _flag_bits() -> dict:
    from jaxstars.models.cmd import FLAGS

    return {name: int(bit) for name, bit in FLAGS.items()}


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _column(table, name: str) -> np.ndarray:
    col = table[name]
    if hasattr(col, "filled"):
        col = col.filled(np.nan)
    return np.asarray(col, dtype=np.float64)


def _read_results(path: Path, stars_cat) -> dict:
    """The runner's output as numpy columns, checked to be row-aligned with the input catalogue."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    n = len(stars_cat)
    if table.num_rows != n:
        raise ValueError(f"{path}: {table.num_rows} rows for {n} input stars")
    out = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    if "source_id" in out and not np.array_equal(np.asarray(out["source_id"]), np.asarray(stars_cat["source_id"])):
        raise ValueError(f"{path}: rows are not in the input catalogue's order (source_id differs)")
    missing = [c for c in RESULT_COLUMNS if c not in out]
    if missing:
        raise ValueError(f"{path}: missing result columns {missing}")
    return out


# ------------------------------------------------------------------------------------------------------ evaluation


def distance_accuracy(stars_cat, results: dict, bins=SNR_BINS) -> dict:
    """Accuracy of the model's distances and of the two parallax-only baselines against the simulated truth.

    Parameters
    ----------
    stars_cat : the simulated catalogue (``parallax``, ``parallax_error``, ``true_distance``).
    results : per-star model results (``distance_mean``, ``distance_q16``/``q84``/``q2_5``/``q97_5``), row-aligned.
    bins : parallax-SNR bin edges of the table.

    Returns
    -------
    dict
        ``table`` — :func:`~jaxstars.models.cmd.metrics.accuracy_by_snr` for the methods of :data:`METHODS`;
        ``coverage`` — fraction of stars whose true distance lies in the central 68 % and 95 % posterior intervals
        (overall and per SNR bin; 0.68 / 0.95 for calibrated posteriors); and the per-star arrays
        ``true_distance``, ``snr``, ``estimates`` (for the figure).
    """
    from jaxstars.models.cmd.metrics import accuracy_by_snr, edsd_distances, inverse_parallax_distances

    plx, err = _column(stars_cat, "parallax"), _column(stars_cat, "parallax_error")
    truth = _column(stars_cat, "true_distance")
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = plx / err
    estimates = {
        "model": np.asarray(results["distance_mean"], dtype=np.float64),
        "edsd": edsd_distances(plx, err, length_scale=1000.0)["mean"],
        "inverse_parallax": inverse_parallax_distances(plx),
    }
    table = accuracy_by_snr(truth, estimates, snr, bins=bins)

    def inside(lo_name, hi_name, mask):
        lo = np.asarray(results[lo_name], dtype=np.float64)[mask]
        hi = np.asarray(results[hi_name], dtype=np.float64)[mask]
        ok = np.isfinite(lo) & np.isfinite(hi)
        if not ok.any():
            return None
        t = truth[mask][ok]
        return _num(np.mean((t >= lo[ok]) & (t <= hi[ok])))

    edges = np.asarray(bins, dtype=np.float64)
    per_bin = []
    for (a, b), row in zip(itertools.pairwise(edges), table["rows"]):
        m = (snr > a) & (snr <= b)
        per_bin.append(
            {
                "label": row["label"],
                "n": int(m.sum()),
                "68": inside("distance_q16", "distance_q84", m),
                "95": inside("distance_q2_5", "distance_q97_5", m),
            }
        )
    everything = np.ones(truth.size, dtype=bool)
    coverage = {
        "68": inside("distance_q16", "distance_q84", everything),
        "95": inside("distance_q2_5", "distance_q97_5", everything),
        "by_snr": per_bin,
    }
    return {"table": table, "coverage": coverage, "true_distance": truth, "snr": snr, "estimates": estimates}


# ------------------------------------------------------------------------------------------------------ figures


def _plot_cmd(model, stars_cat, results: dict, path: Path) -> Path:
    """CMD with inverse-parallax distances vs posterior-mean distances (both dereddened), and the truth.

    "Before": ``M_G = G − μ(1/ϖ) − A_G E_map(1/ϖ)`` with the reddening the dust map gives at the inverse-parallax
    distance (stars with ``ϖ <= 0`` have none and are not drawn); "after": ``M_G = G − μ(d̄) − A_G Ē`` with the
    posterior means of distance and reddening; colours dereddened the same way. Only the distance estimate
    differs between the two: the tightening is the model's (Cranmer et al. Fig. 4).
    """
    from jaxstars.astro.dust import get_map
    from jaxstars.models.cmd.metrics import inverse_parallax_distances
    from jaxstars.plotting import plot_cmd_before_after

    k = np.asarray(model.feature_extinction, dtype=np.float64)  # (M_G, BP−RP, BP−G) per unit reddening
    g, bp, rp = (_column(stars_cat, f"mag_{b}") for b in ("G", "BP", "RP"))
    plx, err = _column(stars_cat, "parallax"), _column(stars_cat, "parallax_error")
    d_inv = inverse_parallax_distances(plx)
    e_inv = np.asarray(
        get_map("cranmer_gaussian")
        .query(_column(stars_cat, "l"), _column(stars_cat, "b"), np.where(np.isfinite(d_inv), d_inv, 0.0))
        .mean
    )
    e_inv = np.where(np.isfinite(d_inv), e_inv, np.nan)

    def cmd(distance, reddening):
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = 5.0 * np.log10(distance / 10.0)
        return np.column_stack([bp - rp - k[1] * reddening, g - mu - k[0] * reddening])

    before = cmd(d_inv, e_inv)
    after = cmd(
        np.asarray(results["distance_mean"], np.float64), np.asarray(results["reddening_mean"], np.float64)
    )
    truth = np.column_stack(
        [
            _column(stars_cat, "true_absmag_BP") - _column(stars_cat, "true_absmag_RP"),
            _column(stars_cat, "true_absmag_G"),
        ]
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        low = plx / err <= 3.0
    return plot_cmd_before_after(
        before,
        after,
        path,
        truth=truth,
        rows=[("all stars", np.ones(len(g), dtype=bool)), ("parallax SNR ≤ 3", low)],
        titles=("inverse parallax + map dust", "model posterior means", "truth"),
        bins=60,
    )


def _bin_centres(edges: np.ndarray) -> np.ndarray:
    """Plotting position of each SNR bin: geometric centre; an open or non-positive lower edge: half the upper."""
    return np.array(
        [
            math.sqrt(a * b)
            if math.isfinite(a) and a > 0 and math.isfinite(b)
            else (0.5 * b if math.isfinite(b) else 2 * a)
            for a, b in itertools.pairwise(edges)
        ]
    )


def plot_distance_accuracy(true_distance, estimates: dict, snr, path: str | Path, *, dpi: int = 100) -> Path:
    """Distance accuracy against the truth: (a) model vs true distance, (b) median |Δd|/d vs parallax SNR.

    Parameters
    ----------
    true_distance : array_like (n,)
        True distances [pc].
    estimates : mapping of name to array_like (n,)
        Distance estimates [pc]; must contain ``"model"`` (panel a). Names of :data:`METHODS` get its labels.
        NaN estimates (e.g. ``1/ϖ`` for ``ϖ <= 0``) are left out of their curve; the fraction is in the legend.
    snr : array_like (n,)
        Parallax SNR ``ϖ/σ_ϖ`` per star (panel a colour, panel b binning).
    path : output PNG.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    from matplotlib.colors import LogNorm

    from jaxstars.models.cmd.metrics import accuracy_by_snr
    from jaxstars.plotting import _pyplot

    plt = _pyplot()
    truth = np.asarray(true_distance, dtype=np.float64)
    snr = np.asarray(snr, dtype=np.float64)
    model_d = np.asarray(estimates["model"], dtype=np.float64)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")

    ax = axes[0]
    ok = np.isfinite(model_d) & np.isfinite(truth) & (truth > 0)
    lo = max(float(np.nanpercentile(truth[ok], 0.5)) * 0.7, 1.0) if ok.any() else 10.0
    hi = float(np.nanpercentile(truth[ok], 99.5)) * 1.4 if ok.any() else 1e4
    colour = np.clip(np.where(np.isfinite(snr), snr, 0.1), 0.1, None)
    points = ax.scatter(
        truth[ok],
        model_d[ok],
        c=colour[ok],
        s=4,
        cmap="viridis",
        norm=LogNorm(vmin=0.3, vmax=max(30.0, 0.31)),
        rasterized=True,
    )
    fig.colorbar(points, ax=ax, pad=0.01).set_label("parallax SNR ϖ/σ_ϖ")
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8, label="d̂ = d_true")
    for factor, style in ((1.2, ":"), (1 / 1.2, ":")):
        ax.plot([lo, hi], [lo * factor, hi * factor], "k" + style, lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("true distance [pc]")
    ax.set_ylabel("model posterior-mean distance [pc]")
    frac = np.abs(model_d[ok] - truth[ok]) / truth[ok]
    ax.set_title(
        f"(a) model vs truth: median |Δd|/d = {np.median(frac):.3f} (n = {ok.sum():,}; dotted: ±20 %)"
        if ok.any()
        else "(a) model vs truth",
        fontsize=10,
    )

    ax = axes[1]
    finite = snr[np.isfinite(snr)]
    top = max(float(np.percentile(finite, 99)), 3.0) if finite.size else 30.0
    edges = np.concatenate([[-np.inf], np.geomspace(0.3, top, 10), [np.inf]])
    table = accuracy_by_snr(truth, estimates, snr, bins=edges)
    centres = _bin_centres(edges)
    for name, values_in in estimates.items():
        values = [row["methods"][name]["median_abs_frac_error"] for row in table["rows"][:-1]]
        counts = [row["methods"][name]["n_valid"] for row in table["rows"][:-1]]
        y = np.array([np.nan if v is None or c < 5 else v for v, c in zip(values, counts)], dtype=np.float64)
        est = np.asarray(values_in, dtype=np.float64)
        missing = float(np.mean(~np.isfinite(est))) if est.size else 0.0
        label = METHODS.get(name, name) + (f" ({100 * missing:.0f}% undefined)" if missing > 0 else "")
        ax.plot(centres, y, marker="o", ms=4, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parallax SNR ϖ/σ_ϖ (bin centre; first bin: SNR ≤ 0.3)")
    ax.set_ylabel("median |d̂ − d_true| / d_true")
    ax.set_title("(b) fractional distance error vs parallax SNR", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------------ summary


def _fmt(x, pattern="{:.3f}") -> str:
    return "—" if x is None else pattern.format(x)


def _duration(seconds) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(float(seconds), 60.0)
    return f"{int(minutes)} min {secs:.0f} s" if minutes else f"{secs:.1f} s"


def format_summary(summary: dict) -> str:
    """The short text report printed at the end of a run, from the ``summary.json`` dict."""
    t = summary["timings_s"]
    inf = summary["inference"]
    lines = [
        "",
        (
            f"jaxstars quickstart — done in {_duration(t.get('total'))} "
            f"(simulate {_duration(t.get('simulate'))}, train {_duration(t.get('train'))}, "
            f"infer {_duration(t.get('infer'))}, evaluate {_duration(t.get('evaluate'))})"
        ),
        (
            f"inference: {inf['n_rows']:,} stars in {_duration(inf['seconds'])} = "
            f"{_fmt(inf['stars_per_second'], '{:,.0f}')} stars/s (incl. compilation; {inf['n_chunks']} chunks); "
            f"{inf['n_without_result']} without a result"
        ),
        "median |d − d_true| / d_true by parallax SNR ϖ/σ_ϖ:",
    ]
    names = list(summary["methods"])
    header = f"  {'SNR bin':<12}{'stars':>7}" + "".join(f"{n:>18}" for n in names)
    lines.append(header)
    for row in summary["accuracy_by_snr"]["rows"]:
        cells = "".join(f"{_fmt(row['methods'][n]['median_abs_frac_error']):>18}" for n in names)
        lines.append(f"  {row['label']:<12}{row['n']:>7}" + cells)
    cov = summary["coverage"]
    lines.append(
        f"posterior intervals contain the true distance: 68% interval {_fmt(cov['68'], '{:.1%}')}, "
        f"95% interval {_fmt(cov['95'], '{:.1%}')}"
    )
    lines.append(f"wrote {summary['out']}/: " + ", ".join(summary["files"]))
    return "\n".join(lines)
