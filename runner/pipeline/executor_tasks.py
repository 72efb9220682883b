"""What a Dask worker runs: the experiment's spec, sent once as cloudpickle bytes, and the tasks.

The driver (:mod:`runner.pipeline.executors`) pickles a :class:`RowSpec` before any row runs — a
function that cannot travel is refused there, naming it — and sends the bytes with every task;
each worker process unpickles them once and keeps an :class:`runner.pipeline.engine.Engine` for them,
so a row runs on the worker exactly as it would in-process (timeouts, retries, scorers). Its
rate limiters are joined to the other workers' (:mod:`runner.pipeline.executor_ratelimit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import importlib.machinery
import os
import pickle
import sys
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from runner.backends.target import Target
from runner.errors import FunctionError, RunnerError
from runner.pipeline.dataset import Row
from runner.pipeline.engine import Engine, RowOutcome
from runner.pipeline.executor_ratelimit import catch_up_rate_limits, caught_up
from runner.pipeline.heap import heap_frozen
from runner.pipeline.tracing import current_target

__all__ = [
    "RowSpec", "SpecLoadError", "pack_rows", "pickle_spec", "rows_task", "rows_task_async", "spec_of",
    "stop_rows", "unpack_outcomes",
]


# -- what travels to the workers ------------------------------------------------------------------
@dataclass
class RowSpec:
    """Everything a worker needs to run a row-trial as the driver's engine would."""

    func: Callable[..., Any]
    func_name: str
    make_kwargs: Callable[[dict[str, Any]], dict[str, Any]]
    scorers: list[Callable[..., Any]]
    experiment_uuid: str
    project_name: str
    project_uuid: str | None
    timeout: float | None
    retries: int
    retry_backoff: float
    target: Target | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def spec_of(engine: Engine, target: Target | None) -> RowSpec:
    return RowSpec(
        func=engine.func,
        func_name=engine.func_name,
        make_kwargs=engine.make_kwargs,
        scorers=engine.scorers,
        experiment_uuid=engine.experiment_uuid,
        project_name=engine.project_name,
        project_uuid=engine.project_uuid,
        timeout=engine.timeout,
        retries=engine.retries,
        retry_backoff=engine.retry_backoff,
        target=target,
    )


def _by_value_modules(objs: list[Any]) -> list[Any]:
    """Modules of ``objs`` a worker could not import by name (a config file loaded from a path):
    their functions travel by value instead."""
    found = []
    for obj in objs:
        name = getattr(obj, "__module__", None) or getattr(type(obj), "__module__", None)
        module = sys.modules.get(name or "")
        if module is None or name == "__main__":
            continue
        top = name.split(".")[0] if name else ""
        if importlib.machinery.PathFinder.find_spec(top, sys.path) is None and top not in sys.builtin_module_names:
            found.append(module)
    return found


def _module_attr(module: str, name: str) -> Any:
    import importlib

    return getattr(importlib.import_module(module), name)


def _reduce_context_var(var: contextvars.ContextVar[Any]) -> tuple[Any, tuple[str, str]]:
    """A module-level ContextVar of runner (the current span, the run's target) travels by name:
    ``@trace`` wrappers sent by value refer to them, and a ContextVar itself cannot be pickled."""
    for mod_name, module in list(sys.modules.items()):
        if mod_name.split(".")[0] not in ("runner", "evals"):
            continue
        for attr, value in list(vars(module).items()):
            if value is var:
                return _module_attr, (mod_name, attr)
    raise TypeError(f"cannot pickle the context variable {var.name!r}")


def pickle_spec(spec: RowSpec) -> bytes:
    """``spec`` as cloudpickle bytes, or a :class:`FunctionError` naming what cannot be sent."""
    import copyreg

    import cloudpickle

    copyreg.pickle(contextvars.ContextVar, _reduce_context_var)

    parts: list[tuple[str, Any]] = [(f"function {spec.func_name!r}", spec.func)]
    parts += [(f"scorer {getattr(s, '__name__', repr(s))!r}", s) for s in spec.scorers]
    parts.append(("the row's argument mapping (make_kwargs)", spec.make_kwargs))
    modules = _by_value_modules([p for _, p in parts])
    registered = []
    for m in modules:
        with contextlib.suppress(ValueError):  # already registered
            cloudpickle.register_pickle_by_value(m)
            registered.append(m)
    try:
        try:
            return bytes(cloudpickle.dumps(spec))
        except Exception as whole:
            for what, obj in parts:
                try:
                    cloudpickle.dumps(obj)
                except Exception as exc:
                    raise FunctionError(
                        f"cannot send the {what} to the Dask workers: {type(exc).__name__}: {exc}. "
                        "Everything a row uses travels with cloudpickle: define it at module level and keep "
                        "open files, locks, sockets and clients out of its closure (create them inside it)"
                    ) from exc
            raise FunctionError(
                f"cannot send the experiment to the Dask workers: {type(whole).__name__}: {whole}"
            ) from whole
    finally:
        for m in registered:
            cloudpickle.unregister_pickle_by_value(m)


