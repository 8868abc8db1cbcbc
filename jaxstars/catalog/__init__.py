"""Catalog engine: stream catalogs of any size through a model in chunks of rows and write the results.

* :mod:`~jaxstars.catalog.stream` — :func:`iter_chunks` (canonical-schema blocks of any catalog file or HATS
  catalog, streaming for Parquet/HDF5/FITS/HATS) and chunk writers (:class:`ParquetChunkWriter`,
  :class:`CSVChunkWriter`, :class:`BufferedChunkWriter`, :func:`chunk_writer`).
* :mod:`~jaxstars.catalog.runner` — :func:`run_catalog`: a resumable chunked run of a per-chunk function over a
  catalog (parts + manifest in ``<output>.parts/``, merged into one Parquet file; killing and rerunning gives the
  same output), with :class:`RunSummary`, :class:`ChunkProcessingError`, :class:`RunMismatchError`.
* :mod:`~jaxstars.catalog.distributed` — scale-out on Dask (``run_catalog(..., dask=N | address | client)``,
  :class:`DaskSettings`) and :class:`ChunkProcessor`, the base class for model-backed per-chunk functions whose
  state is built once per worker process.
* :mod:`~jaxstars.catalog.hats` — HATS (HEALPix-partitioned Parquet) catalogs read with pyarrow, partition by
  partition in canonical order (:func:`open_hats_catalog`, :func:`is_hats_catalog`).
"""

from .distributed import ChunkProcessor, DaskSettings
from .hats import HatsCatalog, HatsPartition, is_hats_catalog, open_hats_catalog
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
    "ChunkProcessor",
    "DaskSettings",
    "HatsCatalog",
    "HatsPartition",
    "ParquetChunkWriter",
    "RunMismatchError",
    "RunSummary",
    "chunk_writer",
    "count_rows",
    "is_hats_catalog",
    "iter_chunks",
    "iter_raw_chunks",
    "open_hats_catalog",
    "peek",
    "run_catalog",
]
