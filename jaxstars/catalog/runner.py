"""Resumable chunked catalog runs: stream a catalog through a per-chunk function, survive being killed.

:func:`run_catalog` reads a catalog in blocks of ``chunk_rows`` rows (:func:`~jaxstars.catalog.stream.iter_chunks`
semantics: canonical schema, file order), calls ``process_chunk(table, row_ids)`` on each block and writes the
results of block ``k`` to ``<output>.parts/part-{k:06d}.parquet``. When every block is done the parts are merged, in
order, into the output file, and the work directory is removed.

Work directory and manifest
---------------------------
``<output>.parts/manifest.json`` records what the parts were computed from and which are finished::

    {"format": "jaxstars.catalog.run", "version": 1, "label": "stars",
     "input": {"path": "/abs/in.parquet", "size": 123456, "mtime_ns": 1700000000000000000, "n_rows": 1003},
     "layout": "rows", "chunk_rows": 200, "config_hash": "sha256:…", "config": {…}, "keep_columns": ["source_id"],
     "read_options": {}, "columns": ["row_id", "source_id", "x", …], "result_columns": ["x", …],
     "n_chunks": 6, "completed": [{"parts": [0, 3], "rows": [0, 800], "n_rows": 800}]}

``completed`` lists runs of consecutive finished parts: ``parts`` is the first and last part index (inclusive),
``rows`` the half-open range of input rows they hold and ``n_rows`` their row count. For a table file part ``k``
holds rows ``k*chunk_rows`` up to ``(k+1)*chunk_rows`` (the last part of the file fewer). For a HATS catalog
(``"layout": "hats"``) the chunks follow the HEALPix partitions — each partition, in canonical order, cut into
pieces of ``chunk_rows`` rows — so the chunk boundaries are derived from the partition row counts (Parquet
footers), which the input identity (total size, latest modification time) pins down. Runs keep the manifest a few
hundred bytes however many parts there are, so rewriting it after every part stays cheap at Gaia scale.

Crash safety
------------
Every file is written under a temporary name and moved into place with :func:`os.replace` (atomic on POSIX): a
part (by :class:`~jaxstars.catalog.stream.ParquetChunkWriter`), then the manifest (after the part), and the merged
output. Hence, wherever the process is killed, a rerun of the same call finds one of these states and ends with the
same output as an uninterrupted run:

* parts listed in the manifest are complete; they are reused after checking that the file exists and holds the
  recorded number of rows (a missing or damaged part is recomputed);
* a part file that is not in the manifest (killed between its rename and the manifest update) is recomputed and
  overwritten; so is a stale ``*.partial`` temporary;
* killed while merging: the parts are all listed, the merge is redone;
* killed after the output was moved into place but before the work directory was removed: the output is merged
  again from the parts (the manifest is deleted first, so the parts alone never count);
* killed after the manifest was deleted: the output is complete, and for a Parquet output the rerun recognises it
  from the run description stored in its metadata (``meta["jaxstars_run"]``) and returns at once
  (``RunSummary.already_complete``). A non-Parquet output cannot carry that description: the rerun then reports
  that the output exists.

A manifest whose input (path, size, modification time), ``chunk_rows``, ``config`` hash, ``keep_columns`` or
``read_options`` differ from the call raises :class:`RunMismatchError`: settings are never mixed. ``overwrite=True``
discards the work directory and starts again (the existing output is replaced at the end), so resuming needs
``overwrite=False``. Parts and the manifest are flushed to disk (``fsync``) before the manifest lists them. A lock
file in the work directory stops two processes from working on the same output at once (POSIX ``flock``,
released automatically when a process dies). Progress goes to a tqdm bar and to the ``jaxstars.catalog`` logger.

Failures in ``process_chunk``
-----------------------------
Bad rows are ``process_chunk``'s business (flag them, return NaN). If it raises, the run stops with
:class:`ChunkProcessingError`, whose message names the chunk and its row range and which chains the original
exception; the finished parts stay, so fixing the cause and rerunning resumes.

Dask
----
With ``dask=...`` the chunks are computed on Dask workers and everything above still holds: the calling process
writes every part and the manifest, in completion order (:mod:`jaxstars.catalog.distributed`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import hashlib
import json
import logging
import math
import os
import pickle
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Column, MaskedColumn, Table

from jaxstars.astro.catalog_io import _format_of, to_canonical

from .distributed import DaskSettings
from .stream import (
    ParquetChunkWriter,
    _block_refs,
    _BlockRef,
    _check_chunk_rows,
    _is_hats,
    _read_block,
    chunk_writer,
    count_rows,
    iter_raw_chunks,
    peek,
)

__all__ = ["ChunkProcessingError", "RunMismatchError", "RunSummary", "run_catalog"]

logger = logging.getLogger("jaxstars.catalog")

MANIFEST_FORMAT = "jaxstars.catalog.run"
MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"
OUTPUT_META_KEY = "jaxstars_run"
ROW_ID = "row_id"
_LOCK_NAME = ".lock"
_READ_OPTIONS = ("columns", "extra_columns", "format", "gaia_release", "gaia_zp_floor")
# settings that must agree between a manifest and the call that resumes it, with their names in messages
_SETTINGS = {
    "input": "input file (path, size, modification time)",
    "chunk_rows": "chunk_rows",
    "config_hash": "config",
    "keep_columns": "keep_columns",
    "read_options": "read_options",
}


class ChunkProcessingError(RuntimeError):
    """``process_chunk`` raised, or returned unusable results, for one chunk.

    Attributes
    ----------
    chunk : int
        Index of the chunk (its part file is ``part-{chunk:06d}.parquet``).
    start, stop : int
        The chunk's input rows, ``start <= row < stop`` (0-based).
    """

    def __init__(self, message: str, *, chunk: int, start: int, stop: int):
        super().__init__(message)
        self.chunk = chunk
        self.start = start
        self.stop = stop

    def __reduce__(self):
        # pickled on a Dask worker, rebuilt on the client: keep the attributes and the chained cause
        message = self.args[0] if self.args else ""
        return _rebuild_chunk_error, (
            type(self),
            message,
            self.chunk,
            self.start,
            self.stop,
            _portable(self.__cause__),
        )


def _portable(err: BaseException | None) -> BaseException | None:
    """``err`` if it pickles, else a ``RuntimeError`` carrying its type name and message."""
    if err is None:
        return None
    try:
        pickle.dumps(err)
    except Exception:  # noqa: BLE001 - whatever stops pickling, send a description instead
        return RuntimeError(f"{type(err).__name__}: {err}")
    return err


def _rebuild_chunk_error(cls, message, chunk, start, stop, cause):
    err = cls(message, chunk=chunk, start=start, stop=stop)
    err.__cause__ = cause
    return err


class RunMismatchError(FileExistsError):
    """The work directory (or the output) belongs to a run with another input or other settings."""


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What :func:`run_catalog` did.

    Attributes
    ----------
    n_rows : int
        Rows in the output (= rows of the input).
    n_chunks : int
        Chunks (part files) the input was cut into.
    n_resumed_chunks : int
        Chunks taken from an earlier, interrupted run instead of being computed.
    seconds : float
        Wall time of this call.
    rows_per_second : float
        ``n_rows_processed / seconds``: throughput of this call (0 when nothing was computed).
    output_path : pathlib.Path
        The merged output file.
    flag_counts : dict of str to int
        Rows with each flag set, over the whole output, when the results have an integer ``flags`` column and
        ``flag_names`` was given; otherwise empty.
    n_rows_processed : int
        Rows computed by this call (``n_rows`` minus the resumed ones).
    finite_counts : dict of str to int
        For every 1-D floating-point result column, the number of finite values in the output.
    work_dir : pathlib.Path or None
        The work directory if it was kept (``keep_parts=True``), else ``None``.
    already_complete : bool
        The output already held this exact run (nothing was computed or written).
    n_workers : int
        Dask worker threads the chunks were computed on (0: in this process).
    """

    n_rows: int
    n_chunks: int
    n_resumed_chunks: int
    seconds: float
    rows_per_second: float
    output_path: Path
    flag_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    n_rows_processed: int = 0
    finite_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    work_dir: Path | None = None
    already_complete: bool = False
    n_workers: int = 0


