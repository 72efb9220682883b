"""Trace logs of concurrent requests stored in one transaction each round (a group commit).

Every ``/completion`` stores its call's trace log before it answers. One thread hop and one
transaction per request is what a thousand concurrent cached completions spent much of the
server's time on: they queued for the thread pool and then for the store's write lock, one at a
time. :class:`GroupWriter` keeps the guarantee (a request is answered only once its log is
committed) and pays once per round instead: requests that arrive while a write is under way wait
for the next one, which takes all of them, one transaction per tenant.

If a round's write fails, its requests are written again one at a time, so each request gets its
own outcome: a log the store refuses fails that request only, never the others of its round.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool

from runner.store import Store

__all__ = ["GroupWriter"]

_Item = tuple[str, list[Mapping[str, Any]], "asyncio.Future[None]"]


class GroupWriter:
    """Writes trace logs to ``store`` for requests on one event loop, grouped per round."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: list[_Item] = []
        self._drain: asyncio.Task[None] | None = None
        #: rounds written so far (for tests and the curious)
        self.rounds = 0

    async def write(self, owner: str, logs: list[Mapping[str, Any]]) -> None:
        """Store ``logs`` under ``owner``; returns once they are committed (or raises the error)."""
        if not logs:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieved)  # a waiter that went away leaves no "never retrieved"
        self._pending.append((owner, logs, future))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._rounds())
        # a request that goes away still has its log written: the round does not depend on it
        await asyncio.shield(future)

    async def _rounds(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            self.rounds += 1
            try:
                outcomes = await run_in_threadpool(self._write_round, batch)
            except BaseException as exc:  # cancelled at shutdown, or a round of one refused
                _settle(batch, [exc] * len(batch))
                if not isinstance(exc, Exception):
                    raise
                continue
            _settle(batch, outcomes)

    def _write_round(self, batch: list[_Item]) -> list[BaseException | None]:
        by_owner: dict[str, list[Mapping[str, Any]]] = {}
        for owner, logs, _ in batch:
            by_owner.setdefault(owner, []).extend(logs)
        try:
            for owner, logs in by_owner.items():
                self.store.upsert_traces(logs, owner)
            return [None] * len(batch)
        except Exception:
            if len(batch) == 1:
                raise
        # one of them is refused: write each on its own (an upsert of one already written is
        # idempotent), so only the refused request fails
        outcomes: list[BaseException | None] = []
        for owner, logs, _ in batch:
            try:
                self.store.upsert_traces(logs, owner)
                outcomes.append(None)
            except Exception as exc:
                outcomes.append(exc)
        return outcomes


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _settle(batch: list[_Item], outcomes: list[BaseException | None]) -> None:
    for (_, _, future), outcome in zip(batch, outcomes, strict=True):
        if future.done():
            continue
        if outcome is None:
            future.set_result(None)
        else:
            future.set_exception(outcome)
