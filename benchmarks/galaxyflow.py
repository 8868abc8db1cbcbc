"""GalaxyFlow speed: CNF vs MAF training steps/s and upsampling samples/s; EnBiD tree build and sampling.

Run ``python -m benchmarks.galaxyflow [--quick]``.  Measures, in one process:

* training steps/s (Adam on the negative log-likelihood, one minibatch per step) and points/s for the paper's CNF
  (MLP 4 × 32 GELU, RK4 with 20 steps, exact trace) and the MAF upsampler (5 MADE blocks × 64, BatchNorm) at
  dim 3 (``p(r)``) and 3 + 3 (``p(v | r)``, the 3-D velocity conditioned on 3 position inputs);
* sampling samples/s of the same flows;
* the EnBiD partition of 200,000 6-D mock particles and its Gaussian upsampling (10 stars per particle).

Compilation is excluded (each function is run once before timing).  Writes ``benchmarks/results/galaxyflow.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxstars.flows import Flow, cnf, maf
from jaxstars.models.galaxyflow import enbid_partition, enbid_sample, generate_particles

RESULTS = Path(__file__).resolve().parent / "results" / "galaxyflow.json"


def _time(fn, reps):
    jax.block_until_ready(fn())  # compile + warm up
    t = time.perf_counter()
    for _ in range(reps):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - t) / reps


def bench_flow(flow: Flow, batch: int, n_sample: int, reps: int) -> dict:
    key = jax.random.key(0)
    params = flow.init(key)
    x = jax.random.normal(jax.random.key(1), (batch, 3))
    ctx = jax.random.normal(jax.random.key(2), (batch, 3)) if flow.context_dim else None
    opt = optax.adam(1e-3)
    state = opt.init(params)

    @jax.jit
    def step(p, s):
        def loss(q):
            lp, new = flow.log_prob_train(q, x, ctx)
            return -jnp.mean(lp), new

        (value, new_p), grads = jax.value_and_grad(loss, has_aux=True)(p)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(new_p, updates), s, value

    holder = {"p": params, "s": state}

    def one_step():
        holder["p"], holder["s"], value = step(holder["p"], holder["s"])
        return value

    t_step = _time(one_step, reps)
    sample_ctx = jax.random.normal(jax.random.key(3), (n_sample, 3)) if flow.context_dim else None
    sample = jax.jit(lambda k: flow.sample(params, k, () if sample_ctx is not None else (n_sample,), sample_ctx))
    t_sample = _time(lambda: sample(jax.random.key(4)), max(1, reps // 2))
    return {
        "batch": batch,
        "train_step_s": t_step,
        "train_steps_per_s": 1.0 / t_step,
        "train_points_per_s": batch / t_step,
        "samples_per_s": n_sample / t_sample,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller batches and fewer repetitions")
    args = parser.parse_args(argv)
    t0 = time.time()
    batch, n_sample, reps = (512, 8192, 3) if args.quick else (2048, 65536, 5)
    n_particles = 20_000 if args.quick else 200_000
    results = {}
    for label, ctx in [("dim 3 (positions)", 0), ("dim 3+3 (velocities | positions)", 3)]:
        for name, flow in [
            ("CNF", Flow(cnf(3, ctx))),
            ("MAF", Flow(maf(3, n_blocks=5, hidden=64, context_dim=ctx))),
        ]:
            row = bench_flow(flow, batch, n_sample, reps)
            results[f"{name} {label}"] = row
            print(
                f"{name:4s} {label:34s} {row['train_steps_per_s']:8.2f} steps/s ({row['train_points_per_s']:9.0f} points/s), "
                f"{row['samples_per_s']:10.0f} samples/s",
                flush=True,
            )
    for label in ["dim 3 (positions)", "dim 3+3 (velocities | positions)"]:
        cnf_row, maf_row = results[f"CNF {label}"], results[f"MAF {label}"]
        results[f"CNF/MAF {label}"] = {
            "train_time_ratio": cnf_row["train_step_s"] / maf_row["train_step_s"],
            "sampling_speed_ratio": cnf_row["samples_per_s"] / maf_row["samples_per_s"],
        }
    particles = generate_particles(n_particles, seed=0)
    t = time.perf_counter()
    tree = enbid_partition(particles.phase_space)
    t_build = time.perf_counter() - t
    t = time.perf_counter()
    draws = enbid_sample(particles.phase_space, tree, np.random.default_rng(0), 10)
    t_draw = time.perf_counter() - t
    results["EnBiD"] = {
        "n_particles": n_particles,
        "tree_build_s": t_build,
        "levels": tree.n_levels,
        "sampling_s_10_per_particle": t_draw,
        "samples_per_s": len(draws) / t_draw,
    }
    print(
        f"EnBiD: {n_particles} particles, tree {t_build:.2f} s ({tree.n_levels} levels), "
        f"{len(draws) / t_draw:.0f} samples/s",
        flush=True,
    )
    meta = {
        "command": "python -m benchmarks.galaxyflow" + (" --quick" if args.quick else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "load_average": os.getloadavg(),
        "shared_machine": "other processes (concurrent helpers) were running; see the load averages",
        "total_seconds": time.time() - t0,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"wrote {RESULTS} ({meta['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
