"""Chunked catalog reading and writing (jaxstars.catalog.stream): rows, order, values, units survive chunking.

The reference for every chunked read is the whole-file reader :func:`jaxstars.astro.catalog_io.read_catalog`;
Parquet outputs are read back with astropy's own ``Table.read``.
"""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.table import MaskedColumn, Table, vstack

from jaxstars.astro.catalog_io import read_catalog, to_canonical, write_catalog
from jaxstars.catalog import (
    BufferedChunkWriter,
    CSVChunkWriter,
    ParquetChunkWriter,
    chunk_writer,
    count_rows,
    iter_chunks,
    iter_raw_chunks,
    peek,
)

N = 1003


def _catalog(n: int = N) -> Table:
    rng = np.random.default_rng(7)
    raw = Table(
        {
            "source_id": np.arange(n, dtype=np.int64) * 11 + 5,
            "ra": rng.uniform(0, 360, n),
            "dec": rng.uniform(-90, 90, n),
            "parallax": rng.normal(1.0, 0.5, n),
            "parallax_error": rng.uniform(0.05, 0.2, n),
            "mag_G": rng.uniform(10, 19, n),
            "mag_err_G": np.full(n, 0.01),
            "mag_BP": rng.uniform(10, 19, n),
            "mag_err_BP": np.full(n, 0.02),
            "label": np.array([f"star{i}" for i in range(n)]),
        }
    )
    raw["mag_G"][3] = np.nan  # a missing magnitude stays a NaN row
    raw["parallax_error"][4] = -1.0  # a flagged row
    return to_canonical(raw, extra_columns=["label"])


def _assert_tables_equal(a: Table, b: Table) -> None:
    assert a.colnames == b.colnames
    assert len(a) == len(b)
    for name in a.colnames:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        if x.dtype.kind == "f":
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            assert np.array_equal(
                x.astype(str) if x.dtype.kind in "US" else x, y.astype(str) if y.dtype.kind in "US" else y
            ), name
        assert a[name].unit == b[name].unit, name


@pytest.fixture(scope="module")
def catalog():
    return _catalog()


@pytest.mark.parametrize("suffix", ["parquet", "fits", "csv", "h5", "ecsv"])
def test_chunks_equal_whole_file(tmp_path, catalog, suffix):
    path = tmp_path / f"cat.{suffix}"
    write_catalog(catalog, path)
    blocks = list(iter_chunks(path, 100, extra_columns=["label"]))
    assert [s for s, _ in blocks] == list(range(0, N, 100))
    assert [len(b) for _, b in blocks] == [100] * 10 + [3]
    whole = read_catalog(path, extra_columns=["label"])
    _assert_tables_equal(vstack([b for _, b in blocks], metadata_conflicts="silent"), whole)
    # the catalog values themselves, in the original order
    joined = vstack([b for _, b in blocks], metadata_conflicts="silent")
    np.testing.assert_array_equal(joined["source_id"], catalog["source_id"])
    np.testing.assert_allclose(joined["parallax"], catalog["parallax"], rtol=1e-15)
    assert joined["parallax"].unit == u.mas
    assert np.isnan(joined["mag_G"][3]) and joined["flags"][4] == catalog["flags"][4] != 0
    expected_rows = None if suffix in ("csv", "ecsv") else N
    assert count_rows(path) == expected_rows
    assert len(peek(path, 2)) == 2 and "source_id" in peek(path).colnames


def test_parquet_rechunks_across_row_groups_without_whole_file_reads(tmp_path, catalog, monkeypatch):
    path = tmp_path / "groups.parquet"
    write_catalog(catalog, tmp_path / "one.parquet")
    pq.write_table(pq.read_table(tmp_path / "one.parquet"), path, row_group_size=37)  # 28 row groups
    assert pq.ParquetFile(path).num_row_groups > 20

    def refuse(*args, **kwargs):
        raise AssertionError("whole-file read")

    monkeypatch.setattr(pq, "read_table", refuse)
    monkeypatch.setattr(Table, "read", refuse)
    blocks = list(iter_chunks(path, 250, extra_columns=["label"]))
    monkeypatch.undo()
    assert [(s, len(b)) for s, b in blocks] == [(0, 250), (250, 250), (500, 250), (750, 250), (1000, 3)]
    _assert_tables_equal(
        vstack([b for _, b in blocks], metadata_conflicts="silent"), read_catalog(path, extra_columns=["label"])
    )


def test_column_selection_and_errors(tmp_path, catalog):
    path = tmp_path / "cat.parquet"
    write_catalog(catalog, path)
    (start, block), *_ = list(iter_raw_chunks(path, 500, columns=["PARALLAX", "source_id"]))
    assert block.colnames == ["source_id", "parallax"] and start == 0
    with pytest.raises(ValueError, match="nope"):
        next(iter_raw_chunks(path, 10, columns=["nope"]))
    with pytest.raises(ValueError, match="chunk_rows"):
        next(iter_chunks(path, 0))
    with pytest.raises(FileNotFoundError):
        next(iter_chunks(tmp_path / "absent.parquet"))


def test_empty_file_yields_one_empty_block(tmp_path, catalog):
    path = tmp_path / "empty.parquet"
    write_catalog(catalog[:0], path)
    blocks = list(iter_chunks(path, 10))
    assert len(blocks) == 1 and blocks[0][0] == 0 and len(blocks[0][1]) == 0
    assert "mag_G" in blocks[0][1].colnames


