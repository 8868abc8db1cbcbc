"""Flow-library benchmark: jaxstars vs flowjax, same architectures, batch 2048, in one process.

Cases (issue "Foundation", benchmark section):
  (a) MAF, dim 3, 8 layers x 256 hidden (two hidden layers per MADE, Reverse between layers; no BatchNorm, which
      flowjax lacks; the Cranmer block with BatchNorm is reported too);
  (b) conditional BNAF, dim 8 + context 2, depth 3, block 4, 2 layers;
  (c) CNF, dim 3 (no flowjax equivalent: absolute figures).

Both libraries are driven by the same code: one jit-compiled Adam step on ``-mean log_prob`` of a 2048 batch, and a
jit-compiled ``log_prob`` on 16,384 points.  Reported: compile time of the train step, train steps/s, log_prob
points/s, and jaxstars/flowjax ratios (> 1 means jaxstars is faster; for compile time < 1 means jaxstars compiles
faster).

Run: ``python -m benchmarks.flows [--quick]`` (needs the ``bench`` extra: ``pip install -e ".[bench]"``).
Writes ``benchmarks/results/flows.json``.
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

from jaxstars.flows import Flow, maf

BATCH = 2048
N_EVAL = 16384
RESULTS = Path(__file__).parent / "results" / "flows.json"


def _time_driver(loss_fn, log_prob_fn, params, x, ctx, n_steps, n_eval_repeats):
    """Compile + time a training step and a log_prob evaluation for any (params -> loss) pair."""
    opt = optax.adam(1e-3)
    state = opt.init(params)

    @jax.jit
    def step(params, state, x, ctx):
        value, grads = jax.value_and_grad(loss_fn)(params, x, ctx)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    xb, cb = x[:BATCH], (None if ctx is None else ctx[:BATCH])
    t0 = time.perf_counter()
    compiled = step.lower(params, state, xb, cb).compile()
    compile_s = time.perf_counter() - t0
    params, state, value = compiled(params, state, xb, cb)
    jax.block_until_ready(value)
    t0 = time.perf_counter()
    for i in range(n_steps):
        lo = (i * BATCH) % (x.shape[0] - BATCH)
        params, state, value = compiled(params, state, x[lo : lo + BATCH], None if ctx is None else ctx[lo : lo + BATCH])
    jax.block_until_ready(value)
    steps_per_s = n_steps / (time.perf_counter() - t0)

    lp = jax.jit(log_prob_fn)
    xe, ce = x[:N_EVAL], (None if ctx is None else ctx[:N_EVAL])
    jax.block_until_ready(lp(params, xe, ce))
    t0 = time.perf_counter()
    for _ in range(n_eval_repeats):
        out = lp(params, xe, ce)
    jax.block_until_ready(out)
    points_per_s = n_eval_repeats * N_EVAL / (time.perf_counter() - t0)
    assert bool(jnp.all(jnp.isfinite(out))), "non-finite log_prob in benchmark"
    return {"compile_s": compile_s, "train_steps_per_s": steps_per_s, "log_prob_points_per_s": points_per_s,
            "final_loss": float(value)}


def run_jaxstars(bijector, x, ctx, n_steps, n_eval_repeats, train_mode=False):
    flow = Flow(bijector)
    params = flow.init(jax.random.PRNGKey(0))

    def loss(p, x, c):
        if train_mode:
            return -flow.log_prob_train(p, x, c)[0].mean()
        return -flow.log_prob(p, x, c).mean()

    return _time_driver(loss, lambda p, x, c: flow.log_prob(p, x, c), params, x, ctx, n_steps, n_eval_repeats)


def run_flowjax(build, x, ctx, n_steps, n_eval_repeats):
    import equinox as eqx
    import paramax

    model = build(jax.random.PRNGKey(0))
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def log_prob(p, x, c):
        return paramax.unwrap(eqx.combine(p, static)).log_prob(x, condition=c)

    return _time_driver(lambda p, x, c: -log_prob(p, x, c).mean(), log_prob, params, x, ctx, n_steps,
                        n_eval_repeats)


def cases(quick: bool):
    from flowjax.distributions import Normal
    from flowjax.flows import block_neural_autoregressive_flow, masked_autoregressive_flow

    from jaxstars.flows import bnaf, cnf

    key = jax.random.PRNGKey(42)
    k1, k2, k3 = jax.random.split(key, 3)
    x3 = jax.random.normal(k1, (N_EVAL * 2, 3))
    x8 = jax.random.normal(k2, (N_EVAL * 2, 8))
    c2 = jax.random.normal(k3, (N_EVAL * 2, 2))
    steps = 20 if quick else 100
    reps = 3 if quick else 20
    yield (
        "a_maf_dim3_8x256",
        lambda: run_jaxstars(maf(3, 8, 256, batch_norm=False), x3, None, steps, reps),
        lambda: run_flowjax(
            lambda k: masked_autoregressive_flow(k, base_dist=Normal(jnp.zeros(3)), flow_layers=8, nn_width=256,
                                                 nn_depth=2),
            x3, None, steps, reps),
    )
    yield (
        "a_maf_dim3_8x256_with_batchnorm",
        lambda: run_jaxstars(maf(3, 8, 256, batch_norm=True), x3, None, steps, reps, train_mode=True),
        None,
    )
    yield (
        "b_bnaf_dim8_ctx2_depth3_block4_2layers",
        lambda: run_jaxstars(bnaf(8, 2, n_layers=2, depth=3, block_dim=4), x8, c2, steps, reps),
        lambda: run_flowjax(
            # jaxstars depth counts block-linear layers (3 = dim→4dim→4dim→dim, FLOWER's dim θ = 24 (…)²);
            # flowjax's nn_depth counts hidden layers, so the same network is nn_depth=2.
            lambda k: block_neural_autoregressive_flow(k, base_dist=Normal(jnp.zeros(8)), cond_dim=2, nn_depth=2,
                                                       nn_block_dim=4, flow_layers=2),
            x8, c2, steps, reps),
    )
    yield (
        "c_cnf_dim3",
        lambda: run_jaxstars(cnf(3), x3, None, max(3, steps // 10), max(1, reps // 5)),
        None,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer timed steps (smoke run)")
    args = parser.parse_args(argv)
    results = {}
    repeats = 1 if args.quick else 3
    for name, ours, theirs in cases(args.quick):
        # Alternate the two libraries `repeats` times and keep each one's median run, so that load changes on a
        # shared machine hit both sides alike.
        runs_j, runs_f = [], []
        for _ in range(repeats):
            runs_j.append(ours())
            if theirs is not None:
                runs_f.append(theirs())
        row = {"jaxstars": _median_run(runs_j), "repeats": repeats}
        if theirs is not None:
            row["flowjax"] = _median_run(runs_f)
            j, f = row["jaxstars"], row["flowjax"]
            row["ratio"] = {
                "train_steps_per_s": j["train_steps_per_s"] / f["train_steps_per_s"],
                "log_prob_points_per_s": j["log_prob_points_per_s"] / f["log_prob_points_per_s"],
                "compile_time": j["compile_s"] / f["compile_s"],
            }
        results[name] = row
        print_row(name, row)
    import flowjax

    meta = {
        "command": "python -m benchmarks.flows" + (" --quick" if args.quick else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "jax": jax.__version__,
        "flowjax": flowjax.__version__ if hasattr(flowjax, "__version__") else "unknown",
        "batch": BATCH,
        "eval_points": N_EVAL,
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"wrote {RESULTS}")


def _median_run(runs):
    """Per-metric median over repeated runs."""
    return {key: float(np.median([r[key] for r in runs])) for key in runs[0]}


def print_row(name, row):
    j = row["jaxstars"]
    line = (f"{name:42s} jaxstars: {j['train_steps_per_s']:8.1f} steps/s {j['log_prob_points_per_s']:12.0f} pts/s "
            f"compile {j['compile_s']:6.2f} s")
    print(line)
    if "flowjax" in row:
        f, r = row["flowjax"], row["ratio"]
        print(f"{'':42s} flowjax:  {f['train_steps_per_s']:8.1f} steps/s {f['log_prob_points_per_s']:12.0f} pts/s "
              f"compile {f['compile_s']:6.2f} s")
        print(f"{'':42s} ratio:    {r['train_steps_per_s']:8.2f}x train, {r['log_prob_points_per_s']:.2f}x log_prob, "
              f"{r['compile_time']:.2f}x compile time")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
