"""Replaying a spool file: deliver what a run left in the spool while the server was away.

Each spool file (:mod:`runner.backends.http.spool`) is replayed in order: every undelivered batch is posted
(with the usual retries), marked delivered once it got a 2xx, then the recorded finish call is
made, and only then is the file removed. A replay that stops half-way (the server went away
again) is simply run again later: trace log posts are upserts keyed by ``trace_id``, so a batch
delivered twice is stored once.

The server is ``--base-url``, else the one the run was logging to (recorded in the file), else
``PAREA_BASE_URL``; the key is ``--api-key``, else ``PAREA_API_KEY`` (keys are never written to
the spool). The spool folder is ``spool/`` next to the store (``--db``, ``RUNNER_DB``, else
``.runner/runner.db``).

``python -m runner sync`` (:mod:`runner.cli.sync`) replays every spool file of a folder.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from runner.backends.http.spool import Spool
from runner.errors import BackendError

__all__ = ["Deliverer", "SyncReport", "deliver_spool"]


class Deliverer(Protocol):
    """What a replay needs of the HTTP backend (:class:`runner.backends.http.backend.HttpBackend`)."""

    base_url: str

    async def deliver(self, logs: list[dict[str, Any]]) -> bool: ...

    async def post_finished(self, experiment_uuid: str, body: Mapping[str, Any]) -> None: ...


@dataclass
class SyncReport:
    """What syncing one spool file did."""

    path: str
    experiment_uuid: str | None
    base_url: str | None
    #: trace logs delivered by this sync
    delivered: int = 0
    #: trace logs still in the file afterwards
    pending: int = 0
    #: the recorded finish call was made
    finished: bool = False
    #: the file is gone: everything in it was delivered
    removed: bool = False
    #: why the file stays (``None`` when it was removed)
    error: str | None = None


async def deliver_spool(backend: Deliverer, spool: Spool) -> SyncReport:
    """Replay one spool file through ``backend``; stops at the first batch that cannot get through."""
    state = await asyncio.to_thread(spool.state)
    report = SyncReport(str(spool.path), state.experiment_uuid, backend.base_url, pending=state.pending_logs)
    for batch in state.pending:
        logs = await asyncio.to_thread(spool.read, batch)
        try:
            delivered = await backend.deliver(logs)
        except BackendError as exc:  # refused: keep it (a wrong --base-url must not lose anything)
            report.error = f"the server refused a batch of {batch.n_logs} log(s): {exc}"
            return report
        if not delivered:
            report.error = f"the server at {backend.base_url} did not answer; try again later"
            return report
        await asyncio.to_thread(spool.mark, batch.seq)
        report.delivered += batch.n_logs
        report.pending -= batch.n_logs
    if state.finish is not None and state.experiment_uuid:
        try:
            await backend.post_finished(state.experiment_uuid, state.finish)
        except BackendError as exc:
            report.error = f"finishing experiment {state.experiment_uuid} failed: {exc}"
            return report
        await asyncio.to_thread(spool.mark_finished)
        report.finished = True
    report.removed = await asyncio.to_thread(spool.remove_if_done)
    if not report.removed:  # a run appended meanwhile: the next sync takes it
        report.error = "new logs were spooled while syncing; run sync again"
    return report