def run_catalog(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    process_chunk: Callable[[Table, np.ndarray], Mapping[str, Any] | Table],
    *,
    chunk_rows: int = 50_000,
    config: dict | None = None,
    keep_columns: Sequence[str] = ("source_id",),
    progress: bool = True,
    overwrite: bool = False,
    label: str = "stars",
    flag_names: Callable[[int], Iterable[str]] | None = None,
    keep_parts: bool = False,
    write_row_id: bool = True,
    read_options: Mapping[str, Any] | None = None,
    dask: DaskSettings | int | str | Any | None = None,
) -> RunSummary:
    """Run ``process_chunk`` over a catalog chunk by chunk, resumably, and merge the results into one file.

    Parameters
    ----------
    input_path : str or path-like
        Catalog file (Parquet, FITS, CSV/ECSV, HDF5, VOTable: anything :func:`~jaxstars.catalog.iter_chunks`
        reads) or HATS catalog directory (:mod:`jaxstars.catalog.hats`: the chunks follow its HEALPix partitions
        and ``row_id`` is the position in its canonical partition order). It must not change while a run (or
        its resumption) is in progress.
    output_path : str or path-like
        The merged result file, Parquet (recommended: streamed part by part, memory bounded by one part). Other
        suffixes are written with :func:`~jaxstars.catalog.chunk_writer` (CSV streams; FITS, HDF5, ECSV and
        VOTable hold the whole output in memory). The work directory is ``<output_path>.parts/``.
    process_chunk : callable
        ``process_chunk(table, row_ids)`` with ``table`` an astropy Table of one chunk in the canonical schema
        (:mod:`jaxstars.astro.schema`, plus ``read_options["extra_columns"]``) and ``row_ids`` the int64 global
        indices of its rows. Returns a mapping of column name to a 1-D or 2-D array-like (numpy, JAX, astropy
        ``Column`` or ``Quantity``: units and descriptions are kept) or an astropy Table, with one row per input
        row in the same order. Every chunk must return the same columns. It must be deterministic given the
        rows and their ``row_ids`` (e.g. seed random draws with the row ids) for a resumed run, or another
        ``chunk_rows``, to reproduce an uninterrupted one. With ``dask`` it must be picklable: see
        :class:`~jaxstars.catalog.ChunkProcessor` for model-backed processors.
    chunk_rows : int
        Rows per chunk (for a HATS catalog: at most, as a chunk never spans two partitions).
    config : dict, optional
        JSON-able settings of ``process_chunk`` (model file, prior, seed, …). Its hash is stored in the manifest;
        resuming with another config raises :class:`RunMismatchError`. Change it whenever the results would
        change.
    keep_columns : sequence of str
        Input columns copied into the output before the results (canonical names first, else input columns
        matched without regard to case); those absent from the input are skipped.
    progress : bool
        Show a tqdm progress bar (rows, rows/s, ETA) on stderr.
    overwrite : bool
        Discard an existing work directory and output and start again. Without it, a work directory from other
        settings raises :class:`RunMismatchError` and an existing output that is not this run's raises
        ``FileExistsError``.
    label : str
        What a row is ("stars"): the progress bar's unit and the wording of log messages.
    flag_names : callable, optional
        ``flag_names(value) -> names`` of the bits set in one ``flags`` value; with it, the summary counts the
        rows having each flag (over the whole output, resumed parts included).
    keep_parts : bool
        Keep the work directory (parts and manifest) after the merge; by default it is removed.
    write_row_id : bool
        Write the ``row_id`` column (0-based input row index, int64) into the output (parts always have it).
    read_options : mapping, optional
        Passed to the catalog reader: ``columns``, ``format`` (:func:`~jaxstars.catalog.iter_raw_chunks`),
        ``extra_columns``, ``gaia_release``, ``gaia_zp_floor`` (:func:`~jaxstars.astro.catalog_io.to_canonical`).
        Stored in the manifest like ``config``.
    dask : int, str, distributed.Client or DaskSettings, optional
        Compute the chunks on Dask workers (:mod:`jaxstars.catalog.distributed`): a number of local worker
        processes (a local cluster is started and closed), a scheduler address (``"tcp://host:8786"``), a
        client, or :class:`~jaxstars.catalog.DaskSettings`. This process still writes every part, the manifest
        and the output: results, resumption and the output file are the same as without Dask.

    Returns
    -------
    RunSummary

    Raises
    ------
    ChunkProcessingError
        ``process_chunk`` raised (chained as ``__cause__``) or returned unusable results; the message gives the
        chunk's row range. Finished chunks are kept for a rerun.
    RunMismatchError
        The work directory holds a run of another input or other settings (pass ``overwrite=True``).
    FileExistsError
        The output exists and is not this run's output (pass ``overwrite=True``).
    TypeError
        With ``dask``: ``process_chunk`` cannot be pickled.

    Notes
    -----
    The output has, in order: ``row_id`` (unless ``write_row_id=False``), the ``keep_columns`` found in the
    input, then the result columns. A Parquet output stores the run's description (input identity,
    ``chunk_rows``, ``config`` and its hash, …) in ``meta["jaxstars_run"]``, which ``Table.read`` restores.

    Examples
    --------
    >>> def inverse_parallax(table, row_ids):                              # doctest: +SKIP
    ...     return {"distance": 1000.0 / np.asarray(table["parallax"])}
    >>> summary = run_catalog("gaia.parquet", "distances.parquet", inverse_parallax,
    ...                       chunk_rows=100_000, config={"method": "inverse parallax"})

    The same on a local cluster of 4 worker processes, or on a running cluster::

        run_catalog("gaia.parquet", "distances.parquet", inverse_parallax, dask=4)
        run_catalog("gaia_hats/", "distances.parquet", inverse_parallax, dask="tcp://10.0.0.1:8786")
    """
    started = time.perf_counter()
    if not callable(process_chunk):
        raise TypeError("process_chunk must be callable as process_chunk(table, row_ids)")
    chunk_rows = _check_chunk_rows(chunk_rows)
    dask_settings = DaskSettings.coerce(dask)
    input_path = Path(input_path)
    output_path = Path(output_path)
    options = _normalise_read_options(read_options)
    hats = None
    if _is_hats(input_path, options.get("format")) and input_path.exists():
        from .hats import open_hats_catalog

        hats = open_hats_catalog(input_path)
    elif not input_path.is_file():
        raise FileNotFoundError(f"catalog {input_path} not found")
    if output_path.resolve() == input_path.resolve():
        raise ValueError("the output must be a different file from the input")
    out_format = _format_of(output_path, None)  # an unknown suffix fails now, not after the whole run
    if hats is None:
        _format_of(input_path, options.get("format"))
    keep = list(dict.fromkeys(str(c) for c in keep_columns))
    if ROW_ID in keep:
        raise ValueError(f"{ROW_ID!r} is always written; do not list it in keep_columns")
    config_json, config_hash = _hash_config(config)
    if dask_settings is not None:
        from .distributed import check_picklable

        check_picklable(process_chunk)
    if hats is not None:
        identity = hats.identity()
    else:
        stat = input_path.stat()
        identity = {
            "path": str(input_path.resolve()),
            "size": int(stat.st_size),
            "mtime_ns": int(stat.st_mtime_ns),
        }
    settings = {
        "input": identity,
        "chunk_rows": chunk_rows,
        "config_hash": config_hash,
        "keep_columns": keep,
        "read_options": options,
    }
    work = Path(f"{output_path}.parts")
    run = _Run(
        settings=settings,
        config=json.loads(config_json),
        label=label,
        work=work,
        output=output_path,
        out_format=out_format,
        write_row_id=bool(write_row_id),
        hats=hats,
    )

    if not overwrite:
        manifest = _read_manifest(work)
        if manifest is not None:
            _check_same(manifest, settings, work)
        elif output_path.exists():
            summary = run.completed_output_summary(flag_names, started)
            if summary is not None:
                logger.info("%s already holds this run (%d %s); nothing to do", output_path, summary.n_rows, label)
                if work.exists() and not keep_parts:  # leftovers of a run killed while removing its work dir
                    with contextlib.suppress(RuntimeError), _locked(work):
                        if _read_manifest(work) is None:
                            _remove_work_dir(work)
                return summary
            raise FileExistsError(
                f"output {output_path} exists and is not the result of this run "
                f"(pass overwrite=True / --overwrite to replace it)"
            )

    work.mkdir(parents=True, exist_ok=True)
    with _locked(work):
        if overwrite:
            _clear_work_dir(work)
            manifest = None
        else:
            manifest = _read_manifest(work)  # again, now that no other process can change it
            if manifest is not None:
                _check_same(manifest, settings, work)
        run.start(manifest, input_path)
        if dask_settings is None:
            run.process(input_path, process_chunk, keep, options, progress)
        else:
            run.process_dask(input_path, process_chunk, keep, options, progress, dask_settings)
        stats = run.merge(flag_names)
        if keep_parts:
            run.mark_merged()
        else:
            _remove_work_dir(work)
    seconds = time.perf_counter() - started
    n_processed = stats.n_rows - run.resumed_rows
    summary = RunSummary(
        n_rows=stats.n_rows,
        n_chunks=run.n_chunks,
        n_resumed_chunks=run.n_resumed,
        seconds=seconds,
        rows_per_second=n_processed / seconds if seconds > 0 else math.nan,
        output_path=output_path,
        flag_counts=stats.flag_counts,
        n_rows_processed=n_processed,
        finite_counts=stats.finite_counts,
        work_dir=work if keep_parts else None,
        n_workers=run.n_workers,
    )
    logger.info(
        "wrote %s: %d %s in %d chunks (%d resumed), %.1f s, %.0f %s/s",
        output_path,
        summary.n_rows,
        label,
        summary.n_chunks,
        summary.n_resumed_chunks,
        seconds,
        summary.rows_per_second,
        label,
    )
    return summary


