"""Catalog engine: stream catalogs of any size through a model in chunks of rows and write the results.

* :mod:`~jaxstars.catalog.stream` — :func:`iter_chunks` (canonical-schema blocks of any catalog file, streaming
  for Parquet/HDF5/FITS) and chunk writers (:class:`ParquetChunkWriter`, :class:`CSVChunkWriter`,
  :class:`BufferedChunkWriter`, :func:`chunk_writer`).
* :mod:`~jaxstars.catalog.runner` — :func:`run_catalog`: a resumable chunked run of a per-chunk function over a
  catalog (parts + manifest in ``<output>.parts/``, merged into one Parquet file; killing and rerunning gives the
  same output), with :class:`RunSummary`, :class:`ChunkProcessingError`, :class:`RunMismatchError`.
"""

from .runner import ChunkProcessingError, RunMismatchError, RunSummary, run_catalog
from .stream import (
    BufferedChunkWriter,
    CSVChunkWriter,
    ParquetChunkWriter,
    chunk_writer,
    count_rows,
    iter_chunks,
    iter_raw_chunks,
    peek,
)

__all__ = [
    "BufferedChunkWriter",
    "CSVChunkWriter",
    "ChunkProcessingError",
    "ParquetChunkWriter",
    "RunMismatchError",
    "RunSummary",
    "chunk_writer",
    "count_rows",
    "iter_chunks",
    "iter_raw_chunks",
    "peek",
    "run_catalog",
]
