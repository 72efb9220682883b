"""Where an experiment's results go: the embedded store, or a server over HTTP.

A :class:`Backend` is what the experiment talks to. Both doors behave the same: ``log()`` hands
trace logs over without blocking rows (it only waits when the backend is far behind: that is the
backpressure), ``flush()`` returns once everything logged so far is stored, and
``finish_experiment()`` returns the per-root stats the backend computed.

``EmbeddedBackend`` writes into the SQLite store from one writer thread in batches of up to
``batch_size`` logs per transaction; ``runner.client.HttpBackend`` sends them to a server.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from runner.errors import BackendError
from runner.store import Store

__all__ = ["Backend", "EmbeddedBackend"]


@runtime_checkable
class Backend(Protocol):
    """What an experiment needs from wherever its results are stored."""

    #: where the results are, for people: a file path or a URL
    location: str

    async def create_experiment(
        self, *, project_name: str, name: str, run_name: str | None, metadata: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Create the run; returns ``ExperimentSchema`` fields (``uuid``, ``run_name``, ...).

        Raises :class:`runner.errors.RunNameError` for an invalid or taken run name."""
        ...

    async def log(self, logs: Sequence[dict[str, Any]]) -> None:
        """Hand over trace logs (``TraceLogSchema`` dicts); waits only for backpressure."""
        ...

    async def flush(self) -> None:
        """Return once everything logged so far is stored; raise if some of it cannot be."""
        ...

    def log_from_thread(self, logs: Sequence[dict[str, Any]], loop: asyncio.AbstractEventLoop) -> None:
        """Hand over logs from a worker thread (sync functions); may block for backpressure."""
        ...

    async def finish_experiment(
        self, experiment_uuid: str, *, status: str, dataset_level_stats: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Finish the run; returns ``TraceStatsSchema`` dicts of its root traces (the embedded
        backend returns ``[]``: it streams them into the stored stats and keeps no copy)."""
        ...

    async def experiment_rows(self, experiment_uuid: str) -> list[dict[str, Any]]:
        """Root trace logs of the run, scores of children rolled up."""
        ...

    async def find_run(self, project_name: str, run_name: str) -> dict[str, Any] | None:
        """The run called ``run_name`` in the project (``ExperimentSchema`` fields), or ``None``."""
        ...

    async def delete_traces(self, experiment_uuid: str, root_trace_ids: Sequence[str]) -> None:
        """Delete these root traces of the run with all their descendants (for a resumed run)."""
        ...

    async def load_dataset(self, identifier: str | int) -> dict[str, Any]:
        """A named dataset, shaped like ``GetTestCaseCollectionResponseSchema``."""
        ...

    async def aclose(self) -> None: ...


_STOP = object()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)

#: how long logs may wait in the buffer before the writer gets them (seconds)
_LINGER = 0.02


class EmbeddedBackend:
    """The default backend: a SQLite file, written by one background thread in batches."""

    def __init__(
        self,
        store: Store,
        *,
        batch_size: int = 1000,
        max_pending_batches: int = 8,
        owner: str = "",
        release_store: bool = False,
    ) -> None:
        self.store = store
        self._release_store = release_store  # a store from Store.shared(): give it back at close
        self.location = store.path
        self.owner = owner
        self.batch_size = batch_size
        self._buffer: list[dict[str, Any]] = []
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending_batches)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # the writer thread -----------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._write_loop, name="runner-store-writer", daemon=True)
                    self._thread.start()

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                if isinstance(item, asyncio.Future):
                    item.get_loop().call_soon_threadsafe(_resolve, item)
                    continue
                if self._error is None:
                    self.store.upsert_traces(item, self.owner)
            except BaseException as exc:  # kept and raised by flush(): never lost silently
                self._error = exc
            finally:
                self._queue.task_done()

    async def _put(self, item: Any) -> None:
        self._ensure_thread()
        try:
            self._queue.put_nowait(item)
        except queue.Full:  # backpressure: wait for the writer without blocking the loop
            await asyncio.get_running_loop().run_in_executor(None, self._queue.put, item)

    # Backend -------------------------------------------------------------------------------
    async def create_experiment(
        self, *, project_name: str, name: str, run_name: str | None, metadata: Mapping[str, Any]
    ) -> dict[str, Any]:
        project_uuid = self.store.project_uuid(project_name, self.owner)
        return self.store.create_experiment(
            name=name, project_uuid=project_uuid, run_name=run_name, metadata=metadata, owner=self.owner
        )

    async def log(self, logs: Sequence[dict[str, Any]]) -> None:
        was_empty = not self._buffer
        self._buffer.extend(logs)
        if len(self._buffer) >= self.batch_size:
            batch, self._buffer = self._buffer, []
            await self._put(batch)
        elif was_empty:
            # what trickles in is handed to the writer shortly after, not at the next full batch:
            # slow rows are stored while the next ones run, and the run's end has little to write
            asyncio.get_running_loop().call_later(_LINGER, self._handoff)

    def _handoff(self) -> None:
        if not self._buffer:
            return
        self._ensure_thread()
        try:
            self._queue.put_nowait(self._buffer)
        except queue.Full:  # the writer is busy: the next log() or flush() hands it over
            return
        self._buffer = []

    def log_from_thread(self, logs: Sequence[dict[str, Any]], loop: asyncio.AbstractEventLoop) -> None:
        self._ensure_thread()
        self._queue.put(list(logs))  # blocks while the writer is behind: backpressure

    async def flush(self) -> None:
        if self._thread is not None and self._queue.unfinished_tasks:
            # the writer resolves this future once it has written what was queued before it
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            await self._put(done)
            await done
        if self._buffer and self._error is None:
            # the writer is idle now: write the rest here rather than wake it and wait for it
            batch, self._buffer = self._buffer, []
            try:
                self.store.upsert_traces(batch, self.owner, contended=False)
            except BaseException as exc:
                self._error = exc
        if self._error is not None:
            err, self._error = self._error, None
            raise BackendError(f"writing results to {self.location} failed: {err}") from err

    async def finish_experiment(
        self, experiment_uuid: str, *, status: str, dataset_level_stats: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        await self.flush()
        # the runner needs only what is stored: the per-root stats are streamed, not returned.
        # Called here, not on a thread: nothing else is left for the loop to do at this point.
        return self.store.finish_experiment(
            experiment_uuid,
            status=status,
            dataset_level_stats=dataset_level_stats,
            owner=self.owner,
            return_stats=False,
        )

    async def experiment_rows(self, experiment_uuid: str) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.store.experiment_rows, experiment_uuid, self.owner)

    async def load_dataset(self, identifier: str | int) -> dict[str, Any]:
        return self.store.get_dataset(identifier, self.owner)

    async def find_run(self, project_name: str, run_name: str) -> dict[str, Any] | None:
        from runner.errors import NotFoundError

        try:
            exp = self.store.find_experiment(run_name, self.owner, project_name=project_name)
        except NotFoundError:
            return None
        return exp if exp["run_name"] == run_name else None

    async def delete_traces(self, experiment_uuid: str, root_trace_ids: Sequence[str]) -> None:
        await self.flush()
        await asyncio.to_thread(self.store.delete_trace_trees, root_trace_ids, self.owner)

    async def aclose(self) -> None:
        try:
            await self.flush()
        finally:
            if self._thread is not None:
                self._queue.put(_STOP)
                await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
                self._thread = None
            if self._release_store:
                Store.release(self.store)
