"""FLOWER benchmark (O'Callaghan et al., paper 002): per-star dust/distance posteriors, the paper's NUTS procedure
vs jaxstars' fast path, side by side on the same trained flow and the same stars; and training throughput.

Issue 6: "Per-star posterior throughput, side by side in one run on the same trained flow and the same stars: the
paper's procedure (numpyro NUTS, one star at a time, 4,000 + 10,000, target acceptance 0.9) vs jaxstars' fast path;
report seconds per star per core for both, the ratio, and the posterior agreement. [...] Goal: ≥ 1,000× faster at
matching posteriors. Also training throughput (stars per second through the importance-sampled loss)."

1. **Model.** ``--model DIR`` loads a trained FLOWER model (:meth:`~jaxstars.models.flower.FlowerModel.load`);
   otherwise a small one is trained here with :func:`~jaxstars.models.flower.train_flower` on zero-extinction stars
   (:func:`~jaxstars.astro.simulate.simulate_galaxy` with a dust map of zero reddening). The JSON records which.
   Both paths evaluate the same posterior (Eq. 16) of the same flow, so the comparison is fair for any flow, but
   the figures depend on it: NUTS's trajectory lengths (hence its cost) follow the posterior's geometry, which a
   poorly trained flow makes very different (measured: ~115 CPU-s/star with a 6-epoch flow vs ~25 with a
   60-epoch one), so quote results for a properly trained model.
2. **Stars.** Reddened simulated stars towards (l, b) = (104.08°, 22.31°), 5° cap, G < 18.5, the simulator's
   default exponential-disk dust; only rows without any input flag (all bands observed, parallax present) are used.
   The first ``n_nuts`` of the timed fast-path stars are the NUTS stars: the same stars for both paths.
3. **Paper procedure.** :func:`jaxstars.inference.sequential_nuts` — NumPyro's ``MCMC`` driver, one star at a time,
   on :func:`~jaxstars.models.flower.flower_star_model` in the paper's coordinates (sites ``ebv``, ``distance``,
   ``x``; ``FlowerPosteriorConfig(nuts_coordinates="paper")``) from :func:`~jaxstars.models.flower.initial_point`,
   with :data:`~jaxstars.models.flower.PAPER_NUTS` (4,000 warm-up +
   10,000 draws, target acceptance 0.9, dense mass matrix, one chain). ``--quick`` shortens the chains (labelled
   in the output). Seconds per star are wall-clock of the whole ``sequential_nuts`` call, compilation included —
   NumPyro's driver re-traces and re-compiles for every star, which is part of the paper's procedure. The part
   spent tracing/lowering/compiling (``jax.monitoring`` duration events) is recorded so that the post-compile
   sampling time can be quoted separately.  The same is then run in jaxstars' default photometric coordinates
   (``x`` as its offset from the photometric ``x̂(E, d)``: the same posterior, without the divergences), timed the
   same way; it is the agreement reference, and its speed is reported next to the paper's.
4. **Fast path.** :func:`~jaxstars.models.flower.flower_posteriors` with the default
   :class:`~jaxstars.models.flower.FlowerPosteriorConfig` (``batch_size`` stars vmapped per compiled call): a first
   call on ``n_fast`` other stars compiles (every shape the timed call meets); then the timed call on ``n_fast``
   stars (any tracing/compilation still inside it is measured and subtracted from the wall-clock figure).
5. **Per core.** Both posterior paths run in fresh worker processes pinned to one CPU
   (``os.sched_setaffinity`` before JAX is imported, so XLA's thread pool has one core): "s/star/core" is the
   measured wall-clock per star on that core; each worker's own CPU time (``time.process_time``, all threads) is
   recorded too, which other jobs sharing that core do not inflate. The fast path is also timed with all cores
   (s/star × cores, a pessimistic per-core figure on a shared machine). Ratio = paper NUTS s/star/core ÷ fast
   s/star/core (pinned; wall-clock, and by CPU time).
   Agreement on the NUTS stars: ``(fast − NUTS) mean / NUTS std`` for E(B−V) and d, and ``fast std / NUTS std``
   (issue goal: |Δmean| < 0.1 σ, std within 10 %), with the NUTS Monte-Carlo error ``1/√ESS`` in the same units.
6. **Training throughput.** One jitted ``jax.value_and_grad`` step of :func:`~jaxstars.models.flower.flower_loss`
   (K = 32 importance draws per star, 3 reddened negatives per star with 32 draws each, λ = 0.3) on batches of
   2,048 and 8,192 zero-extinction stars from :func:`~jaxstars.models.flower.flower_training_arrays`; compiled
   first, then averaged over several steps with fresh keys. Stars/s = batch / step time, all cores.

Run: ``python -m benchmarks.flower [--quick] [--model DIR]``. Writes ``benchmarks/results/flower.json`` (quick runs:
``flower_quick.json``, not rendered); ``python -m benchmarks.report`` then regenerates ``docs/benchmarks.md``.
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

from benchmarks.timing import CompileClock

RESULTS = Path(__file__).parent / "results" / "flower.json"
QUICK_RESULTS = Path(__file__).parent / "results" / "flower_quick.json"
ROOT = Path(__file__).resolve().parents[1]
FIELD = (104.08, 22.31, 5.0)  # (l, b, radius) in degrees: the sight line of the reddened test stars
GOAL_RATIO = 1000.0
SUMMARY_KEYS = ("ebv_mean", "ebv_std", "distance_mean", "distance_std", "ebv_q16", "ebv_q50", "ebv_q84",
                "distance_q16", "distance_q50", "distance_q84", "edge_mass")  # fmt: skip


def _settings(quick: bool) -> dict:
    full = {
        "n_train": 20_000,  # zero-extinction training stars (only when no --model)
        "train_epochs": 6,
        "train_batch": 2_048,
        "n_fast": 256,  # timed fast-path stars
        "n_nuts": 3,  # paper-procedure stars (the first n_nuts timed fast-path stars)
        "nuts_warmup": 4_000,
        "nuts_samples": 10_000,
        "loss_batches": [2_048, 8_192],
        "loss_steps": 5,
        "fast_all_cores": True,
    }
    if not quick:
        return full
    return dict(
        full,
        n_train=4_000,
        train_epochs=2,
        n_fast=32,
        n_nuts=1,
        nuts_warmup=300,
        nuts_samples=600,
        loss_batches=[2_048],
        loss_steps=3,
        fast_all_cores=False,
    )


def code_fingerprint() -> str:
    """sha256 (12 hex digits) of the FLOWER and inference sources: every worker records the code it measured, so a
    run whose workers saw different versions of the library (edited mid-run) is detectable."""
    import hashlib

    h = hashlib.sha256()
    for sub in ("models/flower", "inference"):
        for path in sorted((ROOT / "jaxstars" / sub).glob("*.py")):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def _git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "jaxstars"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        return head.stdout.strip() + (" + uncommitted changes under jaxstars/" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def _n_params(params) -> int:
    import jax

    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))


# ------------------------------------------------------------------------------------------------ model and stars


def _zero_dust_catalog(n: int, key: int):
    """Zero-extinction simulated stars (whole sky, G < 19): FLOWER's training sample."""
    from jaxstars.astro.dust.analytic import CloudsMap
    from jaxstars.astro.simulate import simulate_galaxy

    zero = CloudsMap(distances_pc=[100.0], ebv=[0.0], ebv_std=[0.0], distance_std_pc=[1.0], name="zero")
    return simulate_galaxy(n, key, dust_map=zero, mag_limit=19.0)


