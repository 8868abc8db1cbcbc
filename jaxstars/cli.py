"""The ``jaxstars`` command line: one sub-command per job."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxstars", description=__doc__)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    from jaxstars.quickstart import add_quickstart_arguments

    add_quickstart_arguments(
        sub.add_parser(
            "quickstart",
            help="the main job on a simulated Gaia-like catalog: train a CMD flow, infer distances and dust, "
            "write Parquet + figures + summary (offline, a few minutes)",
        )
    )
    from jaxstars.astro.dust_cli import add_dust_arguments

    add_dust_arguments(sub.add_parser("dust", help="add dust reddening (mean, std) columns to a table"))
    from jaxstars.astro.simulate_cli import add_simulate_arguments

    add_simulate_arguments(sub.add_parser("simulate", help="write a simulated Gaia-like catalog with known truth"))
    from jaxstars.infer import add_infer_arguments

    add_infer_arguments(
        sub.add_parser(
            "infer",
            help="per-star inference with a saved model over a whole catalog (streamed, resumable, Dask-ready)",
        )
    )
    from jaxstars.models.cmd.cli import add_cmd_arguments

    add_cmd_arguments(sub)
    from jaxstars.models.flower.cli import add_flower_arguments

    add_flower_arguments(sub)
    from jaxstars.models.stellar.cli import add_stellar_arguments

    add_stellar_arguments(sub)
    from jaxstars.models.spectrophot.cli import add_spectrophot_arguments

    add_spectrophot_arguments(sub)
    from jaxstars.models.galaxyflow.cli import add_galaxyflow_arguments

    add_galaxyflow_arguments(sub)
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
