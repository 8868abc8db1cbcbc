"""HATS catalogs (HEALPix-partitioned Parquet, as written by ``lsdb``/``hats``) read partition by partition.

A HATS catalog is a directory::

    catalog/
        properties              # key=value lines (hats_nrows, hats_npix_suffix, ...)
        partition_info.csv      # one line per partition: Norder,Npix
        dataset/Norder=K/Dir=D/Npix=P.parquet      (or Npix=P/ holding several Parquet files)

Each file holds the rows of one HEALPix pixel ``P`` at order ``K`` (``D = 10000 * (P // 10000)``). A HATS
*collection* (``collection.properties`` naming its ``hats_primary_table_url``, as ``lsdb``'s ``write_catalog``
produces with a margin cache beside the catalog) is accepted too: its primary catalog is read, the margins are
not.

Canonical order
---------------
jaxstars reads the partitions in **HEALPix nested order**: partition ``(K, P)`` is placed by the index of its
first descendant at order 29, ``P * 4**(29 - K)`` (the Z-order curve, which is how ``hats`` sorts pixel lists).
Partitions never overlap, so the order is total. Inside a partition the rows keep their file order (the order of
the files of a directory partition: sorted by name). The ``row_id`` of a row — what
:func:`~jaxstars.catalog.run_catalog` passes to ``process_chunk`` and writes to its output — is its position in the
concatenation of all partitions in this order. It is a property of the files alone: re-partitioning the catalog
(another ``partition_rows``, another ``highest_order``) changes the row ids, so join results on an identifier
column such as ``source_id`` when comparing runs over different copies.

Only :mod:`pyarrow` is used: neither ``hats`` nor ``lsdb`` is needed to read a catalog. Row counts come from the
Parquet footers of the partition files.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from collections.abc import Iterator
from pathlib import Path

__all__ = ["HatsCatalog", "HatsPartition", "is_hats_catalog", "open_hats_catalog"]

_MAX_ORDER = 29
_DIR_RE = re.compile(r"^Norder=(\d+)$")
_NPIX_RE = re.compile(r"^Npix=(\d+)(\.parquet)?$")


@dataclasses.dataclass(frozen=True)
class HatsPartition:
    """One HEALPix partition of a HATS catalog.

    Attributes
    ----------
    order : int
        HEALPix order ``K`` (``Norder``).
    pixel : int
        Nested pixel index ``P`` at that order (``Npix``).
    files : tuple of str
        Its Parquet file(s), in reading order.
    file_rows : tuple of int
        Rows in each file (from the Parquet footers).
    file_sizes : tuple of int
        Size in bytes of each file.
    """

    order: int
    pixel: int
    files: tuple[str, ...]
    file_rows: tuple[int, ...]
    file_sizes: tuple[int, ...]

    @property
    def n_rows(self) -> int:
        """Rows in the partition."""
        return sum(self.file_rows)

    @property
    def sort_key(self) -> tuple[int, int]:
        """Position in the canonical (nested, Z-order) partition order: ``(P * 4**(29-K), K)``."""
        return (self.pixel << (2 * (_MAX_ORDER - self.order)), self.order)

    def describe(self) -> str:
        """``"HEALPix partition Norder=K, Npix=P"``."""
        return f"HEALPix partition Norder={self.order}, Npix={self.pixel}"


@dataclasses.dataclass(frozen=True)
class HatsCatalog:
    """A HATS catalog's partitions in canonical order (see the module docstring).

    Attributes
    ----------
    path : pathlib.Path
        The directory that was opened (a catalog or a collection).
    catalog_dir : pathlib.Path
        The catalog directory itself (for a collection: its primary catalog).
    partitions : tuple of HatsPartition
        Non-empty and empty partitions alike, in canonical order.
    properties : dict of str to str
        The catalog's ``properties`` (or ``hats.properties``) file.
    """

    path: Path
    catalog_dir: Path
    partitions: tuple[HatsPartition, ...]
    properties: dict[str, str]

    @property
    def n_rows(self) -> int:
        """Rows in the catalog (sum over partitions)."""
        return sum(p.n_rows for p in self.partitions)

    def identity(self) -> dict:
        """What identifies this catalog's content for a resumable run.

        Returns
        -------
        dict
            ``path`` (the opened directory, resolved), ``size`` (bytes of all partition files together) and
            ``mtime_ns`` (the latest modification time of a partition file, ``properties`` or
            ``partition_info.csv``): the same keys as for a single input file.
        """
        size = sum(sum(p.file_sizes) for p in self.partitions)
        mtimes = [os.stat(f).st_mtime_ns for p in self.partitions for f in p.files]
        for name in ("properties", "hats.properties", "partition_info.csv"):
            candidate = self.catalog_dir / name
            if candidate.exists():
                mtimes.append(candidate.stat().st_mtime_ns)
        return {"path": str(self.path.resolve()), "size": int(size), "mtime_ns": int(max(mtimes, default=0))}


def is_hats_catalog(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a HATS catalog or collection directory.

    Parameters
    ----------
    path : str or path-like
        Any path.

    Returns
    -------
    bool
        ``True`` for a directory holding ``collection.properties``, or a ``dataset/`` folder together with
        ``properties``, ``hats.properties`` or ``partition_info.csv``.
    """
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / "collection.properties").is_file():
        return True
    return (path / "dataset").is_dir() and any(
        (path / name).is_file() for name in ("properties", "hats.properties", "partition_info.csv")
    )