def build_model(settings: dict, model_arg: str | None, workdir: Path):
    """Load ``--model`` or train a small model; returns ``(model_dir, description dict, training catalogue)``."""
    from jaxstars.models.flower import GAIA_PS1, FlowerModel, train_flower

    need = max(settings["loss_batches"])
    if model_arg:
        model, params = FlowerModel.load(model_arg)
        catalog = _zero_dust_catalog(int(1.3 * need), key=21)
        desc = {
            "source": f"--model {model_arg}",
            "training": model.info.get("training"),
        }
        model_dir = model_arg
    else:
        catalog = _zero_dust_catalog(max(settings["n_train"], int(1.3 * need)), key=21)
        t0 = time.perf_counter()
        trained = train_flower(
            catalog[: settings["n_train"]],
            bands=GAIA_PS1,
            epochs=settings["train_epochs"],
            batch_size=settings["train_batch"],
            patience=None,
            key=0,
            progress=False,
        )
        seconds = time.perf_counter() - t0
        model, params = trained.model, trained.params
        model_dir = str(workdir / "model")
        model.save(model_dir, params)
        desc = {
            "source": "trained here",
            "training": (
                f"train_flower on {settings['n_train']:,} zero-extinction simulate_galaxy stars (whole sky, G < 19), "
                f"{settings['train_epochs']} epochs, batch {settings['train_batch']}, default loss (K = 32, 3 "
                "negatives, λ ramped to 0.3)"
            ),
            "train_seconds": seconds,
            "training_info": model.info.get("training"),
        }
    desc.update(
        {
            "bands": list(model.features.bands),
            "dim": model.features.dim,
            "flow": repr(model.flow.bijector),
            "n_params": _n_params(params),
        }
    )
    return model_dir, desc, catalog