# ------------------------------------------------------------------------------------------------ the run


@dataclasses.dataclass
class _Stats:
    n_rows: int = 0
    flag_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    finite_counts: dict[str, int] = dataclasses.field(default_factory=dict)

    def add(self, block: Table, result_columns: Sequence[str], flag_names) -> None:
        """Count the rows of one output block: flags by name and finite values of 1-D float result columns."""
        self.n_rows += len(block)
        for name in result_columns:
            data = np.ma.getdata(block[name])
            if data.ndim == 1 and data.dtype.kind == "f":
                self.finite_counts[name] = self.finite_counts.get(name, 0) + int(
                    np.count_nonzero(np.isfinite(data) & ~np.ma.getmaskarray(block[name]))
                )
        if flag_names is not None and "flags" in result_columns:
            flags = np.ma.getdata(block["flags"])
            if flags.ndim == 1 and flags.dtype.kind in "iu":
                values, counts = np.unique(flags[~np.ma.getmaskarray(block["flags"])], return_counts=True)
                for value, count in zip(values, counts):
                    for name in flag_names(int(value)):
                        self.flag_counts[name] = self.flag_counts.get(name, 0) + int(count)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Chunk boundaries: regular (chunk ``k`` starts at ``k * chunk_rows``) or explicit (HATS partitions)."""

    chunk_rows: int
    bounds: tuple[tuple[int, int], ...] | None = None  # (start, stop) of every chunk, when not regular

    def start(self, k: int) -> int:
        return self.bounds[k][0] if self.bounds is not None else k * self.chunk_rows

    def limit(self, k: int) -> int:
        """Most rows chunk ``k`` can hold (exactly its rows for an explicit plan)."""
        if self.bounds is not None:
            return self.bounds[k][1] - self.bounds[k][0]
        return self.chunk_rows

    def has(self, k: int) -> bool:
        return k >= 0 and (self.bounds is None or k < len(self.bounds))


@dataclasses.dataclass
class _Run:
    """State of one run: settings, the manifest being kept up to date, the finished parts."""

    settings: dict
    config: Any
    label: str
    work: Path
    output: Path
    out_format: str
    write_row_id: bool
    hats: Any = None  # the HatsCatalog when the input is one
    completed: dict[int, int] = dataclasses.field(default_factory=dict)  # part index -> rows
    columns: list[str] | None = None
    result_columns: list[str] | None = None
    n_rows_input: int | None = None
    n_chunks: int = 0
    n_resumed: int = 0
    resumed_rows: int = 0
    n_workers: int = 0
    refs: list[_BlockRef] | None = None  # the chunks as references, when known before reading (HATS)
    plan: _Plan | None = None

    @property
    def chunk_rows(self) -> int:
        return self.settings["chunk_rows"]

    def part_path(self, k: int) -> Path:
        return self.work / f"part-{k:06d}.parquet"

    # -- manifest

    def start(self, manifest: dict | None, input_path: Path) -> None:
        """Take over the verified finished parts of ``manifest`` (None: a fresh run) and write the manifest."""
        options = self.settings["read_options"]
        if self.hats is not None:
            self.n_rows_input = self.hats.n_rows
            self.refs = _block_refs(input_path, self.chunk_rows, options.get("columns"), None, hats=self.hats)
            bounds, start = [], 0
            for ref in self.refs:
                bounds.append((start, start + ref.stop - ref.start))
                start = bounds[-1][1]
            self.plan = _Plan(self.chunk_rows, tuple(bounds))
            self.n_chunks = len(self.refs)
        else:
            self.n_rows_input = count_rows(input_path, format=options.get("format"))
            self.plan = _Plan(self.chunk_rows)
        if manifest is not None:
            self.columns = manifest.get("columns")
            self.result_columns = manifest.get("result_columns")
            for k, n_rows in _parts_of_runs(manifest.get("completed", []), self.plan):
                if _part_rows(self.part_path(k)) == n_rows:
                    self.completed[k] = n_rows
                else:
                    logger.warning("part %s is missing or damaged; it will be recomputed", self.part_path(k).name)
        self.n_resumed = len(self.completed)
        self.resumed_rows = sum(self.completed.values())
        if self.completed:
            logger.info(
                "resuming from %s: %d finished chunks (%d %s)",
                self.work,
                self.n_resumed,
                self.resumed_rows,
                self.label,
            )
        self.write_manifest()

    def manifest(self) -> dict:
        s = self.settings
        layout = {"layout": "rows"}
        if self.hats is not None:
            layout = {"layout": "hats", "n_partitions": len(self.hats.partitions)}
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "label": self.label,
            "input": {**s["input"], "n_rows": self.n_rows_input},
            **layout,
            "chunk_rows": s["chunk_rows"],
            "config_hash": s["config_hash"],
            "config": self.config,
            "keep_columns": s["keep_columns"],
            "read_options": s["read_options"],
            "columns": self.columns,
            "result_columns": self.result_columns,
            "n_chunks": self.n_chunks or None,
            "completed": _runs_of_parts(self.completed, self.plan),
        }

    def write_manifest(self, extra: Mapping[str, Any] | None = None) -> None:
        """Write the manifest atomically (temporary file, then ``os.replace``)."""
        text = json.dumps({**self.manifest(), **(extra or {})}, indent=2) + "\n"
        tmp = self.work / (MANIFEST_NAME + ".tmp")
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.work / MANIFEST_NAME)

    def mark_merged(self) -> None:
        self.write_manifest({"merged_into": str(self.output.resolve())})

    # -- processing

    def _progress_bar(self, input_path: Path, progress: bool):
        from tqdm.auto import tqdm

        return tqdm(
            total=self.n_rows_input,
            initial=self.resumed_rows,
            desc=input_path.name,
            unit=f" {self.label}" if self.label else "rows",
            unit_scale=True,
            disable=not progress,
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
        )

    def _log_start(self, input_path: Path, where: str) -> None:
        logger.info(
            "%s: %s %s in chunks of %d%s; %d chunks (%d %s) already done",
            input_path,
            "?" if self.n_rows_input is None else self.n_rows_input,
            self.label,
            self.chunk_rows,
            where,
            self.n_resumed,
            self.resumed_rows,
            self.label,
        )

    def _where(self, k: int, start: int, n: int, extra: str = "") -> str:
        """How messages name chunk ``k``."""
        if not n:
            return f"chunk {k}"
        detail = f", {extra}" if extra else ""
        return f"chunk {k} (rows {start} to {start + n - 1} of {self.settings['input']['path']}{detail})"

    def _save_part(self, k: int, part: Table) -> None:
        """Write part ``k`` (atomically, flushed to disk), then record it in the manifest."""
        with ParquetChunkWriter(self.part_path(k), overwrite=True) as writer:
            writer.write(part)
        _fsync(self.part_path(k))  # on disk before the manifest says so (power loss, not only kills)
        self.completed[k] = len(part)
        self.write_manifest()
        release_freed_memory()

    def _finish_processing(self, n_chunks: int, n_computed: int, rows_computed: int) -> None:
        self.n_chunks = n_chunks
        self.n_resumed = n_chunks - n_computed
        self.resumed_rows = sum(self.completed[k] for k in range(n_chunks)) - rows_computed
        if self.n_rows_input is None:
            self.n_rows_input = sum(self.completed.values())
        self.write_manifest()

    def process(self, input_path: Path, process_chunk, keep: list[str], options: dict, progress: bool) -> None:
        """Compute every chunk that is not finished yet, writing its part and then the manifest."""
        canonical = _canonical_options(options)
        self._log_start(input_path, "")
        n_chunks = n_computed = rows_computed = 0
        extras = [ref.where for ref in self.refs] if self.refs is not None else None
        with self._progress_bar(input_path, progress) as bar:
            for k, start, n, raw in self._chunks(input_path, options):
                n_chunks = k + 1
                if self.completed.get(k) == n:
                    continue
                if k in self.completed:  # the manifest says otherwise: recompute
                    del self.completed[k]
                where = self._where(k, start, n, extras[k] if extras else "")
                table = to_canonical(raw, **canonical)
                part, names = _make_part(k, start, raw, table, keep, process_chunk, where, self.work)
                self._check_part_columns(part, names, k, start, where)
                self._save_part(k, part)
                n_computed += 1
                rows_computed += n
                logger.debug("chunk %d (rows %d to %d) done", k, start, start + n)
                bar.update(n)
        self._finish_processing(n_chunks, n_computed, rows_computed)

    def _chunks(self, input_path: Path, options: dict):
        """``(k, start, n_rows, raw table)`` of every chunk in order; the table is ``None`` for a finished chunk
        whose size is known without reading it (HATS)."""
        if self.refs is not None:
            start = 0
            for k, ref in enumerate(self.refs):
                n = ref.stop - ref.start
                yield k, start, n, (None if self.completed.get(k) == n else _read_block(ref))
                start += n
            return
        chunks = iter_raw_chunks(input_path, self.chunk_rows, options.get("columns"), format=options.get("format"))
        for k, (start, raw) in enumerate(chunks):
            yield k, start, len(raw), raw

    def process_dask(
        self, input_path: Path, process_chunk, keep: list[str], options: dict, progress: bool, dask: DaskSettings
    ) -> None:
        """As :meth:`process`, with the chunks computed on Dask workers (at most ``max_in_flight`` at a time) and
        their parts written here as they finish, in any order."""
        from distributed import as_completed

        from .distributed import dask_client

        canonical = _canonical_options(options)
        refs = self.refs
        if refs is None and not dask.ship_data:
            refs = _block_refs(input_path, self.chunk_rows, options.get("columns"), options.get("format"))
        self._log_start(input_path, f" on {dask.describe()}" + ("" if refs is not None else " (chunks sent)"))
        if refs is not None and not dask.ship_data:
            # the workers read their chunks: a task carries the chunk's reference only
            self.n_chunks = len(refs)
            starts = np.cumsum([0] + [ref.stop - ref.start for ref in refs])
            pending = (
                (k, int(starts[k]), ref.stop - ref.start, ref, ref.where)
                for k, ref in enumerate(refs)
                if self.completed.get(k) != ref.stop - ref.start
            )
        else:
            # text formats, or an input only this process can see: read here, in order, and send the tables
            extras = [ref.where for ref in refs] if refs is not None else None
            chunks = iter_raw_chunks(
                input_path, self.chunk_rows, options.get("columns"), format=options.get("format")
            )
            pending = (
                (k, start, len(raw), raw, extras[k] if extras else "")
                for k, (start, raw) in enumerate(self._counting(chunks))
                if self.completed.get(k) != len(raw)
            )
        first = next(pending, None)
        n_computed = rows_computed = 0
        if first is not None:
            with self._progress_bar(input_path, progress) as bar, dask_client(dask) as (client, n_threads):
                self.n_workers = n_threads
                limit = dask.max_in_flight or 2 * n_threads
                token = uuid.uuid4().hex[:8]
                function = client.scatter(process_chunk, broadcast=True, hash=False)
                in_flight: dict[Any, tuple[int, int, int, str]] = {}
                done = as_completed(loop=client.loop)
                queue = iter([first])

                def submit() -> bool:
                    item = next(queue, None) or next(pending, None)
                    if item is None:
                        return False
                    k, start, n, source, extra = item
                    self.completed.pop(k, None)  # listed with another row count: recompute
                    where = self._where(k, start, n, extra)
                    future = client.submit(
                        _chunk_task,
                        function,
                        k,
                        start,
                        source,
                        keep,
                        canonical,
                        where,
                        str(self.work),
                        token,
                        key=f"jaxstars-chunk-{k:06d}-{token}",
                        pure=False,
                    )
                    in_flight[future] = (k, start, n, where)
                    done.add(future)
                    return True

                try:
                    while len(in_flight) < limit and submit():
                        pass
                    for future in done:
                        k, start, n, where = in_flight.pop(future)
                        part, names = self._task_result(future, k, start, n, where)
                        self._check_part_columns(part, names, k, start, where)
                        self._save_part(k, part)
                        n_computed += 1
                        rows_computed += n
                        logger.debug("chunk %d (rows %d to %d) done", k, start, start + n)
                        bar.update(n)
                        del future, part
                        while len(in_flight) < limit and submit():
                            pass
                finally:
                    if in_flight:  # stopped by an error: drop the rest (the scattered function is released
                        client.cancel(list(in_flight))  # with its last reference, or with a closing client)
        if refs is None or dask.ship_data:
            n_chunks = self._n_read
        else:
            n_chunks = len(refs)
        self._finish_processing(n_chunks, n_computed, rows_computed)

    def _counting(self, chunks):
        """Pass ``chunks`` through, counting them in ``self._n_read``."""
        self._n_read = 0
        for item in chunks:
            self._n_read += 1
            yield item

    def _task_result(self, future, k: int, start: int, n: int, where: str) -> tuple[Table, list[str]]:
        """The part computed by a Dask task; any failure becomes a :class:`ChunkProcessingError` for chunk ``k``."""
        try:
            return future.result()
        except ChunkProcessingError:
            raise
        except Exception as err:
            raise ChunkProcessingError(
                f"{where} failed on a Dask worker: {type(err).__name__}: {err} "
                f"[finished chunks are kept in {self.work}; rerun to resume]",
                chunk=k,
                start=start,
                stop=start + n,
            ) from err

    def _check_part_columns(self, part: Table, names: list[str], k: int, start: int, where: str) -> None:
        """Every part must have the columns of the first one (the manifest records them)."""
        if self.columns is None:
            self.columns, self.result_columns = list(part.colnames), list(names)
        elif list(part.colnames) != self.columns:
            raise ChunkProcessingError(
                f"{where} gave columns {part.colnames}, earlier chunks {self.columns}: every chunk must "
                f"return the same columns",
                chunk=k,
                start=start,
                stop=start + len(part),
            )

    # -- merging

    def merge(self, flag_names) -> _Stats:
        """Write the parts, in order, into the output (atomically) and return row statistics."""
        missing = [k for k in range(self.n_chunks) if k not in self.completed]
        if missing:  # pragma: no cover - process() leaves none
            raise RuntimeError(f"parts {missing} are not finished")
        logger.info("merging %d parts into %s", self.n_chunks, self.output)
        stats = _Stats()
        result_columns = self.result_columns or []
        with chunk_writer(self.output, overwrite=True) as writer:
            for k in range(self.n_chunks):
                n = self.completed[k]
                for _, block in iter_raw_chunks(self.part_path(k), max(n, 1)):
                    first = self.plan.start(k)
                    expected = np.arange(first, first + n, dtype=np.int64)
                    if len(block) != n or not np.array_equal(np.asarray(block[ROW_ID]), expected):
                        raise RuntimeError(
                            f"part {self.part_path(k)} does not hold rows {expected[:1]}… of chunk {k}; "
                            f"rerun with overwrite=True"
                        )
                    if not self.write_row_id:
                        block.remove_column(ROW_ID)
                    block.meta.clear()
                    if k == 0 and self.out_format == "parquet":
                        block.meta[OUTPUT_META_KEY] = self.output_description()
                    stats.add(block, result_columns, flag_names)
                    writer.write(block)
        return stats

    def output_description(self) -> dict:
        """The run description stored in a Parquet output's metadata (how a rerun recognises its output)."""
        s = self.settings
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "label": self.label,
            "input": dict(s["input"]),
            "n_rows": self.n_rows_input,
            "n_chunks": self.n_chunks,
            "chunk_rows": s["chunk_rows"],
            "config_hash": s["config_hash"],
            "config": self.config,
            "keep_columns": list(s["keep_columns"]),
            "read_options": dict(s["read_options"]),
            "result_columns": list(self.result_columns or []),
            "row_id": self.write_row_id,
        }

    def completed_output_summary(self, flag_names, started: float) -> RunSummary | None:
        """A summary if the existing output is this very run's (Parquet outputs only), else ``None``."""
        if self.out_format != "parquet":
            return None
        try:
            described = peek(self.output, 1).meta.get(OUTPUT_META_KEY)
        except (OSError, ValueError, KeyError, TypeError):  # not a readable table: not ours
            return None
        if not isinstance(described, Mapping):
            return None
        s = self.settings
        same = (
            described.get("format") == MANIFEST_FORMAT
            and described.get("input") == s["input"]
            and described.get("chunk_rows") == s["chunk_rows"]
            and described.get("config_hash") == s["config_hash"]
            and list(described.get("keep_columns") or []) == s["keep_columns"]
            and dict(described.get("read_options") or {}) == s["read_options"]
            and described.get("row_id") == self.write_row_id
        )
        if not same:
            return None
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pq.read_schema(self.output)
        wanted = [
            name
            for name in described.get("result_columns") or []
            if name in schema.names
            and (pa.types.is_floating(schema.field(name).type) or (name == "flags" and flag_names is not None))
        ]
        stats = _Stats()
        if wanted:
            for _, block in iter_raw_chunks(self.output, max(self.chunk_rows, 1), wanted):
                stats.add(block, wanted, flag_names)
        else:
            stats.n_rows = count_rows(self.output) or 0
        n_chunks = int(described.get("n_chunks") or 0)
        return RunSummary(
            n_rows=stats.n_rows,
            n_chunks=n_chunks,
            n_resumed_chunks=n_chunks,
            seconds=time.perf_counter() - started,
            rows_per_second=0.0,
            output_path=self.output,
            flag_counts=stats.flag_counts,
            n_rows_processed=0,
            finite_counts=stats.finite_counts,
            already_complete=True,
        )


