"""Simulator benchmark: time to simulate 1e6 stars (goal: under 60 s on this CPU), per mode.

The simulator has no external baseline, so the figures are absolute: wall-clock seconds and stars per second for

* ``galaxy`` (all sky, G < 20, exponential dust disk, Zhang & Yuan law): the *first* call in a fresh process
  (loading the PARSEC grid, building the sampler's line-of-sight bound tables, JIT compilation) and a *second*
  call with those cached;
* ``cranmer`` (Cranmer et al. §4.1) and ``cluster`` (M67-like, 1 % members) for the same number of stars;
* writing the galaxy catalogue to Parquet with :func:`~jaxstars.astro.catalog_io.write_catalog`.

``ratio_to_goal`` is seconds / 60 (below 1 meets the goal; meaningful for the full 1e6-star run).

Run: ``python -m benchmarks.simulate [--quick]`` (``--quick``: 1e5 stars). Writes ``benchmarks/results/simulate.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import jax

RESULTS = Path(__file__).parent / "results" / "simulate.json"
GOAL_SECONDS = 60.0


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1e5 stars instead of 1e6")
    args = parser.parse_args(argv)
    n = 100_000 if args.quick else 1_000_000

    from jaxstars.astro.catalog_io import write_catalog
    from jaxstars.astro.simulate import simulate

    results = {}

    def record(name, seconds, rows, note):
        results[name] = {
            "n_stars": rows,
            "seconds": seconds,
            "stars_per_s": rows / seconds,
            "ratio_to_goal": seconds / GOAL_SECONDS,
            "note": note,
        }
        print(f"{name:<22} {rows:>9,d} stars {seconds:8.1f} s  {rows / seconds:>10,.0f} stars/s  "
              f"(seconds / 60 s goal: {results[name]['ratio_to_goal']:.2f})")  # fmt: skip

    table, seconds = _timed(lambda: simulate(n, "galaxy", 0))
    record(
        "galaxy_first_call", seconds, len(table), "fresh process: grid load, bound tables, compilation included"
    )
    table, seconds = _timed(lambda: simulate(n, "galaxy", 1))
    record("galaxy_second_call", seconds, len(table), "grid and sampler tables cached")
    with tempfile.TemporaryDirectory() as tmp:
        _, seconds = _timed(lambda: write_catalog(table, os.path.join(tmp, "sim.parquet")))
        size_mb = os.path.getsize(os.path.join(tmp, "sim.parquet")) / 1e6
    record("write_parquet", seconds, len(table), f"write_catalog to Parquet ({size_mb:.0f} MB)")
    table, seconds = _timed(lambda: simulate(n, "cranmer", 0))
    record("cranmer", seconds, len(table), "Cranmer et al. 2019 sec. 4.1 mode")
    table, seconds = _timed(lambda: simulate(n, "cluster", 0, n_members=n // 100))
    record(
        "cluster", seconds, len(table), "M67-like cluster, 1 % members, 1 deg field (first call for that field)"
    )

    meta = {
        "command": "python -m benchmarks.simulate" + (" --quick" if args.quick else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "jax": jax.__version__,
        "goal": f"1,000,000 stars in under {GOAL_SECONDS:.0f} s (this run: {n:,} stars)",
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"wrote {RESULTS}")
    return results


if __name__ == "__main__":
    main()
