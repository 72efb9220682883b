"""Reads for the Logs page: every root trace the store holds, filtered, sorted and paged in SQL.

A root trace is any log whose ``root_trace_id`` is its own id: an experiment's row, a
``wrap_openai`` call, a LangChain chain, an SDK ``@trace`` function, a bare REST log. The page
must stay quick over a million of them, so:

- the default order (newest first) walks the index ``traces_roots_start`` backwards and stops
  after one page; a project narrows it through ``traces_project_start``;
- filters that no index answers (name, text, tags, a score's range) are checked row by row on
  that walk, which stops as soon as the page is full;
- the count is capped (:data:`COUNT_CAP`): past it the page says "more than N", and nobody
  pages through ten thousand logs one screen at a time;
- only the page's rows are read in full, and their children's scores, tokens and cost and
  their feedback are read for those ids alone.

Timestamps are compared as text, as clients send them (ISO 8601; our runner and the Parea SDKs
write ``YYYY-MM-DDTHH:MM:SS...``), so a time range is given in that form.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from runner.scoring import merge_scores

__all__ = ["COUNT_CAP", "LOG_SORTS", "SCAN_WINDOW", "LogFilter", "LogPage", "LogQueries"]

#: the count of matching logs stops here
COUNT_CAP = 10_000
#: filters no index answers, and orders other than by time, look at this many of the newest logs
#: the indexed filters (project, status, time range) leave; a time range reaches older ones
SCAN_WINDOW = 100_000
#: sort key -> SQL ordering (each ends on rowid, so pages never overlap)
LOG_SORTS = {
    "newest": "start_timestamp DESC, rowid DESC",
    "oldest": "start_timestamp ASC, rowid ASC",
    "latency": "latency DESC NULLS LAST, rowid DESC",
    "cost": "cost DESC NULLS LAST, rowid DESC",
    "tokens": "total_tokens DESC NULLS LAST, rowid DESC",
    "name": "trace_name COLLATE BINARY ASC NULLS LAST, rowid DESC",  # byte order on PostgreSQL too
}


def _like(text: str) -> str:
    """A LIKE pattern for ``text`` anywhere, as it appears inside a JSON document."""
    encoded = orjson.dumps(text).decode()[1:-1]
    return "%" + encoded.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"


@dataclass(frozen=True)
class LogFilter:
    """What the Logs page asks for; every field empty means every log, newest first."""

    project_uuid: str | None = None
    #: part of the trace name (case-insensitive)
    name: str = ""
    #: ``success`` or ``error``
    status: str = ""
    #: ISO timestamps bounding ``start_timestamp`` (``until`` exclusive)
    since: str = ""
    until: str = ""
    #: a score's name and bounds (inclusive); a bound may be None
    score: str = ""
    score_min: float | None = None
    score_max: float | None = None
    #: every one of these tags
    tags: tuple[str, ...] = ()
    #: text searched in inputs, output, target and error
    text: str = ""
    #: ``experiment`` (rows of runs), ``loose`` (logs outside any run) or empty (both)
    kind: str = ""
    sort: str = "newest"
    page: int = 1
    per_page: int = 50

    def where(self, owner: str) -> tuple[str, list[Any], str, list[Any]]:
        """The SQL conditions on ``traces`` an index answers, and those checked row by row, each
        with its parameters (the second pair empty when there are none)."""
        where, args = ["owner=?", "is_root=1"], [owner]
        if self.project_uuid is not None:
            where.append("project_uuid=?")
            args.append(self.project_uuid)
        if self.status:
            where.append("status=?")
            args.append(self.status)
        if self.since:
            where.append("start_timestamp>=?")
            args.append(self.since)
        if self.until:
            where.append("start_timestamp<?")
            args.append(self.until)
        scan: list[str] = []
        scan_args: list[Any] = []
        if self.name:
            scan.append("trace_name LIKE ? ESCAPE '!'")
            scan_args.append("%" + self.name.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%")
        if self.kind == "experiment":
            scan.append("experiment_uuid IS NOT NULL")
        elif self.kind == "loose":
            scan.append("experiment_uuid IS NULL")
        if self.score:
            # the root's own score, else the mean over its descendants (as reads roll it up)
            value = (
                "coalesce((SELECT json_extract(value,'$.score') FROM json_each(traces.scores)"
                " WHERE json_extract(value,'$.name')=? LIMIT 1),"
                " (SELECT avg(json_extract(j.value,'$.score')) FROM traces AS c, json_each(c.scores) AS j"
                " WHERE c.root_trace_id=traces.trace_id AND c.is_root=0 AND c.scores IS NOT NULL"
                " AND json_extract(j.value,'$.name')=?))"
            )
            checks: list[tuple[str, list[Any]]] = [(f"{value} IS NOT NULL", [])]
            if self.score_min is not None:
                checks.append((f"{value} >= ?", [self.score_min]))
            if self.score_max is not None:
                checks.append((f"{value} <= ?", [self.score_max]))
            for sql, bound in checks:
                scan.append(sql)
                scan_args.extend([self.score, self.score, *bound])
        for tag in self.tags:
            pattern = _like(tag)
            scan.append(
                "data LIKE ? ESCAPE '!' AND EXISTS (SELECT 1 FROM json_each(traces.data,'$.tags') WHERE value=?)"
            )
            scan_args.extend([pattern, tag])
        if self.text:
            # the whole document first (cheap), then the four fields of the documents it matched
            pattern = _like(self.text)
            fields = " OR ".join(
                f"CAST(json_extract(data,'$.{f}') AS TEXT) LIKE ? ESCAPE '!'"
                for f in ("inputs", "output", "target", "error")
            )
            scan.append(f"data LIKE ? ESCAPE '!' AND ({fields})")
            scan_args.extend([pattern] * 5)
        return " AND ".join(where), args, " AND ".join(scan), scan_args

    @property
    def windowed(self) -> bool:
        """Whether the page looks at the newest :data:`SCAN_WINDOW` candidates only: when a filter
        must be checked row by row, or the order is not by time."""
        return bool(self.name or self.kind or self.score or self.tags or self.text) or self.sort not in (
            "newest",
            "oldest",
        )


@dataclass
class LogPage:
    """One page of logs: the root logs (children's scores, tokens and cost rolled up), and their
    feedback by trace id."""

    rows: list[dict[str, Any]]
    #: matching logs, counted up to :data:`COUNT_CAP` (``capped`` says the count stopped there)
    total: int
    capped: bool
    page: int
    feedback: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: whether only the newest :data:`SCAN_WINDOW` candidates were looked at (there were more)
    windowed: bool = False


class LogQueries:
    """Mixin of :class:`runner.store.Store` holding the Logs page's reads."""

    if TYPE_CHECKING:

        def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

    def list_logs(self, f: LogFilter, owner: str = "", *, window: int = SCAN_WINDOW) -> LogPage:
        """One page of the root logs matching ``f``, in ``f.sort`` order; filters checked row by
        row (see :attr:`LogFilter.windowed`) look at the newest ``window`` candidates."""
        where, args, scan, scan_args = f.where(owner)
        order = LOG_SORTS.get(f.sort, LOG_SORTS["newest"])
        if f.windowed:
            source = (
                f"traces WHERE rowid IN (SELECT rowid FROM traces WHERE {where}"
                f" ORDER BY start_timestamp DESC LIMIT {int(window)})"
            )
            reached = (
                int(
                    self._query(
                        f"SELECT count(*) FROM (SELECT 1 FROM traces WHERE {where} LIMIT {int(window) + 1})", args
                    )[0][0]
                )
                > window
            )
            source += f" AND {scan}" if scan else ""
            args = [*args, *scan_args]
        else:
            source, reached = f"traces WHERE {where}", False
        counted = int(
            self._query(f"SELECT count(*) FROM (SELECT 1 FROM {source} LIMIT ?)", [*args, COUNT_CAP + 1])[0][0]
        )
        capped = counted > COUNT_CAP
        total = min(counted, COUNT_CAP)
        page = max(1, f.page)
        if not capped:
            page = min(page, max(1, -(-total // f.per_page)))
        rows = self._query(
            f"SELECT data, scores FROM {source} ORDER BY {order} LIMIT ? OFFSET ?",
            [*args, f.per_page, (page - 1) * f.per_page],
        )
        logs = []
        for r in rows:
            d = orjson.loads(r[0])
            d["scores"] = orjson.loads(r[1]) if r[1] else []
            logs.append(d)
        self._roll_up(logs, owner)
        feedback = self.feedback_for([d["trace_id"] for d in logs], owner)
        return LogPage(logs, total, capped, page, feedback, windowed=reached)

    def _roll_up(self, logs: list[dict[str, Any]], owner: str) -> None:
        """Add the children's scores, tokens and cost to each root in ``logs`` (as the API does)."""
        if not logs:
            return
        ids = [d["trace_id"] for d in logs]
        marks = ",".join("?" * len(ids))
        sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
        scores: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in self._query(
            "SELECT root_trace_id, input_tokens, output_tokens, total_tokens, cost, scores FROM traces"
            f" WHERE is_root=0 AND owner=? AND root_trace_id IN ({marks})",
            (owner, *ids),
        ):
            acc = sums[r[0]]
            for i in range(4):
                acc[i] += float(r[i + 1] or 0)
            if r[5] and r[5] != "[]":
                scores[r[0]].extend(orjson.loads(r[5]))
        for d in logs:
            if d["trace_id"] in scores:
                d["scores"] = merge_scores(d["scores"], scores[d["trace_id"]])
            if d["trace_id"] in sums:
                acc = sums[d["trace_id"]]
                for i, key in enumerate(("input_tokens", "output_tokens", "total_tokens")):
                    d[key] = int((d.get(key) or 0) + acc[i])
                d["cost"] = float(d.get("cost") or 0.0) + acc[3]

    def feedback_for(self, trace_ids: Sequence[str], owner: str = "") -> dict[str, list[dict[str, Any]]]:
        """The feedback (``POST /feedback``) given on each of ``trace_ids``, oldest first."""
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for i in range(0, len(trace_ids), 500):
            chunk = list(trace_ids[i : i + 500])
            marks = ",".join("?" * len(chunk))
            for r in self._query(
                "SELECT trace_id, score, comment, target, created_at FROM feedback"
                f" WHERE owner=? AND trace_id IN ({marks}) ORDER BY id",
                (owner, *chunk),
            ):
                out[r[0]].append({"score": r[1], "comment": r[2], "target": r[3], "created_at": r[4]})
        return dict(out)

    def log_names(self, owner: str = "", limit: int = 200) -> list[str]:
        """Trace names seen recently (the name filter's suggestions), read from the newest logs only."""
        rows = self._query(
            "SELECT DISTINCT trace_name FROM (SELECT trace_name FROM traces WHERE owner=? AND is_root=1"
            " ORDER BY start_timestamp DESC LIMIT 5000) WHERE trace_name IS NOT NULL LIMIT ?",
            (owner, limit),
        )
        return sorted(str(r[0]) for r in rows)