def make_stars(model_dir: str, n_needed: int, path: Path, key: int = 5) -> dict:
    """Simulate reddened stars, keep rows with no input flag, save them (FlowerStars fields + truth) to ``path``."""
    from jaxstars.astro.simulate import simulate_galaxy
    from jaxstars.models.flower import FlowerModel, prepare_flower_stars

    model, _ = FlowerModel.load(model_dir)
    n_sim = int(2.5 * n_needed) + 64
    while True:
        catalog = simulate_galaxy(n_sim, key, fields=[FIELD], mag_limit=18.5)
        stars = prepare_flower_stars(model.features, catalog, parallax_zero_point=float(catalog.meta["PLXZP"]))
        good = np.flatnonzero(np.asarray(stars.flags) == 0)
        if good.size >= n_needed:
            break
        n_sim *= 2
    n_usable = int(good.size)
    good = good[:n_needed]
    stars = stars.take(good)
    stars = stars._replace(row_id=np.arange(n_needed, dtype=np.int64))
    truth = {
        "true_ebv": np.asarray(catalog["true_ebv"], float)[good],
        "true_distance": np.asarray(catalog["true_distance"], float)[good],
        "mag_G": np.asarray(catalog["mag_G"], float)[good],
        "parallax_snr": np.asarray(catalog["parallax"] / catalog["parallax_error"], float)[good],
    }
    np.savez(path, **stars._asdict(), **truth)
    return {
        "simulated": n_sim,
        "usable": n_usable,
        "kept": n_needed,
        "field": {"l": FIELD[0], "b": FIELD[1], "radius_deg": FIELD[2]},
        "mag_limit_G": 18.5,
        "dust": str(catalog.meta.get("DUSTMAP")),
        "parallax_zero_point": float(catalog.meta["PLXZP"]),
        "true_ebv_median": float(np.median(truth["true_ebv"])),
        "true_distance_median": float(np.median(truth["true_distance"])),
    }


def _load_stars(path: str):
    from jaxstars.models.flower import FlowerStars

    with np.load(path) as f:
        stars = FlowerStars(**{k: f[k] for k in FlowerStars._fields})
        truth = {k: f[k] for k in ("true_ebv", "true_distance", "mag_G", "parallax_snr")}
    return stars, truth


# ------------------------------------------------------------------------------------------------ workers


