"""Resumable chunked runs (jaxstars.catalog.runner): a killed or failed run, resumed, equals an uninterrupted one.

The toy ``process_chunk`` computes inverse-parallax distances, flags and a row-id-dependent column; the reference
for every run is the same arithmetic applied directly to the whole input file (read with astropy), so row order,
row ids and values are checked against something the runner did not produce. Interruptions are real (SIGKILL of a
subprocess) or reproduce, file by file, the state a kill leaves in each window of the run (part written but not
in the manifest, half-written temporaries, killed during or after the merge).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import astropy.units as u
import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.table import Column, Table
from run_checks import completed_rows, kill_after_rows

from jaxstars.astro.catalog_io import write_table
from jaxstars.catalog import ChunkProcessingError, ParquetChunkWriter, RunMismatchError, run_catalog
from jaxstars.catalog.runner import MANIFEST_NAME

N = 1003
CHUNK = 200  # 6 chunks: 5 × 200 + 3
CONFIG = {"method": "toy inverse parallax", "version": 1}
BAD_PARALLAX = (4, 450)  # negative parallaxes
NAN_PARALLAX = (7,)


def _flag_names(value: int) -> list[str]:
    return [name for name, bit in (("no_parallax", 1), ("nonpositive_parallax", 2)) if value & bit]


def toy_arrays(parallax: np.ndarray, row_ids: np.ndarray) -> dict[str, np.ndarray]:
    """The toy results as plain arrays (used by ``toy_process`` and, on the whole file, as the reference)."""
    plx = np.asarray(parallax, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = np.where(plx > 0, 1000.0 / plx, np.nan)
    flags = np.where(np.isfinite(plx), 0, 1) | np.where(plx <= 0, 2, 0)
    draws = (distance[:, None] * (1.0 + 0.01 * np.arange(3))).astype(np.float32)
    return {
        "distance": distance,
        "flags": flags.astype(np.int64),
        "wobble": np.sin(0.37 * np.asarray(row_ids, dtype=np.float64)),  # depends on the global row index only
        "draws": draws,
    }


def toy_process(table: Table, row_ids: np.ndarray) -> dict:
    res = toy_arrays(table["parallax"], row_ids)
    res["distance"] = Column(res["distance"], unit=u.pc, description="inverse parallax distance")
    res["draws"] = res["draws"] * u.pc
    return res


def slow_toy_process(table: Table, row_ids: np.ndarray) -> dict:
    time.sleep(0.25)
    return toy_process(table, row_ids)


def _raw_catalog(n: int = N) -> Table:
    rng = np.random.default_rng(3)
    raw = Table(
        {
            "source_id": rng.permutation(n).astype(np.int64) * 7 + 11,  # not the row index
            "ra": rng.uniform(0, 360, n),
            "dec": rng.uniform(-90, 90, n),
            "parallax": rng.normal(1.5, 0.6, n),
            "parallax_error": rng.uniform(0.05, 0.3, n),
            "mag_G": rng.uniform(10, 19, n),
            "mag_err_G": np.full(n, 0.01),
            "label": np.array([f"s{i}" for i in range(n)]),
        }
    )
    for row in BAD_PARALLAX:
        raw["parallax"][row] = -abs(raw["parallax"][row]) - 0.1
    for row in NAN_PARALLAX:
        raw["parallax"][row] = np.nan
    return raw


@pytest.fixture(scope="module")
def raw():
    return _raw_catalog()


@pytest.fixture(scope="module")
def catalog_path(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("runner_input") / "cat.parquet"
    write_table(raw, path)
    return path


@pytest.fixture(scope="module")
def reference(raw) -> Table:
    """Expected output, computed directly from the input table (no chunking, no runner)."""
    res = toy_arrays(raw["parallax"], np.arange(N))
    out = Table()
    out["row_id"] = np.arange(N, dtype=np.int64)
    out["source_id"] = raw["source_id"]
    for name, values in res.items():
        out[name] = values
    return out


def _assert_same(a: Table, b: Table) -> None:
    assert a.colnames == b.colnames
    assert len(a) == len(b)
    for name in a.colnames:
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)


def _read(path: Path) -> Table:
    return Table.read(path)


def _run(catalog_path, out, process=toy_process, **kwargs):
    kwargs.setdefault("chunk_rows", CHUNK)
    kwargs.setdefault("config", CONFIG)
    kwargs.setdefault("progress", False)
    return run_catalog(catalog_path, out, process, **kwargs)


def _failing_at(chunk: int, calls: list):
    def process(table, row_ids):
        calls.append(int(row_ids[0]) if len(row_ids) else -1)
        if row_ids[0] == chunk * CHUNK:
            raise ValueError("model exploded")
        return toy_process(table, row_ids)

    return process


# ------------------------------------------------------------------------------------------------ results


def test_uninterrupted_run_matches_direct_computation(catalog_path, raw, reference, tmp_path):
    out = tmp_path / "out.parquet"
    summary = _run(catalog_path, out, flag_names=_flag_names)
    table = _read(out)
    _assert_same(table, reference)
    assert table["distance"].unit == u.pc and table["draws"].unit == u.pc
    assert table["distance"].description == "inverse parallax distance"
    assert table.meta["jaxstars_run"]["config"] == CONFIG and table.meta["jaxstars_run"]["chunk_rows"] == CHUNK
    assert (summary.n_rows, summary.n_chunks, summary.n_resumed_chunks, summary.n_rows_processed) == (N, 6, 0, N)
    assert summary.output_path == out and summary.work_dir is None and not summary.already_complete
    assert summary.rows_per_second > 0 and summary.seconds > 0
    plx = np.asarray(raw["parallax"])
    n_nonpositive = int(np.count_nonzero(plx <= 0))
    assert n_nonpositive >= len(BAD_PARALLAX)
    assert summary.flag_counts == {"no_parallax": len(NAN_PARALLAX), "nonpositive_parallax": n_nonpositive}
    assert summary.finite_counts["distance"] == N - len(NAN_PARALLAX) - n_nonpositive
    assert summary.finite_counts["wobble"] == N
    assert not Path(f"{out}.parts").exists()
    # a rerun of the same call recognises its own output and does nothing
    again = _run(catalog_path, out, process=_failing_at(0, []), flag_names=_flag_names)
    assert again.already_complete and again.n_rows_processed == 0 and again.n_resumed_chunks == 6
    assert again.flag_counts == summary.flag_counts and again.finite_counts == summary.finite_counts


@pytest.mark.parametrize("chunk_rows", [N, 13, 97, 1000])
def test_chunk_size_does_not_change_results(catalog_path, reference, tmp_path, chunk_rows):
    out = tmp_path / "out.parquet"
    summary = _run(catalog_path, out, chunk_rows=chunk_rows)
    assert summary.n_chunks == -(-N // chunk_rows)
    _assert_same(_read(out), reference)


@pytest.mark.parametrize("suffix", ["fits", "csv"])
def test_other_input_formats_and_outputs(raw, reference, tmp_path, suffix):
    path = tmp_path / f"cat.{suffix}"
    write_table(raw, path)
    out = tmp_path / "out.parquet"
    summary = _run(path, out, chunk_rows=97, read_options={"extra_columns": ["label"]})
    assert summary.n_rows == N  # CSV: the row count is learnt while reading
    _assert_same(_read(out), reference)
    # a FITS output (collected, written at the end) holds the same values
    fits_out = tmp_path / "out.fits"
    _run(path, fits_out, chunk_rows=97, read_options={"extra_columns": ["label"]})
    _assert_same(Table.read(fits_out, mask_invalid=False), reference)


def test_keep_columns_row_id_and_units(catalog_path, raw, tmp_path):
    out = tmp_path / "out.parquet"
    seen = []

    def process(table, row_ids):
        seen.append((int(row_ids[0]), len(row_ids), row_ids.dtype))
        assert table["parallax"].unit == u.mas  # canonical schema
        np.testing.assert_array_equal(table["label"], raw["label"][row_ids])  # extra column carried
        return Table({"x": np.asarray(table["parallax"]) * 2})

    _run(
        catalog_path,
        out,
        process,
        keep_columns=("LABEL", "source_id", "no_such_column"),
        write_row_id=False,
        read_options={"extra_columns": ["label"]},
    )
    table = _read(out)
    assert table.colnames == ["LABEL", "source_id", "x"]
    np.testing.assert_array_equal(table["LABEL"], raw["label"])
    np.testing.assert_array_equal(table["x"], 2 * np.asarray(raw["parallax"]))
    assert seen == [(s, min(CHUNK, N - s), np.dtype(np.int64)) for s in range(0, N, CHUNK)]


def test_empty_input(tmp_path, raw):
    path = tmp_path / "empty.parquet"
    write_table(raw[:0], path)
    out = tmp_path / "out.parquet"
    summary = _run(path, out)
    assert (summary.n_rows, summary.n_chunks) == (0, 1)
    table = _read(out)
    assert len(table) == 0 and table.colnames == ["row_id", "source_id", "distance", "flags", "wobble", "draws"]


# ------------------------------------------------------------------------------------------------ interruptions


def test_sigkilled_run_resumes_to_the_uninterrupted_output(catalog_path, reference, tmp_path):
    # 11 chunks of 92 rows, 0.25 s each in the subprocess: killed once two parts are recorded
    chunk_rows = 92
    uninterrupted = tmp_path / "uninterrupted.parquet"
    _run(catalog_path, uninterrupted, chunk_rows=chunk_rows)
    out = tmp_path / "killed.parquet"
    manifest = Path(f"{out}.parts") / MANIFEST_NAME
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r});"
        "from test_catalog_runner import slow_toy_process, CONFIG;"
        "from jaxstars.catalog import run_catalog;"
        f"run_catalog({str(catalog_path)!r}, {str(out)!r}, slow_toy_process, chunk_rows={chunk_rows},"
        " config=CONFIG, progress=False)"
    )
    done_before = kill_after_rows([sys.executable, "-c", code], manifest, 2 * chunk_rows, timeout=120)
    assert 2 * chunk_rows <= done_before < N and not out.exists()

    calls = []

    def counting(table, row_ids):
        calls.append(int(row_ids[0]))
        return toy_process(table, row_ids)

    summary = _run(catalog_path, out, counting, chunk_rows=chunk_rows)
    assert summary.n_resumed_chunks == done_before // chunk_rows >= 2
    assert summary.n_chunks == 11 and len(calls) == 11 - summary.n_resumed_chunks
    assert min(calls) >= done_before  # finished chunks were not recomputed
    resumed = _read(out)
    np.testing.assert_array_equal(resumed["row_id"], np.arange(N))  # no duplicated, no missing rows
    _assert_same(resumed, _read(uninterrupted))
    _assert_same(resumed, reference)


def test_failure_names_row_range_and_rerun_resumes(catalog_path, reference, tmp_path):
    out = tmp_path / "out.parquet"
    calls: list[int] = []
    with pytest.raises(ChunkProcessingError, match=r"rows 600 to 799 of .*cat\.parquet.*model exploded") as info:
        _run(catalog_path, out, _failing_at(3, calls))
    err = info.value
    assert (err.chunk, err.start, err.stop) == (3, 600, 800)
    assert isinstance(err.__cause__, ValueError)
    assert calls == [0, 200, 400, 600] and not out.exists()
    manifest = json.loads((Path(f"{out}.parts") / MANIFEST_NAME).read_text())
    assert manifest["completed"] == [{"parts": [0, 2], "rows": [0, 600], "n_rows": 600}]
    assert manifest["chunk_rows"] == CHUNK and manifest["config"] == CONFIG and manifest["input"]["n_rows"] == N

    calls.clear()
    summary = _run(catalog_path, out, _failing_at(99, calls))
    assert summary.n_resumed_chunks == 3 and summary.n_rows_processed == N - 600
    assert calls == [600, 800, 1000]
    _assert_same(_read(out), reference)


def test_part_not_in_manifest_or_damaged_is_recomputed(catalog_path, reference, tmp_path):
    out = tmp_path / "out.parquet"
    _run(catalog_path, out, keep_parts=True)
    work = Path(f"{out}.parts")
    manifest_path = work / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    assert manifest["completed"] == [{"parts": [0, 5], "rows": [0, N], "n_rows": N}]
    # state left by a kill between a part's rename and the manifest update: part 2 exists (here with wrong
    # values) but is not listed; part 4 is listed but its file was truncated; a stale temporary lies around
    wrong = Table({"row_id": np.arange(400, 600), "source_id": np.zeros(200, np.int64)})
    for name in ("distance", "flags", "wobble"):
        wrong[name] = np.zeros(200)
    wrong["draws"] = np.zeros((200, 3), np.float32)
    with ParquetChunkWriter(work / "part-000002.parquet", overwrite=True) as writer:
        writer.write(wrong)
    manifest["completed"] = [
        {"parts": [0, 1], "rows": [0, 400], "n_rows": 400},
        {"parts": [3, 5], "rows": [600, N], "n_rows": N - 600},
    ]
    manifest_path.write_text(json.dumps(manifest))
    data = (work / "part-000004.parquet").read_bytes()
    (work / "part-000004.parquet").write_bytes(data[: len(data) // 2])
    (work / "part-000005.parquet.partial").write_bytes(b"half a file")

    calls: list[int] = []
    summary = _run(catalog_path, out, _failing_at(99, calls))
    assert sorted(calls) == [400, 800] and summary.n_resumed_chunks == 4
    _assert_same(_read(out), reference)
    assert not work.exists()


def test_kill_during_or_after_merge(catalog_path, reference, tmp_path):
    out = tmp_path / "out.parquet"
    _run(catalog_path, out, keep_parts=True)
    work = Path(f"{out}.parts")
    # killed during the merge: a half-written temporary output, all parts finished
    out.unlink()
    Path(f"{out}.partial").write_bytes(b"PAR1 truncated")
    summary = _run(catalog_path, out, _failing_at(0, []), keep_parts=True)
    assert summary.n_resumed_chunks == summary.n_chunks == 6 and summary.n_rows_processed == 0
    _assert_same(_read(out), reference)
    assert not Path(f"{out}.partial").exists()
    # killed after the output was moved into place, before the work directory was removed
    summary = _run(catalog_path, out, _failing_at(0, []))
    assert summary.n_resumed_chunks == 6 and not summary.already_complete and not work.exists()
    _assert_same(_read(out), reference)
    # killed after the manifest was deleted (parts left): the output is recognised as complete
    work.mkdir()
    (work / "part-000000.parquet").write_bytes(b"leftover")
    summary = _run(catalog_path, out, _failing_at(0, []))
    assert summary.already_complete and summary.n_rows == N
    _assert_same(_read(out), reference)
    assert not work.exists()


# ------------------------------------------------------------------------------------------------ settings


def test_changed_settings_raise_and_overwrite_restarts(catalog_path, reference, tmp_path):
    source = tmp_path / "cat.parquet"
    source.write_bytes(catalog_path.read_bytes())
    out = tmp_path / "out.parquet"
    with pytest.raises(ChunkProcessingError):
        _run(source, out, _failing_at(2, []))
    with pytest.raises(RunMismatchError, match=r"config.*overwrite=True"):
        _run(source, out, config={**CONFIG, "version": 2})
    with pytest.raises(RunMismatchError, match=r"chunk_rows: 200 there, 100 now.*--overwrite"):
        _run(source, out, chunk_rows=100)
    with pytest.raises(RunMismatchError, match="keep_columns"):
        _run(source, out, keep_columns=())
    with pytest.raises(RunMismatchError, match="read_options"):
        _run(source, out, read_options={"extra_columns": ["label"]})
    # the input file changed since the parts were computed (same path, new modification time)
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(RunMismatchError, match="input file"):
        _run(source, out)
    assert not out.exists()

    calls: list[int] = []

    def doubled(table, row_ids):
        calls.append(int(row_ids[0]))
        res = toy_process(table, row_ids)
        res["wobble"] = 2 * res["wobble"]
        return res

    summary = _run(source, out, doubled, config={**CONFIG, "version": 2}, overwrite=True)
    assert summary.n_resumed_chunks == 0 and calls == list(range(0, N, CHUNK))
    table = _read(out)
    np.testing.assert_array_equal(table["wobble"], 2 * reference["wobble"])
    assert table.meta["jaxstars_run"]["config"]["version"] == 2
    # the output now belongs to config version 2: the original call refuses to replace it ...
    with pytest.raises(FileExistsError, match="overwrite"):
        _run(source, out)
    # ... and replaces it with overwrite=True
    _run(source, out, overwrite=True)
    _assert_same(_read(out), reference)


def test_unrelated_existing_output_is_not_replaced(catalog_path, tmp_path):
    out = tmp_path / "out.parquet"
    write_table(Table({"a": [1, 2]}), out)
    with pytest.raises(FileExistsError, match="overwrite"):
        _run(catalog_path, out)
    assert len(Table.read(out)) == 2 and not Path(f"{out}.parts").exists()
    with pytest.raises(ValueError, match="different file"):
        _run(catalog_path, catalog_path, overwrite=True)
    with pytest.raises(ValueError, match="suffix"):
        _run(catalog_path, tmp_path / "out.unknown")
    with pytest.raises(TypeError, match="JSON"):
        _run(catalog_path, out, config={"f": object()}, overwrite=True)
    with pytest.raises(FileNotFoundError):
        _run(tmp_path / "absent.parquet", out)


def test_unusable_results_name_the_chunk(catalog_path, tmp_path):
    def short(table, row_ids):
        return {"x": np.zeros(len(row_ids) - (row_ids[0] == 400))}

    with pytest.raises(ChunkProcessingError, match=r"rows 400 to 599.*'x' has 199 rows"):
        _run(catalog_path, tmp_path / "a.parquet", short)

    def changing(table, row_ids):
        return {"x" if row_ids[0] < 200 else "y": np.zeros(len(row_ids))}

    with pytest.raises(ChunkProcessingError, match=r"rows 200 to 399.*same columns"):
        _run(catalog_path, tmp_path / "b.parquet", changing)

    def clashing(table, row_ids):
        return {"source_id": np.zeros(len(row_ids))}

    with pytest.raises(ChunkProcessingError, match="clash"):
        _run(catalog_path, tmp_path / "c.parquet", clashing)


def test_a_second_process_on_the_same_output_is_refused(catalog_path, tmp_path):
    out = tmp_path / "out.parquet"
    work = Path(f"{out}.parts")
    work.mkdir()
    with open(work / ".lock", "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running process holds it
        with pytest.raises(RuntimeError, match="another process"):
            _run(catalog_path, out)
    assert not out.exists()
    _run(catalog_path, out)  # released: the run goes ahead
    assert pq.ParquetFile(out).metadata.num_rows == N


@pytest.mark.slow
def test_repeated_random_kills(catalog_path, reference, tmp_path):
    """Kill the run at random moments, several times in a row, then finish it: always the reference output."""
    rng = np.random.default_rng(0)
    chunk_rows = 25  # 41 chunks
    tests = str(Path(__file__).parent)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    for trial in range(4):
        out = tmp_path / f"out{trial}.parquet"
        manifest = Path(f"{out}.parts") / MANIFEST_NAME
        code = (
            f"import sys, time; sys.path.insert(0, {tests!r});"
            "from test_catalog_runner import toy_process, CONFIG;"
            "from jaxstars.catalog import run_catalog;"
            "slow = lambda t, r: (time.sleep(0.03), toy_process(t, r))[1];"
            f"run_catalog({str(catalog_path)!r}, {str(out)!r}, slow, chunk_rows={chunk_rows}, config=CONFIG,"
            " progress=False)"
        )
        for _ in range(3):
            proc = subprocess.Popen([sys.executable, "-c", code], env=env)
            target = completed_rows(manifest) + int(rng.integers(0, 8)) * chunk_rows
            while completed_rows(manifest) < target and proc.poll() is None:
                time.sleep(0.005)
            time.sleep(float(rng.uniform(0, 0.05)))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        _run(catalog_path, out, chunk_rows=chunk_rows)
        _assert_same(_read(out), reference)
