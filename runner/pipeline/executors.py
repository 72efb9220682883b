"""Where rows run: this process (the default) or a Dask cluster.

An executor is a value, like the door results leave by: :func:`resolve_executor` turns what the
user gave (``None``, ``"dask"``, ``"dask://HOST:8786"``, a ``distributed.Client``, or an object
with this module's :class:`Executor` shape) into one, and the run hands it the engine and the
lazy stream of ``(row, trial)`` items. The run never asks which executor it holds.

The Dask executor sends each row-trial to the cluster as one task: the function, its nested
spans, ``completion()`` calls and the per-row scorers all run on a worker (the engine's own row
code, so timeouts and retries behave as on one machine), and the finished row comes back to the
driver, which tallies and logs it through the engine's collector exactly as in-process rows
are. At most ``n_workers`` tasks are in flight and the next row is read only when one finishes,
so a file of any size streams. A worker that dies mid-row has its task re-run by Dask elsewhere;
only the driver logs, and once per row, so each row is stored exactly once.

>>> exp.run(executor="dask")                      # doctest: +SKIP  (a LocalCluster here)
>>> exp.run(executor="dask://scheduler:8786")     # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid as uuidlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Protocol

from runner.backends.target import Target
from runner.errors import ConfigError
from runner.pipeline.dataset import Row
from runner.pipeline.engine import Engine, RowOutcome
from runner.pipeline.executor_tasks import SpecLoadError, pickle_spec, rows_task, rows_task_async, spec_of

__all__ = ["DaskExecutor", "Executor", "InProcessExecutor", "resolve_executor"]


class Executor(Protocol):
    """Runs the engine's rows somewhere and hands every finished row to the engine's collector."""

    name: str

    async def run(
        self,
        engine: Engine,
        items: Iterator[tuple[Row, int]],
        *,
        resources: Mapping[str, float] | None,
        target: Target | None,
    ) -> None: ...


class InProcessExecutor:
    """Today's behaviour: rows run on this machine, in threads (sync) or on the loop (async)."""

    name = "in-process"

    async def run(
        self,
        engine: Engine,
        items: Iterator[tuple[Row, int]],
        *,
        resources: Mapping[str, float] | None,
        target: Target | None,
    ) -> None:
        await engine.run(items)


def resolve_executor(value: Any) -> Executor:
    """The executor named by ``value``; the one place that decides where rows run.

    ``None``/``"local"``: this process. ``"dask"``: a LocalCluster of worker processes on this
    machine, started for the run. ``"dask://HOST:PORT"`` (or ``tcp://``/``tls://``): an existing
    Dask scheduler. A ``distributed.Client``: the cluster it is connected to."""
    if value is None or value in ("local", "in-process"):
        return InProcessExecutor()
    if isinstance(value, str):
        if value == "dask":
            return DaskExecutor()
        for scheme in ("dask://", "tcp://", "tls://"):
            if value.startswith(scheme):
                rest = value[len(scheme):]
                if not rest:
                    break
                return DaskExecutor(address=("tcp://" if scheme == "dask://" else scheme) + rest)
        raise ConfigError(
            f"executor={value!r}: unknown executor; use 'dask' (a cluster on this machine), "
            "'dask://HOST:8786' (a Dask scheduler) or a distributed.Client"
        )
    if type(value).__module__.startswith("distributed") and hasattr(value, "scheduler"):
        return DaskExecutor(client=value)
    if callable(getattr(value, "run", None)) and isinstance(getattr(value, "name", None), str):
        executor: Executor = value
        return executor
    raise ConfigError(
        f"executor={value!r} is not an executor; use 'dask', 'dask://HOST:8786' or a distributed.Client"
    )


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ConfigError(
            "the Dask executor needs dask and distributed: pip install 'runner[dask]'"
        ) from exc
    return distributed


