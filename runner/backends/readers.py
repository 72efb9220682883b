"""Reading stored runs back, synchronously, through either door: what ``list``, ``show``,
``compare`` and ``--baseline`` use. :func:`open_reader` picks the reader of a resolved
:class:`~runner.backends.target.Target`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Protocol

from runner.backends.http.api import SyncApi, fetch_experiment_rows
from runner.backends.target import Target
from runner.errors import NotFoundError
from runner.store import Store

__all__ = ["HttpSource", "Source", "StoreSource", "find_run", "open_reader"]

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
#: ``EXPERIMENT`` or ``EXPERIMENT~N``: the newest run of an experiment, or the N-th before it
_BY_EXPERIMENT = re.compile(r"^(?P<name>.+?)(?:~(?P<back>\d+))?$")


class Source(Protocol):
    """A synchronous reader of stored runs, the same through both doors."""

    location: str

    def experiments(self, project: str | None, name: str | None, limit: int | None) -> list[dict[str, Any]]: ...
    def find(self, ref: str, project: str | None) -> dict[str, Any]: ...
    def rows(self, uuid: str) -> list[dict[str, Any]]: ...
    def n_errors(self, uuid: str) -> int | None: ...
    def close(self) -> None: ...


class StoreSource:
    """The embedded SQLite store."""

    def __init__(self, path: str | Path) -> None:
        self.location = str(path)
        self.store = Store(path)

    def experiments(self, project: str | None, name: str | None, limit: int | None) -> list[dict[str, Any]]:
        return self.store.list_experiments(project_name=project, experiment_name_filter=name, limit=limit)

    def find(self, ref: str, project: str | None) -> dict[str, Any]:
        return self.store.find_experiment(ref, project_name=project)

    def rows(self, uuid: str) -> list[dict[str, Any]]:
        return self.store.experiment_rows(uuid)

    def n_errors(self, uuid: str) -> int | None:
        return self.store.find_roots(experiment_uuid=uuid, status="error", limit=0)[0]

    def close(self) -> None:
        self.store.close()


class HttpSource:
    """A Parea-compatible server (``POST /experiments``, ``/experiment/{uuid}/trace_logs``)."""

    def __init__(self, base_url: str, api_key: str | None) -> None:
        self.api = SyncApi(base_url, api_key)
        self.api_key = api_key
        self.location = self.api.base_url

    def experiments(self, project: str | None, name: str | None, limit: int | None) -> list[dict[str, Any]]:
        body = {"project_name": project, "experiment_name_filter": name}
        found: list[dict[str, Any]] = self.api.request("POST", "/experiments", body).json()
        found.sort(key=lambda e: e.get("created_at") or "", reverse=True)
        return found[:limit] if limit is not None else found

    def find(self, ref: str, project: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"project_name": project}
        if _UUID.match(ref):
            body["experiment_uuids"] = [ref]
        else:
            body["run_name_filter"] = ref
        found = [
            e
            for e in self.api.request("POST", "/experiments", body).json()
            if ref in (e.get("uuid"), e.get("run_name"))
        ]
        if not found:
            raise NotFoundError(
                f"no run or experiment called {ref!r} on {self.location}; `python -m runner list` shows them"
            )
        exp: dict[str, Any] = max(found, key=lambda e: e.get("created_at") or "")
        return exp

    def rows(self, uuid: str) -> list[dict[str, Any]]:
        return fetch_experiment_rows(self.api.base_url, self.api_key, uuid)

    def n_errors(self, uuid: str) -> int | None:
        return None  # the Parea API lists runs without their error counts

    def close(self) -> None:
        self.api.__exit__()


def find_run(source: Source, ref: str, project: str | None) -> dict[str, Any]:
    """The run ``ref`` names: a run name or an experiment uuid (the newest run of that name), else
    an experiment's name for its newest run, ``NAME~1`` for the one before, ``NAME~2`` ...

    A run name wins over an experiment of the same name; ``~`` is not allowed in run names, so
    ``NAME~N`` is never ambiguous. ``NotFoundError`` when nothing matches."""
    try:
        return source.find(ref, project)
    except NotFoundError as exc:
        m = _BY_EXPERIMENT.match(ref)
        if m is None:  # pragma: no cover - the pattern matches any non-empty text
            raise
        name, back = m["name"], int(m["back"] or 0)
        runs = [e for e in source.experiments(project, name, None) if e.get("name") == name]
        runs.sort(key=lambda e: e.get("created_at") or "", reverse=True)
        if back < len(runs):
            return runs[back]
        if runs:
            oldest = f"{name}~{len(runs) - 1}" if len(runs) > 1 else name
            raise NotFoundError(
                f"{ref!r}: experiment {name!r} has {len(runs)} run(s): {name} is the newest, {oldest} the oldest"
            ) from None
        raise exc from None


def open_reader(target: Target) -> Source | None:
    """The reader of ``target``; ``None`` when it names a store file that does not exist yet."""
    if target.base_url is not None:
        return HttpSource(target.base_url, target.api_key)
    if not target.store_exists:
        return None
    return StoreSource(target.db)
