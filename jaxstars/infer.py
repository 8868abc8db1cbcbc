"""``jaxstars infer MODEL CATALOG -o OUT``: per-star inference with any saved jaxstars model, over a whole catalog.

The command finds what kind of model ``MODEL`` is (a folder or file written by a model's ``train`` command), builds
that model's chunk processor and streams the catalog through :func:`jaxstars.catalog.run_catalog`: in chunks,
resumable after an interruption (rerun the same command), bad rows flagged with NaN results, a progress bar with
stars/s and ETA, a summary of the flags at the end, and optionally on Dask workers.

Examples::

    jaxstars infer cmd_model gaia.parquet -o distances.parquet
    jaxstars infer cmd_model gaia.parquet -o distances.parquet --method nuts --num-chains 2 --samples 100
    jaxstars infer cmd_model gaia_hats/ -o distances.parquet --dask 8          # a HATS catalog, 8 local workers
    jaxstars infer cmd_model gaia.parquet -o distances.parquet --scheduler tcp://head-node:8786
    jaxstars infer flower_model gaia_ps1.parquet -o dust.parquet                  # FLOWER E(B-V) and distance

Model kinds register here (:data:`MODEL_KINDS`): each one tells whether a path holds its model, adds its own
options to the command line, and builds an :class:`InferenceJob` (a :class:`~jaxstars.catalog.ChunkProcessor` plus
what the runner needs to know) from the parsed options.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from jaxstars.cli_support import CommandError, guarded

__all__ = ["MODEL_KINDS", "InferError", "InferenceJob", "ModelKind", "add_infer_arguments", "run_inference"]


class InferError(CommandError):
    """An input problem reported by ``jaxstars infer`` as a one-line message (exit code 2).

    Model kinds raise it (or a subclass, e.g. :class:`~jaxstars.models.cmd.cli.CMDCommandError`) for bad options
    and catalogs.
    """


@dataclasses.dataclass
class InferenceJob:
    """What :func:`run_inference` needs to run one model over a catalog.

    Attributes
    ----------
    processor : callable
        ``processor(table, row_ids) -> columns`` (a picklable :class:`~jaxstars.catalog.ChunkProcessor` for Dask).
    config : dict
        JSON-able settings the results depend on (stored in the run manifest; a resume must match).
    flag_names : callable
        ``flag_names(value) -> names`` of the bits of the ``flags`` column.
    flag_bits : mapping of str to int
        Every flag name and its bit, for the summary.
    result_column : str
        The column counted as "has a result" in the summary (finite values).
    keep_columns : tuple of str
        Input columns copied to the output.
    read_options : dict, optional
        Passed to the catalog reader (e.g. ``{"extra_columns": [...]}``).
    describe : str
        One line describing the settings, printed at the end.
    """

    processor: Callable
    config: dict
    flag_names: Callable[[int], Iterable[str]]
    flag_bits: Mapping[str, int]
    result_column: str
    keep_columns: tuple = ("source_id",)
    read_options: dict | None = None
    describe: str = ""


@dataclasses.dataclass(frozen=True)
class ModelKind:
    """A kind of saved model ``jaxstars infer`` can run.

    Attributes
    ----------
    name : str
        Short name (shown in ``--help`` and messages).
    summary : str
        What the model infers, one line.
    entry : str
        ``"module:function"`` returning ``(detect, add_arguments, build)``: ``detect(path) -> bool`` tells whether
        ``path`` holds this kind of model; ``add_arguments(group)`` adds the kind's options; ``build(path, args,
        catalog) -> InferenceJob`` checks the catalog and builds the job.
    """

    name: str
    summary: str
    entry: str

    def hooks(self):
        """The kind's ``(detect, add_arguments, build)`` functions (imported on first use)."""
        module, _, function = self.entry.partition(":")
        return getattr(importlib.import_module(module), function)()


#: The model kinds ``jaxstars infer`` knows, in detection order.
MODEL_KINDS = (
    ModelKind(
        "cmd",
        "Cranmer et al. colour–magnitude flow: distance posteriors (grid or NUTS) with dust",
        "jaxstars.models.cmd.cli:inference_hooks",
    ),
    ModelKind(
        "flower",
        "FLOWER (O'Callaghan et al.) zero-extinction flow: E(B-V) and distance posteriors (fast path or NUTS)",
        "jaxstars.models.flower.cli:inference_hooks",
    ),
)


def detect_kind(path: Path) -> ModelKind:
    """The kind of the model at ``path``; :class:`InferError` naming the known kinds if none matches."""
    if not path.exists():
        raise InferError(f"model {path} not found")
    for kind in MODEL_KINDS:
        detect, _, _ = kind.hooks()
        if detect(path):
            return kind
    known = ", ".join(f"{k.name} ({k.summary})" for k in MODEL_KINDS)
    raise InferError(f"{path} is not a saved jaxstars model of a known kind; known kinds: {known}")