def nuts_worker(job: dict) -> dict:
    """NUTS on ``job["rows"]`` in ``job["coordinates"]``: ``sequential_nuts`` one star at a time, each call timed."""
    import jax
    from numpyro.diagnostics import effective_sample_size

    from jaxstars.inference import sequential_nuts
    from jaxstars.models.flower import PAPER_NUTS, FlowerModel, FlowerPosteriorConfig, flower_star_model
    from jaxstars.models.flower.posterior import initial_point, star_arrays

    model, params = FlowerModel.load(job["model_dir"])
    stars, truth = _load_stars(job["stars"])
    rows = np.asarray(job["rows"])
    config = FlowerPosteriorConfig(nuts_coordinates=job["coordinates"])
    nuts = dataclasses.replace(PAPER_NUTS, num_warmup=job["num_warmup"], num_samples=job["num_samples"])
    star_model = flower_star_model(model, config)
    init = initial_point(model, config)
    data = star_arrays(stars.take(rows))
    key = jax.random.PRNGKey(job["key"])
    out = []
    for j, row in enumerate(rows):
        one = {k: v[j : j + 1] for k, v in data.items()}
        with CompileClock() as clock:
            t0, c0 = time.perf_counter(), time.process_time()
            draws = sequential_nuts(
                star_model, one, jax.random.fold_in(key, int(row)), shared=(params,), config=nuts, init_fn=init
            )[0]
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        rec = {
            "row": int(row),
            "wall_s": wall,
            "cpu_s": cpu,
            "compile_s": clock.seconds,
            "post_compile_s": wall - clock.seconds,
        }
        for site in ("ebv", "distance"):
            chains = np.asarray(draws[site], np.float64)  # (chains, samples)
            flat = chains.reshape(-1)
            rec[f"{site}_mean"] = float(flat.mean())
            rec[f"{site}_std"] = float(flat.std(ddof=1))
            rec[f"{site}_q16"], rec[f"{site}_q50"], rec[f"{site}_q84"] = (
                float(v) for v in np.quantile(flat, [0.16, 0.5, 0.84])
            )
            rec[f"{site}_ess"] = float(effective_sample_size(chains))
        rec["true_ebv"] = float(truth["true_ebv"][row])
        rec["true_distance"] = float(truth["true_distance"][row])
        rec["mag_G"] = float(truth["mag_G"][row])
        rec["parallax_snr"] = float(truth["parallax_snr"][row])
        rec["load_average_1min"] = round(os.getloadavg()[0], 2)
        print(
            f"    star {row}: {wall:.1f} s (compile {clock.seconds:.1f} s); E = {rec['ebv_mean']:.3f} ± "
            f"{rec['ebv_std']:.3f} (true {rec['true_ebv']:.3f}), d = {rec['distance_mean']:.0f} ± "
            f"{rec['distance_std']:.0f} pc (true {rec['true_distance']:.0f}); ESS E {rec['ebv_ess']:.0f}",
            file=sys.stderr,
            flush=True,
        )
        out.append(rec)
    return {"stars": out, "affinity": sorted(os.sched_getaffinity(0))}