# -- the worker side ------------------------------------------------------------------------------
class SpecLoadError(RunnerError):
    """A worker could not load the experiment's function (raised on the worker, seen on the driver)."""


class _NoCollector:
    """Workers never collect: finished rows go back to the driver as task results."""

    async def add(self, outcome: RowOutcome) -> None:  # pragma: no cover - never called
        raise AssertionError("a worker does not collect rows")

    def add_threadsafe(self, outcomes: list[RowOutcome], loop: asyncio.AbstractEventLoop) -> None:  # pragma: no cover
        raise AssertionError("a worker does not collect rows")

    async def drain(self) -> None:  # pragma: no cover
        return None


_engines: dict[str, tuple[Engine, RowSpec]] = {}
_engines_lock = threading.Lock()
_side: dict[str, asyncio.AbstractEventLoop] = {}


#: the last blob seen and its engine: a task's rows all carry the same bytes object, and hashing
#: it for every row cost more than some rows' own work
_last: tuple[bytes, tuple[Engine, RowSpec]] | None = None


def _engine_for(blob: bytes) -> tuple[Engine, RowSpec]:
    """The worker process's engine for this experiment (unpickled once per process)."""
    global _last
    last = _last
    if last is not None and last[0] is blob:
        return last[1]
    got = _engine_by_hash(blob)
    _last = (blob, got)
    return got


def _engine_by_hash(blob: bytes) -> tuple[Engine, RowSpec]:
    key = hashlib.blake2b(blob, digest_size=16).hexdigest()
    with _engines_lock:
        got = _engines.get(key)
        if got is not None:
            return got
        import cloudpickle

        try:
            spec: RowSpec = cloudpickle.loads(blob)
        except Exception as exc:
            raise SpecLoadError(
                f"a Dask worker (pid {os.getpid()}) could not load the experiment: {type(exc).__name__}: {exc}. "
                "The workers need the same packages installed as the driver, "
                "and the code it imports on their PYTHONPATH"
            ) from exc
        engine = Engine(
            func=spec.func,
            func_name=spec.func_name,
            make_kwargs=spec.make_kwargs,
            scorers=spec.scorers,
            n_workers=1,
            experiment_uuid=spec.experiment_uuid,
            project_name=spec.project_name,
            project_uuid=spec.project_uuid,
            collector=_NoCollector(),
            timeout=spec.timeout,
            retries=spec.retries,
            retry_backoff=spec.retry_backoff,
        )
        if engine.sync_scorers:
            engine._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="runner-score")
        from runner.pipeline.executor_ratelimit import share_rate_limits

        share_rate_limits()  # a 429 this worker hears slows every worker of the cluster
        if len(_engines) >= 8:  # a long-lived worker serving many experiments
            _engines.pop(next(iter(_engines)))
        _engines[key] = (engine, spec)
        return engine, spec


def _side_loop() -> asyncio.AbstractEventLoop:
    """A loop on its own thread in this worker process, for async scorers of sync functions."""
    with _engines_lock:
        loop = _side.get("loop")
        if loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="runner-side-loop", daemon=True).start()
            _side["loop"] = loop
        return loop


def row_task(blob: bytes, row: Row, trial: int) -> RowOutcome:
    """A Dask task: one row-trial of a sync function, its scorers included, on a worker thread."""
    engine, spec = _engine_for(blob)
    context = contextvars.copy_context()
    context.run(current_target.set, spec.target)
    return context.run(engine.run_row_sync, row, trial, _side_loop(), context)


async def row_task_async(blob: bytes, row: Row, trial: int) -> RowOutcome:
    """A Dask task: one row-trial of an async function, on the worker's event loop."""
    engine, spec = _engine_for(blob)

    async def one() -> RowOutcome:
        current_target.set(spec.target)
        parts = await engine._run_row_parts(row, trial)
        return engine._outcome(*parts)

    # its own task, so its context (the current span) is its own
    return await asyncio.get_running_loop().create_task(one(), context=contextvars.copy_context())