def open_hats_catalog(path: str | os.PathLike) -> HatsCatalog:
    """List the partitions of a HATS catalog (or collection) in canonical order, with their row counts.

    Parameters
    ----------
    path : str or path-like
        The catalog (or collection) directory.

    Returns
    -------
    HatsCatalog

    Raises
    ------
    FileNotFoundError
        ``path`` is not a HATS catalog, or a partition listed in ``partition_info.csv`` has no file.
    ValueError
        The catalog has no partitions.
    """
    path = Path(path)
    if not is_hats_catalog(path):
        raise FileNotFoundError(
            f"{path} is not a HATS catalog directory (no properties/partition_info.csv + dataset/)"
        )
    catalog_dir = path.resolve()  # absolute file paths: tasks may run with another working directory
    collection = catalog_dir / "collection.properties"
    if collection.is_file():
        primary = _read_properties(collection).get("hats_primary_table_url")
        if not primary:
            raise FileNotFoundError(f"{collection} names no hats_primary_table_url")
        catalog_dir = path / primary
    properties = {}
    for name in ("properties", "hats.properties"):
        if (catalog_dir / name).is_file():
            properties = _read_properties(catalog_dir / name)
            break
    dataset = catalog_dir / "dataset"
    pixels = list(_listed_pixels(catalog_dir)) or list(_scanned_pixels(dataset))
    if not pixels:
        raise ValueError(f"HATS catalog {catalog_dir} has no partitions")
    suffix = properties.get("hats_npix_suffix", ".parquet")
    partitions = [_partition(dataset, order, pixel, suffix) for order, pixel in sorted(set(pixels))]
    partitions.sort(key=lambda p: p.sort_key)
    return HatsCatalog(path=path, catalog_dir=catalog_dir, partitions=tuple(partitions), properties=properties)


def _read_properties(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def _listed_pixels(catalog_dir: Path) -> Iterator[tuple[int, int]]:
    info = catalog_dir / "partition_info.csv"
    if not info.is_file():
        return
    with open(info, newline="") as handle:
        for row in csv.DictReader(handle):
            yield int(row["Norder"]), int(row["Npix"])


def _scanned_pixels(dataset: Path) -> Iterator[tuple[int, int]]:
    if not dataset.is_dir():
        return
    for order_dir in dataset.iterdir():
        match = _DIR_RE.match(order_dir.name)
        if not match or not order_dir.is_dir():
            continue
        for dir_dir in order_dir.iterdir():
            if not dir_dir.is_dir():
                continue
            for entry in dir_dir.iterdir():
                pix = _NPIX_RE.match(entry.name)
                if pix:
                    yield int(match.group(1)), int(pix.group(1))


def _partition(dataset: Path, order: int, pixel: int, suffix: str) -> HatsPartition:
    import pyarrow.parquet as pq

    base = dataset / f"Norder={order}" / f"Dir={10000 * (pixel // 10000)}"
    single = base / f"Npix={pixel}.parquet"
    folder = base / f"Npix={pixel}"
    if suffix.endswith("/") or (not single.is_file() and folder.is_dir()):
        files = sorted(str(f) for f in folder.glob("*.parquet")) if folder.is_dir() else []
    else:
        files = [str(single)] if single.is_file() else []
    if not files:
        raise FileNotFoundError(f"HATS partition Norder={order}, Npix={pixel} has no Parquet file under {base}")
    rows = tuple(int(pq.ParquetFile(f).metadata.num_rows) for f in files)
    sizes = tuple(int(os.stat(f).st_size) for f in files)
    return HatsPartition(order=order, pixel=pixel, files=tuple(files), file_rows=rows, file_sizes=sizes)