# ------------------------------------------------------------------------------------------------ one chunk


def _canonical_options(options: Mapping[str, Any]) -> dict:
    return {k: options[k] for k in ("extra_columns", "gaia_release", "gaia_zp_floor") if k in options}


def _make_part(
    k: int, start: int, raw: Table, table: Table, keep, process_chunk, where: str, work
) -> tuple[Table, list[str]]:
    """Call ``process_chunk`` on one chunk and assemble its part (``row_id``, kept columns, results).

    Returns the part and the names of its result columns. Runs in this process or on a Dask worker."""
    n = len(table)
    row_ids = np.arange(start, start + n, dtype=np.int64)
    try:
        results = process_chunk(table, row_ids.copy())
    except Exception as err:
        raise ChunkProcessingError(
            f"process_chunk failed on {where}: {type(err).__name__}: {err} "
            f"[finished chunks are kept in {work}; rerun to resume]",
            chunk=k,
            start=start,
            stop=start + n,
        ) from err
    try:
        columns = _result_columns(results, n)
    except (TypeError, ValueError) as err:
        raise ChunkProcessingError(
            f"process_chunk returned unusable results for {where}: {err}", chunk=k, start=start, stop=start + n
        ) from err

    part = Table()
    part[ROW_ID] = row_ids
    part[ROW_ID].description = "0-based row index in the input catalog"
    for name in keep:
        source = table if name in table.colnames else raw
        found = _find(source.colnames, name)
        if found is not None:
            part.add_column(source[found].copy(), name=name)
    names = [c.name for c in columns]
    clash = [c for c in names if c in part.colnames]
    if clash:
        raise ChunkProcessingError(
            f"process_chunk returned column(s) {', '.join(clash)} for {where}, which clash with "
            f"{ROW_ID!r} or keep_columns",
            chunk=k,
            start=start,
            stop=start + n,
        )
    for col in columns:
        part.add_column(col)
    return part, names


