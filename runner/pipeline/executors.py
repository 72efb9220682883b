"""Where rows run: this process (the default) or a Dask cluster.

An executor is a value, like the door results leave by: :func:`resolve_executor` turns what the
user gave (``None``, ``"dask"``, ``"dask://HOST:8786"``, a ``distributed.Client``, or an object
with this module's :class:`Executor` shape) into one, and the run hands it the engine and the
lazy stream of ``(row, trial)`` items. The run never asks which executor it holds.

The Dask executor sends each row-trial to the cluster as one task: the function, its nested
spans, ``completion()`` calls and the per-row scorers all run on a worker (the engine's own row
code, so timeouts and retries behave as on one machine), and the finished row comes back to the
driver, which tallies and logs it through the engine's collector exactly as in-process rows
are. At most ``n_workers`` rows run at once across the cluster (a few more may wait on the
workers, see :class:`_BatchSizer`), and the next row is read only when one finishes, so a file
of any size streams. A worker that dies mid-row has its task re-run by Dask elsewhere;
only the driver logs, and once per row, so each row is stored exactly once.

>>> exp.run(executor="dask")                      # doctest: +SKIP  (a LocalCluster here)
>>> exp.run(executor="dask://scheduler:8786")     # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
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
from runner.pipeline.executor_tasks import (
    SpecLoadError,
    pack_rows,
    pickle_spec,
    rows_task,
    rows_task_async,
    spec_of,
    stop_rows,
    unpack_outcomes,
)

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
        #: the most row-trials, and the most Dask tasks (futures), submitted at once in the last
        #: run: never above twice its ``n_workers`` (at most ``n_workers`` of them run, the others
        #: wait on the workers: see _BatchSizer.queue_ahead), however many rows the dataset has
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
                _send_promptly(client)
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
             # no statistical profiler sampling every worker thread (nothing shows it: no dashboard)
             "distributed.worker.profile.enabled": False, **_SHORT_LOGS}
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
            _send_promptly(client)
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
            # the workers as the scheduler knows them now (a new client's cached copy is empty)
            workers = _eligible((await client.scheduler.identity()).get("workers", {}), resources)
            sizer = _BatchSizer(engine.n_workers, engine.is_async, workers)
            # each task's rows, and the worker it was sent to (None: Dask's choice)
            pending: dict[str, tuple[list[tuple[Row, int]], str | None]] = {}
            # async rows: each task goes to the worker with the fewest rows sent and not back yet,
            # for its gate's share, so that every worker has one share running and one queued
            placed: dict[str, int] = {}
            done = distributed.as_completed(loop=client.loop)
            in_flight = 0
            serial = 0
            stopper = asyncio.create_task(_stop_workers_on_stop(engine, client, tag))
            # rows that could not be sent (see _packed): stored as errors from here
            refused: list[RowOutcome] = []

            async def add_refused() -> None:
                for outcome in refused:
                    await collector.add(outcome)
                refused.clear()

            def submit_more() -> None:
                nonlocal in_flight, serial
                # rows beyond n_workers wait on the workers, behind a per-process gate whose limits
                # add up to n_workers (see _BatchSizer.queue_ahead): no worker idles between tasks
                extra, gate = sizer.queue_ahead(_eligible(client.scheduler_info().get("workers", {}), resources))
                window = engine.n_workers + extra
                while not engine.stopping and in_flight < window:
                    size = min(sizer.size(), window - in_flight)
                    if in_flight and size < sizer.size():
                        return  # wait for a whole batch's room: fewer, fuller tasks
                    batch = []
                    for item in items:
                        batch.append(item)
                        if len(batch) >= size:
                            break
                    if not batch:
                        return
                    packed, batch = _packed(batch, refused, engine)
                    if not batch:
                        continue  # every row of it refused: read the next ones
                    serial += 1
                    row = batch[0][0]
                    where = _least_loaded(gate[0], placed) if gate is not None and engine.is_async else None
                    future = client.submit(
                        task, blob, packed, None if gate is None else (tag, *gate),
                        key=f"runner-rows-{tag}-{serial}-{row.id[:40]}-{len(batch)}",
                        pure=False,
                        resources=dict(resources) if resources else None,
                        workers=None if where is None else [where],
                        allow_other_workers=where is not None,  # that worker gone: any other
                    )
                    pending[future.key] = (batch, where)
                    if where is not None:
                        placed[where] = placed.get(where, 0) + len(batch)
                    in_flight += len(batch)
                    self.peak_in_flight = max(self.peak_in_flight, in_flight)
                    self.peak_tasks = max(self.peak_tasks, len(pending))
                    now = time.monotonic()
                    for r, t in batch:
                        engine.running[(r.id, t)] = now
                    done.add(future)

            try:
                submit_more()
                await add_refused()
                while pending:
                    future = await _next_done(done)
                    batch, at = pending.pop(future.key)
                    if at is not None:
                        placed[at] -= len(batch)
                    in_flight -= len(batch)
                    submit_more()  # the next rows leave before this batch's results are fetched
                    outcomes = await _outcomes_of(engine, future, batch)
                    for outcome in outcomes:
                        if outcome is not None:
                            sizer.observe(outcome.log.latency)
                    submit_more()  # the first results back turn queue-ahead on: more may leave now
                    future.release()  # after the submissions: Dask batches a client's messages
                    await add_refused()
                    engine.last_finished = time.monotonic()
                    for (row, trial), outcome in zip(batch, outcomes, strict=True):
                        engine.running.pop((row.id, trial), None)
                        if outcome is None:  # queued on a worker at Ctrl-C: never started
                            continue
                        await collector.add(outcome)
            except BaseException:
                # cancelled (second Ctrl-C) or failed: nothing queued keeps running for this run
                engine.stop()
                futures = list(done.futures)
                if futures:
                    with contextlib.suppress(Exception):
                        await client.cancel(futures)
                raise
            finally:
                stopper.cancel()
                with contextlib.suppress(BaseException):
                    await stopper


def _send_promptly(client: Any) -> None:
    """A Dask client sends its messages to the scheduler at most once every 10 ms (a fixed
    figure in ``distributed``): a task submitted just after another message (the previous task's
    release) waited up to that long, at every task. The clients the executor opens itself send
    within a millisecond. A ``distributed`` whose client is built otherwise is left as it is."""
    comm = getattr(client, "scheduler_comm", None)
    if comm is not None and isinstance(getattr(comm, "interval", None), float):
        comm.interval = 0.001


def _least_loaded(limits: Mapping[str, int], placed: Mapping[str, int]) -> str | None:
    """The worker whose rows in flight are the smallest part of its gate limit."""
    if not limits:
        return None
    return min(sorted(limits), key=lambda a: placed.get(a, 0) / max(limits[a], 1))


async def _stop_workers_on_stop(engine: Engine, client: Any, tag: str) -> None:
    """At the first Ctrl-C (``engine.stop()``), tell every worker: rows of this run still queued
    there must not start."""
    while not engine.stopping:
        await asyncio.sleep(0.02)
    with contextlib.suppress(Exception):
        await client.run(stop_rows, tag, on_error="ignore")


def _eligible(workers: Mapping[str, Any], resources: Mapping[str, float] | None) -> dict[str, Any]:
    """The workers that may run this run's rows: all, or those that have its ``resources``."""
    if not resources:
        return dict(workers)
    return {
        a: w for a, w in workers.items()
        if all(float((w.get("resources") or {}).get(k, 0)) >= v for k, v in resources.items())
    }


