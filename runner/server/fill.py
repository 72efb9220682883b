"""What clients leave out of a trace log, filled in by the server on the way in.

Parea clients other than ours send less than a complete log; the seed's own example omits
``latency``, the TypeScript SDK sends ``status`` only on failure, and most clients name the
project by ``project_uuid`` alone. Before a log is stored, for each field the client did *not*
send (a key absent or ``null``):

* ``latency`` is ``end_timestamp - start_timestamp`` in seconds, when both parse (ISO 8601 with or
  without an offset, ``T`` or a space between date and time, as the seed's
  ``"2024-05-30 13:48:34"``). A timestamp without an offset is taken as **UTC**. If either is
  missing or unreadable, or the end is before the start, ``latency`` stays unset (read as 0).
* ``total_tokens`` is ``input_tokens + output_tokens``, when either was sent.
* ``status`` is ``"error"`` when the log carries an ``error``, else ``"success"``.
* ``project_name`` is the name of the log's project: ``project_uuid``'s, else its experiment's;
  with neither, the store files the log under ``default``, and so is it named.

>>> latency_between("2024-05-30 13:48:34", "2024-05-30T13:48:35.5+00:00")
1.5
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from typing import Any

from runner.errors import NotFoundError
from runner.store import Store

__all__ = ["ProjectNames", "fill_logs", "latency_between", "parse_timestamp"]


def parse_timestamp(text: Any) -> _dt.datetime | None:
    """``text`` as an aware datetime (naive means UTC), or ``None`` if it is not a timestamp."""
    if not isinstance(text, str) or not text:
        return None
    value = text.strip()
    if value[-1:] in ("Z", "z"):  # fromisoformat accepts "Z" only from Python 3.11
        value = value[:-1] + "+00:00"
    try:
        moment = _dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=_dt.timezone.utc)


def latency_between(start: Any, end: Any) -> float | None:
    """Seconds from ``start`` to ``end`` (timestamps as :func:`parse_timestamp` reads them), or
    ``None`` when either is unreadable or ``end`` comes first."""
    begin, finish = parse_timestamp(start), parse_timestamp(end)
    if begin is None or finish is None or finish < begin:
        return None
    return (finish - begin).total_seconds()


class ProjectNames:
    """Project names by (owner, uuid), remembered: a project is never renamed."""

    def __init__(self) -> None:
        self._names: dict[tuple[str, str], str] = {}

    def name(self, store: Store, owner: str, project_uuid: str) -> str | None:
        key = (owner, project_uuid)
        name = self._names.get(key)
        if name is None:
            try:
                name = str(store.get_project(project_uuid, owner)["name"])
            except NotFoundError:
                return None
            if len(self._names) > 100_000:
                self._names.clear()
            self._names[key] = name
        return name


def fill_logs(store: Store, owner: str, logs: Iterable[dict[str, Any]], names: ProjectNames) -> None:
    """Fill ``latency``, ``total_tokens``, ``status`` and ``project_name`` of each log where absent, in place.

    ``status`` and ``project_name`` are defaults of a new log only: a post is merged into what is
    stored under its id, so a default filled into a later post of a stored log would overwrite
    a value set meanwhile (by ``PUT /trace_log``, say)."""
    logs = list(logs)
    unsure = [
        str(log["trace_id"])
        for log in logs
        if (log.get("status") is None and not log.get("error")) or log.get("project_name") is None
    ]
    stored = store.stored_trace_ids(unsure, owner) if unsure else set()
    for log in logs:
        new = log.get("trace_id") not in stored
        if log.get("latency") is None and log.get("end_timestamp") is not None:
            latency = latency_between(log.get("start_timestamp"), log["end_timestamp"])
            if latency is not None:
                log["latency"] = latency
        if log.get("total_tokens") is None and (log.get("input_tokens") or log.get("output_tokens")):
            log["total_tokens"] = (log.get("input_tokens") or 0) + (log.get("output_tokens") or 0)
        if log.get("status") is None and (new or log.get("error")):
            log["status"] = "error" if log.get("error") else "success"
        if log.get("project_name") is None and new:
            project = log.get("project_uuid")
            if project is None and log.get("experiment_uuid") is not None:
                project = store.experiment_project_uuid(log["experiment_uuid"])
            name = names.name(store, owner, project) if project is not None else "default"
            if name is not None:
                log["project_name"] = name
