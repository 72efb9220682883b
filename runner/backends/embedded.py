"""The embedded door: :class:`EmbeddedBackend` writes into the store (SQLite, or PostgreSQL)
from one writer thread, in batches bounded in size and in time (:mod:`runner.backends.batching`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from runner._json import error_log, safe_log
from runner.backends.batching import BATCH_LOGS, MAX_DELAY, LogBuffer
from runner.backends.target import Target
from runner.errors import BackendError, disk_full, disk_full_message
from runner.store import Store

__all__ = ["EmbeddedBackend"]


class EmbeddedBackend:
    """The default backend: a SQLite file, written by one background thread in batches.

    Logs wait in a :class:`runner.backends.batching.LogBuffer`: the writer commits a batch once
    ``batch_size`` logs wait or the oldest has waited ``max_delay`` seconds, so every finished
    row is in the file within about ``max_delay`` of finishing (a ``kill -9`` loses at most
    that much). A batch the store refuses is written again log by log, made JSON-safe
    (:func:`runner._json.safe_log`); a log that still cannot be written is stored as that row's
    error: one bad row never costs the others. A full disk stops the run with an error naming
    the file.
    """

    def __init__(
        self,
        store: Store,
        *,
        batch_size: int = BATCH_LOGS,
        max_delay: float = MAX_DELAY,
        max_pending_batches: int = 2,
        owner: str = "",
        release_store: bool = False,
    ) -> None:
        self.store = store
        self._release_store = release_store  # a store from Store.shared(): give it back at close
        self.location = store.path
        self.target = Target(db=store.path)
        self.owner = owner
        self.batch_size = batch_size
        self._buffer = LogBuffer(batch_size, max_delay, capacity=max_pending_batches * batch_size)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # the writer thread -----------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._buffer.reopen()
                    self._thread = threading.Thread(target=self._write_loop, name="runner-store-writer", daemon=True)
                    self._thread.start()

    def _write_loop(self) -> None:
        while True:
            batch = self._buffer.wait_take()
            if batch is None:
                return
            try:
                if self._error is None:
                    self._write(batch)
            except BaseException as exc:  # kept and raised by flush(): never lost silently
                self._error = exc
            finally:
                self._buffer.done()

    def _write(self, batch: list[dict[str, Any]]) -> None:
        """Write a batch; a log the store refuses is made JSON-safe, or else stored as its row's error."""
        try:
            self.store.upsert_traces(batch, self.owner)
            return
        except Exception as exc:
            if disk_full(exc):
                raise BackendError(disk_full_message(self.location, exc)) from exc
        for log in batch:  # the batch was refused: find the log(s) at fault, keep the others
            try:
                self.store.upsert_traces([safe_log(log)], self.owner, contended=False)
            except Exception as exc:
                if disk_full(exc):
                    raise BackendError(disk_full_message(self.location, exc)) from exc
                self.store.upsert_traces([error_log(log, f"the store refused this log: {exc!r}")], self.owner)

    # Backend -------------------------------------------------------------------------------
    async def create_experiment(
        self, *, project_name: str, name: str, run_name: str | None, metadata: Mapping[str, Any]
    ) -> dict[str, Any]:
        project_uuid = self.store.project_uuid(project_name, self.owner)
        return self.store.create_experiment(
            name=name, project_uuid=project_uuid, run_name=run_name, metadata=metadata, owner=self.owner
        )

    def _stop_if_failed(self) -> None:
        # the writer cannot write (a full disk): stop the rows now rather than at the end
        if isinstance(self._error, BackendError):
            raise self._error

    async def log(self, logs: Sequence[dict[str, Any]]) -> None:
        self._stop_if_failed()
        self._ensure_thread()
        self._buffer.put(logs)
        if len(self._buffer) >= self._buffer.capacity:  # backpressure: wait for the writer, off the loop
            await asyncio.get_running_loop().run_in_executor(None, self._buffer.wait_room)

    def log_from_thread(self, logs: Sequence[dict[str, Any]], loop: asyncio.AbstractEventLoop) -> None:
        self._stop_if_failed()
        self._ensure_thread()
        self._buffer.put(logs, block=True)  # blocks while the writer is far behind: backpressure

    async def flush(self) -> None:
        if self._thread is not None and not self._buffer.idle():
            await asyncio.get_running_loop().run_in_executor(None, self._buffer.wait_idle)
        if self._error is not None:
            err, self._error = self._error, None
            if isinstance(err, BackendError):
                raise err
            raise BackendError(f"writing results to {self.location} failed: {err}") from err

    async def finish_experiment(
        self,
        experiment_uuid: str,
        *,
        status: str,
        dataset_level_stats: Sequence[Mapping[str, Any]],
        dataset_level_errors: Mapping[str, str] | None = None,
        scorer_errors: Mapping[str, str] | None = None,
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
            dataset_level_errors=dataset_level_errors,
            scorer_errors=scorer_errors,
        )

    async def experiment_rows(self, experiment_uuid: str) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.store.experiment_rows, experiment_uuid, self.owner)

    def spooled_for(self, experiment_uuid: str) -> tuple[int, str | None]:
        return 0, None  # the store is written directly: nothing ever waits on disk elsewhere

    def rows_loader(self, experiment_uuid: str) -> Callable[[], list[dict[str, Any]]]:
        path, owner = self.store.path, self.owner

        def load() -> list[dict[str, Any]]:
            store = Store(path)
            try:
                return store.experiment_rows(experiment_uuid, owner)
            finally:
                store.close()

        return load

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
                self._buffer.close()
                await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
                self._thread = None
            if self._release_store:
                Store.release(self.store)
