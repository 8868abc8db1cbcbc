"""Cranmer et al. Table 1 and Table 2 analogues on simulated catalogues with known truth.

Run ``python -m examples.cranmer_tables [--quick] [--out docs/results/cmd_tables.json]``; the numbers on the
docs page (docs/models/cmd.md) come from this script. Uses :mod:`jaxstars.models.cmd.validation`.

* §4.1 / Table 1: :func:`simulation_experiment` (seed 0).
* Table 2 analogue: :func:`cluster_experiment` on seeds 0, 1, 2 (``--cluster-seeds``) with the paper's training
  (noisy field stars, 1/σ_P² weights) and the photometric-error convolution in the posterior, plus two controls
  that change only the training catalogue (``--no-controls`` skips them): the same field stars noise-free (the
  best a flow can learn of the field CMD; seeds as above), and stars of the cluster's own population, noisy
  (trained as the paper does) and noise-free (first seed only).
* ``--sweep`` instead runs the training variants (σ_P floor 0.05 mag, tempered weights 1/σ_P, photometric
  variance in σ_P, 40 epochs, 80,000 training stars) on the same seeds
  and adds them to the JSON file under ``cluster_sweep`` (keeping the rest of an existing file and the variants
  not re-run; ``--variants`` picks some).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from jaxstars.models.cmd.validation import (
    ExperimentSize,
    cluster_experiment,
    simulation_experiment,
    table2_checks,
)

CLUSTER_SIZE = ExperimentSize(n_train=40_000, epochs=20, n_blocks=6, hidden=96)
QUICK_CLUSTER_SIZE = ExperimentSize(n_train=15_000, n_test=0, n_blocks=4, hidden=48, epochs=8)

SWEEP = {
    "sigma_floor_0.05": ({"sigma_floor": 0.05}, {}),
    "weight_power_0.5": ({"weight_power": 0.5}, {}),
    "photometric_variance": ({"photometric_variance": True}, {}),
    "epochs_40": ({}, {"epochs": 40}),
    "n_train_80k": ({}, {"n_train": 80_000}),
}
"""Training variants of ``--sweep``: ``(train_cmd options, ExperimentSize changes)``."""


def _print_accuracy(report):
    acc = report["accuracy_by_snr"]
    names = acc["methods"]
    print("SNR bin      n   " + "  ".join(f"{n:>18s}" for n in names))
    for row in acc["rows"]:
        vals = [row["methods"][n]["median_abs_frac_error_all"] for n in names]
        print(
            f"{row['label']:>10s} {row['n']:5d}   "
            + "  ".join(f"{v if v is None else round(v, 3)!s:>18s}" for v in vals)
        )


def _summary(report) -> dict:
    """Centre/spread of the three Table 2 methods and the criterion per cut (printed and stored)."""
    checks = table2_checks(report)
    out = {}
    for cut, check in checks.items():
        out[f"snr<{cut:g}"] = {
            "abs_error": {k: round(v, 1) for k, v in check["abs_error"].items()},
            "spread": {k: round(v, 1) for k, v in check["spread"].items()},
            "centre_closest": check["centre_closest"],
            "spread_smallest": check["spread_smallest"],
        }
    return out


def _print_cluster(label: str, report, elapsed: float, all_rows: bool = False):
    print(f"Table 2 analogue, {label} ({elapsed:.0f} s): M67-like cluster at 840 pc")
    for row in report["table2"]["rows"]:
        if all_rows or row["method"] in ("inverse_parallax", "edsd_prior", "model", "model_exact_photometry"):
            print(
                f"  {row['method']:>22s} SNR<{row['snr_cut']:<4g} n={row['n']:4d} centre={row['centre']:.1f} "
                f"spread={row['spread']:.1f} (weight {row['fit']['weights'][0]:.2f})"
            )
    weights = report["training_weights"]
    print(
        f"  loss weights: Kish ESS {weights['kish_ess']:.0f} of {weights['n_train']}"
        + (
            f"; red main sequence {weights['red_main_sequence']['kish_ess']:.0f} of "
            f"{weights['red_main_sequence']['n']}"
            if "red_main_sequence" in weights
            else ""
        )
    )
    for cut, check in table2_checks(report).items():
        print(
            f"  SNR<{cut:g}: centre closest {check['centre_closest']}, spread smallest {check['spread_smallest']}"
        )


def _cluster_runs(size, seeds, training="field", train_options=None, comparisons=True, label=""):
    reports = {}
    for seed in seeds:
        start = time.perf_counter()
        report, *_ = cluster_experiment(
            size, seed=seed, training=training, train_options=train_options, comparisons=comparisons
        )
        report["summary"] = _summary(report)
        _print_cluster(f"{label or training}, seed {seed}", report, time.perf_counter() - start, comparisons)
        reports[str(seed)] = report
    return reports


def _sweep(args, clu_size) -> int:
    path = Path(args.out)
    data = json.loads(path.read_text()) if path.exists() else {}
    sweep = dict(data.get("cluster_sweep", {}))
    unknown = set(args.variants or ()) - set(SWEEP)
    if unknown:
        raise SystemExit(f"unknown --variants {sorted(unknown)}; known: {sorted(SWEEP)}")
    for name, (options, size_changes) in SWEEP.items():
        if args.variants and name not in args.variants:
            continue
        size = ExperimentSize(**{**clu_size.__dict__, **size_changes})
        sweep[name] = {
            "train_options": options,
            "size": size.__dict__,
            "seeds": {
                seed: {"summary": r["summary"], "table2": r["table2"]}
                for seed, r in _cluster_runs(
                    size, args.cluster_seeds, train_options=options, comparisons=False, label=name
                ).items()
            },
        }
    data["cluster_sweep"] = sweep
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    print(f"wrote cluster_sweep into {path}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller catalogues and flows (a few minutes)")
    parser.add_argument("--out", default="docs/results/cmd_tables.json")
    parser.add_argument("--cluster-seeds", type=int, nargs="+", default=[0, 1, 2], help="Table 2 seeds")
    parser.add_argument("--no-controls", action="store_true", help="skip the two training-catalogue controls")
    parser.add_argument("--sweep", action="store_true", help="run the training variants only (see docstring)")
    parser.add_argument(
        "--variants", nargs="+", default=None, help=f"with --sweep: run only these of {', '.join(SWEEP)}"
    )
    args = parser.parse_args(argv)
    if args.quick:
        sim_size = ExperimentSize(n_train=10_000, n_test=1_500, n_blocks=4, hidden=48, epochs=8)
        clu_size = QUICK_CLUSTER_SIZE
    else:
        sim_size, clu_size = ExperimentSize(), CLUSTER_SIZE
    if args.sweep:
        return _sweep(args, clu_size)
    start = time.perf_counter()
    sim, *_ = simulation_experiment(sim_size, seed=0)
    print(f"§4.1 / Table 1 ({time.perf_counter() - start:.0f} s)")
    print(
        "CMD Hellinger distances:",
        {k: sim["cmd_recovery"][k] for k in ("hellinger_recovered", "hellinger_noisy", "hellinger_floor")},
    )
    print("mean SNR improvement (ϖ > 0):", sim["snr_table"]["mean_snr_improvement"])
    print("coverage of 68% / 95% intervals:", sim["coverage_68"], sim["coverage_95"])
    _print_accuracy(sim)
    seeds = args.cluster_seeds
    clusters = _cluster_runs(clu_size, seeds, label="paper's training (noisy field stars)")
    controls = {}
    if not args.no_controls:
        controls["field_noise_free"] = _cluster_runs(clu_size, seeds, training="field_noise_free")
        controls["cluster_members"] = _cluster_runs(clu_size, seeds[:1], training="cluster_members")
        controls["cluster_isochrone"] = _cluster_runs(clu_size, seeds[:1], training="cluster_isochrone")
    out = {
        "simulation": sim,
        "cluster": clusters[str(seeds[0])],
        "cluster_seeds": clusters,
        "cluster_controls": controls,
        "quick": args.quick,
    }
    path = Path(args.out)
    if path.exists():  # keep a sweep written earlier by --sweep
        previous = json.loads(path.read_text())
        if "cluster_sweep" in previous:
            out["cluster_sweep"] = previous["cluster_sweep"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