# -- the driver side ------------------------------------------------------------------------------
#: Each Dask connection keeps its last ``low-level-log-length`` messages (default 1,000) for
#: debugging, the tasks' arguments included: with rows as arguments that is up to 1,000 batches
#: of rows per connection held by the driver (its client's, and when the scheduler lives in the
#: driver, the scheduler's to each worker). The connections the executor opens keep a few.
_SHORT_LOGS = {"distributed.admin.low-level-log-length": 20}

class DaskExecutor:
    """Rows as tasks on a Dask cluster: a LocalCluster (``address=None``), a scheduler address,
    or the cluster an existing ``distributed.Client`` is connected to."""

    name = "dask"

    def __init__(self, address: str | None = None, client: Any = None, n_processes: int | None = None) -> None:
        self.address = address
        self.client = client
        self.n_processes = n_processes
        #: the most row-trials, and the most Dask tasks (futures), in flight at once in the last
        #: run: never above its ``n_workers``, however many rows the dataset has
        self.peak_in_flight = 0
        self.peak_tasks = 0

    def __repr__(self) -> str:
        where = self.address or (self.client and "a distributed.Client") or "a LocalCluster"
        return f"DaskExecutor({where})"

    @contextlib.asynccontextmanager
    async def _connect(self, n_workers: int) -> AsyncIterator[Any]:
        distributed = _distributed()
        if self.client is not None and getattr(self.client, "asynchronous", False):
            yield self.client
            return
        import dask

        address = self.address
        if self.client is not None:
            address = self.client.scheduler.address
        if address is not None:
            try:
                with dask.config.set(_SHORT_LOGS):
                    client = await distributed.Client(address, asynchronous=True, timeout="30s")
            except OSError as exc:
                raise ConfigError(
                    f"cannot reach the Dask scheduler at {address}: {exc}; start one with `dask scheduler` "
                    "and workers with `dask worker ADDRESS`"
                ) from exc
            try:
                yield client
            finally:
                await client.close()
            return
        # one process per core (CPU-heavy rows are what a local cluster is for); two threads each,
        # so one row computes while another's result is sent back. Rows beyond that wait in
        # batches (see _BatchSizer), not in threads fighting over one GIL.
        procs = self.n_processes or max(1, min(os.cpu_count() or 1, n_workers))
        # the scheduler lives in this process: no dashboard, and short histories of finished
        # tasks, so a million rows do not leave a million records behind in the driver
        with dask.config.set(
            {"distributed.scheduler.dashboard.tasks.task-stream-length": 1000, "distributed.admin.log-length": 1000,
             **_SHORT_LOGS}
        ):
            cluster = await distributed.LocalCluster(
                n_workers=procs,
                threads_per_worker=2,
                processes=True,
                host="127.0.0.1",
                dashboard_address=":0",
                scheduler_kwargs={"dashboard": False},
                asynchronous=True,
                silence_logs=40,
            )
        try:
            with dask.config.set(_SHORT_LOGS):
                client = await distributed.Client(cluster, asynchronous=True)
            try:
                yield client
            finally:
                await client.close()
        finally:
            await cluster.close()

    async def run(
        self,
        engine: Engine,
        items: Iterator[tuple[Row, int]],
        *,
        resources: Mapping[str, float] | None,
        target: Target | None,
    ) -> None:
        distributed = _distributed()
        blob = pickle_spec(spec_of(engine, target))  # before any row runs: an unsendable function fails here
        task = rows_task_async if engine.is_async else rows_task
        collector = engine.collector
        tag = uuidlib.uuid4().hex[:8]
        self.peak_in_flight = self.peak_tasks = 0
        async with self._connect(engine.n_workers) as client:
            sizer = _BatchSizer(engine.n_workers, engine.is_async, client.scheduler_info().get("workers", {}))
            pending: dict[str, list[tuple[Row, int]]] = {}
            done = distributed.as_completed(loop=client.loop)
            in_flight = 0
            serial = 0

            def submit_more() -> None:
                nonlocal in_flight, serial
                while not engine.stopping and in_flight < engine.n_workers:
                    size = min(sizer.size(), engine.n_workers - in_flight)
                    if in_flight and size < sizer.size():
                        return  # wait for a whole batch's room: fewer, fuller tasks
                    batch = []
                    for item in items:
                        batch.append(item)
                        if len(batch) >= size:
                            break
                    if not batch:
                        return
                    serial += 1
                    row = batch[0][0]
                    future = client.submit(
                        task, blob, batch,
                        key=f"runner-rows-{tag}-{serial}-{row.id[:40]}-{len(batch)}",
                        pure=False,
                        resources=dict(resources) if resources else None,
                    )
                    pending[future.key] = batch
                    in_flight += len(batch)
                    self.peak_in_flight = max(self.peak_in_flight, in_flight)
                    self.peak_tasks = max(self.peak_tasks, len(pending))
                    now = time.monotonic()
                    for r, t in batch:
                        engine.running[(r.id, t)] = now
                    done.add(future)

            try:
                submit_more()
                while pending:
                    future = await _next_done(done)
                    batch = pending.pop(future.key)
                    outcomes = await _outcomes_of(engine, future, batch)
                    future.release()
                    in_flight -= len(batch)
                    submit_more()  # the next rows start before this batch is tallied and logged
                    engine.last_finished = time.monotonic()
                    for outcome in outcomes:
                        engine.running.pop((outcome.row.id, outcome.trial), None)
                        sizer.observe(outcome.log.latency)
                        await collector.add(outcome)
            except BaseException:
                # cancelled (second Ctrl-C) or failed: nothing queued keeps running for this run
                engine.stop()
                futures = list(done.futures)
                if futures:
                    with contextlib.suppress(Exception):
                        await client.cancel(futures)
                raise