def fast_worker(job: dict) -> dict:
    """The fast path: a first call on ``warm_rows`` (compiles), then a timed call on ``timed_rows``."""
    from jaxstars.models.flower import FLAGS, FlowerModel, FlowerPosteriorConfig, flower_posteriors

    model, params = FlowerModel.load(job["model_dir"])
    stars, _ = _load_stars(job["stars"])
    config = FlowerPosteriorConfig()
    times, cpu, compile_s = [], [], []
    for rows in (job["warm_rows"], job["timed_rows"]):
        with CompileClock() as clock:
            t0, c0 = time.perf_counter(), time.process_time()
            res = flower_posteriors(model, params, stars.take(np.asarray(rows)), key=job["key"], config=config)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        compile_s.append(clock.seconds)
    n = len(job["timed_rows"])
    keep = job["report_rows"]  # positions within timed_rows
    summary = {k: [float(v) for v in np.asarray(res[k])[keep]] for k in SUMMARY_KEYS if k in res}
    summary["flags"] = [int(v) for v in np.asarray(res["flags"])[keep]]
    flags = np.asarray(res["flags"], np.int64)
    flag_counts = {name: int(np.count_nonzero(flags & bit)) for name, bit in FLAGS.items() if np.any(flags & bit)}
    _, truth = _load_stars(job["stars"])
    timed = np.asarray(job["timed_rows"])
    ok = np.isfinite(np.asarray(res["ebv_mean"]))
    resid = (np.asarray(res["ebv_mean"]) - truth["true_ebv"][timed])[ok]
    pull = resid / np.asarray(res["ebv_std"])[ok]
    true_e = truth["true_ebv"][timed][ok]
    inside68 = (np.asarray(res["ebv_q16"])[ok] <= true_e) & (true_e <= np.asarray(res["ebv_q84"])[ok])
    return {
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "log_selection"},
        "n_first": len(job["warm_rows"]),
        "first_call_s": times[0],
        "first_call_compile_s": compile_s[0],
        "n_timed": n,
        "timed_call_s": times[1],
        "timed_call_compile_s": compile_s[1],
        "timed_call_cpu_s": cpu[1],
        "s_per_star": (times[1] - compile_s[1]) / n,
        "cpu_s_per_star": cpu[1] / n,
        "flag_counts": flag_counts,
        "n_flag_free": int(np.count_nonzero(flags == 0)),
        "ebv_residual_mean": float(np.mean(resid)),
        "ebv_std_mean": float(np.mean(np.asarray(res["ebv_std"])[ok])),
        "ebv_pull_std": float(np.std(pull)),
        "ebv_pull_median_abs": float(np.median(np.abs(pull))),
        "ebv_true_in_68": float(np.mean(inside68)),
        "nuts_rows": summary,
        "affinity": sorted(os.sched_getaffinity(0)),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def _run_worker(job: dict, cpu: int | None) -> dict:
    job = dict(job, cpu=cpu)
    cmd = [sys.executable, "-m", "benchmarks.flower", "--worker", json.dumps(job)]
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=None, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {job['task']} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _worker_main(job: dict) -> dict:
    if job.get("cpu") is not None:
        os.sched_setaffinity(0, {int(job["cpu"])})  # before JAX starts its thread pool
    code = code_fingerprint()
    if job["task"] == "nuts":
        out = nuts_worker(job)
    elif job["task"] == "fast":
        out = fast_worker(job)
    else:
        raise ValueError(job["task"])
    return dict(out, code=code)


# ------------------------------------------------------------------------------------------------ training loss


def loss_throughput(model_dir: str, catalog, batches, steps: int) -> dict:
    """Stars/s through one jitted ``value_and_grad`` step of the FLOWER loss (K = 32, 3 negatives, λ = 0.3)."""
    import jax

    from jaxstars.models.flower import FlowerModel, flower_loss, flower_training_arrays

    model, params = FlowerModel.load(model_dir)
    arrays, _ = flower_training_arrays(catalog, model.features)
    n_rows = arrays["mag"].shape[0]
    kw = {"contrastive_weight": 0.3, "n_negatives": 3, "n_samples": 32}

    def loss(p, batch, key):
        return flower_loss(model, p, batch, key, **kw)

    step = jax.jit(jax.value_and_grad(loss))
    out = {"n_rows_available": int(n_rows), "loss_settings": dict(kw, clip=-70.0), "batches": []}
    rng = np.random.default_rng(0)
    for size in batches:
        idx = rng.choice(n_rows, size, replace=size > n_rows)
        batch = {k: jax.numpy.asarray(v[idx]) for k, v in arrays.items()}
        with CompileClock() as clock:
            t0 = time.perf_counter()
            value, grads = step(params, batch, jax.random.PRNGKey(0))
            jax.block_until_ready(grads)
            first = time.perf_counter() - t0
        times = []
        c0 = time.process_time()
        for s in range(steps):
            t0 = time.perf_counter()
            value, grads = step(params, batch, jax.random.PRNGKey(s + 1))
            jax.block_until_ready((value, grads))
            times.append(time.perf_counter() - t0)
        cpu = (time.process_time() - c0) / steps
        mean = float(np.mean(times))
        row = {
            "batch": int(size),
            "resampled_with_replacement": bool(size > n_rows),
            "first_step_s": first,
            "compile_s": clock.seconds,
            "step_s_mean": mean,
            "step_s_min": float(np.min(times)),
            "steps": steps,
            "stars_per_s": size / mean,
            "step_cpu_s": cpu,
            "stars_per_cpu_s": size / cpu,
            "loss": float(value),
            "load_average_1min": round(os.getloadavg()[0], 2),
        }
        print(
            f"  batch {size}: {mean:.2f} s/step → {row['stars_per_s']:,.0f} stars/s (compile {first:.1f} s)",
            flush=True,
        )
        out["batches"].append(row)
    return out


