"""run_catalog on Dask (jaxstars.catalog.distributed): same output as one process, resumable, clear failures.

One local cluster of 2 worker processes serves the whole module. The reference for every Dask run is the
single-process run of the same call (the output files must be byte-identical) and, through it, the direct
whole-file computation of ``test_catalog_runner``. The kill test runs the client in a subprocess connected to the
module's scheduler by address (the ``--scheduler`` path) and SIGKILLs it mid-run.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from run_checks import completed_rows, kill_after_rows

from jaxstars.astro.catalog_io import write_table
from jaxstars.catalog import ChunkProcessingError, ChunkProcessor, DaskSettings, run_catalog
from jaxstars.catalog.runner import MANIFEST_NAME

sys.path.insert(0, str(Path(__file__).parent))
from test_catalog_runner import CONFIG, N, _raw_catalog, toy_arrays, toy_process

distributed = pytest.importorskip("distributed")

CHUNK = 97  # 11 chunks


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, worker_dashboard_address=None
    )
    client = distributed.Client(cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="module")
def raw():
    return _raw_catalog()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, raw) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("dask_inputs")
    paths = {}
    for suffix in ("parquet", "fits", "hdf5", "csv"):
        paths[suffix] = folder / f"cat.{suffix}"
        write_table(raw, paths[suffix])
    return paths


@pytest.fixture(scope="module")
def reference(raw) -> Table:
    res = toy_arrays(raw["parallax"], np.arange(N))
    out = Table({"row_id": np.arange(N, dtype=np.int64), "source_id": raw["source_id"]})
    for name, values in res.items():
        out[name] = values
    return out


def _run(path, out, process=toy_process, **kwargs):
    kwargs.setdefault("chunk_rows", CHUNK)
    kwargs.setdefault("config", CONFIG)
    kwargs.setdefault("progress", False)
    return run_catalog(path, out, process, **kwargs)


def _assert_same(a: Table, b: Table) -> None:
    assert a.colnames == b.colnames and len(a) == len(b)
    for name in a.colnames:
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)


SETUPS: dict[int, int] = {}  # per process: how many times a ProcessRecorder was set up


class ProcessRecorder(ChunkProcessor):
    """Records which process computed each row and how often setup ran there."""

    def __init__(self, scale: float):
        self.scale = scale

    def setup(self):
        SETUPS[os.getpid()] = SETUPS.get(os.getpid(), 0) + 1
        self.lock = threading.Lock()  # unpicklable state: must not travel
        self.model = lambda plx: self.scale * np.asarray(plx)

    def __call__(self, table, row_ids):
        with self.lock:
            return {
                "x": self.model(table["parallax"]),
                "pid": np.full(len(row_ids), os.getpid()),
                "n_setups": np.full(len(row_ids), SETUPS[os.getpid()]),
            }


# ------------------------------------------------------------------------------------------------ results


@pytest.mark.parametrize(
    ("suffix", "ship_data"),
    [("parquet", False), ("fits", False), ("hdf5", False), ("csv", False), ("parquet", True)],
)
def test_dask_run_is_byte_identical_to_single_process(client, inputs, reference, tmp_path, suffix, ship_data):
    single = _run(inputs[suffix], tmp_path / "single.parquet")
    on_dask = _run(
        inputs[suffix], tmp_path / "dask.parquet", dask=DaskSettings(client=client, ship_data=ship_data)
    )
    assert (tmp_path / "dask.parquet").read_bytes() == (tmp_path / "single.parquet").read_bytes()
    _assert_same(Table.read(tmp_path / "dask.parquet"), reference)  # same values, row ids, flags
    assert on_dask.n_workers == 2 and single.n_workers == 0
    assert (on_dask.n_rows, on_dask.n_chunks, on_dask.n_rows_processed) == (N, 11, N)
    assert on_dask.finite_counts == single.finite_counts
    assert not Path(f"{tmp_path / 'dask.parquet'}.parts").exists()


def test_chunk_processor_is_set_up_once_per_worker(client, inputs, raw, tmp_path):
    processor = ProcessRecorder(2.0)
    processor(raw[:3], np.arange(3))  # set up here: the lock and the lambda must not be pickled
    assert processor.is_set_up and SETUPS[os.getpid()] == 1
    clone = pickle.loads(pickle.dumps(processor))
    assert not clone.is_set_up and not hasattr(clone, "lock") and clone.scale == 2.0

    summary = _run(inputs["parquet"], tmp_path / "out.parquet", processor, chunk_rows=50, dask=client)
    assert summary.n_chunks == 21
    out = Table.read(tmp_path / "out.parquet")
    np.testing.assert_array_equal(out["x"], 2.0 * np.asarray(raw["parallax"]))
    pids = set(np.asarray(out["pid"]).tolist())
    assert os.getpid() not in pids and 1 <= len(pids) <= 2  # computed on the workers
    np.testing.assert_array_equal(out["n_setups"], 1)  # every worker set up once for all its chunks
    assert SETUPS[os.getpid()] == 1


def test_unpicklable_process_chunk_is_refused_before_starting(client, inputs, tmp_path):
    lock = threading.Lock()

    def locked(table, row_ids):
        with lock:
            return toy_process(table, row_ids)

    out = tmp_path / "out.parquet"
    with pytest.raises(TypeError, match=r"cannot be pickled.*ChunkProcessor.*setup\(\)"):
        _run(inputs["parquet"], out, locked, dask=client)
    assert not out.exists() and not Path(f"{out}.parts").exists()

    class Eager(ChunkProcessor):
        def __init__(self):
            self.lock = threading.Lock()  # built in __init__: travels with the instance, so it cannot be sent

        def __call__(self, table, row_ids):
            return toy_process(table, row_ids)

    with pytest.raises(TypeError, match="cannot be pickled"):
        _run(inputs["parquet"], out, Eager(), dask=client)
    _run(inputs["parquet"], out, locked)  # without Dask the same function is fine


def _explode_at(row: int):
    def process(table, row_ids):
        if row_ids[0] == row:
            raise ValueError("model exploded")
        return toy_process(table, row_ids)

    return process


def test_worker_exception_names_the_chunk_and_rerun_resumes(client, inputs, reference, tmp_path):
    out = tmp_path / "out.parquet"
    manifest_path = Path(f"{out}.parts") / MANIFEST_NAME
    # a single-process run stops at chunk 2; the Dask run resumes it and stops at chunk 4 ...
    with pytest.raises(ChunkProcessingError):
        _run(inputs["parquet"], out, _explode_at(2 * CHUNK))
    assert completed_rows(manifest_path) == 2 * CHUNK
    pattern = r"chunk 4 \(rows 388 to 484 of .*cat\.parquet.*model exploded"
    with pytest.raises(ChunkProcessingError, match=pattern) as info:
        _run(inputs["parquet"], out, _explode_at(4 * CHUNK), dask=client)
    err = info.value
    assert (err.chunk, err.start, err.stop) == (4, 388, 485)
    assert isinstance(err.__cause__, ValueError) and "model exploded" in str(err.__cause__)
    manifest = json.loads(manifest_path.read_text())
    done = [(run["rows"][0], run["rows"][1]) for run in manifest["completed"]]
    assert done[0][0] == 0 and done[0][1] >= 2 * CHUNK  # the earlier parts were kept
    assert all(stop <= 388 or start >= 485 for start, stop in done)  # the failed chunk is not listed
    # ... and a single-process rerun finishes it
    summary = _run(inputs["parquet"], out)
    assert summary.n_resumed_chunks == sum(run["parts"][1] - run["parts"][0] + 1 for run in manifest["completed"])
    _assert_same(Table.read(out), reference)


def test_unusable_results_on_a_worker_name_the_chunk(client, inputs, tmp_path):
    def short(table, row_ids):
        return {"x": np.zeros(len(row_ids) - (row_ids[0] == 2 * CHUNK))}

    with pytest.raises(ChunkProcessingError, match=r"rows 194 to 290.*'x' has 96 rows"):
        _run(inputs["parquet"], tmp_path / "a.parquet", short, dask=client)


# ------------------------------------------------------------------------------------------------ interruptions


def test_sigkilled_dask_client_resumes_to_the_uninterrupted_output(client, inputs, reference, tmp_path):
    chunk_rows = 92  # 11 chunks, 0.25 s each on the workers
    catalog = inputs["parquet"]
    uninterrupted = tmp_path / "uninterrupted.parquet"
    _run(catalog, uninterrupted, chunk_rows=chunk_rows)
    out = tmp_path / "killed.parquet"
    manifest = Path(f"{out}.parts") / MANIFEST_NAME
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r});"
        "from test_catalog_runner import slow_toy_process, CONFIG;"
        "from jaxstars.catalog import run_catalog;"
        f"run_catalog({str(catalog)!r}, {str(out)!r}, slow_toy_process, chunk_rows={chunk_rows},"
        f" config=CONFIG, progress=False, dask={client.scheduler.address!r})"
    )
    done_before = kill_after_rows([sys.executable, "-c", code], manifest, 2 * chunk_rows, timeout=120)
    assert 2 * chunk_rows <= done_before < N and not out.exists()

    summary = _run(catalog, out, chunk_rows=chunk_rows, dask=client)
    assert summary.n_resumed_chunks >= 2 and summary.n_rows_processed == N - done_before
    resumed = Table.read(out)
    np.testing.assert_array_equal(resumed["row_id"], np.arange(N))  # no duplicated, no missing rows
    assert out.read_bytes() == uninterrupted.read_bytes()
    _assert_same(resumed, reference)


def test_settings_coercion():
    assert DaskSettings.coerce(None) is None and DaskSettings.coerce(False) is None
    assert DaskSettings.coerce(3).n_workers == 3 and DaskSettings.coerce("2").n_workers == 2
    assert DaskSettings.coerce("tcp://10.0.0.1:8786").scheduler == "tcp://10.0.0.1:8786"
    assert DaskSettings.coerce("10.0.0.1:8786").scheduler == "tcp://10.0.0.1:8786"
    with pytest.raises(ValueError, match="at most one"):
        DaskSettings(n_workers=2, scheduler="tcp://x:1")
    with pytest.raises(ValueError, match="positive"):
        DaskSettings(n_workers=0)
    with pytest.raises(TypeError, match="dask must be"):
        DaskSettings.coerce(2.5)


def test_worker_side_reads_check_the_input(inputs, raw, tmp_path):
    """What a worker reads by reference is the client's block; another file (or none) is refused clearly."""
    from jaxstars.catalog.stream import _block_refs, _read_block

    for suffix in ("parquet", "fits", "hdf5"):
        refs = _block_refs(inputs[suffix], CHUNK, None, None)
        assert len(refs) == 11 and (refs[3].start, refs[3].stop) == (291, 388)
        np.testing.assert_array_equal(_read_block(refs[3])["source_id"], raw["source_id"][291:388])
    assert _block_refs(inputs["csv"], CHUNK, None, None) is None  # text: shipped from the client instead
    ref = _block_refs(inputs["parquet"], CHUNK, None, None)[0]
    moved = tmp_path / "elsewhere.parquet"
    with pytest.raises(FileNotFoundError, match="shared storage.*ship_data"):
        _read_block(type(ref)(**{**ref.__dict__, "files": (str(moved),)}))
    moved.write_bytes(b"not the same file")
    with pytest.raises(OSError, match="not the same file"):
        _read_block(type(ref)(**{**ref.__dict__, "files": (str(moved),)}))
