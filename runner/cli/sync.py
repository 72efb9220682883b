"""``python -m runner sync``: deliver what runs left in the spool while the server was away.

The server is ``--base-url``, else the one the run was logging to (recorded in each spool file),
else ``PAREA_BASE_URL``; the key is ``--api-key``, else ``PAREA_API_KEY``. The spool folder is
``spool/`` next to the store (``--db``, ``RUNNER_DB``, else ``.runner/runner.db``).

>>> reports = asyncio.run(sync_spools(default_spool_dir()))   # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from pathlib import Path

from runner.backends.http.backend import HttpBackend
from runner.backends.http.replay import SyncReport, deliver_spool
from runner.backends.http.spool import Spool, default_spool_dir, spool_files
from runner.errors import ConfigError

__all__ = ["sync_command", "sync_spools"]


async def sync_spools(
    directory: str | Path, *, base_url: str | None = None, api_key: str | None = None, default_url: str | None = None
) -> list[SyncReport]:
    """Replay every spool file in ``directory``, oldest first, to ``base_url`` (else the server
    recorded in each file, else ``default_url``)."""
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
