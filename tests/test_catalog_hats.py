"""HATS catalogs (jaxstars.catalog.hats) through iter_chunks and run_catalog: every row once, partition by partition.

The catalog is written by ``lsdb`` (a clustered sky, so the partitions have several HEALPix orders); the references
are ``lsdb``'s own reader (for the canonical row order) and the same rows written as one plain Parquet file and run
through the runner (for the results, matched by ``source_id``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.table import Table

from jaxstars.astro.catalog_io import write_table
from jaxstars.catalog import (
    ChunkProcessingError,
    RunMismatchError,
    count_rows,
    iter_chunks,
    iter_raw_chunks,
    open_hats_catalog,
    run_catalog,
)
from jaxstars.catalog.runner import MANIFEST_NAME

lsdb = pytest.importorskip("lsdb")

N_FIELD, N_CLUSTER = 600, 500
CONFIG = {"method": "toy", "version": 1}


def clustered_sky(seed: int = 1) -> Table:
    """A field spread over the sky plus a dense clump (so the HATS partitions have several orders)."""
    rng = np.random.default_rng(seed)
    n = N_FIELD + N_CLUSTER
    ra = np.r_[rng.uniform(0, 360, N_FIELD), 50 + rng.normal(0, 3, N_CLUSTER)] % 360
    dec = np.r_[np.degrees(np.arcsin(rng.uniform(-1, 1, N_FIELD))), 20 + rng.normal(0, 3, N_CLUSTER)]
    table = Table(
        {
            "source_id": rng.permutation(n).astype(np.int64) * 3 + 1,
            "ra": ra,
            "dec": dec,
            "parallax": rng.normal(1.5, 0.6, n),
            "parallax_error": rng.uniform(0.05, 0.3, n),
            "mag_G": rng.uniform(10, 19, n),
            "mag_err_G": np.full(n, 0.01),
        }
    )
    table["parallax"][[5, 77]] = -0.5
    return table


def write_hats(table: Table, path: Path, **kwargs) -> Path:
    """Write ``table`` as a HATS collection with lsdb (partitions of at most 120 rows, orders 0 to 7)."""
    import warnings

    import dask

    df = table.to_pandas()
    with dask.config.set(scheduler="synchronous"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation chatter of pandas/nested-pandas inside lsdb
        catalog = lsdb.from_dataframe(
            df, ra_column="ra", dec_column="dec", lowest_order=0, highest_order=7, partition_rows=120
        )
        catalog.write_catalog(path, catalog_name="stars", overwrite=True, progress_bar=False, **kwargs)
    return path


def toy_process(table: Table, row_ids: np.ndarray) -> dict:
    """Inverse-parallax distances and flags (values only) plus a column that depends on the row id."""
    plx = np.asarray(table["parallax"], dtype=np.float64)
    with np.errstate(divide="ignore"):
        distance = np.where(plx > 0, 1000.0 / plx, np.nan)
    return {
        "distance": distance,
        "flags": np.where(plx > 0, 0, 2).astype(np.int64),
        "wobble": np.sin(0.37 * row_ids.astype(np.float64)),
    }


@pytest.fixture(scope="module")
def sky() -> Table:
    return clustered_sky()


@pytest.fixture(scope="module")
def hats_dir(tmp_path_factory, sky) -> Path:
    # directory partitions (Npix=P/ folders) with row groups of 40 rows: the general layout
    return write_hats(
        sky, tmp_path_factory.mktemp("hats") / "sky", npix_suffix="/", row_group_kwargs={"num_rows": 40}
    )


@pytest.fixture(scope="module")
def lsdb_order(hats_dir) -> np.ndarray:
    """source_id in the order lsdb itself reads the catalog (partitions in order, rows in file order)."""
    import warnings

    import dask

    with dask.config.set(scheduler="synchronous"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = lsdb.open_catalog(hats_dir).compute()
    return np.asarray(frame["source_id"], dtype=np.int64)


@pytest.fixture(scope="module")
def plain_parquet(tmp_path_factory, sky) -> Path:
    path = tmp_path_factory.mktemp("plain") / "sky.parquet"
    write_table(sky, path)
    return path


def _counting(calls: list):
    def process(table, row_ids):
        calls.append(int(row_ids[0]))
        return toy_process(table, row_ids)

    return process


def _run(path, out, process=toy_process, **kwargs):
    kwargs.setdefault("chunk_rows", 1000)
    kwargs.setdefault("config", CONFIG)
    kwargs.setdefault("progress", False)
    return run_catalog(path, out, process, **kwargs)


def test_partitions_in_canonical_order(hats_dir, lsdb_order, sky):
    catalog = open_hats_catalog(hats_dir)
    orders = {p.order for p in catalog.partitions}
    assert len(catalog.partitions) >= 10 and len(orders) >= 3  # a real multi-order partitioning
    assert catalog.n_rows == len(sky) == count_rows(hats_dir)
    # the catalog directory inside the collection is the same catalog
    assert [p.files for p in open_hats_catalog(catalog.catalog_dir).partitions] == [
        p.files for p in catalog.partitions
    ]
    # one block per partition when chunk_rows is large; rows in lsdb's order; every star exactly once
    blocks = list(iter_raw_chunks(hats_dir, 10_000))
    assert len(blocks) == len(catalog.partitions)
    assert [len(b) for _, b in blocks] == [p.n_rows for p in catalog.partitions]
    assert [s for s, _ in blocks] == list(np.cumsum([0] + [len(b) for _, b in blocks])[:-1])
    ids = np.concatenate([np.asarray(b["source_id"]) for _, b in blocks])
    np.testing.assert_array_equal(ids, lsdb_order)
    assert sorted(ids) == sorted(np.asarray(sky["source_id"]))


def test_large_partitions_are_split(hats_dir, lsdb_order):
    catalog = open_hats_catalog(hats_dir)
    chunk = 37
    blocks = list(iter_chunks(hats_dir, chunk))  # canonical schema
    assert len(blocks) == sum(-(-p.n_rows // chunk) for p in catalog.partitions)
    assert all(len(b) <= chunk for _, b in blocks)
    np.testing.assert_array_equal(np.concatenate([np.asarray(b["source_id"]) for _, b in blocks]), lsdb_order)
    assert blocks[0][1]["parallax"].unit == "mas"


def test_run_matches_the_same_rows_as_plain_parquet(hats_dir, plain_parquet, lsdb_order, sky, tmp_path):
    catalog = open_hats_catalog(hats_dir)
    out = tmp_path / "hats.parquet"
    summary = _run(hats_dir, out)
    assert summary.n_chunks == len(catalog.partitions) and summary.n_rows == len(sky)
    result = Table.read(out)
    np.testing.assert_array_equal(result["row_id"], np.arange(len(sky)))
    np.testing.assert_array_equal(result["source_id"], lsdb_order)  # row_id = position in canonical order
    np.testing.assert_array_equal(result["wobble"], np.sin(0.37 * np.arange(len(sky))))
    assert result.meta["jaxstars_run"]["input"]["path"] == str(hats_dir.resolve())

    plain = Table.read(_run(plain_parquet, tmp_path / "plain.parquet").output_path)
    by_id = {sid: i for i, sid in enumerate(np.asarray(plain["source_id"]))}
    index = np.array([by_id[sid] for sid in np.asarray(result["source_id"])])
    assert sorted(index) == list(range(len(sky)))  # every row once
    for name in ("distance", "flags"):
        np.testing.assert_array_equal(np.asarray(result[name]), np.asarray(plain[name])[index], err_msg=name)
    assert np.count_nonzero(result["flags"]) == np.count_nonzero(np.asarray(sky["parallax"]) <= 0) >= 2

    # chunks smaller than the partitions: same output file
    split = tmp_path / "split.parquet"
    summary = _run(hats_dir, split, chunk_rows=37)
    assert summary.n_chunks == sum(-(-p.n_rows // 37) for p in catalog.partitions)
    other = Table.read(split)
    for name in result.colnames:
        np.testing.assert_array_equal(np.asarray(other[name]), np.asarray(result[name]), err_msg=name)


def test_failed_hats_run_resumes_and_the_manifest_follows_partitions(hats_dir, tmp_path):
    catalog = open_hats_catalog(hats_dir)
    sizes = [p.n_rows for p in catalog.partitions]
    starts = np.cumsum([0] + sizes)
    bad = 6  # the partition that fails
    out = tmp_path / "out.parquet"
    calls: list[int] = []

    def failing(table, row_ids):
        calls.append(int(row_ids[0]))
        if row_ids[0] == starts[bad]:
            raise ValueError("model exploded")
        return toy_process(table, row_ids)

    where = catalog.partitions[bad].describe()
    with pytest.raises(
        ChunkProcessingError, match=rf"rows {starts[bad]} to {starts[bad + 1] - 1} .*{where}"
    ) as info:
        _run(hats_dir, out, failing)
    assert (info.value.chunk, info.value.start, info.value.stop) == (bad, starts[bad], starts[bad + 1])
    manifest = json.loads((Path(f"{out}.parts") / MANIFEST_NAME).read_text())
    assert manifest["layout"] == "hats" and manifest["n_partitions"] == len(sizes)
    assert manifest["completed"] == [
        {"parts": [0, bad - 1], "rows": [0, int(starts[bad])], "n_rows": int(starts[bad])}
    ]

    calls.clear()
    summary = _run(hats_dir, out, _counting(calls))
    assert summary.n_resumed_chunks == bad and min(calls) == starts[bad]
    assert summary.n_rows_processed == int(starts[-1] - starts[bad])
    reference = Table.read(_run(hats_dir, tmp_path / "ref.parquet").output_path)
    result = Table.read(out)
    for name in reference.colnames:
        np.testing.assert_array_equal(np.asarray(result[name]), np.asarray(reference[name]), err_msg=name)


def test_multi_file_partitions_and_changed_catalog(hats_dir, lsdb_order, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(hats_dir, copy)
    catalog = open_hats_catalog(copy)
    # split the largest partition's file in two (a directory partition may hold several files)
    part = max(catalog.partitions, key=lambda p: p.n_rows)
    (file,) = part.files
    data = pq.read_table(file)
    half = data.num_rows // 2
    os.remove(file)
    pq.write_table(data.slice(0, half), Path(file).parent / "a.parquet", row_group_size=7)
    pq.write_table(data.slice(half), Path(file).parent / "b.parquet")
    reopened = open_hats_catalog(copy)
    split = next(p for p in reopened.partitions if (p.order, p.pixel) == (part.order, part.pixel))
    assert len(split.files) == 2 and split.n_rows == part.n_rows
    for chunk in (10_000, 13):
        ids = np.concatenate([np.asarray(b["source_id"]) for _, b in iter_raw_chunks(copy, chunk)])
        np.testing.assert_array_equal(ids, lsdb_order)

    out = tmp_path / "out.parquet"
    with pytest.raises(ChunkProcessingError):
        _run(copy, out, lambda t, r: 1 / 0)
    # a partition file changed: the half-done run is not mixed with the new content
    os.utime(split.files[1], ns=(0, os.stat(split.files[1]).st_mtime_ns + 10**9))
    with pytest.raises(RunMismatchError, match="input file"):
        _run(copy, out)


@pytest.mark.slow
def test_local_dask_cluster_maps_partitions_to_tasks(hats_dir, tmp_path):
    """``dask=2``: a local cluster of 2 worker processes is started for the run and closed after it; every
    partition is a task, and the output is the single-process output, byte for byte."""
    import multiprocessing

    sys.path.insert(0, str(Path(__file__).parent))
    from test_catalog_runner import toy_process as light  # workers import its module, not this one (lsdb)

    before = {p.pid for p in multiprocessing.active_children()}
    single = _run(hats_dir, tmp_path / "single.parquet", light, chunk_rows=90)
    on_dask = _run(hats_dir, tmp_path / "dask.parquet", light, chunk_rows=90, dask=2)
    assert on_dask.n_workers == 2 and on_dask.n_chunks == single.n_chunks > len(
        open_hats_catalog(hats_dir).partitions
    )
    assert (tmp_path / "dask.parquet").read_bytes() == (tmp_path / "single.parquet").read_bytes()
    deadline = time.monotonic() + 30
    while {p.pid for p in multiprocessing.active_children()} - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not {p.pid for p in multiprocessing.active_children()} - before  # the workers are gone