_RUN_FUNCTIONS: dict[str, Any] = {}  # per worker process: the first copy of each recent run's process_chunk


def _chunk_task(process_chunk, k: int, start: int, source, keep, canonical: dict, where: str, work: str, run: str):
    """A Dask task: read chunk ``k`` (``source`` is a :class:`_BlockRef`) or take it as sent (a table), process it
    and return its part with the names of the result columns (see :func:`_make_part`).

    A worker can hold more than one copy of the scattered ``process_chunk`` in one run (seen with distributed
    2026.8: one worker set a processor up twice, from its fifth chunk on; why it got a second copy was not
    traced); the first copy this process saw for run ``run`` is used for all its chunks, so a :class:`~jaxstars.catalog.ChunkProcessor` is
    set up once per process."""
    if run not in _RUN_FUNCTIONS:
        while len(_RUN_FUNCTIONS) >= 4:  # keep the few most recent runs
            _RUN_FUNCTIONS.pop(next(iter(_RUN_FUNCTIONS)))
        _RUN_FUNCTIONS[run] = process_chunk
    process_chunk = _RUN_FUNCTIONS[run]
    raw = _read_block(source) if isinstance(source, _BlockRef) else source
    table = to_canonical(raw, **canonical)
    return _make_part(k, start, raw, table, keep, process_chunk, where, work)