# ------------------------------------------------------------------------------------------------ agreement


def agreement(nuts_stars: list[dict], fast_rows: dict) -> dict:
    """``(fast − NUTS) mean / NUTS std`` and ``fast std / NUTS std`` for E(B−V) and d, per star and worst case."""
    rows = []
    for j, rec in enumerate(nuts_stars):
        row = {"row": rec["row"], "fast_flags": fast_rows["flags"][j]}
        for site in ("ebv", "distance"):
            sd = rec[f"{site}_std"]
            row[f"{site}_nuts_mean"] = rec[f"{site}_mean"]
            row[f"{site}_nuts_std"] = sd
            row[f"{site}_fast_mean"] = fast_rows[f"{site}_mean"][j]
            row[f"{site}_fast_std"] = fast_rows[f"{site}_std"][j]
            row[f"{site}_dmean_over_std"] = (fast_rows[f"{site}_mean"][j] - rec[f"{site}_mean"]) / sd
            row[f"{site}_std_ratio"] = fast_rows[f"{site}_std"][j] / sd
            row[f"{site}_mcse_over_std"] = 1.0 / np.sqrt(max(rec[f"{site}_ess"], 1.0))
        rows.append(row)
    worst = {}
    for site in ("ebv", "distance"):
        worst[f"{site}_max_abs_dmean_over_std"] = float(max(abs(r[f"{site}_dmean_over_std"]) for r in rows))
        worst[f"{site}_max_abs_std_ratio_minus_1"] = float(max(abs(r[f"{site}_std_ratio"] - 1) for r in rows))
    worst["meets_goal"] = bool(
        all(worst[f"{s}_max_abs_dmean_over_std"] < 0.1 for s in ("ebv", "distance"))
        and all(worst[f"{s}_max_abs_std_ratio_minus_1"] < 0.1 for s in ("ebv", "distance"))
    )
    return {"stars": rows, **worst}


