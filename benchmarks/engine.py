"""Catalog engine benchmark: vmapped per-star NUTS vs one star at a time, streamed memory, Dask vs one process.

(a) **Per-star NUTS, vmapped vs sequential** on the same model — the Cranmer CMD distance model
    (:func:`~jaxstars.models.cmd.distance_model`) with a small trained flow, the same simulated stars, the same
    sampler settings (500 warm-up + 1000 draws, one chain, diagonal mass matrix):

    * ``vmapped`` — :func:`~jaxstars.models.cmd.nuts_distance_posteriors` on a batch of stars (the engine's
      :func:`~jaxstars.inference.sample_stars`: one compiled program, ``batch_size`` stars vmapped per
      compiled call); timed on a second batch, after compilation;
    * ``one_at_a_time_compiled`` — the same engine called with one star at a time (compiled once for a single
      star, then reused): the best sequential NUTS can do;
    * ``one_at_a_time_mcmc`` — NumPyro's ``MCMC`` driver star by star (:func:`~jaxstars.inference.sequential_nuts`,
      re-traced and re-compiled for every star): what a per-star Python loop over NumPyro costs.

    Both ratios are reported; "per core" divides by the machine's core count (both paths use the cores the
    same way: XLA's CPU thread pool). Agreement: the medians of the vmapped and the compiled one-at-a-time
    runs, in units of the NUTS Monte-Carlo error.

(b) **Peak memory while streaming** 1e4, 1e5, 1e6 simulated stars through :func:`jaxstars.catalog.run_catalog`
    with the CMD processor (:class:`~jaxstars.models.cmd.processor.CMDDistances`, grid posterior with a reduced
    grid so 1e6 stars take minutes), each size in a fresh process; peak RSS is the process's ``VmHWM``. It must
    not grow with the catalog size.

(c) **Dask with 2 workers vs one process** on the same catalog (:func:`benchmarks.engine_dask.dask_vs_single`).

Run: ``python -m benchmarks.engine [--quick]`` (quick: smaller sizes). Writes ``benchmarks/results/engine.json``;
``python -m benchmarks.report`` then regenerates ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "engine.json"
ROOT = Path(__file__).resolve().parents[1]
STREAM_POSTERIOR = {"n_coarse": 128, "n_fine": 64}  # the grid of benchmarks.cmd's streaming measurement


def _settings(quick: bool) -> dict:
    if quick:
        return {
            "n_train": 5000,
            "epochs": 3,
            "vmapped_stars": 64,
            "batch_size": 64,
            "compiled_stars": 4,
            "mcmc_stars": 2,
            "memory_sizes": [10_000, 100_000],
            "chunk": 10_000,
            "dask_stars": 20_000,
        }
    return {
        "n_train": 20_000,
        "epochs": 5,
        "vmapped_stars": 256,
        "batch_size": 64,
        "compiled_stars": 16,
        "mcmc_stars": 4,
        "memory_sizes": [10_000, 100_000, 1_000_000],
        "chunk": 10_000,  # <= the smallest size, so every size streams the same chunk shape
        "dask_stars": 100_000,
    }


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


# ------------------------------------------------------------------------------------------------ (a) NUTS


def nuts_vmapped_vs_sequential(model_dir: str, settings: dict) -> dict:
    """Stars/s of per-star NUTS: vmapped batch vs one star at a time (compiled once; NumPyro MCMC per star)."""
    import jax

    from jaxstars.astro.simulate import simulate
    from jaxstars.inference import NUTSConfig, sequential_nuts
    from jaxstars.models.cmd import CMDModel, nuts_distance_posteriors, prepare_stars
    from jaxstars.models.cmd.posterior import star_arrays
    from jaxstars.models.cmd.sampling import _star_model, _start_at_inverse_parallax

    model, params = CMDModel.load(model_dir)
    n = settings["vmapped_stars"]
    catalog = simulate(4 * n, mode="cranmer", key=11)
    stars = prepare_stars(model.features, catalog)
    good = np.flatnonzero(stars.flags == 0)
    warm, timed = stars.take(good[:n]), stars.take(good[n : 2 * n])
    config = NUTSConfig(num_warmup=500, num_samples=1000, batch_size=settings["batch_size"])

    t0 = time.perf_counter()
    nuts_distance_posteriors(model, params, warm, key=0, nuts=config)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    vm = nuts_distance_posteriors(model, params, timed, key=0, nuts=config)
    vmapped_s = time.perf_counter() - t0
    print(f"  vmapped: {n} stars in {vmapped_s:.1f} s ({n / vmapped_s:.1f} stars/s; first batch {first:.1f} s)")

    k = settings["compiled_stars"]
    single = dataclasses.replace(config, batch_size=1)  # a batch of one: no padding
    nuts_distance_posteriors(model, params, timed.take(np.arange(1)), key=0, nuts=single)  # compile for 1 star
    one = []
    t0 = time.perf_counter()
    for i in range(k):
        one.append(
            nuts_distance_posteriors(
                model, params, timed.take(np.array([i])), key=0, nuts=single, row_ids=np.array([i])
            )
        )
    compiled_s = (time.perf_counter() - t0) / k
    print(f"  one at a time, compiled once: {compiled_s:.2f} s/star")

    m = settings["mcmc_stars"]
    star_model = _star_model(model, None, 10.0, 1e5)
    shared = (params, jax.numpy.asarray(stars.dust.modulus_grid), jax.numpy.asarray(stars.dust.weights))
    data = star_arrays(timed, np.arange(m))
    t0 = time.perf_counter()
    sequential_nuts(
        star_model, data, 0, shared=shared, config=config, init_fn=_start_at_inverse_parallax(10.0, 1e5)
    )
    mcmc_s = (time.perf_counter() - t0) / m
    print(f"  one at a time, NumPyro MCMC driver: {mcmc_s:.2f} s/star")

    # agreement of the two engine paths on the same stars (different batches → different float round-off)
    z = []
    for i, row in enumerate(one):
        mcse = vm["distance_std"][i] / np.sqrt(min(vm["ess_bulk"][i], row["ess_bulk"][0]))
        z.append(abs(vm["distance_q50"][i] - row["distance_q50"][0]) / mcse)
    cores = os.cpu_count() or 1
    vmapped_rate = n / vmapped_s
    return {
        "model": model_dir,
        "settings": {"num_warmup": 500, "num_samples": 1000, "num_chains": 1, "batch_size": config.batch_size},
        "n_vmapped": n,
        "vmapped_seconds": vmapped_s,
        "vmapped_first_batch_seconds": first,
        "vmapped_stars_per_s": vmapped_rate,
        "vmapped_stars_per_s_per_core": vmapped_rate / cores,
        "compiled_one_at_a_time_s_per_star": compiled_s,
        "mcmc_one_at_a_time_s_per_star": mcmc_s,
        "ratio_vs_compiled_one_at_a_time": vmapped_rate * compiled_s,
        "ratio_vs_mcmc_one_at_a_time": vmapped_rate * mcmc_s,
        "median_diff_over_mcse_max": float(np.max(z)),
        "median_diff_over_mcse_mean": float(np.mean(z)),
        "vmapped_flags": {
            "divergent_or_low_ess": int(np.count_nonzero(vm["nuts_flags"])),
            "n": int(n),
        },
    }


# ------------------------------------------------------------------------------------------------ (b) memory


def stream_worker(job: dict) -> dict:
    """One streamed run of ``run_catalog`` + the CMD processor in this (fresh) process: time, peak RSS and the
    resident size after every chunk (a leak shows as a trend, allocator noise as scatter)."""
    from jaxstars.catalog import run_catalog
    from jaxstars.models.cmd.processor import CMDDistances, DustSource

    after_chunk: list[float] = []

    class Traced(CMDDistances):
        def __call__(self, table, row_ids):
            out = super().__call__(table, row_ids)
            after_chunk.append(_status_mb("VmRSS"))
            return out

    processor = Traced(job["model_file"], DustSource("cranmer_gaussian"), samples=64, posterior=STREAM_POSTERIOR)
    rss_start = _status_mb("VmRSS")
    t0 = time.perf_counter()
    summary = run_catalog(
        job["input"], job["output"], processor, chunk_rows=job["chunk"], progress=False, overwrite=True
    )
    seconds = time.perf_counter() - t0
    q = max(1, len(after_chunk) // 4)
    return {
        "n_stars": summary.n_rows,
        "chunks": len(after_chunk),
        "seconds": seconds,
        "stars_per_s": summary.n_rows / seconds,
        "peak_rss_mb": _status_mb("VmHWM"),
        "rss_end_mb": _status_mb("VmRSS"),
        "rss_start_mb": rss_start,
        "rss_after_chunk_mb": [round(v, 1) for v in after_chunk[:: max(1, len(after_chunk) // 20)]],
        "rss_first_quarter_median_mb": float(np.median(after_chunk[:q])),
        "rss_last_quarter_median_mb": float(np.median(after_chunk[-q:])),
        "output_mb": os.path.getsize(job["output"]) / 1e6,
    }


def memory_scaling(model_file: str, sizes, chunk: int, workdir: Path) -> dict:
    """Write prefixes of one simulated catalog as Parquet and stream each in a fresh process."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jaxstars.astro.simulate import simulate

    columns = (
        "source_id", "l", "b", "ra", "dec", "parallax", "parallax_error",
        "mag_G", "mag_BP", "mag_RP", "mag_err_G", "mag_err_BP", "mag_err_RP",
    )  # fmt: skip
    catalog = simulate(max(sizes), mode="cranmer", key=3)
    arrays = {c: np.asarray(catalog[c]) for c in columns if c in catalog.colnames}
    if "source_id" not in arrays:
        arrays["source_id"] = np.arange(len(catalog), dtype=np.int64)
    del catalog
    rows = []
    for n in sizes:
        path = workdir / f"catalog_{n}.parquet"
        # row groups of one chunk, as catalogs written in chunks have: a reader decodes whole row groups, so one
        # 1e6-row group would put the whole file in memory whatever the chunk size
        pq.write_table(pa.table({k: v[:n] for k, v in arrays.items()}), path, row_group_size=chunk)
        out = workdir / f"out_{n}.parquet"
        row = _run_worker({"task": "stream", "input": str(path), "output": str(out), "chunk": chunk,
                           "model_file": model_file})  # fmt: skip
        row["load_average_1min"] = round(os.getloadavg()[0], 2)
        print(
            f"  {n:>9,d} stars: peak RSS {row['peak_rss_mb']:.0f} MB, after chunks (first/last quarter median) "
            f"{row['rss_first_quarter_median_mb']:.0f}/{row['rss_last_quarter_median_mb']:.0f} MB, "
            f"{row['seconds']:.1f} s ({row['stars_per_s']:,.0f} stars/s)"
        )
        rows.append(row)
        os.remove(path)
        os.remove(out)
    return {
        "chunk_rows": chunk,
        "posterior_grid": STREAM_POSTERIOR,
        "sizes": rows,
        "peak_ratio_largest_to_smallest": rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"],
        "largest_last_to_first_quarter": rows[-1]["rss_last_quarter_median_mb"]
        / rows[-1]["rss_first_quarter_median_mb"],
    }