# ------------------------------------------------------------------------------------------------ helpers


def _normalise_read_options(read_options: Mapping[str, Any] | None) -> dict:
    options = dict(read_options or {})
    unknown = sorted(set(options) - set(_READ_OPTIONS))
    if unknown:
        raise TypeError(f"unknown read_options {unknown}; allowed: {', '.join(_READ_OPTIONS)}")
    for key in ("columns", "extra_columns"):
        if key in options and options[key] is not None:
            value = options[key]
            options[key] = [value] if isinstance(value, str) else [str(c) for c in value]
    return {k: options[k] for k in sorted(options)}


def _hash_config(config: Mapping[str, Any] | None) -> tuple[str, str]:
    """Canonical JSON of ``config`` (sorted keys) and its SHA-256 (``"sha256:<hex>"``)."""
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict of JSON-able settings, got {type(config).__name__}")
    try:
        text = json.dumps(dict(config or {}), sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as err:
        raise TypeError(f"config must be JSON-able (numbers, strings, lists, dicts): {err}") from None
    return text, "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_manifest(work: Path) -> dict | None:
    path = work / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunMismatchError(
            f"cannot read the run manifest {path} ({err}); pass overwrite=True / --overwrite to start again"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise RunMismatchError(f"{path} is not a jaxstars run manifest; pass overwrite=True / --overwrite")
    return manifest


def _check_same(manifest: dict, settings: dict, work: Path) -> None:
    """Raise :class:`RunMismatchError` naming every setting in which ``manifest`` differs from this call."""
    differences = []
    if manifest.get("version") != MANIFEST_VERSION:
        differences.append(f"manifest version {manifest.get('version')!r} (this is {MANIFEST_VERSION})")
    for key, what in _SETTINGS.items():
        stored = manifest.get(key)
        if key == "input" and isinstance(stored, dict):
            stored = {k: stored.get(k) for k in ("path", "size", "mtime_ns")}
        if stored != settings[key]:
            if key == "config_hash":
                differences.append("config (different hash)")
            else:
                differences.append(f"{what}: {stored!r} there, {settings[key]!r} now")
    if differences:
        raise RunMismatchError(
            f"the work directory {work} holds a run with other settings — {'; '.join(differences)}. "
            f"Pass overwrite=True / --overwrite to discard it and start again (or use the original settings "
            f"to resume it)"
        )


def _runs_of_parts(completed: Mapping[int, int], plan: _Plan) -> list[dict]:
    """Runs of consecutive finished parts as manifest entries (see the module docstring)."""
    runs: list[dict] = []
    for k in sorted(completed):
        start = plan.start(k)
        if runs and runs[-1]["parts"][1] == k - 1 and runs[-1]["rows"][1] == start:
            run = runs[-1]
            run["parts"][1] = k
            run["rows"][1] = start + completed[k]
            run["n_rows"] += completed[k]
        else:
            runs.append({"parts": [k, k], "rows": [start, start + completed[k]], "n_rows": completed[k]})
    return runs


def _parts_of_runs(runs: Iterable[Mapping], plan: _Plan) -> Iterable[tuple[int, int]]:
    """``(part index, rows)`` of every part in manifest runs; inconsistent entries are skipped with a warning."""
    for run in runs:
        try:
            first, last = (int(v) for v in run["parts"])
            start, stop = (int(v) for v in run["rows"])
        except (KeyError, TypeError, ValueError):
            logger.warning("ignoring malformed manifest entry %r", run)
            continue
        empty_file = first == last == 0 and start == stop == 0
        regular = (
            0 <= first <= last
            and plan.has(last)
            and start == plan.start(first)
            and plan.start(last) < stop <= plan.start(last) + plan.limit(last)
        )
        if not (empty_file or regular):
            logger.warning("ignoring inconsistent manifest entry %r", run)
            continue
        for k in range(first, last + 1):
            yield k, min(plan.limit(k), stop - plan.start(k))


def _part_rows(path: Path) -> int | None:
    """Rows in a part file from its Parquet footer; ``None`` if it is missing or unreadable."""
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (OSError, ValueError):  # missing, truncated, not Parquet (pyarrow errors derive from these)
        return None


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim`` (None elsewhere)."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_RELEASE = {"last_end": 0.0, "cost": 0.0}


def release_freed_memory(max_overhead: float = 0.1) -> None:
    """Free finished chunks' memory: collect reference cycles, then hand freed heap back to the system.

    Astropy tables hold reference cycles (columns ↔ table), so a chunk's tables are freed only by the cyclic
    garbage collector, whose full collections are rare: without an explicit collection the resident size grew by
    ~1 MB per 10,000-row chunk (measured: +16 % over 100 chunks). ``malloc_trim`` (glibc only; a no-op elsewhere)
    then returns the freed, fragmented heap pages to the system. A full collection costs 0.1–0.5 s with jax and
    astropy loaded, so it runs only when the time since the last one is at least ``1 / max_overhead`` times its
    cost: every chunk when chunks take seconds, rarely for tiny chunks (whose garbage is tiny).
    """
    start = time.perf_counter()
    if start - _RELEASE["last_end"] < _RELEASE["cost"] / max_overhead:
        return
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    _RELEASE["last_end"] = time.perf_counter()
    _RELEASE["cost"] = _RELEASE["last_end"] - start


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _find(colnames: Sequence[str], name: str) -> str | None:
    if name in colnames:
        return name
    lower = {c.lower(): c for c in colnames}
    return lower.get(name.lower())


def _result_columns(results: Any, n: int) -> list[Column]:
    """``process_chunk``'s results as astropy columns of ``n`` rows (units and descriptions kept)."""
    import astropy.units as u

    if isinstance(results, Table):
        items = [(name, results[name]) for name in results.colnames]
    elif isinstance(results, Mapping):
        items = list(results.items())
    else:
        raise TypeError(f"expected a dict of arrays or an astropy Table, got {type(results).__name__}")
    columns = []
    for name, value in items:
        if not isinstance(name, str) or not name:
            raise TypeError(f"column names must be non-empty strings, got {name!r}")
        unit = getattr(value, "unit", None)
        description = getattr(value, "description", None) if isinstance(value, Column) else None
        if isinstance(value, u.Quantity):
            value = value.value
        mask = np.ma.getmaskarray(value) if np.ma.is_masked(value) else None
        data = np.asarray(np.ma.getdata(value))
        if data.ndim not in (1, 2):
            raise ValueError(
                f"column {name!r} has shape {data.shape}; expected 1-D or 2-D (one row per input row)"
            )
        if data.shape[0] != n:
            raise ValueError(f"column {name!r} has {data.shape[0]} rows for a chunk of {n} rows")
        if data.dtype.kind == "O":
            raise TypeError(f"column {name!r} has dtype object; use numbers, booleans or strings")
        cls = MaskedColumn if mask is not None else Column
        kwargs = {"mask": mask} if mask is not None else {}
        columns.append(cls(data, name=name, unit=unit, description=description, copy=False, **kwargs))
    return columns


@contextlib.contextmanager
def _locked(work: Path):
    """Hold an exclusive lock on ``work/.lock`` (POSIX ``flock``; a no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    handle = open(work / _LOCK_NAME, "a+")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RuntimeError(
                f"another process is running on {work} (it holds {work / _LOCK_NAME}); wait for it to finish"
            ) from None
        yield
    finally:
        handle.close()


def _clear_work_dir(work: Path) -> None:
    """Delete the manifest first (so the parts never count on their own), then everything but the lock."""
    (work / MANIFEST_NAME).unlink(missing_ok=True)
    for entry in work.iterdir():
        if entry.name == _LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)


def _remove_work_dir(work: Path) -> None:
    """Remove the work directory after a merge, manifest first (see the module docstring)."""
    (work / MANIFEST_NAME).unlink(missing_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    if work.exists():
        logger.warning("could not remove the work directory %s completely", work)