def _result_block(start: int, n: int) -> Table:
    t = Table()
    t["row"] = np.arange(start, start + n, dtype=np.int64)
    t["value"] = MaskedColumn(
        np.sqrt(np.arange(start, start + n, dtype=np.float64)), mask=(np.arange(start, start + n) % 7 == 0)
    )
    t["value"].unit = u.pc
    t["value"].description = "a distance"
    t["names"] = np.array(["x" * (1 + (start + i) // 100) for i in range(n)])  # widths grow across blocks
    t["vec"] = np.arange(start, start + n, dtype=np.float32)[:, None] * np.array([1.0, 2.0, 3.0], np.float32)
    t.meta["NOTE"] = "kept"
    return t


def test_parquet_writer_round_trip(tmp_path):
    path = tmp_path / "out.parquet"
    sizes = [(0, 100), (100, 100), (200, 57)]
    with ParquetChunkWriter(path) as writer:
        for start, n in sizes:
            writer.write(_result_block(start, n))
        assert not path.exists()  # only the .partial exists until close
    assert writer.n_rows == 257 and not path.with_name("out.parquet.partial").exists()
    assert pq.ParquetFile(path).num_row_groups == 3
    expected = vstack([_result_block(s, n) for s, n in sizes])
    back = Table.read(path)  # astropy's own reader
    np.testing.assert_array_equal(back["row"], expected["row"])
    # astropy's reader turns float nulls into NaN
    np.testing.assert_array_equal(np.asarray(back["value"]), expected["value"].filled(np.nan))
    assert back["value"].unit == u.pc and back["value"].description == "a distance"
    assert list(back["names"]) == list(expected["names"])  # no truncation to the first block's width
    np.testing.assert_array_equal(back["vec"], expected["vec"])
    assert back.meta["NOTE"] == "kept"
    # and through the chunked reader, re-cut differently
    blocks = list(iter_raw_chunks(path, 60))
    assert [s for s, _ in blocks] == [0, 60, 120, 180, 240]
    joined = vstack([b for _, b in blocks])
    assert list(joined["names"]) == list(expected["names"]) and joined["value"].unit == u.pc
    np.testing.assert_array_equal(joined["value"].mask, expected["value"].mask)


def test_writers_are_atomic_and_refuse_to_overwrite(tmp_path):
    path = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError, match="boom"), ParquetChunkWriter(path) as writer:
        writer.write(_result_block(0, 10))
        raise RuntimeError("boom")
    assert not path.exists() and not path.with_name("out.parquet.partial").exists()
    path.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        ParquetChunkWriter(path)
    with ParquetChunkWriter(path, overwrite=True) as writer:
        writer.write(_result_block(0, 5))
    assert len(Table.read(path)) == 5
    with pytest.raises(ValueError, match="columns"), ParquetChunkWriter(tmp_path / "bad.parquet") as writer:
        writer.write(_result_block(0, 5))
        writer.write(_result_block(5, 5)[["row", "value"]])
    assert not (tmp_path / "bad.parquet").exists()


def test_csv_and_buffered_writers(tmp_path):
    blocks = [_result_block(0, 40), _result_block(40, 30)]
    expected = vstack(blocks)
    with chunk_writer(tmp_path / "out.csv") as writer:
        assert isinstance(writer, CSVChunkWriter)
        for b in blocks:
            writer.write(b)
    back = Table.read(tmp_path / "out.csv", format="ascii.csv")
    assert back.colnames == ["row", "value", "names", "vec_0", "vec_1", "vec_2"]
    np.testing.assert_array_equal(back["row"], expected["row"])
    np.testing.assert_array_equal(back["vec_2"], expected["vec"][:, 2])
    np.testing.assert_array_equal(np.ma.getmaskarray(back["value"]), expected["value"].mask)
    np.testing.assert_array_equal(
        back["value"][~expected["value"].mask], expected["value"][~expected["value"].mask]
    )
    for suffix in ("fits", "h5"):
        with chunk_writer(tmp_path / f"out.{suffix}") as writer:
            assert isinstance(writer, BufferedChunkWriter)
            for b in blocks:
                writer.write(b)
        back = vstack([b for _, b in iter_raw_chunks(tmp_path / f"out.{suffix}", 25)])
        np.testing.assert_array_equal(back["row"], expected["row"])
        np.testing.assert_array_equal(back["vec"], expected["vec"])
        assert back["value"].unit == u.pc


def test_hdf5_other_dataset_name(tmp_path, catalog):
    path = tmp_path / "other.h5"
    catalog.write(path, path="stars", serialize_meta=True)
    blocks = list(iter_chunks(path, 400, extra_columns=["label"]))
    assert [len(b) for _, b in blocks] == [400, 400, 203]
    np.testing.assert_array_equal(vstack([b for _, b in blocks])["source_id"], catalog["source_id"])
    assert blocks[0][1]["parallax"].unit == u.mas


def test_arrow_nulls_become_masked_then_nan(tmp_path):
    path = tmp_path / "nulls.parquet"
    pq.write_table(
        pa.table(
            {
                "parallax": pa.array([1.0, None, 2.0]),
                "mag_G": pa.array([15.0, 16.0, None]),
                "ph_qual": pa.array(["AAA", None, "BBB"]),
            }
        ),
        path,
    )
    ((_, block),) = list(iter_chunks(path, 10))
    np.testing.assert_array_equal(block["parallax"], [1.0, np.nan, 2.0])
    np.testing.assert_array_equal(block["mag_G"], [15.0, 16.0, np.nan])
    assert list(block["ph_qual"]) == ["AAA", "", "BBB"]