def add_infer_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of ``jaxstars infer`` (common ones, the NUTS engine's, then each model kind's)."""
    parser.description = __doc__.split("\n\n")[0] + (
        "\n\nModel kinds: " + "; ".join(f"{k.name}: {k.summary}" for k in MODEL_KINDS)
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  jaxstars infer cmd_model gaia.parquet -o distances.parquet\n"
        "  jaxstars infer cmd_model gaia.parquet -o out.parquet --method nuts --num-chains 2 --samples 100\n"
        "  jaxstars infer cmd_model gaia_hats/ -o out.parquet --dask 4\n"
        "  jaxstars infer flower_model gaia_ps1.parquet -o dust.parquet   (FLOWER: E(B-V) and distance)\n"
        "An interrupted run resumes when the same command is run again (finished chunks are kept in OUT.parts/)."
    )
    parser.add_argument("model", help="saved model: the folder (or model file) written by a model's train command")
    parser.add_argument("catalog", help="input catalog: Parquet, FITS, CSV/ECSV, HDF5, VOTable, or a HATS folder")
    parser.add_argument("-o", "--out", required=True, help="output table (Parquet recommended: streamed)")
    parser.add_argument(
        "--method",
        choices=("grid", "nuts"),
        default="grid",
        help="'grid': the model's fast vectorised posterior (default); 'nuts': per-star NUTS, vmapped over stars",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed → same output (default: 0)")
    parser.add_argument("--samples", type=int, default=0, help="posterior draws per star to write (default: 0)")
    parser.add_argument("--chunk-rows", type=int, default=50_000, help="rows per chunk (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="start again, replacing OUT and OUT.parts/")
    parser.add_argument("--keep-parts", action="store_true", help="keep OUT.parts/ after the merge")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    scale = parser.add_argument_group("scale-out (Dask)")
    scale.add_argument(
        "--dask", type=int, default=None, metavar="N", help="run chunks on a local cluster of N workers"
    )
    scale.add_argument(
        "--scheduler", default=None, metavar="ADDRESS", help="run chunks on an existing Dask cluster"
    )
    nuts = parser.add_argument_group("NUTS (--method nuts)")
    nuts.add_argument("--num-warmup", type=int, default=500, help="warm-up iterations per chain (default: 500)")
    nuts.add_argument("--num-draws", type=int, default=1000, help="kept draws per chain (default: 1000)")
    nuts.add_argument("--num-chains", type=int, default=1, help="chains per star (R-hat needs >= 2; default: 1)")
    nuts.add_argument("--target-accept", type=float, default=0.8, help="step-size target (default: 0.8)")
    nuts.add_argument("--batch-size", type=int, default=64, help="stars vmapped together (default: 64)")
    for kind in MODEL_KINDS:
        _, add_arguments, _ = kind.hooks()
        add_arguments(parser.add_argument_group(f"{kind.name} models ({kind.summary})"))
    parser.set_defaults(func=lambda args: guarded("jaxstars infer", _infer, args))
    return parser


def nuts_settings(args: argparse.Namespace) -> dict:
    """The :class:`~jaxstars.inference.NUTSConfig` fields given on the command line."""
    return {
        "num_warmup": args.num_warmup,
        "num_samples": args.num_draws,
        "num_chains": args.num_chains,
        "target_accept_prob": args.target_accept,
        "batch_size": args.batch_size,
    }


def _infer(args: argparse.Namespace) -> int:
    model_path = Path(args.model)
    catalog = Path(args.catalog)
    if not catalog.exists():
        raise InferError(f"catalog {catalog} not found")
    if Path(args.out).resolve() == catalog.resolve():
        raise InferError("--out must differ from the catalog")
    if args.chunk_rows < 1:
        raise InferError("--chunk-rows must be at least 1")
    if args.samples < 0:
        raise InferError("--samples must be >= 0")
    if args.dask is not None and args.scheduler is not None:
        raise InferError("give either --dask N or --scheduler ADDRESS, not both")
    if args.dask is not None and args.dask < 1:
        raise InferError("--dask needs at least 1 worker")
    kind = detect_kind(model_path)
    _, _, build = kind.hooks()
    job = build(model_path, args, catalog)
    job.config = {"command": "jaxstars infer", "kind": kind.name, **job.config}
    return run_inference(job, catalog, Path(args.out), args, command="jaxstars infer")


def run_inference(job: InferenceJob, catalog: Path, out: Path, args: argparse.Namespace, *, command: str) -> int:
    """Run ``job`` over ``catalog`` into ``out`` with the runner, then print a summary (stars/s, flags)."""
    from jaxstars.catalog import run_catalog

    dask: Any = args.scheduler if getattr(args, "scheduler", None) else getattr(args, "dask", None)
    summary = run_catalog(
        catalog,
        out,
        job.processor,
        chunk_rows=args.chunk_rows,
        config=job.config,
        keep_columns=job.keep_columns,
        progress=not args.quiet,
        overwrite=args.overwrite,
        label="stars",
        flag_names=job.flag_names,
        keep_parts=args.keep_parts,
        write_row_id=False,
        read_options=job.read_options,
        dask=dask,
    )
    n_rows = summary.n_rows
    n_result = summary.finite_counts.get(job.result_column, 0)
    if summary.already_complete:
        print(f"{command}: {out} already holds these {n_rows} stars (same catalog and settings)")
    else:
        resumed = (
            f" ({summary.n_rows_processed} computed now, {summary.n_resumed_chunks} of {summary.n_chunks} chunks "
            f"resumed from {out}.parts/)"
            if summary.n_resumed_chunks
            else ""
        )
        print(
            f"{command}: {n_rows} stars{resumed} in {summary.seconds:.1f} s "
            f"({summary.rows_per_second:.0f} stars/s){', ' + job.describe if job.describe else ''}; wrote {out}"
        )
    print(f"  {n_result} with a result, {n_rows - n_result} without (NaN results; see flags)")
    counts = summary.flag_counts or {}
    flagged = ", ".join(f"{name} {counts[name]}" for name in job.flag_bits if counts.get(name))
    print(f"  flags: {flagged or 'none'}")
    return 0