def _run_worker(job: dict) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.engine", "--worker", json.dumps(job)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {job['task']} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description="catalog engine benchmark (NUTS vmapped vs sequential, memory, Dask)"
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--skip", nargs="*", default=(), choices=("nuts", "memory", "dask"), help="parts to skip")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(stream_worker(job)))
        return {}

    import jax
    import numpyro

    from benchmarks.engine_dask import dask_vs_single, train_tiny_model

    settings = _settings(args.quick)
    cores = os.cpu_count() or 1
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    results: dict = {}
    previous = json.loads(RESULTS.read_text())["results"] if RESULTS.exists() else {}
    with tempfile.TemporaryDirectory(prefix="jaxstars-bench-engine-") as tmp:
        workdir = Path(tmp)
        print("training a small CMD model ...")
        model_dir = train_tiny_model(workdir / "model", n_train=settings["n_train"], epochs=settings["epochs"])
        model_file = str(Path(model_dir) / "model.npz") if Path(model_dir).is_dir() else str(model_dir)
        if "nuts" not in args.skip:
            print("(a) per-star NUTS: vmapped vs one at a time ...")
            results["nuts"] = nuts_vmapped_vs_sequential(str(model_dir), settings)
        elif "nuts" in previous:
            results["nuts"] = previous["nuts"]
        if "memory" not in args.skip:
            print("(b) peak memory while streaming ...")
            results["memory"] = memory_scaling(model_file, settings["memory_sizes"], settings["chunk"], workdir)
        elif "memory" in previous:
            results["memory"] = previous["memory"]
        if "dask" not in args.skip:
            print("(c) Dask, 2 workers vs one process ...")
            results["dask"] = dask_vs_single(settings["dask_stars"], n_workers=2)
        elif "dask" in previous:
            results["dask"] = previous["dask"]
    meta = {
        "command": "python -m benchmarks.engine" + (" --quick" if args.quick else ""),
        "machine": f"{platform.machine()}, {cores} cores, {platform.python_version()}",
        "cpu_count": cores,
        "jax": jax.__version__,
        "numpyro": numpyro.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "load_average_start": [round(v, 2) for v in load_start],
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "total_seconds": time.perf_counter() - t_start,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"wrote {RESULTS} ({meta['total_seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
