"""What the pipeline needs of a door: the :class:`Backend` protocol (and nothing of either
implementation: :mod:`runner.backends.embedded`, :mod:`runner.backends.http.backend`).

Both doors behave the same: ``log()`` hands trace logs over without blocking rows (it only waits
when the backend is far behind: that is the backpressure), ``flush()`` returns once everything
logged so far is stored, and ``finish_experiment()`` finishes the run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from runner.backends.target import Target

if TYPE_CHECKING:
    import asyncio  # annotations only: ``import runner`` does not load the event loop machinery

__all__ = ["Backend"]


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
        self,
        experiment_uuid: str,
        *,
        status: str,
        dataset_level_stats: Sequence[Mapping[str, Any]],
        dataset_level_errors: Mapping[str, str] | None = None,
        scorer_errors: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Finish the run; returns ``TraceStatsSchema`` dicts of its root traces (the embedded
        backend returns ``[]``: it streams them into the stored stats and keeps no copy).

        ``dataset_level_errors`` (eval → message) and ``scorer_errors`` (scorer → an example
        message) are the run's failures, stored with it (over HTTP an extension of the finish
        body that other Parea servers ignore)."""
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

    #: the door this backend is (what completion() and Dask workers use to reach it too)
    target: Target

    def spooled_for(self, experiment_uuid: str) -> tuple[int, str | None]:
        """Logs of the run still waiting in a spool on disk, and the file (``(0, None)``: none)."""
        ...

    def rows_loader(self, experiment_uuid: str) -> Callable[[], list[dict[str, Any]]]:
        """A function reading the run's root rows later, after this backend is closed
        (:meth:`runner.results.result.Result.rows`)."""
        ...