def _nuts_summary(nuts: dict, settings: dict, label: str) -> dict:
    """A NUTS worker's result with its settings and per-star means (wall, CPU, post-compile)."""
    nuts.update(
        {
            "num_warmup": settings["nuts_warmup"],
            "num_samples": settings["nuts_samples"],
            "target_accept_prob": 0.9,
            "dense_mass": True,
            "label": label,
            "s_per_star": float(np.mean([s["wall_s"] for s in nuts["stars"]])),
            "cpu_s_per_star": float(np.mean([s["cpu_s"] for s in nuts["stars"]])),
            "post_compile_s_per_star": float(np.mean([s["post_compile_s"] for s in nuts["stars"]])),
        }
    )
    return nuts


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="FLOWER benchmark: paper NUTS vs fast path, training throughput")
    parser.add_argument("--quick", action="store_true", help="small sizes and SHORTENED NUTS chains (debug only)")
    parser.add_argument("--model", help="directory of a trained FLOWER model (default: train a small one)")
    parser.add_argument("--cpu", type=int, default=0, help="CPU the pinned workers run on (default 0)")
    parser.add_argument("--out", help="results file (default benchmarks/results/flower.json, quick: flower_quick)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker_main(json.loads(args.worker))))
        return {}

    import jax
    import numpyro

    settings = _settings(args.quick)
    cores = os.cpu_count() or 1
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    results: dict = {"settings": settings}
    code_start = code_fingerprint()
    import jaxstars.models.flower  # noqa: F401  (loaded now: the code measured here is the code fingerprinted)

    out_path = Path(args.out) if args.out else (QUICK_RESULTS if args.quick else RESULTS)
    with tempfile.TemporaryDirectory(prefix="jaxstars-bench-flower-") as tmp:
        workdir = Path(tmp)
        print("model ..." if args.model else "training a small FLOWER model ...", flush=True)
        model_dir, results["model"], train_catalog = build_model(settings, args.model, workdir)
        print(f"  {results['model']['source']}: {results['model']['n_params']:,} parameters", flush=True)

        n_fast = settings["n_fast"]
        stars_path = workdir / "stars.npz"
        print("simulating reddened stars ...", flush=True)
        results["stars"] = make_stars(model_dir, 2 * n_fast, stars_path)
        # the warm-up call gets as many (other) stars as the timed one: every shape is compiled before timing
        timed_rows = list(range(n_fast))
        warm_rows = list(range(n_fast, 2 * n_fast))
        nuts_rows = timed_rows[: settings["n_nuts"]]

        fast_job = {"task": "fast", "model_dir": model_dir, "stars": str(stars_path), "key": 0,
                    "warm_rows": warm_rows, "timed_rows": timed_rows, "report_rows": nuts_rows}  # fmt: skip
        print(f"fast path, pinned to CPU {args.cpu}: {n_fast} stars ...", flush=True)
        fast = _run_worker(fast_job, args.cpu)
        print(
            f"  {fast['s_per_star'] * 1e3:.1f} ms/star (first call {fast['first_call_s']:.1f} s, of which compile "
            f"{fast['first_call_compile_s']:.1f} s); flags {fast['flag_counts']}",
            flush=True,
        )
        results["fast_one_core"] = fast
        if settings["fast_all_cores"]:
            print(f"fast path, all {cores} cores ...", flush=True)
            fast_all = _run_worker(dict(fast_job, report_rows=[]), None)
            fast_all.pop("nuts_rows", None)
            fast_all["s_per_star_times_cores"] = fast_all["s_per_star"] * cores
            print(f"  {fast_all['s_per_star'] * 1e3:.1f} ms/star", flush=True)
            results["fast_all_cores"] = fast_all

        nuts_label = (
            "paper settings"
            if (settings["nuts_warmup"], settings["nuts_samples"]) == (4000, 10000)
            else "SHORTENED (--quick), not the paper's settings"
        )
        print(
            f"paper procedure (sequential_nuts, {settings['nuts_warmup']} + {settings['nuts_samples']}, "
            f"{nuts_label}), pinned to CPU {args.cpu}: {len(nuts_rows)} star(s) ...",
            flush=True,
        )
        nuts_job = {"task": "nuts", "model_dir": model_dir, "stars": str(stars_path), "rows": nuts_rows, "key": 1,
                    "num_warmup": settings["nuts_warmup"], "num_samples": settings["nuts_samples"]}  # fmt: skip
        nuts = _nuts_summary(_run_worker(dict(nuts_job, coordinates="paper"), args.cpu), settings, nuts_label)
        results["paper_nuts_one_core"] = nuts
        print(
            f"the same NUTS in photometric coordinates (the reference), pinned to CPU {args.cpu} ...", flush=True
        )
        ref = _nuts_summary(_run_worker(dict(nuts_job, coordinates="photometric"), args.cpu), settings, nuts_label)
        results["reference_nuts_one_core"] = ref

        ratio = nuts["s_per_star"] / fast["s_per_star"]
        results["ratio"] = {
            "paper_nuts_over_fast_per_core": ratio,
            "post_compile_nuts_over_fast_per_core": nuts["post_compile_s_per_star"] / fast["s_per_star"],
            "cpu_time_nuts_over_fast": nuts["cpu_s_per_star"] / fast["cpu_s_per_star"],
            "reference_nuts_over_fast_per_core": ref["s_per_star"] / fast["s_per_star"],
            "goal": GOAL_RATIO,
            "meets_goal": bool(ratio >= GOAL_RATIO),
        }
        results["agreement"] = agreement(ref["stars"], fast["nuts_rows"])
        results["agreement_paper_coordinates"] = agreement(nuts["stars"], fast["nuts_rows"])

        print("training throughput (value_and_grad of flower_loss) ...", flush=True)
        results["training"] = loss_throughput(
            model_dir, train_catalog, settings["loss_batches"], settings["loss_steps"]
        )
        del train_catalog

    meta = {
        "command": "python -m benchmarks.flower"
        + (" --quick" if args.quick else "")
        + (f" --model {args.model}" if args.model else "")
        + (f" --out {args.out}" if args.out else ""),
        "machine": f"{platform.machine()}, {cores} cores, {platform.python_version()}",
        "cpu_count": cores,
        "jax": jax.__version__,
        "numpyro": numpyro.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "load_average_start": [round(v, 2) for v in load_start],
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "total_seconds": time.perf_counter() - t_start,
        "quick": bool(args.quick),
        "git": _git_state(),
        "code_fingerprint": code_start,
    }
    # the code each process loaded: this process imports the library right after code_start, each worker
    # fingerprints the sources just before importing them; a change after the last import measured nothing
    seen = {code_start} | {
        results[k]["code"]
        for k in ("fast_one_core", "fast_all_cores", "paper_nuts_one_core", "reference_nuts_one_core")
        if k in results
    }
    meta["code_consistent"] = len(seen) == 1
    meta["code_fingerprint_end"] = code_fingerprint()
    if not meta["code_consistent"]:
        print("WARNING: jaxstars/models/flower or jaxstars/inference changed between the measurements", flush=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    _print_summary(results)
    print(f"wrote {out_path} ({meta['total_seconds']:.0f} s)")
    return results


def _print_summary(res: dict) -> None:
    nuts, fast, q, ag = res["paper_nuts_one_core"], res["fast_one_core"], res["ratio"], res["agreement"]
    print(
        f"\npaper NUTS ({nuts['num_warmup']} + {nuts['num_samples']}, {nuts['label']}): "
        f"{nuts['s_per_star']:.1f} s/star/core ({nuts['post_compile_s_per_star']:.1f} s after compilation; CPU "
        f"{nuts['cpu_s_per_star']:.1f} s/star)"
    )
    print(
        f"fast path: {fast['s_per_star'] * 1e3:.2f} ms/star/core (CPU {fast['cpu_s_per_star'] * 1e3:.2f} ms/star; "
        f"{fast['n_timed']} stars)"
    )
    ref = res["reference_nuts_one_core"]
    print(
        f"NUTS in photometric coordinates (the reference): {ref['s_per_star']:.1f} s/star/core "
        f"({ref['post_compile_s_per_star']:.1f} s after compilation)"
    )
    verdict = "meets" if q["meets_goal"] else "does NOT meet"
    print(
        f"ratio: {q['paper_nuts_over_fast_per_core']:,.0f}× (goal ≥ {q['goal']:,.0f}×: {verdict}); "
        f"post-compile NUTS only: {q['post_compile_nuts_over_fast_per_core']:,.0f}×; by CPU time: "
        f"{q['cpu_time_nuts_over_fast']:,.0f}×"
    )
    for r in ag["stars"]:
        print(
            f"  star {r['row']}: E Δmean/σ {r['ebv_dmean_over_std']:+.3f}, σ ratio {r['ebv_std_ratio']:.3f}; "
            f"d Δmean/σ {r['distance_dmean_over_std']:+.3f}, σ ratio {r['distance_std_ratio']:.3f} "
            f"(NUTS MCSE/σ {r['ebv_mcse_over_std']:.3f}, {r['distance_mcse_over_std']:.3f}; fast flags "
            f"{r['fast_flags']})"
        )
    print(
        f"agreement goal (|Δmean| < 0.1σ, std within 10 %) against the reference: "
        f"{'met' if ag['meets_goal'] else 'NOT met'}; against the paper-coordinate NUTS: "
        f"{'met' if res['agreement_paper_coordinates']['meets_goal'] else 'NOT met'}"
    )
    for b in res["training"]["batches"]:
        print(f"training: batch {b['batch']}: {b['stars_per_s']:,.0f} stars/s ({b['step_s_mean']:.2f} s/step)")


if __name__ == "__main__":
    main()
