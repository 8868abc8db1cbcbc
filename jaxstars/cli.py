"""The ``jaxstars`` command line: one sub-command per job."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def quickstart(args: argparse.Namespace) -> int:
    """Train a small MAF on the built-in toy colour–magnitude diagram, sample it, save model and a PNG."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from jaxstars.flows import Flow, maf
    from jaxstars.flows.io import save_flow
    from jaxstars.flows.train import fit
    from jaxstars.plotting import plot_density_comparison
    from jaxstars.toy import toy_cmd

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.PRNGKey(args.seed)
    k_data, k_fit, k_sample = jax.random.split(key, 3)
    data = toy_cmd(k_data, args.n_stars)
    shift, scale = data.mean(0), data.std(0)
    flow = Flow(maf(2, args.blocks, args.hidden, activation="tanh"))
    print(f"jaxstars quickstart: fitting a MAF ({args.blocks} blocks × {args.hidden}) to {args.n_stars} toy CMD stars")
    start = time.perf_counter()
    steps = args.epochs * max(1, int(0.9 * args.n_stars) // 1024)
    result = fit(flow, (data - shift) / scale, key=k_fit, epochs=args.epochs, batch_size=1024,
                 learning_rate=optax.cosine_decay_schedule(3e-3, steps), patience=15, progress=True)
    elapsed = time.perf_counter() - start
    samples = flow.sample(result.params, k_sample, (args.n_stars,)) * scale + shift
    best_val = float(result.val_loss[result.best_epoch]) + float(jnp.log(scale).sum())
    print(f"  trained {result.epochs_run} epochs in {elapsed:.1f} s; best validation NLL {best_val:.3f} nats/star")

    model_path = out / "toy_cmd_flow.npz"
    save_flow(model_path, flow, result.params, metadata={"shift": np.asarray(shift).tolist(),
                                                          "scale": np.asarray(scale).tolist()})

    def log_density(points):
        return flow.log_prob(result.params, (points - shift) / scale) - jnp.log(scale).sum()

    png = out / "toy_cmd_flow.png"
    plot_density_comparison(np.asarray(data), np.asarray(samples), log_density, png,
                            labels=("BP − RP [mag]", "M_G [mag]"), invert_y=True)
    print(f"  wrote {model_path} and {png}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxstars", description=__doc__)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    qs = sub.add_parser("quickstart", help="train and sample a small flow on the built-in toy CMD; write a PNG")
    qs.add_argument("--out", default="jaxstars_quickstart", help="output folder (default: %(default)s)")
    qs.add_argument("--n-stars", type=int, default=20000)
    qs.add_argument("--epochs", type=int, default=60)
    qs.add_argument("--blocks", type=int, default=5)
    qs.add_argument("--hidden", type=int, default=64)
    qs.add_argument("--seed", type=int, default=0)
    qs.set_defaults(func=quickstart)
    from jaxstars.astro.dust_cli import add_dust_arguments

    add_dust_arguments(sub.add_parser("dust", help="add dust reddening (mean, std) columns to a table"))
    from jaxstars.astro.simulate_cli import add_simulate_arguments

    add_simulate_arguments(sub.add_parser("simulate", help="write a simulated Gaia-like catalog with known truth"))
    from jaxstars.models.cmd.cli import add_cmd_arguments

    add_cmd_arguments(sub)
    args = parser.parse_args(argv)
    if args.version:
        from jaxstars import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