class _Gate:
    """At most ``limit`` rows of one run at once in this worker process.

    The driver keeps the next batch of rows already queued on the workers, so a worker never
    idles for a round trip through the driver between two tasks; the rows of the queued batch
    wait here, not in the function, until running rows of the same run finish. The driver sets
    each process's ``limit`` so that the limits add up to the run's ``n_workers``. Once the run
    is stopped (the first Ctrl-C), rows that were still waiting here never start.

    Waiting rows are let in first come, first served, one per freed slot: a finishing row hands
    its slot to the next waiter, so no row wakes unless it may run (waking every waiter at each
    finish cost a short row more CPU than its own work)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self.stopped = False
        self._lock = threading.RLock()
        self._waiters: deque[_AsyncWaiter | _SyncWaiter] = deque()

    def _take(self, limit: int) -> bool | None:
        """Under the lock: ``True`` taken, ``False`` stopped, ``None`` wait (behind the waiters)."""
        self.limit = limit  # the driver's latest figure (workers joined or left)
        if self.stopped:
            return False
        self._let_in()  # a raised limit lets waiters in first
        if self.running < self.limit and not self._waiters:
            self.running += 1
            return True
        return None

    def _let_in(self) -> None:
        """Under the lock: hand the free slots to the waiters, oldest first."""
        while self._waiters and self.running < self.limit:
            waiter = self._waiters.popleft()
            if waiter.gone():
                continue
            self.running += 1
            waiter.settle(True)

    def enter_sync(self, limit: int) -> bool:
        with self._lock:
            took = self._take(limit)
            if took is not None:
                return took
            waiter = _SyncWaiter()
            self._waiters.append(waiter)
        waiter.event.wait()
        return waiter.allowed

    async def enter(self, limit: int) -> bool:
        loop = asyncio.get_running_loop()
        with self._lock:
            took = self._take(limit)
            if took is not None:
                return took
            waiter = _AsyncWaiter(self, loop)
            self._waiters.append(waiter)
        try:
            return await waiter.future
        except asyncio.CancelledError:
            with self._lock:
                future = waiter.future
                if future.done() and not future.cancelled():
                    if future.result():  # let in, but it will not run: the slot goes on
                        self.leave()
                else:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
            raise

    def leave(self) -> None:
        with self._lock:
            self.running -= 1
            if not self.stopped:
                self._let_in()

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            waiters, self._waiters = self._waiters, deque()
            for waiter in waiters:
                if not waiter.gone():
                    waiter.settle(False)


class _SyncWaiter:
    """A worker thread waiting at a :class:`_Gate`."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.allowed = False

    def gone(self) -> bool:
        return False

    def settle(self, allowed: bool) -> None:
        self.allowed = allowed
        self.event.set()


class _AsyncWaiter:
    """A row on an event loop waiting at a :class:`_Gate`; settled on its own loop."""

    def __init__(self, gate: _Gate, loop: asyncio.AbstractEventLoop) -> None:
        self.gate = gate
        self.loop = loop
        self.future: asyncio.Future[bool] = loop.create_future()

    def gone(self) -> bool:
        """Cancelled while waiting (its task was): it takes no slot."""
        return self.future.done()

    def settle(self, allowed: bool) -> None:
        if asyncio._get_running_loop() is self.loop:
            self.future.set_result(allowed)  # the usual case: a row of the same loop finished
        else:
            try:
                self.loop.call_soon_threadsafe(_settle_later, self.gate, self.future, allowed)
            except RuntimeError:  # that loop is closed: nobody waits there any more
                if allowed:
                    self.gate.leave()  # under the gate's (reentrant) lock: the slot goes on


def _settle_later(gate: _Gate, future: asyncio.Future[bool], allowed: bool) -> None:
    if future.done():  # cancelled on the way: the slot it was given goes on
        if allowed:
            gate.leave()
        return
    future.set_result(allowed)


_gates: OrderedDict[str, _Gate] = OrderedDict()


def _gate(run: str, limit: int) -> _Gate:
    with _engines_lock:
        gate = _gates.get(run)
        if gate is None:
            gate = _gates[run] = _Gate(limit)
            while len(_gates) > 64:  # a long-lived worker serving many runs
                _gates.popitem(last=False)
        return gate


