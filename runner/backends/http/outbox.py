"""The spool side of :class:`runner.backends.http.backend.HttpBackend`: batches on disk and the task retrying them.

:class:`Outbox` writes batches the server could not take to the experiment's spool file
(:mod:`runner.backends.http.spool`) and keeps one task retrying the oldest with capped exponential backoff and
full jitter. While that fails, :attr:`Outbox.outage` tells the senders to spool without trying;
once a retry gets through, the outage ends and the rest of the spool follows, oldest first, a few
batches at a time (the requests in flight stay bounded by the server's adaptive limiter).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from runner.backends.http.spool import PendingBatch, Spool
from runner.backends.http.transport import finite_scores, retry_delay
from runner.errors import BackendError

__all__ = ["Outbox"]

#: sends logs once (no retries); returns those the server could not be reached for, raises
#: ``BackendError`` when it refused them
SendOnce = Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]
#: records a failure for ``flush()`` to raise: the error and how many logs it concerns
OnFailure = Callable[[BackendError, int], None]

_NO_EXPERIMENT = "no-experiment"


class Outbox:
    """Spool files by experiment under ``directory``, the batches waiting in them, the replayer."""

    def __init__(
        self,
        directory: Path,
        base_url: str,
        *,
        send_once: SendOnce,
        on_failure: OnFailure,
        backoff: float,
        max_backoff: float,
        parallel: int = 4,
    ) -> None:
        self.directory = directory
        self.base_url = base_url
        self._send_once = send_once
        self._on_failure = on_failure
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.parallel = parallel
        #: the server is away: spool without trying until a retry of the spool gets through
        self.outage = False
        self._spools: dict[str, Spool] = {}
        self._waiting: collections.deque[tuple[Spool, PendingBatch]] = collections.deque()
        self._finish_recorded: set[str] = set()
        self._replayer: asyncio.Task[None] | None = None

    def spool_for(self, experiment_uuid: str) -> Spool:
        spool = self._spools.get(experiment_uuid)
        if spool is None:
            spool = self._spools[experiment_uuid] = Spool.for_experiment(self.directory, experiment_uuid, self.base_url)
        return spool

    def owns(self, experiment_uuid: str) -> bool:
        """Whether this outbox has spooled anything of the experiment."""
        return experiment_uuid in self._spools

    @property
    def waiting(self) -> int:
        """How many trace logs wait in the spool."""
        return sum(batch.n_logs for _, batch in self._waiting)

    def waiting_for(self, experiment_uuid: str) -> tuple[int, str | None]:
        """Logs of the experiment waiting in the spool, and its file (``None``: nothing waits)."""
        n = sum(b.n_logs for s, b in self._waiting if s.experiment_uuid == experiment_uuid)
        if n or experiment_uuid in self._finish_recorded:
            return n, str(self.spool_for(experiment_uuid).path)
        return 0, None

    async def spill(self, logs: list[dict[str, Any]]) -> None:
        """Write logs to their experiment's spool file; make sure something keeps retrying them."""
        logs = [finite_scores(log) for log in logs]  # NaN would come back as null: refused
        experiment = next((str(x["experiment_uuid"]) for x in logs if x.get("experiment_uuid")), _NO_EXPERIMENT)
        spool = self.spool_for(experiment)
        try:
            batch = await asyncio.to_thread(spool.append, logs)
        except BackendError as exc:  # a full disk, an unwritable folder: raised by flush()
            self._on_failure(exc, len(logs))
            return
        self._waiting.append((spool, batch))
        self._ensure_replayer()

    def _ensure_replayer(self) -> None:
        if self._waiting and (self._replayer is None or self._replayer.done()):
            self._replayer = asyncio.create_task(self._replay(), name="runner-http-spool")

    async def _replay(self) -> None:
        """Deliver spooled batches, oldest first: while the server is away, one at a time with
        capped exponential backoff and full jitter (``Retry-After`` is the limiter's pause); once
        one gets through, ``parallel`` at a time."""
        attempt = 0
        while self._waiting:
            chunk = [self._waiting[0]] if self.outage else list(itertools.islice(self._waiting, self.parallel))
            outcomes = await asyncio.gather(*(self._replay_one(spool, batch) for spool, batch in chunk))
            for item, outcome in zip(chunk, outcomes, strict=True):
                if outcome in ("sent", "refused"):
                    self._waiting.remove(item)
            if "stop" in outcomes:
                return
            if "away" in outcomes:
                self.outage = True
                await asyncio.sleep(retry_delay(attempt, None, backoff=self.backoff, max_backoff=self.max_backoff))
                attempt = min(attempt + 1, 30)
            else:
                attempt = 0
                self.outage = False

    async def _replay_one(self, spool: Spool, batch: PendingBatch) -> str:
        """``"sent"``, ``"away"`` (try again later), ``"refused"`` or ``"stop"`` (recorded for flush)."""
        try:
            rest = await self._send_once(await asyncio.to_thread(spool.read, batch))
        except BackendError as exc:  # refused: raised by flush(); it stays in the file for sync
            self._on_failure(exc, batch.n_logs)
            return "refused"
        except Exception as exc:  # an unreadable spool, a bug: raised by flush(); still on disk
            self._on_failure(BackendError(f"replaying {spool.path} failed: {exc!r}"), batch.n_logs)
            return "stop"
        if rest:
            return "away"
        # if this mark is lost the batch is sent again later: harmless (upsert by trace_id)
        with contextlib.suppress(BackendError):
            await asyncio.to_thread(spool.mark, batch.seq)
        return "sent"

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the spool to be delivered."""
        self._ensure_replayer()
        replayer = self._replayer
        if self._waiting and replayer is not None and not replayer.done():
            await asyncio.wait({replayer}, timeout=timeout)

    async def record_finish(
        self,
        experiment_uuid: str,
        status: str,
        dataset_level_stats: Sequence[Mapping[str, Any]],
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Keep the finish call in the experiment's spool file, for ``python -m runner sync``
        (``extra``: the body's extension fields, e.g. the run's failures)."""
        spool = self.spool_for(experiment_uuid)
        await asyncio.to_thread(spool.record_finish, status, dataset_level_stats, extra)
        self._finish_recorded.add(experiment_uuid)

    async def forget(self, experiment_uuid: str) -> None:
        """The experiment is finished on the server: remove its spool file if all of it went."""
        spool = self._spools.get(experiment_uuid)
        if spool is not None:
            await asyncio.to_thread(spool.remove_if_done)

    async def close(self, *, cancel: bool) -> None:
        """Stop retrying (what is left stays on disk); remove files with nothing left in them."""
        replayer, self._replayer = self._replayer, None
        if replayer is not None and cancel:
            replayer.cancel()
            await asyncio.gather(replayer, return_exceptions=True)
        for spool in self._spools.values():
            if not any(s is spool for s, _ in self._waiting):
                with contextlib.suppress(OSError, BackendError):
                    spool.remove_if_done()

    def rebind(self) -> None:
        """A new event loop: the replayer of the old one died with it (``drain`` starts another)."""
        self._replayer = None
