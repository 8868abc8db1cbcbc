"""Benchmark of the Green et al. stellar model: training iteration, covariance + χ² vs numpy, posteriors/s.

Run: ``python -m benchmarks.stellar [--quick]`` (needs the real-data folder ``green2020/``).

* one full training iteration (25 epochs at batch 1024 incl. the covariance, reddening and χ² updates) on the
  release's 8,000 stars (5,600 training stars), compile excluded (second iteration of a 2-iteration run);
* the per-star covariance (Eq. 4 with the network Jacobian) + Eq. 6 + χ² (Eq. 14) for all 8,000 stars: jaxstars
  (jit + vmap + jacfwd) vs a plain numpy/scipy implementation (analytic Jacobian by the chain rule, batched
  ``numpy.linalg`` Cholesky and triangular solves), same numbers checked to agree;
* photometric posteriors (Eq. 19, the default sampler of ``stellar_posteriors``: 4 dispersed chains × (250 warm-up
  + 200 draws), ridge parametrisation, minor-mode chains pruned) per second per core, compile excluded.

Writes ``benchmarks/results/stellar.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import CompileClock
from jaxstars.data import data_file
from jaxstars.models.stellar import (
    StellarTrainConfig,
    batch_chi2,
    batch_whitening,
    prepare_stars,
    read_release_catalog,
    released_model,
    star_arrays,
    stellar_posteriors,
    train_stellar,
)
from jaxstars.models.stellar.posterior import DEFAULT_NUTS

OUT = Path(__file__).resolve().parent / "results" / "stellar.json"


def numpy_chi2(model, stars, E, E_var):
    """Plain numpy: analytic network Jacobian, Eq. 4, Eq. 6, masked Cholesky, χ² (vectorised over stars)."""
    import scipy.linalg

    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), model.params)
    net = model.network
    x = (stars.theta - np.asarray(net.theta_median)) / np.asarray(net.theta_std)
    cov_n = stars.theta_cov / np.outer(net.theta_std, net.theta_std)
    h, jac = x, np.broadcast_to(np.eye(3), (len(x), 3, 3))  # d h / d θ
    for layer in p["hidden"]:
        s = 1.0 / (1.0 + np.exp(-(h @ layer["w"] + layer["b"])))
        jac = (s * (1 - s))[:, :, None] * np.einsum("ij,nik->njk", layer["w"], jac)
        h = s
    bm = h @ p["out"]["w"] + p["out"]["b"]
    j_bm = np.einsum("ij,nik->njk", p["out"]["w"], jac)
    B = net.B
    Binv = np.linalg.inv(B)
    r = np.exp(x @ p["R"]["w"] + p["R"]["b"])
    j_r = r[:, :, None] * p["R"]["w"].T[None]
    J = np.einsum("ij,njk->nik", Binv, j_bm) + E[:, None, None] * j_r
    cm = np.einsum("nik,nkl,njl->nij", J, cov_n, J)
    cm += E_var[:, None, None] * r[:, :, None] * r[:, None, :] + stars.mu_var[:, None, None]
    cm += np.einsum("ni,ij->nij", stars.mag_var, np.eye(len(B)))
    cc = np.einsum("ij,njk,lk->nil", B, cm, B)
    obs = stars.colour_obs
    mask = obs[:, :, None] & obs[:, None, :]
    cc = np.where(mask, cc, 0.0) + np.einsum("ni,ij->nij", (~obs).astype(float), np.eye(len(B)))
    pred = bm + (E[:, None] * r) @ B.T
    y = (stars.mag - stars.mu[:, None] * stars.plx_ok[:, None]) @ B.T
    d = np.where(obs, pred - y, 0.0)
    K = np.linalg.cholesky(cc)
    z = np.stack([scipy.linalg.solve_triangular(K[i], d[i], lower=True) for i in range(len(d))])
    return np.sum(z**2, axis=1)


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    table = read_release_catalog(data_file("green2020", "green2020_sample.h5"))
    stars = prepare_stars(table)
    model = released_model()
    repeats = 3 if args.quick else 5

    # covariance + χ² (8,000 stars)
    arrays = star_arrays(model.network, stars)
    E = jnp.asarray(stars.E0, jnp.float32)
    V = jnp.asarray(stars.E0_var, jnp.float32)

    def jax_chi2():
        W = batch_whitening(model.network, model.params, arrays, E, V)
        return np.asarray(batch_chi2(model.network, model.params, W, arrays, E))

    with CompileClock() as clock:
        ours = jax_chi2()
    compile_s = clock.seconds
    ref = numpy_chi2(model, stars, stars.E0, stars.E0_var)
    agree = float(np.max(np.abs(ours - ref)[stars.valid] / np.maximum(1.0, ref[stars.valid])))
    t_jax = best_of(jax_chi2, repeats)
    t_np = best_of(lambda: numpy_chi2(model, stars, stars.E0, stars.E0_var), repeats)

    # one training iteration (25 epochs, batch 1024)
    cfg = StellarTrainConfig(n_iterations=2, epochs=5 if args.quick else 25, batch_size=1024)
    result = train_stellar(stars, cfg, density=False)
    iteration_s = result.history[1]["seconds"]

    # posteriors per second per core
    n_post = 16 if args.quick else 64
    sub = stars.subset(np.arange(n_post))
    nuts = dataclasses.replace(DEFAULT_NUTS, batch_size=n_post)
    stellar_posteriors(model, sub, 0, config=nuts)  # compile
    t0 = time.perf_counter()
    stellar_posteriors(model, sub, 1, config=nuts)
    post_s = time.perf_counter() - t0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    out = {
        "meta": {
            "command": "python -m benchmarks.stellar" + (" --quick" if args.quick else ""),
            "machine": f"{platform.machine()} {platform.processor() or ''} {cores} cores (shared)".strip(),
            "jax": jax.__version__,
            "date": time.strftime("%Y-%m-%d"),
            "stars": len(stars),
        },
        "covariance_chi2": {
            "jaxstars_s": t_jax,
            "numpy_s": t_np,
            "speedup": t_np / t_jax,
            "compile_s": compile_s,
            "max_relative_difference": agree,
        },
        "training_iteration": {
            "seconds": iteration_s,
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "train_stars": int(result.model.info["n_train"]),
        },
        "posteriors": {
            "stars": n_post,
            "nuts": f"{nuts.num_chains} chains × ({nuts.num_warmup} warm-up + {nuts.num_samples} draws)",
            "seconds": post_s,
            "stars_per_second": n_post / post_s,
            "stars_per_second_per_core": n_post / post_s / cores,
        },
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1))
    print(f"covariance + χ², {len(stars)} stars: jaxstars {t_jax:.3f} s, numpy {t_np:.3f} s ({t_np / t_jax:.1f}×)")
    print(f"one training iteration ({cfg.epochs} epochs, batch 1024): {iteration_s:.2f} s")
    print(f"posteriors: {n_post / post_s:.2f} stars/s ({n_post / post_s / cores:.2f} per core)")


if __name__ == "__main__":
    main()
