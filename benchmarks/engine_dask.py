"""Catalog engine on Dask vs one process: the same CMD-model catalog run through :func:`jaxstars.catalog.run_catalog`.

:func:`dask_vs_single` trains a tiny colour–magnitude model (Cranmer et al. §4.1 simulation, 2 × 32 MAF, 3 epochs),
writes a simulated catalog to Parquet and runs it twice through ``run_catalog`` with
:class:`~jaxstars.models.cmd.processor.CMDDistances` — the :class:`~jaxstars.catalog.ChunkProcessor` that
``jaxstars infer`` runs: it loads the saved model in ``setup`` and calls :func:`~jaxstars.models.cmd.prepare_stars`
+ :func:`~jaxstars.models.cmd.distance_posteriors` per chunk:

(a) in one process;
(b) on a local Dask cluster of ``n_workers`` worker processes × 1 thread.

What is timed, as is (no attempt to equalise core use):

* ``single_seconds`` — the whole single-process run, including the first chunk's JIT compilation. JAX/XLA in one
  process may use every core through its intra-op thread pool, so (a) is *not* a one-core number.
* ``dask_seconds`` — the whole ``dask=n_workers`` run: starting the cluster, importing jaxstars and compiling
  in each worker, the run, closing the cluster. What a user of ``--dask N`` waits for.
* ``single_warm_seconds`` / ``dask_warm_seconds`` — a second run of each with the start-up costs paid: the
  processor already set up in this process, resp. an already started cluster whose workers have already
  processed the catalog once. These isolate the throughput of the chunk loop.
* ``one_core_warm_seconds`` — the warm single-process run again in a fresh process pinned to one core
  (``taskset -c 0``): the throughput of one worker's worth of CPU, so ``one_core_warm_seconds /
  dask_warm_seconds`` is the parallel efficiency of the cluster (ideal: ``n_workers``, if that many cores are
  free).

``speedup = single_seconds / dask_seconds`` and ``speedup_warm = single_warm_seconds / dask_warm_seconds``;
``identical`` says whether the two output files are byte-identical (they should be: same chunks, same
per-row random keys, same arithmetic).

Run: ``python -m benchmarks.engine_dask [--quick] [--workers N] [--stars N]`` prints the result as JSON (``--quick``:
20,000 stars; default 100,000).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULT_COLUMNS = (
    "distance_mean",
    "distance_std",
    "distance_q16",
    "distance_q50",
    "distance_q84",
    "log_evidence",
    "reddening_mean",
)


def cmd_processor(model_dir, seed: int = 0):
    """The processor of ``jaxstars infer`` for a CMD model (grid posterior, dust from the Cranmer Gaussian map)."""
    from jaxstars.models.cmd.model import MODEL_FILE
    from jaxstars.models.cmd.processor import CMDDistances, DustSource

    return CMDDistances(Path(model_dir) / MODEL_FILE, DustSource("cranmer_gaussian"), seed=seed)


def train_tiny_model(directory: str | os.PathLike, *, n_train: int = 5000, epochs: int = 3, key: int = 0) -> Path:
    """Train and save the benchmark's tiny CMD model (2 × 32 MAF) on a Cranmer §4.1 simulation.

    Parameters
    ----------
    directory : str or path-like
        Where to save it.
    n_train : int
        Training stars.
    epochs : int
        Training epochs.
    key : int
        Seed of the simulation and the training.

    Returns
    -------
    pathlib.Path
        The model directory.
    """
    import warnings

    from jaxstars.astro.simulate import simulate
    from jaxstars.models.cmd import default_flow, train_cmd

    catalog = simulate(n_train, mode="cranmer", key=key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trained = train_cmd(
            catalog, epochs=epochs, flow=default_flow(3, n_blocks=2, hidden=32), key=key, progress=False
        )
    trained.model.save(directory, trained.params)
    return Path(directory)


def dask_vs_single(
    n_stars: int,
    n_workers: int = 2,
    chunk_rows: int = 2000,
    *,
    seed: int = 1,
    workdir: str | os.PathLike | None = None,
) -> dict:
    """Run the same catalog through ``run_catalog`` in one process and on a local Dask cluster; time both.

    Parameters
    ----------
    n_stars : int
        Simulated stars in the catalog.
    n_workers : int
        Worker processes of the local cluster (one thread each).
    chunk_rows : int
        Rows per chunk (the same for both runs).
    seed : int
        Seed of the simulated catalog and of the posterior draws.
    workdir : str or path-like, optional
        Folder for the model, catalog and outputs (default: a temporary folder, removed afterwards).

    Returns
    -------
    dict
        ``n_stars``, ``n_workers``, ``chunk_rows``, ``n_chunks``, ``cpu_count``; ``single_seconds``,
        ``dask_seconds`` (end to end), ``single_warm_seconds``, ``dask_warm_seconds`` (start-up paid),
        ``cluster_start_seconds``, the matching ``*_stars_per_second``, ``speedup``, ``speedup_warm``,
        ``identical`` (byte-identical outputs) and ``max_abs_difference`` (over the result columns).
    """
    from distributed import Client, LocalCluster

    from jaxstars.astro.catalog_io import write_catalog
    from jaxstars.astro.simulate import simulate
    from jaxstars.catalog import DaskSettings, run_catalog

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(workdir) if workdir is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        model_dir = train_tiny_model(work / "model")
        train_seconds = time.perf_counter() - t
        catalog = work / "stars.parquet"
        write_catalog(simulate(n_stars, mode="cranmer", key=seed), catalog, overwrite=True)
        processor = cmd_processor(model_dir, seed=seed)
        common = _common(chunk_rows, model_dir, seed)
        single = run_catalog(catalog, work / "single.parquet", processor, **common)
        dask = run_catalog(catalog, work / "dask.parquet", processor, dask=n_workers, **common)
        single_warm = run_catalog(catalog, work / "single_warm.parquet", processor, **common)
        t = time.perf_counter()
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster, set_as_default=False)
        cluster_start = time.perf_counter() - t
        try:
            # a first pass pays the imports and compilations on the workers; the second is timed
            on_client = DaskSettings(client=client)
            run_catalog(catalog, work / "dask_first.parquet", processor, dask=on_client, **common)
            dask_warm = run_catalog(catalog, work / "dask_warm.parquet", processor, dask=on_client, **common)
        finally:
            client.close()
            cluster.close()
        one_core = _one_core_run(catalog, model_dir, work / "one_core.parquet", chunk_rows, seed)
        a = (work / "single.parquet").read_bytes()
        identical = a == (work / "dask.parquet").read_bytes() == (work / "dask_warm.parquet").read_bytes()
        max_diff = _max_abs_difference(work / "single.parquet", work / "dask.parquet")

    def rate(summary) -> float:
        return n_stars / summary.seconds

    return {
        "n_stars": int(n_stars),
        "n_workers": int(n_workers),
        "chunk_rows": int(chunk_rows),
        "n_chunks": int(single.n_chunks),
        "cpu_count": os.cpu_count(),
        "model": "CMD MAF 2 blocks x 32 hidden, 3 epochs on 5000 simulated stars",
        "train_seconds": train_seconds,
        "single_seconds": single.seconds,
        "dask_seconds": dask.seconds,
        "single_warm_seconds": single_warm.seconds,
        "dask_warm_seconds": dask_warm.seconds,
        "cluster_start_seconds": cluster_start,
        "one_core_warm_seconds": one_core.get("warm_seconds"),
        "single_stars_per_second": rate(single),
        "dask_stars_per_second": rate(dask),
        "single_warm_stars_per_second": rate(single_warm),
        "dask_warm_stars_per_second": rate(dask_warm),
        "speedup": single.seconds / dask.seconds,
        "speedup_warm": single_warm.seconds / dask_warm.seconds,
        "dask_vs_one_core_warm": (
            one_core["warm_seconds"] / dask_warm.seconds if "warm_seconds" in one_core else None
        ),
        "identical": bool(identical),
        "max_abs_difference": max_diff,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }


def _common(chunk_rows: int, model_dir, seed: int) -> dict:
    return {
        "chunk_rows": chunk_rows,
        "config": {"benchmark": "engine_dask", "model": str(model_dir), "seed": seed},
        "progress": False,
        "overwrite": True,
        "write_row_id": True,
    }


def _one_core_run(catalog: Path, model_dir: Path, out: Path, chunk_rows: int, seed: int) -> dict:
    """Cold then warm single-process run in a fresh process pinned to CPU 0 (``taskset -c 0``)."""
    if shutil.which("taskset") is None:
        return {"skipped": "taskset not available"}
    job = json.dumps(
        {"catalog": str(catalog), "model": str(model_dir), "out": str(out), "chunk_rows": chunk_rows, "seed": seed}
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-m", "benchmarks.engine_dask", "--one-core-job", job],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _one_core_job(job: dict) -> dict:
    from jaxstars.catalog import run_catalog

    processor = cmd_processor(job["model"], seed=job["seed"])
    common = _common(job["chunk_rows"], job["model"], job["seed"])
    cold = run_catalog(job["catalog"], job["out"], processor, **common)
    warm = run_catalog(job["catalog"], job["out"], processor, **common)
    return {"cold_seconds": cold.seconds, "warm_seconds": warm.seconds}


def _max_abs_difference(a: Path, b: Path) -> float:
    """Largest absolute difference between the float result columns of two outputs (NaN = NaN)."""
    import pyarrow.parquet as pq

    ta, tb = pq.read_table(a), pq.read_table(b)
    worst = 0.0
    for name in RESULT_COLUMNS:
        x = ta.column(name).to_numpy()
        y = tb.column(name).to_numpy()
        both = np.isfinite(x) & np.isfinite(y)
        if not np.array_equal(np.isfinite(x), np.isfinite(y)):
            return float("inf")
        if both.any():
            worst = max(worst, float(np.max(np.abs(x[both] - y[both]))))
    return worst


def main(argv: list[str] | None = None) -> dict:
    """Command line: ``python -m benchmarks.engine_dask [--quick] [--workers N] [--stars N] [--chunk-rows N]``.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    dict
        The result of :func:`dask_vs_single` (also printed as JSON).
    """
    parser = argparse.ArgumentParser(description="run_catalog on a local Dask cluster vs one process (CMD model)")
    parser.add_argument("--quick", action="store_true", help="20,000 stars instead of 100,000")
    parser.add_argument("--stars", type=int, help="catalog size (overrides --quick)")
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes (default 2)")
    parser.add_argument("--chunk-rows", type=int, default=2000, help="rows per chunk (default 2000)")
    parser.add_argument("--one-core-job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one_core_job:
        result = _one_core_job(json.loads(args.one_core_job))
        print(json.dumps(result))
        return result
    n_stars = args.stars or (20_000 if args.quick else 100_000)
    result = dask_vs_single(n_stars, args.workers, args.chunk_rows)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