class _BatchSizer:
    """How many rows one Dask task carries.

    A Dask task costs milliseconds of scheduling, more than a short row: rows that take
    little time travel several to a task (sync ones run one after the other on a worker
    thread, async ones concurrently on the worker's loop), sized so a task lasts about
    ``TARGET`` seconds, yet never so few tasks that a worker thread sits idle: sync rows leave
    room for two tasks per worker thread, so each thread has the next one queued while the
    result of the last travels back to the driver and the driver sends more (with exactly one
    per thread, every thread idled for that round trip after each task: 2,000 rows of 10 ms
    took 37 s where bare Dask tasks took 19 s)."""

    TARGET = 0.2

    def __init__(self, n_workers: int, is_async: bool, workers: Mapping[str, Any]) -> None:
        slots = sum(int(w.get("nthreads", 1)) for w in workers.values()) or 1
        procs = len(workers) or 1
        self.is_async = is_async
        # sync: two tasks per worker thread; async: about two tasks per worker process
        self.cap = max(1, n_workers // (2 * procs) if is_async else n_workers // (2 * slots))
        self.seen = 0
        self.total = 0.0

    def observe(self, latency: float) -> None:
        self.seen += 1
        self.total += max(latency, 0.0)

    def size(self) -> int:
        if self.is_async:
            return self.cap  # concurrent within a task: its length is one row's, not the sum
        if self.seen < 4:
            return 1
        mean = self.total / self.seen
        return max(1, min(self.cap, int(self.TARGET / mean) if mean > 0 else self.cap))


async def _next_done(done: Any) -> Any:
    return await done.__anext__()


async def _outcomes_of(engine: Engine, future: Any, batch: list[tuple[Row, int]]) -> list[RowOutcome]:
    """The finished rows a task returned; rows whose worker kept dying become those rows' errors."""
    distributed = _distributed()
    if future.status == "finished":
        outcomes: list[RowOutcome] = await future
        return outcomes
    exc = await future.exception()
    if isinstance(exc, SpecLoadError):
        raise exc
    if isinstance(exc, distributed.KilledWorker):
        message = f"the Dask workers running this row died each time it was tried ({exc})"
    else:
        message = f"the Dask task running this row failed: {type(exc).__name__}: {exc}"
    out = []
    for row, trial in batch:
        root = engine._root(row, trial)
        root.status = "error"
        root.error = message
        root.finish()
        out.append(engine._outcome(row, trial, root, [], []))
    return out
