"""``python -m runner sync``: deliver what runs left in the spool while the server was away.

Each spool file (:mod:`runner.backends.http.spool`) is replayed in order: every undelivered batch is posted
(with the usual retries), marked delivered once it got a 2xx, then the recorded finish call is
made, and only then is the file removed. A replay that stops half-way (the server went away
again) is simply run again later: trace log posts are upserts keyed by ``trace_id``, so a batch
delivered twice is stored once.

The server is ``--base-url``, else the one the run was logging to (recorded in the file), else
``PAREA_BASE_URL``; the key is ``--api-key``, else ``PAREA_API_KEY`` (keys are never written to
the spool). The spool folder is ``spool/`` next to the store (``--db``, ``RUNNER_DB``, else
``.runner/runner.db``).

>>> reports = asyncio.run(sync_spools(default_spool_dir()))   # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runner.backends.http.spool import Spool, default_spool_dir, spool_files
from runner.errors import BackendError, ConfigError

if TYPE_CHECKING:
    from runner.backends.http.backend import HttpBackend

__all__ = ["SyncReport", "deliver_spool", "sync_command", "sync_spools"]


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


async def deliver_spool(backend: HttpBackend, spool: Spool) -> SyncReport:
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


async def sync_spools(
    directory: str | Path, *, base_url: str | None = None, api_key: str | None = None, default_url: str | None = None
) -> list[SyncReport]:
    """Replay every spool file in ``directory``, oldest first, to ``base_url`` (else the server
    recorded in each file, else ``default_url``)."""
    from runner.backends.http.backend import HttpBackend

    reports = []
    backends: dict[str, HttpBackend] = {}
    try:
        for path in spool_files(directory):
            spool = Spool(path)
            try:
                state = await asyncio.to_thread(spool.state)
            except (OSError, ValueError) as exc:
                reports.append(SyncReport(str(path), None, None, error=f"unreadable spool file: {exc}"))
                continue
            url = base_url or state.base_url or default_url
            if not url:
                reports.append(
                    SyncReport(str(path), state.experiment_uuid, None, pending=state.pending_logs,
                               error="no server recorded in the file: pass --base-url")
                )
                continue
            backend = backends.get(url)
            if backend is None:
                backend = backends[url] = HttpBackend(url, api_key, spool_dir=directory)
            reports.append(await deliver_spool(backend, spool))
    finally:
        for backend in backends.values():
            await backend.aclose()
    return reports


def sync_command(args: argparse.Namespace) -> int:
    """``python -m runner sync``: 0 when every spool was delivered (or there was none), else 1."""
    from runner.settings import Settings

    settings = Settings.from_env()
    directory = default_spool_dir(args.db or settings.db_path)
    if not directory.is_dir() or not spool_files(directory):
        if args.json:
            print(json.dumps({"spool_dir": str(directory), "spools": []}))
        else:
            print(f"nothing to sync: no spool in {directory}")
        return 0
    if args.base_url is not None and not args.base_url.strip():
        raise ConfigError("--base-url must not be empty")
    reports = asyncio.run(
        sync_spools(
            directory,
            base_url=args.base_url,
            api_key=args.api_key or settings.api_key,
            default_url=settings.base_url,
        )
    )
    if args.json:
        print(json.dumps({"spool_dir": str(directory), "spools": [asdict(r) for r in reports]}, indent=2))
    else:
        for r in reports:
            what = f"experiment {r.experiment_uuid}" if r.experiment_uuid else Path(r.path).name
            if r.removed:
                done = " and finished it" if r.finished else ""
                print(f"synced {r.delivered} trace log(s) of {what} to {r.base_url}{done}")
            else:
                print(f"{what}: {r.pending} trace log(s) still spooled in {r.path}: {r.error}", file=sys.stderr)
    return 0 if all(r.removed for r in reports) else 1
