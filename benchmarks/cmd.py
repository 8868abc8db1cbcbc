"""Colour–magnitude model benchmark (Cranmer et al., paper 000): distance posteriors per second, NUTS baseline,
and peak memory of a streamed catalogue.

Issue text: "Distance posteriors per second per core for a trained model (report for the paper's 35×500 MAF and
for a small one), and peak memory vs catalog size (1e4, 1e5, 1e6 stars streamed): memory must stay flat. Side by
side: a per-star sequential NUTS run on the same model; report the ratio."

Models (the cost of a posterior does not depend on the weights' values, so nothing big is trained):

* ``small`` — :func:`~jaxstars.models.cmd.default_flow` ``(3, n_blocks=5, hidden=64)`` trained briefly with
  :func:`~jaxstars.models.cmd.train_cmd` on a simulated Cranmer §4.1 catalogue (a real, usable model: the NUTS
  agreement check and the streamed coverage check use it);
* ``paper`` — the paper's real-data architecture ``(3, n_blocks=35, hidden=500)``: initial parameters, then (full
  mode) ONE short epoch of the §3.2 loss (8 Adam steps of 128 stars) so that the BatchNorm running statistics have
  moved towards the data; ``--quick`` uses the initial parameters only. Both models share the standardisation
  (``shift``/``scale``) of the small model's training catalogue.

Measurements:

1. Throughput of :func:`~jaxstars.models.cmd.distance_posteriors` (default :class:`PosteriorConfig`: 256 + 128
   grid points, 64 samples, batches of 256 stars): a first call (which compiles the batch function; its compile
   time is measured with ``jax.monitoring`` duration events) and a timed call on other stars. Per core: the
   2-core rate / 2, and a separate run pinned to one core with ``taskset -c 0`` (fresh process).
2. NUTS baseline, per star, sequentially, on the same model and posterior (500 warm-up + 1000 samples, one
   chain): (a) :func:`~jaxstars.models.cmd.run_nuts` as shipped — NumPyro's ``MCMC`` driver re-traces and
   re-compiles its loops on every call, so each star pays a compilation; (b) the same NUTS kernel compiled ONCE
   as a jitted function of the star (:func:`nuts_compiled_once`), the best case for NUTS. ``ratio = grid
   stars/s ÷ NUTS stars/s`` uses (b); ``ratio_vs_run_nuts`` uses (a). Agreement: NUTS vs grid posterior mean and
   median on the same stars (target |Δ| < 2 %), with the NUTS Monte-Carlo error ``std/√ESS`` alongside —
   heavy-tailed low-S/N posteriors have MC errors of several per cent with 1000 draws, so a long run
   (500 + 20,000, compiled once) decides the 2 % test.
3. Memory: a Parquet catalogue of N simulated stars streamed in a fresh subprocess per N — pyarrow
   ``ParquetFile.iter_batches`` → canonical table (:func:`~jaxstars.astro.catalog_io.to_canonical`) →
   :func:`~jaxstars.models.cmd.prepare_stars` → ``distance_posteriors`` (small model, :data:`STREAM_GRID`) →
   pyarrow ``ParquetWriter`` (summaries + 64 samples per star), one chunk alive at a time. Peak RSS is the
   subprocess's ``VmHWM`` (not ``ru_maxrss``, which on Linux carries the parent's size across fork + exec); the
   resident size after every chunk is recorded too. It must not grow with N. Full mode adds the default grid at
   the smallest N and the largest N with glibc's mmap threshold pinned (:data:`PINNED_MALLOC`), which separates
   allocator fragmentation from data kept alive.

Run: ``python -m benchmarks.cmd [--quick]`` (quick: a few minutes, smaller sizes; full: ~25 min). Writes ``benchmarks/results/cmd.json``;
then ``python -m benchmarks.report`` regenerates ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.timing import CompileClock

RESULTS = Path(__file__).parent / "results" / "cmd.json"
ROOT = Path(__file__).resolve().parents[1]

# Columns the streamed pipeline reads from the Parquet file (canonical input + truth for a coverage check).
STREAM_COLUMNS = (
    "l",
    "b",
    "ra",
    "dec",
    "parallax",
    "parallax_error",
    "mag_G",
    "mag_BP",
    "mag_RP",
    "mag_err_G",
    "mag_err_BP",
    "mag_err_RP",
    "true_distance",
)


def _settings(quick: bool) -> dict:
    """Sizes of every measurement; (n1, n2) = stars in the first (compiling) and the timed call."""
    full = {
        "n_train": 20_000,
        "epochs_small": 5,
        "paper_epoch": True,
        "small_n": (2_048, 16_384),
        "paper_n": (256, 256),
        "paper_batch": 256,
        "one_core_small_n": (1_024, 8_192),
        "one_core_paper_n": (32, 64),
        "nuts_small": 8,
        "nuts_paper": 2,
        "nuts_long_samples": 20_000,
        "memory_sizes": (10_000, 100_000, 1_000_000),
        "chunk": 5_000,
        "memory_default_grid": True,
        "memory_allocator_reference": True,
    }
    if not quick:
        return full
    return dict(
        full,
        n_train=4_000,
        epochs_small=2,
        paper_epoch=False,
        small_n=(1_024, 4_096),
        paper_n=(16, 16),
        paper_batch=16,
        one_core_small_n=(512, 2_048),
        one_core_paper_n=None,
        nuts_small=3,
        nuts_paper=0,
        nuts_long_samples=5_000,
        memory_sizes=(2_000, 6_000),
        chunk=2_000,
        memory_default_grid=False,
        memory_allocator_reference=False,
    )


# The streamed-memory runs use a half-size grid (128 + 64 points instead of 256 + 128) so that 1e6 stars take
# minutes, not half an hour, on two shared cores; the per-batch working set is set by the grid and the batch, not
# by the catalogue size, and the default grid is streamed once at the smallest size for reference.
STREAM_GRID = {"n_coarse": 128, "n_fine": 64}


def _status_mb(field: str) -> float:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _rss_mb() -> float:
    """Current resident set size [MB]."""
    return _status_mb("VmRSS")


def _peak_rss_mb() -> float:
    """Peak resident set size of this process image [MB] (``VmHWM``).

    Not ``ru_maxrss``: on Linux that survives ``fork`` + ``exec``, so a worker started by a large parent reports
    the parent's resident size at the fork when its own peak is lower.
    """
    return _status_mb("VmHWM")


def _n_params(params) -> int:
    import jax

    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))


# ----------------------------------------------------------------------------------------------- models


def build_models(settings: dict, workdir: Path) -> dict:
    """Train the small model, initialise (+ one short epoch) the paper model; save both under ``workdir``."""
    import jax

    from jaxstars.astro.simulate import simulate
    from jaxstars.flows import fit
    from jaxstars.models.cmd import CMDModel, cranmer_loss, default_flow, prepare_stars, train_cmd, training_arrays

    catalog = simulate(settings["n_train"], mode="cranmer", key=1)
    t0 = time.perf_counter()
    trained = train_cmd(
        catalog,
        epochs=settings["epochs_small"],
        batch_size=1024,
        key=0,
        progress=False,
        flow=default_flow(3, n_blocks=5, hidden=64),
    )
    small_train_s = time.perf_counter() - t0
    small, small_params = trained.model, trained.params
    small.save(workdir / "small", small_params)

    paper = CMDModel(
        small.features, default_flow(3, n_blocks=35, hidden=500), small.shift, small.scale, small.zero_point
    )
    paper_params = paper.init(jax.random.PRNGKey(0))
    paper_note = "initial parameters (BatchNorm running statistics at their initial 0 / 1)"
    paper_train_s = 0.0
    if settings["paper_epoch"]:
        stars = prepare_stars(small.features, catalog[:1024])
        arrays = training_arrays(stars)
        grid = np.asarray(stars.dust.modulus_grid, dtype=np.float32)
        t0 = time.perf_counter()
        result = fit(
            paper.flow,
            arrays,
            key=jax.random.PRNGKey(1),
            params=paper_params,
            loss=cranmer_loss(paper, grid, train=True),
            epochs=1,
            batch_size=128,
            val_fraction=0.0,
            patience=None,
            progress=False,
        )
        paper_train_s = time.perf_counter() - t0
        paper_params = result.params
        paper_note = (
            "initial parameters + one epoch of the §3.2 loss on 1,024 stars (8 Adam steps of 128): "
            "BatchNorm running statistics moved towards the data"
        )
    paper.save(workdir / "paper", paper_params)
    return {
        "small": {
            "architecture": "MAF 5 blocks × 64 hidden (MADE → BatchNorm → Reverse)",
            "n_params": _n_params(small_params),
            "training": f"train_cmd, {len(catalog):,} simulated Cranmer §4.1 stars, {settings['epochs_small']} "
            f"epochs, batch 1024",
            "train_seconds": small_train_s,
        },
        "paper": {
            "architecture": "MAF 35 blocks × 500 hidden (MADE → BatchNorm → Reverse), Cranmer et al. real-data model",
            "n_params": _n_params(paper_params),
            "training": paper_note,
            "train_seconds": paper_train_s,
        },
    }


# ----------------------------------------------------------------------------------------------- throughput


def throughput(model_dir: str, n1: int, n2: int, batch_size: int = 256) -> dict:
    """Time ``distance_posteriors``: a first call on n1 stars (compiles), then a timed call on n2 other stars.

    ``stars_per_s`` is n2 over the timed call's wall time minus any JAX tracing/lowering/compilation inside it
    (``jax.monitoring`` duration events; zero when the batch function is reused as it should be).
    """
    from jaxstars.astro.simulate import simulate
    from jaxstars.models.cmd import CMDModel, PosteriorConfig, distance_posteriors, prepare_stars

    model, params = CMDModel.load(model_dir)
    stars = prepare_stars(model.features, simulate(n1 + n2, mode="cranmer", key=7))
    config = PosteriorConfig(batch_size=batch_size)
    times, compile_s = [], []
    for rows in (np.arange(n1), np.arange(n1, n1 + n2)):
        with CompileClock() as clock:
            t0 = time.perf_counter()
            res = distance_posteriors(model, params, stars.take(rows), key=0, config=config)
            times.append(time.perf_counter() - t0)
        compile_s.append(clock.seconds)
        if not np.isfinite(res["distance_mean"]).all():
            raise RuntimeError("non-finite posterior means in the throughput run")
    return {
        "n_first": n1,
        "first_call_s": times[0],
        "first_call_compile_s": compile_s[0],
        "n_timed": n2,
        "timed_call_s": times[1],
        "timed_call_compile_s": compile_s[1],
        "batch_size": batch_size,
        "stars_per_s": n2 / (times[1] - compile_s[1]),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def one_core_throughput(model_dir: str, n1: int, n2: int, batch_size: int) -> dict:
    """:func:`throughput` in a fresh process pinned to CPU 0 (``taskset -c 0``)."""
    if shutil.which("taskset") is None:
        return {"skipped": "taskset not available"}
    job = {"task": "throughput", "model_dir": model_dir, "n1": n1, "n2": n2, "batch_size": batch_size}
    out = _run_worker(job, prefix=["taskset", "-c", "0"])
    out["pinned"] = "taskset -c 0 (one core; JAX still starts its thread pool, sharing that core)"
    return out


# ----------------------------------------------------------------------------------------------- NUTS


def nuts_compiled_once(model, params, grid, weights, config, num_warmup: int = 500, num_samples: int = 1000):
    """The NUTS run of :func:`run_nuts` as ONE jitted function of the star (compiled once, reused for every star).

    Same target as :func:`~jaxstars.models.cmd.distance_model` (``log d`` uniform on ``[log d_min, log d_max]`` +
    the factor ``log p(d | data) + log d``), same sampler (NumPyro's NUTS kernel with step-size and diagonal
    mass-matrix adaptation, ``num_warmup`` + ``num_samples``), same start (inverse parallax): only NumPyro's
    ``MCMC`` driver, which re-traces and re-compiles its warm-up and sampling loops on every ``run``, is replaced
    by a ``lax.scan`` over the kernel. Returns ``run(star, key) -> (distance samples, leapfrog steps)``.
    """
    import jax
    import jax.numpy as jnp
    from numpyro.distributions import constraints
    from numpyro.distributions.transforms import biject_to
    from numpyro.infer.hmc import hmc

    from jaxstars.astro.priors import FlatDistancePrior
    from jaxstars.models.cmd import distance_log_posterior

    prior = FlatDistancePrior()
    transform = biject_to(constraints.interval(np.log(config.d_min), np.log(config.d_max)))

    def potential_fn_gen(star):
        def potential(u):
            z = u["log_distance"]
            log_d = transform(z)
            lp = distance_log_posterior(model, params, star, jnp.exp(log_d)[None], grid, weights, prior)[0]
            return -(lp + log_d + transform.log_abs_det_jacobian(z, log_d))

        return potential

    init_kernel, sample_kernel = hmc(potential_fn_gen=potential_fn_gen, algo="NUTS")

    @jax.jit
    def run(star, key):
        plx, err = star["parallax"], star["parallax_error"]
        ok = jnp.isfinite(err) & (plx > 0)
        start = jnp.where(ok, 1000.0 / jnp.where(ok, plx, 1.0), 1000.0)
        start = jnp.clip(start, config.d_min * 1.01, config.d_max / 1.01)
        u0 = {"log_distance": transform.inv(jnp.log(start))}
        state = init_kernel(u0, num_warmup, model_args=(star,), rng_key=key)

        def step(state, _):
            state = sample_kernel(state, model_args=(star,))
            return state, (state.z["log_distance"], state.num_steps)

        _, (zs, steps) = jax.lax.scan(step, state, None, length=num_warmup + num_samples)
        return jnp.exp(transform(zs[num_warmup:])), steps[num_warmup:]

    return run


def nuts_baseline(model_dir: str, n_stars: int, *, shipped: bool = True, long_samples: int = 0) -> dict:
    """Per-star NUTS vs the grid on the first ``n_stars`` unflagged test stars: timings and posterior summaries.

    With ``long_samples > 0`` each star is also sampled with 500 + ``long_samples`` NUTS iterations (compiled once)
    so that the comparison of means is not limited by the Monte-Carlo error of 1000 heavy-tailed draws.
    """
    import jax
    import jax.numpy as jnp
    from numpyro.diagnostics import effective_sample_size

    from jaxstars.astro.simulate import simulate
    from jaxstars.models.cmd import CMDModel, PosteriorConfig, distance_posteriors, prepare_stars, run_nuts
    from jaxstars.models.cmd.posterior import star_arrays

    model, params = CMDModel.load(model_dir)
    config = PosteriorConfig()
    catalog = simulate(256, mode="cranmer", key=11)
    stars = prepare_stars(model.features, catalog)
    grid = distance_posteriors(model, params, stars, key=0, config=config)
    picks = np.flatnonzero(grid["flags"] == 0)[:n_stars]
    sampler = nuts_compiled_once(
        model,
        params,
        jnp.asarray(stars.dust.modulus_grid, dtype=jnp.float32),
        jnp.asarray(stars.dust.weights),
        config,
    )
    long_sampler = None
    if long_samples:
        long_sampler = nuts_compiled_once(
            model,
            params,
            jnp.asarray(stars.dust.modulus_grid, dtype=jnp.float32),
            jnp.asarray(stars.dust.weights),
            config,
            num_samples=long_samples,
        )
    rows, once_times, once_compile, shipped_times, shipped_compile = [], [], [], [], []
    for j, i in enumerate(picks):
        key = jax.random.PRNGKey(100 + j)
        star = star_arrays(stars, int(i))
        with CompileClock() as clock:
            t0 = time.perf_counter()
            samples, steps = sampler(star, key)
            samples, steps = np.asarray(samples), np.asarray(steps)
            once_times.append(time.perf_counter() - t0)
        once_compile.append(clock.seconds)
        row = {
            "index": int(i),
            "parallax_snr": float(stars.parallax[i] / stars.parallax_error[i]),
            "true_distance": float(catalog["true_distance"][i]),
        }
        if shipped:
            with CompileClock() as clock:
                t0 = time.perf_counter()
                shipped_samples = run_nuts(model, params, stars, int(i), key, config=config)
                shipped_times.append(time.perf_counter() - t0)
            shipped_compile.append(clock.seconds)
            samples_sets = [("nuts", samples), ("run_nuts", shipped_samples)]
        else:
            samples_sets = [("nuts", samples)]
        if long_sampler is not None:
            samples_sets.append(("long_nuts", np.asarray(long_sampler(star, jax.random.fold_in(key, 1))[0])))
        g_mean, g_median = float(grid["distance_mean"][i]), float(grid["distance_q50"][i])
        row.update(grid_mean=g_mean, grid_median=g_median, grid_std=float(grid["distance_std"][i]))
        row["nuts_mean_leapfrog_steps"] = float(np.mean(steps))
        for name, draws in samples_sets:
            ess = float(effective_sample_size(np.asarray(draws, dtype=np.float64)[None, :]))
            mean, median = float(np.mean(draws)), float(np.median(draws))
            mcse = float(np.std(draws) / np.sqrt(max(ess, 1.0)))
            row[f"{name}_mean"] = mean
            row[f"{name}_median"] = median
            row[f"{name}_ess"] = ess
            row[f"{name}_rel_diff"] = (mean - g_mean) / g_mean
            row[f"{name}_mcse_rel"] = mcse / mean
            row[f"{name}_diff_over_mcse"] = (mean - g_mean) / mcse
            row[f"{name}_median_rel_diff"] = (median - g_median) / g_median
        best = samples_sets[-1][0]  # the long run when there is one
        row["agree_2pct"] = abs(row[f"{best}_rel_diff"]) < 0.02
        row["within_3_mcse"] = all(abs(row[f"{n}_diff_over_mcse"]) < 3.0 for n, _ in samples_sets)
        rows.append(row)

    def worst(field):
        values = [abs(r[field]) for r in rows if field in r]
        return float(max(values)) if values else None

    out = {
        "n_stars": len(rows),
        "num_warmup": 500,
        "num_samples": 1000,
        "compiled_once_first_s": once_times[0] if once_times else None,
        "compiled_once_compile_s": once_compile,
        "compiled_once_steady_s_per_star": float(np.mean(once_times[1:])) if len(once_times) > 1 else None,
        "stars": rows,
        "max_abs_rel_diff": worst("nuts_rel_diff"),
        "max_abs_median_rel_diff": worst("nuts_median_rel_diff"),
        "max_abs_diff_over_mcse": worst("nuts_diff_over_mcse"),
        "run_nuts_max_abs_rel_diff": worst("run_nuts_rel_diff"),
        "long_samples": long_samples,
        "long_max_abs_rel_diff": worst("long_nuts_rel_diff"),
        "long_max_abs_median_rel_diff": worst("long_nuts_median_rel_diff"),
        "long_max_abs_diff_over_mcse": worst("long_nuts_diff_over_mcse"),
        "n_agree_2pct": int(sum(r["agree_2pct"] for r in rows)),
        "n_within_3_mcse": int(sum(r["within_3_mcse"] for r in rows)),
    }
    if shipped:
        out["run_nuts_first_s"] = shipped_times[0] if shipped_times else None
        out["run_nuts_steady_s_per_star"] = float(np.mean(shipped_times[1:])) if len(shipped_times) > 1 else None
        # jax.monitoring trace/lower/compile events inside each run_nuts call (nested traces can overlap, so this
        # is indicative: it shows that nearly all of a call is NumPyro's driver re-compiling, not sampling).
        out["run_nuts_compile_events_s"] = shipped_compile
    return out


# ----------------------------------------------------------------------------------------------- memory


def stream(input_path: str, model_dir: str, output_path: str, chunk: int, grid: dict) -> dict:
    """Stream one Parquet catalogue through the posterior pipeline chunk by chunk; report time and peak RSS."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from astropy.table import Table

    from jaxstars.astro.catalog_io import to_canonical
    from jaxstars.catalog.runner import release_freed_memory
    from jaxstars.models.cmd import CMDModel, PosteriorConfig, distance_posteriors, prepare_stars

    rss_start = _rss_mb()
    config = PosteriorConfig(**grid)
    model, params = CMDModel.load(model_dir)
    source = pq.ParquetFile(input_path, pre_buffer=False)  # pre-buffered row groups stay cached: memory grows
    writer = None
    done, inside, counted = 0, 0, 0
    rss_after = []
    t0 = time.perf_counter()
    for batch in source.iter_batches(batch_size=chunk, columns=list(STREAM_COLUMNS)):
        raw = Table({name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.schema.names})
        table = to_canonical(raw, extra_columns=["true_distance"])
        stars = prepare_stars(model.features, table)
        n = stars.n_stars
        res = distance_posteriors(model, params, stars, key=0, row_ids=np.arange(done, done + n), config=config)
        truth = np.asarray(table["true_distance"], dtype=np.float64)
        ok = np.isfinite(res["distance_q16"])
        inside += int(np.sum((res["distance_q16"][ok] <= truth[ok]) & (truth[ok] <= res["distance_q84"][ok])))
        counted += int(ok.sum())
        columns = {k: pa.array(v) for k, v in res.items() if k != "distance_samples"}
        samples = np.asarray(res["distance_samples"], dtype=np.float32)
        columns["distance_samples"] = pa.FixedSizeListArray.from_arrays(
            pa.array(samples.ravel()), samples.shape[1]
        )
        out = pa.table(columns)
        if writer is None:
            writer = pq.ParquetWriter(output_path, out.schema)
        writer.write_table(out)
        done += n
        # drop this chunk before the next one is read, so that at most one chunk is alive at a time; then free it
        # as the catalog runner does after every part (cyclic GC for astropy tables + malloc_trim)
        del batch, raw, table, stars, res, truth, ok, columns, samples, out
        release_freed_memory()
        rss_after.append(_rss_mb())
    if writer is not None:
        writer.close()
    seconds = time.perf_counter() - t0
    return {
        "n_stars": done,
        "chunks": len(rss_after),
        "seconds": seconds,
        "stars_per_s": done / seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "rss_before_model_mb": rss_start,
        "rss_after_first_chunk_mb": rss_after[0] if rss_after else None,
        "rss_after_last_chunk_mb": rss_after[-1] if rss_after else None,
        "rss_after_chunk_mb": [round(v, 1) for v in rss_after[:: max(1, len(rss_after) // 20)]],
        "coverage_68": inside / max(counted, 1),
        "output_mb": os.path.getsize(output_path) / 1e6,
    }


# glibc's malloc raises its mmap threshold after large frees (up to 32 MB), after which chunk-sized numpy arrays
# come from the heap and fragment it; pinning the threshold shows how much of any drift is the allocator's.
PINNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def memory_scaling(
    model_dir: str, sizes, chunk: int, workdir: Path, default_grid_reference: bool, allocator_reference: bool
) -> dict:
    """Simulate the largest catalogue once, write prefixes of it as Parquet, stream each in a fresh process.

    Rows: every size with :data:`STREAM_GRID` and the default allocator; optionally the smallest size with the
    default grid, and the largest size with glibc's mmap threshold pinned (:data:`PINNED_MALLOC`).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jaxstars.astro.simulate import simulate
    from jaxstars.models.cmd import PosteriorConfig

    catalog = simulate(max(sizes), mode="cranmer", key=3)
    arrays = {name: np.asarray(catalog[name]) for name in STREAM_COLUMNS}
    del catalog

    def run(n, grid, env=None):
        path = workdir / f"catalog_{n}.parquet"
        # row groups of one chunk (a reader decodes whole row groups: one 1e6-row group holds the whole file)
        pq.write_table(pa.table({k: v[:n] for k, v in arrays.items()}), path, row_group_size=chunk)
        out = workdir / f"posteriors_{n}.parquet"
        job = {
            "task": "stream",
            "input": str(path),
            "model_dir": model_dir,
            "output": str(out),
            "chunk": chunk,
            "grid": grid,
        }
        row = _run_worker(job, env=env)
        row["input_mb"] = os.path.getsize(path) / 1e6
        row["grid"] = (
            f"{grid.get('n_coarse', PosteriorConfig.n_coarse)} + {grid.get('n_fine', PosteriorConfig.n_fine)}"
        )
        row["malloc"] = "default" if not env else " ".join(f"{k}={v}" for k, v in env.items())
        row["load_average_1min"] = round(os.getloadavg()[0], 2)
        os.remove(path)
        os.remove(out)
        trace = row["rss_after_chunk_mb"]
        print(
            f"  stream {n:>9,d} stars ({row['grid']} grid, malloc {row['malloc']}): peak RSS "
            f"{row['peak_rss_mb']:7.1f} MB, after chunks {min(trace):.0f}–{max(trace):.0f} MB, "
            f"{row['seconds']:7.1f} s ({row['stars_per_s']:,.0f} stars/s), 68% coverage {row['coverage_68']:.3f}"
        )
        return row

    rows = [run(n, STREAM_GRID) for n in sizes]
    out = {
        "chunk": chunk,
        "grid": STREAM_GRID,
        "sizes": rows,
        "peak_ratio_largest_to_smallest": rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"],
    }
    if len(rows) > 2:
        out["peak_ratio_largest_to_second"] = rows[-1]["peak_rss_mb"] / rows[-2]["peak_rss_mb"]
    if default_grid_reference:
        out["default_grid_smallest"] = run(min(sizes), {})
    if allocator_reference:
        out["pinned_malloc_largest"] = run(max(sizes), STREAM_GRID, PINNED_MALLOC)
    return out


# ----------------------------------------------------------------------------------------------- workers


def _run_worker(job: dict, prefix=(), env: dict | None = None) -> dict:
    """Run one measurement in a fresh Python process; it prints its JSON result as the last stdout line."""
    cmd = [*prefix, sys.executable, "-m", "benchmarks.cmd", "--worker", json.dumps(job)]
    full_env = None if not env else {**os.environ, **env}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, env=full_env)
    if done.returncode != 0:
        raise RuntimeError(f"worker {job['task']} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _worker(job: dict) -> dict:
    if job["task"] == "throughput":
        return throughput(job["model_dir"], job["n1"], job["n2"], job["batch_size"])
    if job["task"] == "stream":
        return stream(job["input"], job["model_dir"], job["output"], job["chunk"], job["grid"])
    raise ValueError(f"unknown worker task {job['task']!r}")


# ----------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="CMD model benchmark: grid posteriors vs NUTS, streamed memory.")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (~2 min smoke run)")
    parser.add_argument(
        "--only-memory",
        action="store_true",
        help="re-measure the streamed memory only (small model retrained); other sections kept from the last run",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return {}

    import jax
    import numpyro

    settings = _settings(args.quick)
    if args.only_memory:
        return _only_memory(settings, args.quick)
    cores = os.cpu_count() or 1
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="jaxstars-bench-cmd-") as tmp:
        workdir = Path(tmp)
        print("training / initialising the models ...")
        results["models"] = build_models(settings, workdir)
        for name, m in results["models"].items():
            print(
                f"  {name:6s} {m['architecture']}: {m['n_params']:,} parameters; {m['training']} "
                f"({m['train_seconds']:.1f} s)"
            )

        print("grid posterior throughput ...")
        results["throughput"] = {}
        for name, (n1, n2), batch, one_core in (
            ("small", settings["small_n"], 256, settings["one_core_small_n"]),
            ("paper", settings["paper_n"], settings["paper_batch"], settings["one_core_paper_n"]),
        ):
            row = throughput(str(workdir / name), n1, n2, batch)
            row["stars_per_s_per_core"] = row["stars_per_s"] / cores
            if one_core is not None:
                row["one_core"] = one_core_throughput(str(workdir / name), *one_core, min(batch, one_core[0]))
            results["throughput"][name] = row
            extra = (
                f", pinned to 1 core {row['one_core']['stars_per_s']:,.1f}/s"
                if "stars_per_s" in row.get("one_core", {})
                else ""
            )
            print(
                f"  {name:6s} {row['stars_per_s']:10,.1f} stars/s on {cores} cores "
                f"({row['stars_per_s_per_core']:,.1f} per core{extra}); compile in the first call "
                f"{row['first_call_compile_s']:.1f} s, in the timed call {row['timed_call_compile_s']:.1f} s"
            )

        print("per-star NUTS baseline ...")
        results["nuts"] = {}
        for name, k, shipped, long_samples in (
            ("small", settings["nuts_small"], True, settings["nuts_long_samples"]),
            ("paper", settings["nuts_paper"], False, 0),
        ):
            if k == 0:
                continue
            row = nuts_baseline(str(workdir / name), k, shipped=shipped, long_samples=long_samples)
            grid_rate = results["throughput"][name]["stars_per_s"]
            steady = row["compiled_once_steady_s_per_star"]
            row["nuts_stars_per_s"] = 1.0 / steady if steady else None
            row["ratio"] = grid_rate * steady if steady else None
            row["ratio_per_core"] = grid_rate / cores * steady if steady else None
            if row.get("run_nuts_steady_s_per_star"):
                row["ratio_vs_run_nuts"] = grid_rate * row["run_nuts_steady_s_per_star"]
            results["nuts"][name] = row
            print(
                f"  {name:6s} NUTS compiled once: {steady or float('nan'):.2f} s/star (first call "
                f"{row['compiled_once_first_s']:.1f} s); grid/NUTS {row['ratio'] or float('nan'):,.0f}x; "
                f"NUTS vs grid mean: max |Δ| {100 * row['max_abs_rel_diff']:.2f} %, max |Δ|/MCSE "
                f"{row['max_abs_diff_over_mcse']:.2f}"
            )
            if shipped:
                print(
                    f"         run_nuts as shipped: first {row['run_nuts_first_s']:.1f} s, then "
                    f"{row['run_nuts_steady_s_per_star']:.1f} s/star (NumPyro's MCMC re-compiles per call); "
                    f"grid/run_nuts "
                    f"{row['ratio_vs_run_nuts']:,.0f}x"
                )

        print(f"streamed memory (chunks of {settings['chunk']:,} rows) ...")
        results["memory"] = memory_scaling(
            str(workdir / "small"),
            settings["memory_sizes"],
            settings["chunk"],
            workdir,
            settings["memory_default_grid"],
            settings["memory_allocator_reference"],
        )
        mem = results["memory"]
        print(
            f"  peak RSS ratio {settings['memory_sizes'][-1]:,} / {settings['memory_sizes'][0]:,} stars: "
            f"{mem['peak_ratio_largest_to_smallest']:.3f}"
            + (
                f"; {settings['memory_sizes'][-1]:,} / {settings['memory_sizes'][-2]:,}: "
                f"{mem['peak_ratio_largest_to_second']:.3f}"
                if "peak_ratio_largest_to_second" in mem
                else ""
            )
        )

    meta = {
        "command": "python -m benchmarks.cmd" + (" --quick" if args.quick else ""),
        "machine": f"{platform.machine()}, {cores} cores, {platform.python_version()}",
        "cpu_count": cores,
        "jax": jax.__version__,
        "numpyro": numpyro.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "load_average_start": [round(v, 2) for v in load_start],
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "shared_machine": "other processes (concurrent helpers) were running; see the load averages",
        "total_seconds": time.perf_counter() - t_start,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"wrote {RESULTS} ({meta['total_seconds']:.0f} s)")
    return results


def _only_memory(settings: dict, quick: bool) -> dict:
    """Retrain the small model, re-measure :func:`memory_scaling`, keep the other sections of the last results."""
    import jax
    import numpyro

    data = json.loads(RESULTS.read_text())
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jaxstars-bench-cmd-") as tmp:
        workdir = Path(tmp)
        build_models(dict(settings, paper_epoch=False), workdir)
        print(f"streamed memory (chunks of {settings['chunk']:,} rows) ...")
        data["results"]["memory"] = memory_scaling(
            str(workdir / "small"),
            settings["memory_sizes"],
            settings["chunk"],
            workdir,
            settings["memory_default_grid"],
            settings["memory_allocator_reference"],
        )
    data["meta"]["memory_rerun"] = {
        "command": "python -m benchmarks.cmd --only-memory" + (" --quick" if quick else ""),
        "date": time.strftime("%Y-%m-%d"),
        "jax": jax.__version__,
        "numpyro": numpyro.__version__,
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "seconds": time.perf_counter() - t_start,
    }
    RESULTS.write_text(json.dumps(data, indent=2))
    print(f"wrote {RESULTS}")
    return data["results"]


if __name__ == "__main__":
    main()
