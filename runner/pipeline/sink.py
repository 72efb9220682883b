"""Where finished rows go: the :class:`Sink` is the engine's collector.

Each finished row goes, one way and one at a time, to the tally (the run's summary), the
backend (whose :class:`runner.backends.batching.LogBuffer` is the one place logs are batched, by
size and by age, so a finished row is stored within a fraction of a second) and the progress bar.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from runner.backends.base import Backend
from runner.pipeline.engine import RowOutcome
from runner.results.result import Tally

__all__ = ["Sink"]


class Sink:
    """The collector of one run's finished rows (see the module docstring)."""

    def __init__(self, backend: Backend, tally: Tally) -> None:
        self.backend = backend
        self.tally = tally
        #: the progress bar, once the run has opened one
        self.progress: Any = None
        self._lock = threading.Lock()

    async def add(self, outcome: RowOutcome) -> None:
        self.tally.add(outcome.log, outcome.row.id, outcome.wire)
        await self.backend.log(outcome.wire)
        if self.progress is not None:
            self.progress.update(1)

    def add_threadsafe(self, outcomes: list[RowOutcome], loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            for outcome in outcomes:
                self.tally.add(outcome.log, outcome.row.id, outcome.wire)
            if self.progress is not None:
                self.progress.update(len(outcomes))
        wire = outcomes[0].wire if len(outcomes) == 1 else [w for o in outcomes for w in o.wire]
        # may block while the backend is far behind: the backpressure on worker threads
        self.backend.log_from_thread(wire, loop)

    async def drain(self) -> None:
        """Nothing waits here: rows were handed on as they finished."""