def stop_rows(run: str) -> None:
    """Run on every worker (``Client.run``) at the run's first Ctrl-C: its rows still queued in
    this process never start (they come back as ``None``, and the driver leaves them unread)."""
    _gate(run, 1).stop()


#: ``(run id, {worker address: its row limit}, the limit of a worker not named)``; ``None``: no
#: gate (every row of the task may run at once)
GateSpec = tuple[str, dict[str, int], int] | None


def _limit_here(gate: tuple[str, dict[str, int], int]) -> int:
    from distributed import get_worker

    try:
        address = get_worker().address
    except ValueError:  # not on a worker
        return gate[2]
    return gate[1].get(address, gate[2])


def _pickled(value: Any) -> bytes:
    try:
        return pickle.dumps(value, protocol=5)
    except Exception:  # a value plain pickle refuses (a lambda in a span's metadata...)
        import cloudpickle

        return bytes(cloudpickle.dumps(value, protocol=5))


def _pack(outcomes: list[RowOutcome | None]) -> bytes:
    """A task's finished rows as one pickle.

    Returned as a list, Dask serializes every element on its own when the result is fetched (a
    frame, a header and a compression check each): for short rows that cost the worker more CPU
    than running them, and the driver one unpickling per row."""
    return _pickled(outcomes)


def unpack_outcomes(data: bytes) -> list[RowOutcome | None]:
    """The driver's side of :func:`_pack` (Dask's own results are unpickled the same way)."""
    outcomes: list[RowOutcome | None] = pickle.loads(data)  # the cluster's own workers
    return outcomes


def pack_rows(batch: list[tuple[Row, int]]) -> bytes:
    """A task's rows as one pickle, for :func:`rows_task` and :func:`rows_task_async`.

    Given as a list, the rows were unpickled by the scheduler when the task arrived and pickled
    again to send it on to a worker: two passes over every row, on the scheduler's loop (in the
    driver's process, for a LocalCluster), before a task could start. Bytes pass through as they
    are."""
    return _pickled(batch)


def _unpack_rows(rows: bytes) -> list[tuple[Row, int]]:
    batch: list[tuple[Row, int]] = pickle.loads(rows)  # from this run's driver
    return batch


def rows_task(blob: bytes, rows: bytes, gate: GateSpec = None) -> bytes:
    """A Dask task: a few row-trials (:func:`pack_rows`) of a sync function, one after the other;
    their outcomes (a finished row, or ``None`` for one that never started) as
    :func:`unpack_outcomes` bytes."""
    with heap_frozen():
        return _pack(_rows(blob, _unpack_rows(rows), gate))


def _rows(blob: bytes, batch: list[tuple[Row, int]], gate: GateSpec) -> list[RowOutcome | None]:
    _engine_for(blob)
    catch_up_rate_limits()  # a pause the cluster heard before this worker joined
    if gate is None:
        return [row_task(blob, row, trial) for row, trial in batch]
    limit = _limit_here(gate)
    g = _gate(gate[0], limit)
    out: list[RowOutcome | None] = []
    for row, trial in batch:
        if not g.enter_sync(limit):
            out.append(None)
            continue
        try:
            out.append(row_task(blob, row, trial))
        finally:
            g.leave()
    return out


async def rows_task_async(blob: bytes, rows: bytes, gate: GateSpec = None) -> bytes:
    """A Dask task: a few row-trials (:func:`pack_rows`) of an async function, concurrently on the
    worker's loop; their outcomes as :func:`unpack_outcomes` bytes."""
    with heap_frozen():
        return _pack(await _rows_async(blob, _unpack_rows(rows), gate))


async def _rows_async(blob: bytes, batch: list[tuple[Row, int]], gate: GateSpec) -> list[RowOutcome | None]:
    _engine_for(blob)
    if not caught_up():  # a pause the cluster heard before this worker joined (once per process)
        await asyncio.to_thread(catch_up_rate_limits)
    if gate is None:
        return list(await asyncio.gather(*(row_task_async(blob, row, trial) for row, trial in batch)))
    limit = _limit_here(gate)
    g = _gate(gate[0], limit)

    async def gated(row: Row, trial: int) -> RowOutcome | None:
        if not await g.enter(limit):
            return None
        try:
            return await row_task_async(blob, row, trial)
        finally:
            g.leave()

    return list(await asyncio.gather(*(gated(row, trial) for row, trial in batch)))