class _BatchSizer:
    """How many rows one Dask task carries, and how many more than ``n_workers`` wait on the workers.

    A Dask task costs milliseconds of scheduling, more than a short row: rows that take
    little time travel several to a task (sync ones run one after the other on a worker
    thread, async ones concurrently on the worker's loop), sized so a task lasts about
    ``TARGET`` seconds, yet never so few tasks that a worker thread sits idle: sync rows leave
    room for two tasks per worker thread. An async task carries a worker process's whole share
    of ``n_workers`` (and goes to the worker with the fewest rows out, for its share): a Dask
    worker executes one task per thread, so a second task, queued ahead, executes beside the
    first and its rows wait at the gate, to start one by one as the first task's rows end.

    Queue-ahead (:meth:`queue_ahead`): after a task ends, its result travels to the driver and
    the driver's next task travels back, a round trip during which the task's rows were idle
    (2,000 rows of 50 ms, 200 at once: a third of the time). So, for async rows from the first
    task on and for sync rows once they are seen to be quick, two more batches per worker
    process (at most ``n_workers`` rows) are sent than may run, and
    wait on the worker behind a per-process gate (:class:`runner.pipeline.executor_tasks._Gate`)
    whose limits add up to ``n_workers``: at most ``n_workers`` rows *run* across the cluster,
    and a queued batch starts the moment running rows finish, without the driver."""

    TARGET = 0.2
    #: sync rows that take longer than this (mean, seconds) are not queued ahead: the round trip
    #: is small next to them, and a row queued behind a long one would wait for it
    QUEUE_AHEAD_BELOW = 2.0
    #: batches queued per worker process beyond what may run
    AHEAD = 2

    def __init__(self, n_workers: int, is_async: bool, workers: Mapping[str, Any]) -> None:
        slots = sum(int(w.get("nthreads", 1)) for w in workers.values()) or 1
        procs = len(workers) or 1
        self.n_workers = n_workers
        self.is_async = is_async
        self.workers = sorted(workers)
        if is_async:
            # a task carries a process's whole share of the rows that may run. A Dask worker
            # executes one task per thread at a time, and a task ends when its last row does: with
            # smaller tasks, the next one waited in Dask's queue for a whole task to end. Now the
            # next task (queued ahead, executing on the worker's second thread) has its rows wait at
            # the gate, which lets them in one by one as the running rows finish.
            self.cap = max(1, n_workers // procs)
        else:
            self.cap = max(1, n_workers // (2 * slots))  # two tasks per worker thread
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

    def queue_ahead(self, workers: Mapping[str, Any]) -> tuple[int, tuple[dict[str, int], int] | None]:
        """``(rows that may be submitted beyond n_workers, the gate: each worker's row limit and the
        limit of one not listed)``; ``(0, None)``: no gate and no queue.

        ``workers``: the eligible workers now (a new client may not know them yet: then the ones
        seen at the start)."""
        if workers:
            self.workers = sorted(workers)
        procs = len(self.workers)
        if procs == 0 or self.n_workers < procs:
            return 0, None
        share, more = divmod(self.n_workers, procs)
        limits = {a: share + (1 if i < more else 0) for i, a in enumerate(self.workers)}
        # async rows queue ahead from the first task, however long they take: their queued rows
        # wait at the gate and start one by one as running rows end. Without a queued task, a
        # task's freed slots stayed idle until its slowest row ended (rows of 2-6 s: a third
        # longer than in-process). Sync rows wait to be seen quick (see QUEUE_AHEAD_BELOW).
        quick = self.is_async or (self.seen >= 4 and self.total / self.seen < self.QUEUE_AHEAD_BELOW)
        ahead = min(self.n_workers, self.AHEAD * procs * self.size()) if quick else 0
        return ahead, (limits, share)


async def _next_done(done: Any) -> Any:
    return await done.__anext__()


#: how many times one task's finished result may be lost with its worker before its rows
#: become errors (each time, Dask runs the task again elsewhere)
_LOST_RESULTS = 5


async def _outcomes_of(
    engine: Engine, future: Any, batch: list[tuple[Row, int]]
) -> list[RowOutcome | None]:
    """The finished rows a task returned; rows whose worker kept dying become those rows' errors."""
    distributed = _distributed()
    for _ in range(_LOST_RESULTS):
        if future.status == "finished":
            return unpack_outcomes(await future)
        if future.status in ("error", "cancelled"):
            break
        # "lost": the worker holding the finished result died before the driver fetched it.
        # Dask runs the task again (the driver still holds its future): wait for that.
        await distributed.wait(future)
    exc = await future.exception()
    if isinstance(exc, SpecLoadError):
        raise exc
    if exc is None:  # lost every time: see above
        message = (
            f"the Dask workers holding this row's finished result died before it was fetched, {_LOST_RESULTS} times"
        )
    elif isinstance(exc, distributed.KilledWorker):
        message = f"the Dask workers running this row died each time it was tried ({exc})"
    else:
        message = f"the Dask task running this row failed: {type(exc).__name__}: {exc}"
    return list(_error_outcomes(engine, batch, message))


def _error_outcomes(engine: Engine, batch: list[tuple[Row, int]], message: str) -> list[RowOutcome]:
    """Each row-trial of ``batch`` finished as an error with ``message``, on the driver."""
    out: list[RowOutcome] = []
    for row, trial in batch:
        root = engine._root(row, trial)
        root.status = "error"
        root.error = message
        root.finish()
        out.append(engine._outcome(row, trial, root, [], []))
    return out


def _packed(
    batch: list[tuple[Row, int]], refused: list[RowOutcome], engine: Engine
) -> tuple[bytes, list[tuple[Row, int]]]:
    """``batch`` as :func:`pack_rows` bytes, and the rows in it. A row that cannot be pickled
    (a lock or an open file among its values) stays out, and its error goes to ``refused``:
    that row's error, not the run's."""
    try:
        return pack_rows(batch), batch
    except Exception:
        pass
    kept: list[tuple[Row, int]] = []
    for item in batch:
        try:
            pack_rows([item])
        except Exception as exc:
            refused.extend(_error_outcomes(engine, [item], (
                f"this row cannot be sent to the Dask workers: {type(exc).__name__}: {exc}. A row's values "
                "travel with pickle: keep locks, open files, sockets and clients out of the dataset "
                "(or run it in this process: executor='local')"
            )))
        else:
            kept.append(item)
    return (pack_rows(kept) if kept else b""), kept
