"""Catalog engine: stream catalogs of any size through a model in chunks of rows and write the results.

* :mod:`~jaxstars.catalog.stream` — :func:`iter_chunks` (canonical-schema blocks of any catalog file, streaming
  for Parquet/HDF5/FITS) and chunk writers (:class:`ParquetChunkWriter`, :class:`CSVChunkWriter`,
  :class:`BufferedChunkWriter`, :func:`chunk_writer`).
"""

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
    "ParquetChunkWriter",
    "chunk_writer",
    "count_rows",
    "iter_chunks",
    "iter_raw_chunks",
    "peek",
]
