"""Scale-out of :func:`~jaxstars.catalog.run_catalog` on Dask, and :class:`ChunkProcessor` for model-backed work.

``run_catalog(..., dask=...)`` computes the chunks on Dask workers while the calling process (the *client*)
keeps every other duty of a run: it alone writes the part files and the manifest (so resuming after a kill works
exactly as for a single-process run), shows the progress bar and logs. What ``dask`` may be:

* an ``int`` ``N`` (or ``True`` for one worker per CPU core): a local cluster of ``N`` worker **processes** with
  one thread each, started for the run and closed at its end;
* a scheduler address ``"tcp://host:8786"``: an existing cluster, only connected to (it is left running);
* a ``distributed.Client``: used as it is (left open);
* a :class:`DaskSettings` for the finer settings below.

How the work is distributed
---------------------------
* **Workers read their own chunks.** For inputs that can be read by row range — Parquet, HDF5, FITS and HATS
  catalogs — a task carries only a reference (file, first and last row, the expected file size), never the data:
  the client does not become a bottleneck and nothing big crosses the network. This needs the input to be
  visible to every worker **at the same path** (a shared file system on a multi-node cluster); a worker that
  does not see the file, or sees a file of another size, fails the chunk with a message saying so. Text formats
  (CSV, ECSV, VOTable), whose rows cannot be reached without parsing the file up to them, and runs with
  ``DaskSettings(ship_data=True)`` (input visible to the client only) read the chunks on the client, in order,
  and send each chunk's table with its task instead.
* **Bounded work in flight.** At most ``max_in_flight`` tasks (default: twice the worker threads) are submitted
  at a time; a new chunk is submitted whenever one finishes. Memory on the client is bounded by that many
  chunks' results, whatever the catalog size.
* **Out of order, exactly once.** Finished chunks are written (part file, then manifest) as they arrive, in any
  order; the manifest lists exactly the finished parts, so a rerun after a kill computes only the missing ones,
  and the final merge writes the parts in row order. The output is the same file as a single-process run of the
  same call (same bytes for a Parquet output), and a run may be resumed with or without Dask.
* **HATS catalogs**: every HEALPix partition is one task (or several, if it has more than ``chunk_rows`` rows).
* **Failures**: an exception in ``process_chunk`` (or in reading its chunk, or a worker dying on it) stops the run
  with :class:`~jaxstars.catalog.ChunkProcessingError` naming the chunk and its rows, the remote exception chained
  as ``__cause__``; the other tasks are cancelled and finished parts are kept for the rerun.

Sending ``process_chunk`` to the workers
----------------------------------------
``process_chunk`` is pickled with ``cloudpickle`` (which can send lambdas, closures and functions of the running
script by value) and scattered once to each worker. Functions from installed modules are sent by reference, so
the module must be importable on the workers. Anything that cannot be pickled (a loaded JAX model with its
compiled functions, open files, locks) must not be part of it: subclass :class:`ChunkProcessor`, keep in the
instance only what describes the work (a model directory, a seed, a prior name) and build the heavy state in
:meth:`ChunkProcessor.setup`, which runs lazily, once per process, before the first chunk. A ``process_chunk``
that cannot be pickled is refused before the run starts with a ``TypeError`` that says why.

A script that starts a local cluster (``dask=N``) must guard its entry point with ``if __name__ == "__main__":``
— workers are started with the ``spawn`` method, which re-imports the main module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["ChunkProcessor", "DaskSettings"]

logger = logging.getLogger("jaxstars.catalog")

_SETUP_LOCK = threading.RLock()
_READY = "_jaxstars_ready"
_PRISTINE = "_jaxstars_pristine"


class ChunkProcessor:
    """Base class for ``process_chunk`` callables whose working state must be built where they run.

    Subclasses implement :meth:`setup` (load the model, compile functions — anything that cannot or should not be
    pickled) and :meth:`__call__` (process one chunk). :meth:`setup` is called automatically, once per process
    and thread-safely, before the first call; on Dask that is once per worker process, since the processor is
    sent to each worker once and reused for all its chunks.

    Pickling (sending to a worker) keeps the instance as it was **before** :meth:`setup`: every attribute that
    :meth:`setup` (or a later call) assigns is dropped, and the receiving process runs :meth:`setup` again. So
    store the recipe (paths, seeds, settings) in ``__init__`` and the heavy objects in :meth:`setup`; assign new
    attributes there rather than mutating objects created in ``__init__``.

    Examples
    --------
    A processor computing distance posteriors with a saved colour–magnitude model::

        from jaxstars.catalog import ChunkProcessor, run_catalog
        from jaxstars.models.cmd import CMDModel, distance_posteriors, prepare_stars

        class Distances(ChunkProcessor):
            def __init__(self, model_dir, seed=0):
                self.model_dir, self.seed = str(model_dir), seed

            def setup(self):
                self.model, self.params = CMDModel.load(self.model_dir)

            def __call__(self, table, row_ids):
                stars = prepare_stars(self.model.features, table)
                res = distance_posteriors(self.model, self.params, stars, key=self.seed, row_ids=row_ids)
                return {"distance_q50": res["distance_q50"], "flags": res["flags"]}

        if __name__ == "__main__":
            run_catalog("stars.parquet", "distances.parquet", Distances("model/"), dask=2,
                        config={"model": "model/", "seed": 0})
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        call = cls.__dict__.get("__call__")
        if call is not None and not getattr(call, "_jaxstars_runs_setup", False):

            @functools.wraps(call)
            def call_after_setup(self, *args, **kw):
                self.ensure_setup()
                return call(self, *args, **kw)

            call_after_setup._jaxstars_runs_setup = True
            cls.__call__ = call_after_setup

    def setup(self) -> None:
        """Build the working state (load models, compile functions); called once per process before the first chunk.

        The default does nothing.
        """

    def __call__(self, table, row_ids):
        """Process one chunk: ``table`` (astropy Table, canonical schema) and its int64 ``row_ids``.

        Parameters
        ----------
        table : astropy.table.Table
            The chunk's rows.
        row_ids : numpy.ndarray
            Their global row indices.

        Returns
        -------
        dict or astropy.table.Table
            One value per input row for every output column (see :func:`~jaxstars.catalog.run_catalog`).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(table, row_ids)")

    def ensure_setup(self) -> None:
        """Run :meth:`setup` if it has not run in this process yet (thread-safe; a failed setup is retried)."""
        if self.__dict__.get(_READY):
            return
        with _SETUP_LOCK:
            if self.__dict__.get(_READY):
                return
            pristine = {k: v for k, v in self.__dict__.items() if not k.startswith("_jaxstars_")}
            self.setup()
            self.__dict__[_PRISTINE] = pristine
            self.__dict__[_READY] = True

    @property
    def is_set_up(self) -> bool:
        """Whether :meth:`setup` has run on this instance (in this process)."""
        return bool(self.__dict__.get(_READY))

    def __getstate__(self) -> dict:
        state = self.__dict__.get(_PRISTINE, self.__dict__)
        return {k: v for k, v in state.items() if not k.startswith("_jaxstars_")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


@dataclasses.dataclass(frozen=True)
class DaskSettings:
    """Where and how :func:`~jaxstars.catalog.run_catalog` runs its chunks on Dask.

    Give at most one of ``n_workers``, ``scheduler`` and ``client``; with none, a local cluster of one worker per
    CPU core is started.

    Attributes
    ----------
    n_workers : int, optional
        Start a local cluster (``distributed.LocalCluster``) of this many worker processes for the run; it is
        closed at the end.
    scheduler : str, optional
        Address of a running scheduler (``"tcp://10.0.0.1:8786"``) to connect to; the cluster is left running.
    client : distributed.Client, optional
        An existing client, used as it is and left open.
    threads_per_worker : int
        Threads of each local worker (default 1: JAX parallelises inside a process, and one thread per process
        keeps a worker's chunks from competing for its cores).
    max_in_flight : int, optional
        Most tasks submitted at a time; default twice the number of worker threads at the start of the run.
    ship_data : bool
        Read every chunk on the client and send it with its task, for an input the workers cannot see. By
        default workers read their chunks themselves (Parquet, HDF5, FITS, HATS; text formats are always
        shipped).
    worker_timeout : float
        Seconds to wait for at least one worker of an external cluster before giving up.
    cluster_options : mapping
        Extra keyword arguments for ``distributed.LocalCluster`` (e.g. ``{"memory_limit": "4GiB"}``).
    """

    n_workers: int | None = None
    scheduler: str | None = None
    client: Any = None
    threads_per_worker: int = 1
    max_in_flight: int | None = None
    ship_data: bool = False
    worker_timeout: float = 60.0
    cluster_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        given = [name for name in ("n_workers", "scheduler", "client") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of n_workers, scheduler and client (got {', '.join(given)})")
        if self.n_workers is not None and (int(self.n_workers) != self.n_workers or self.n_workers < 1):
            raise ValueError(f"n_workers must be a positive integer, got {self.n_workers!r}")
        if int(self.threads_per_worker) != self.threads_per_worker or self.threads_per_worker < 1:
            raise ValueError(f"threads_per_worker must be a positive integer, got {self.threads_per_worker!r}")
        if self.max_in_flight is not None and (
            int(self.max_in_flight) != self.max_in_flight or self.max_in_flight < 1
        ):
            raise ValueError(f"max_in_flight must be a positive integer, got {self.max_in_flight!r}")

    @classmethod
    def coerce(cls, value: Any) -> DaskSettings | None:
        """The settings meant by ``run_catalog``'s ``dask`` argument.

        Parameters
        ----------
        value : None, bool, int, str, distributed.Client or DaskSettings
            ``None``/``False``: no Dask; ``True``: a local cluster of one worker per core; an ``int`` (or a
            string of digits): a local cluster of that many workers; another string: a scheduler address; a
            client; or settings.

        Returns
        -------
        DaskSettings or None
        """
        if value is None or value is False:
            return None
        if isinstance(value, DaskSettings):
            return value
        if value is True:
            return cls(n_workers=os.cpu_count() or 1)
        if isinstance(value, int):
            return cls(n_workers=value)
        if isinstance(value, str):
            text = value.strip()
            if text.isdigit():
                return cls(n_workers=int(text))
            if not text:
                raise ValueError("dask: empty scheduler address")
            return cls(scheduler=text if "://" in text else f"tcp://{text}")
        if hasattr(value, "submit") and hasattr(value, "scatter"):
            return cls(client=value)
        raise TypeError(
            "dask must be None, a number of local workers, a scheduler address, a distributed.Client or "
            f"DaskSettings; got {type(value).__name__}"
        )

    def describe(self) -> str:
        """A short description for log messages."""
        if self.scheduler is not None:
            return f"Dask scheduler {self.scheduler}"
        if self.client is not None:
            return "the given Dask client"
        n = self.n_workers or os.cpu_count() or 1
        return f"a local Dask cluster of {n} worker process(es) × {self.threads_per_worker} thread(s)"


def check_picklable(process_chunk: Any) -> None:
    """Raise a ``TypeError`` explaining the fix when ``process_chunk`` cannot be sent to Dask workers.

    Parameters
    ----------
    process_chunk : callable
        The per-chunk function or :class:`ChunkProcessor`.

    Raises
    ------
    TypeError
        ``cloudpickle`` cannot serialise it (the message names the failure).
    """
    import cloudpickle

    try:
        cloudpickle.dumps(process_chunk)
    # pickling raises TypeError, PicklingError, AttributeError, ... depending on the object
    except Exception as err:
        raise TypeError(
            f"process_chunk {process_chunk!r} cannot be pickled, so it cannot be sent to Dask workers "
            f"({type(err).__name__}: {err}). Keep unpicklable state (loaded models, jitted functions, open files, "
            f"locks) out of it: subclass jaxstars.catalog.ChunkProcessor and build that state in setup(), which "
            f"runs on each worker; or run without dask"
        ) from err


@contextlib.contextmanager
def dask_client(settings: DaskSettings) -> Iterator[tuple[Any, int]]:
    """A connected ``distributed.Client`` for ``settings`` and its number of worker threads.

    A local cluster is started here and closed on exit; an external scheduler is only connected to (the client
    is closed on exit, the cluster keeps running); a given client is left open.

    Parameters
    ----------
    settings : DaskSettings
        Where to run.

    Yields
    ------
    (distributed.Client, int)
        The client and the total number of worker threads.
    """
    from distributed import Client, LocalCluster

    if settings.client is not None:
        yield settings.client, _threads(settings.client, settings)
        return
    if settings.scheduler is not None:
        client = Client(settings.scheduler, timeout=settings.worker_timeout, set_as_default=False)
        try:
            yield client, _threads(client, settings)
        finally:
            client.close()
        return
    n_workers = settings.n_workers or os.cpu_count() or 1
    options = {"dashboard_address": None, **dict(settings.cluster_options)}
    cluster = LocalCluster(
        n_workers=n_workers, threads_per_worker=settings.threads_per_worker, processes=True, **options
    )
    try:
        client = Client(cluster, set_as_default=False)
        try:
            yield client, _threads(client, settings)
        finally:
            client.close()
    finally:
        cluster.close()


def _threads(client: Any, settings: DaskSettings) -> int:
    """Total worker threads, after waiting (up to ``worker_timeout``) for at least one worker."""
    try:
        client.wait_for_workers(1, timeout=settings.worker_timeout)
    except TimeoutError:
        raise RuntimeError(
            f"no Dask worker joined {settings.describe()} within {settings.worker_timeout:.0f} s; start workers "
            f"with `dask worker <scheduler address>`"
        ) from None
    return max(1, sum(client.nthreads().values()))
