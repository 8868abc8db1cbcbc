"""Pieces every model's command line shares: error handling, JSON output, loss plots, progress bars, column probes.

Each model's ``cli.py`` (``jaxstars cmd …``, ``jaxstars flower …``, …) builds its sub-commands on these so that all
commands fail the same way on bad input (one ``jaxstars GROUP NAME: error: …`` line on stderr, exit code 2; set
``JAXSTARS_DEBUG=1`` for the traceback) and write the same kind of JSON.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CommandError",
    "arguments_json",
    "command_group",
    "guarded",
    "jsonable",
    "no_subcommand",
    "plot_loss",
    "probe_canonical",
    "progress_bar",
    "require_file",
]


class CommandError(Exception):
    """Bad command-line input (a missing column, conflicting options …); reported as one line, exit code 2."""


def no_subcommand(parser: argparse.ArgumentParser) -> int:
    """What a command group does when called without a sub-command: print its help, exit code 2."""
    parser.print_help()
    return 2


def command_group(subparsers, name: str, *, help: str, description: str):
    """A ``jaxstars NAME`` command group: its parser (help and exit code 2 without a sub-command) and the
    sub-parsers object its sub-commands are added to (``dest="NAME_command"``)."""
    parser = subparsers.add_parser(name, help=help, description=description)
    parser.set_defaults(func=lambda args: no_subcommand(parser))
    return parser, parser.add_subparsers(dest=f"{name}_command")


def guarded(prefix: str, command, args: argparse.Namespace) -> int:
    """Run ``command(args)``; input errors become ``PREFIX: error: …`` on stderr and exit code 2.

    Input errors are :class:`CommandError` and its subclasses, corrupt model files, missing catalogue columns,
    missing or existing files, unreadable catalogues and bad option values (``ValueError``, ``OSError``,
    ``ImportError``). ``JAXSTARS_DEBUG`` set in the environment re-raises them instead.
    """
    from jaxstars.astro.schema import MissingColumnsError
    from jaxstars.flows.io import FlowFileError

    try:
        return command(args)
    except (CommandError, FlowFileError, MissingColumnsError, FileNotFoundError, FileExistsError) as err:
        if os.environ.get("JAXSTARS_DEBUG"):
            raise
        message = str(err)
    except (ValueError, OSError, ImportError) as err:
        if os.environ.get("JAXSTARS_DEBUG"):
            raise
        message = f"{type(err).__name__}: {err}"
    print(f"{prefix}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def require_file(path: str | os.PathLike, what: str) -> Path:
    """``Path(path)``, or ``FileNotFoundError("{what} {path} not found")``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} not found")
    return path


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars/arrays to Python, non-finite floats to None, Paths to strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, (str, type(None))):
        return value
    return str(value)


def arguments_json(args: argparse.Namespace) -> dict:
    """The parsed command-line arguments as JSON values (for the provenance block of an output file)."""
    return jsonable({k: v for k, v in vars(args).items() if k != "func"})


def plot_loss(train_loss, val_loss, best_epoch: int, path: Path, *, ylabel: str, title: str) -> Path:
    """Training and validation loss per epoch with the best epoch marked; saved to ``path`` (no global backend)."""
    from matplotlib.figure import Figure

    train_loss, val_loss = np.asarray(train_loss), np.asarray(val_loss)
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    ax.plot(np.arange(1, len(train_loss) + 1), train_loss, "o-", ms=3, label="training")
    if len(val_loss):
        ax.plot(np.arange(1, len(val_loss) + 1), val_loss, "s-", ms=3, label="validation")
    if 0 <= best_epoch < len(train_loss):
        ax.axvline(best_epoch + 1, color="0.5", ls=":", label=f"best epoch ({best_epoch + 1})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def progress_bar(total: int | None, quiet: bool, desc: str, unit: str = "stars"):
    """A tqdm bar on stderr (disabled with ``quiet``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=quiet, file=sys.stderr, leave=False)


def probe_canonical(raw):
    """The canonical mapping of a one-row copy of ``raw`` with every numeric column set to a valid-looking value.

    A canonical column that is still NaN has no source column under any name
    :func:`~jaxstars.astro.catalog_io.to_canonical` accepts. (Checking the data instead would confuse a missing
    column with a block of stars that happen to lack a value.)
    """
    from astropy.table import Table

    from jaxstars.astro.catalog_io import to_canonical

    probe = Table()
    for name in raw.colnames:
        col = raw[name]
        kind = col.dtype.kind
        shape = (1,) + tuple(col.shape[1:])
        if kind == "f":
            values = np.full(shape, 10.0, dtype=col.dtype)
        elif kind in "iu":
            values = np.ones(shape, dtype=col.dtype)
        elif kind == "b":
            values = np.zeros(shape, dtype=bool)
        else:
            values = np.zeros(shape, dtype=col.dtype)
        probe[name] = values
        probe[name].unit = getattr(col, "unit", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return to_canonical(probe)
