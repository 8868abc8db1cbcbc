"""``jaxstars simulate``: write a simulated Gaia-like catalogue with known truth.

Example::

    jaxstars simulate --mode galaxy --n 100000 --seed 0 -o out.parquet
    jaxstars simulate --mode galaxy --n 50000 --field 30 45 5 --field 120 -30 3 --mag-limit 19 -o fields.fits
    jaxstars simulate --mode cluster --n 20000 --n-members 800 -o m67.parquet
    jaxstars simulate --mode cranmer --n 1000000 -o cranmer.parquet

The output format follows the file suffix (``.parquet``, ``.fits``, ``.csv``, ``.ecsv``, ``.h5``, ``.vot``) or
``--format``. The table is in the canonical schema plus ``missing_bands`` and ``true_*`` columns (see
:mod:`jaxstars.astro.simulate`); read it back with :func:`jaxstars.astro.simulate.read_simulation`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["add_simulate_arguments", "run_simulate_command", "simulate_command"]


def _limit(text: str) -> float | None:
    if text.lower() in ("none", "off", "no"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a magnitude or 'none', got {text!r}") from None


def add_simulate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``simulate`` sub-command's arguments to ``parser`` and set ``func`` to :func:`simulate_command`."""
    parser.add_argument(
        "--mode",
        choices=("galaxy", "cranmer", "cluster"),
        default="galaxy",
        help="galaxy (default), cranmer (Cranmer et al. 2019 §4.1) or cluster (M67-like in its field)",
    )
    parser.add_argument("--n", type=int, default=100_000, help="number of catalogued stars (default: %(default)s)")
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; same seed, same table (default: %(default)s)"
    )
    parser.add_argument("-o", "--output", required=True, help="output file; format from the suffix or --format")
    parser.add_argument("--format", default=None, help="parquet, fits, csv, ecsv, hdf5 or votable")
    parser.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    parser.add_argument("--mag-limit", type=_limit, default=argparse.SUPPRESS,
                        help="keep stars with observed G below this ('none': no limit; default 20 for galaxy/cluster, "
                             "none for cranmer)")  # fmt: skip
    parser.add_argument(
        "--field",
        nargs=3,
        type=float,
        action="append",
        metavar=("L", "B", "RADIUS"),
        help="galaxy/cranmer: a sky cap in degrees (repeatable; default: all sky)",
    )
    parser.add_argument(
        "--dust-map", default=None, help="3D dust map (default: exponential_disk; cranmer: cranmer_gaussian)"
    )
    parser.add_argument(
        "--law",
        default="zhang_yuan",
        choices=("zhang_yuan", "blackbody"),
        help="extinction law for galaxy/cluster (default: %(default)s)",
    )
    parser.add_argument(
        "--zero-point",
        type=float,
        default=None,
        help="parallax zero-point zp in mas, parallax = 1000/d + zp + noise (default -0.017)",
    )
    parser.add_argument(
        "--photometric-noise",
        choices=("on", "off"),
        default=None,
        help="scatter magnitudes by their errors (default: on; cranmer: off, as in the paper)",
    )
    parser.add_argument("--n-members", type=int, default=500, help="cluster members (cluster mode; default 500)")
    parser.add_argument(
        "--field-radius",
        type=float,
        default=1.0,
        help="cluster mode: radius in degrees of the field around the cluster (default 1)",
    )
    parser.set_defaults(func=simulate_command)
    return parser


def run_simulate_command(args: argparse.Namespace) -> dict:
    """Simulate and write the catalogue described by parsed arguments; returns a summary dict."""
    from jaxstars.astro.catalog_io import _format_of, write_catalog
    from jaxstars.astro.simulate import simulate

    output = Path(args.output)
    _format_of(output, args.format)  # fail on an unknown format before simulating
    if output.exists() and not args.overwrite:
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it")
    if args.n < 0:
        raise ValueError(f"--n must be non-negative, got {args.n}")
    options: dict = {}
    if hasattr(args, "mag_limit"):
        options["mag_limit"] = args.mag_limit
    if args.mode in ("galaxy", "cranmer") and args.field:
        options["fields"] = [tuple(f) for f in args.field]
    if args.mode == "cluster":
        if args.field:
            raise ValueError("--field is for the galaxy and cranmer modes; cluster mode uses --field-radius")
        options["n_members"] = args.n_members
        options["field_radius_deg"] = args.field_radius
    if args.dust_map is not None:
        options["dust_map"] = args.dust_map
    if args.photometric_noise is not None:
        options["photometric_noise"] = args.photometric_noise == "on"
    if args.mode == "cranmer":
        if args.law != "zhang_yuan" or args.zero_point is not None:
            raise ValueError(
                "cranmer mode uses Cranmer's fixed coefficients and no zero-point: drop --law/--zero-point"
            )
    else:
        options["law"] = args.law
        if args.zero_point is not None:
            options["parallax_zero_point"] = args.zero_point
    start = time.perf_counter()
    table = simulate(args.n, args.mode, args.seed, **options)
    elapsed = time.perf_counter() - start
    output.parent.mkdir(parents=True, exist_ok=True)
    write_catalog(table, output, format=args.format, overwrite=args.overwrite)
    return {
        "mode": args.mode,
        "n": len(table),
        "seconds": elapsed,
        "output": str(output),
        "meta": dict(table.meta),
    }


def simulate_command(args: argparse.Namespace) -> int:
    """Run :func:`run_simulate_command`; print a summary, or a clear error and return exit code 2."""
    try:
        summary = run_simulate_command(args)
    except (FileExistsError, FileNotFoundError, ImportError, KeyError, ValueError, TypeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"jaxstars simulate: error: {message}", file=sys.stderr)
        return 2
    print(f"jaxstars simulate: {summary['n']} stars ({summary['mode']} mode) in {summary['seconds']:.1f} s; "
          f"wrote {summary['output']}")  # fmt: skip
    return 0
