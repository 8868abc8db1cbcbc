"""Cranmer et al. Table 1 and Table 2 analogues on simulated catalogues with known truth.

Run ``python -m examples.cranmer_tables [--quick] [--out docs/results/cmd_tables.json]``; the numbers on the
docs page (docs/models/cmd.md) come from this script. Uses :mod:`jaxstars.models.cmd.validation`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from jaxstars.models.cmd.validation import ExperimentSize, cluster_experiment, simulation_experiment


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller catalogues and flows (a few minutes)")
    parser.add_argument("--out", default="docs/results/cmd_tables.json")
    args = parser.parse_args(argv)
    if args.quick:
        sim_size = ExperimentSize(n_train=10_000, n_test=1_500, n_blocks=4, hidden=48, epochs=8)
        clu_size = ExperimentSize(n_train=15_000, n_test=0, n_blocks=4, hidden=48, epochs=8)
    else:
        sim_size, clu_size = ExperimentSize(), ExperimentSize(n_train=40_000, epochs=20, n_blocks=6, hidden=96)
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
    start = time.perf_counter()
    clu, *_ = cluster_experiment(clu_size, seed=0)
    print(f"Table 2 analogue ({time.perf_counter() - start:.0f} s): M67-like cluster at 840 pc")
    for row in clu["table2"]["rows"]:  # model: EDSD prior as the baseline; model_flat_prior: the paper
        print(
            f"  {row['method']:>16s} SNR<{row['snr_cut']:<4g} n={row['n']:4d} centre={row['centre']:.1f} spread={row['spread']:.1f}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"simulation": sim, "cluster": clu, "quick": args.quick}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
