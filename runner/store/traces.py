"""Trace logs in the store: the upsert, trees, per-root stats and filtered reads.

Children may arrive before or after their parents and any log may be posted twice: a write is
an upsert keyed by ``trace_id`` that merges the new fields into the stored ones (RFC 7396, via
SQLite's ``json_patch``), so retries and partial updates never lose or duplicate anything.

Scores, tokens and cost of children are rolled up on read: a span's effective scores are its own
plus, for each name it does not score itself, the mean of that score over its descendants; its
tokens and cost are its own plus all of its descendants'.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import orjson

from runner.errors import NotFoundError
from runner.scoring import merge_scores
from runner.store.common import dumps, dumps_clean
from runner.store.tree_links import MAX_SPANS, fetch, link

__all__ = ["TraceQueries"]

_NUM_COLS = ("latency", "input_tokens", "output_tokens", "total_tokens", "cost")

_COLUMNS = (
    "trace_id, owner, root_trace_id, parent_trace_id, experiment_uuid, project_uuid, trace_name, status, depth,"
    " execution_order, start_timestamp, end_timestamp, latency, input_tokens, output_tokens, total_tokens, cost,"
    " is_root, scores, created_at, data"
)

_ON_CONFLICT = """
ON CONFLICT(trace_id, owner) DO UPDATE SET
    root_trace_id=excluded.root_trace_id,
    parent_trace_id=coalesce(excluded.parent_trace_id, traces.parent_trace_id),
    experiment_uuid=coalesce(excluded.experiment_uuid, traces.experiment_uuid),
    project_uuid=coalesce(excluded.project_uuid, traces.project_uuid),
    trace_name=coalesce(excluded.trace_name, traces.trace_name),
    status=coalesce(excluded.status, traces.status),
    depth=excluded.depth,
    execution_order=excluded.execution_order,
    start_timestamp=coalesce(excluded.start_timestamp, traces.start_timestamp),
    end_timestamp=coalesce(excluded.end_timestamp, traces.end_timestamp),
    latency=coalesce(excluded.latency, traces.latency),
    input_tokens=coalesce(excluded.input_tokens, traces.input_tokens),
    output_tokens=coalesce(excluded.output_tokens, traces.output_tokens),
    total_tokens=coalesce(excluded.total_tokens, traces.total_tokens),
    cost=coalesce(excluded.cost, traces.cost),
    is_root=excluded.is_root,
    scores=coalesce(excluded.scores, traces.scores),
    data=json_patch(traces.data, excluded.data)
WHERE traces.owner = excluded.owner
"""

# The whole batch is one JSON array bound to one parameter and unpacked by SQLite itself: one
# statement, one step. executemany() would release and retake the GIL once per row, and each
# retake waits out the interpreter's switch interval while worker threads are busy (measured:
# 10,000 rows take 0.2 s alone and 12 s beside ten busy threads). Each log is parsed once: one
# multi-path json_extract pulls every column into a small array (materialised, so SQLite does
# not inline it back), and the columns are read from that array.
_FIELDS = (
    "trace_id", "root_trace_id", "parent_trace_id", "experiment_uuid", "project_uuid", "trace_name", "status",
    "depth", "execution_order", "start_timestamp", "end_timestamp", "latency", "input_tokens", "output_tokens",
    "total_tokens", "cost", "scores",
)
_F = {name: f"json_extract(v, '$[{i}]')" for i, name in enumerate(_FIELDS)}
_UPSERT_BATCH = f"""
WITH batch AS MATERIALIZED (
    SELECT json_extract(value, {", ".join(f"'$.{f}'" for f in _FIELDS)}) AS v, value AS data
    FROM json_each(:logs)
)
INSERT INTO traces({_COLUMNS})
SELECT
    {_F["trace_id"]}, :owner, {_F["root_trace_id"]}, {_F["parent_trace_id"]}, {_F["experiment_uuid"]},
    {_F["project_uuid"]}, {_F["trace_name"]}, {_F["status"]}, coalesce({_F["depth"]}, 0),
    coalesce({_F["execution_order"]}, 0), {_F["start_timestamp"]}, {_F["end_timestamp"]}, {_F["latency"]},
    {_F["input_tokens"]}, {_F["output_tokens"]}, {_F["total_tokens"]}, {_F["cost"]},
    {_F["root_trace_id"]} = {_F["trace_id"]}, {_F["scores"]}, :created, data
FROM batch WHERE true
{_ON_CONFLICT}
"""


_UPSERT_ROW = f"INSERT INTO traces({_COLUMNS}) VALUES ({', '.join('?' * 21)}) {_ON_CONFLICT}"


def _row_tuple(d: Mapping[str, Any], owner: str, created: str) -> tuple[Any, ...]:
    data, d = dumps_clean(d)  # NUL characters as U+FFFD, in the columns too (executemany binds as is)
    scores = d.get("scores")
    return (
        d["trace_id"], owner, d["root_trace_id"], d["parent_trace_id"], d.get("experiment_uuid"),
        d.get("project_uuid"), d.get("trace_name"), d.get("status"), d.get("depth") or 0,
        d.get("execution_order") or 0, d.get("start_timestamp"), d.get("end_timestamp"), d.get("latency"),
        d.get("input_tokens"), d.get("output_tokens"), d.get("total_tokens"), d.get("cost"),
        int(d["root_trace_id"] == d["trace_id"]), None if scores is None else dumps(scores), created, data,
    )


def _clean_scores(scores: Any) -> list[dict[str, Any]] | None:
    if scores is None:
        return None
    out = []
    for s in scores:
        v = float(s["score"])
        if math.isfinite(v):
            out.append({k: s[k] for k in ("name", "score", "reason", "evaluation_metric_id") if s.get(k) is not None}
                       | {"score": v})
    return out


class TraceQueries:
    """Mixin of :class:`runner.store.Store` holding everything about trace logs."""

    _lock: threading.RLock

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:  # pragma: no cover - in Store
        raise NotImplementedError

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:  # pragma: no cover
        raise NotImplementedError

    def project_uuid(self, name: str, owner: str = "") -> str:  # pragma: no cover - in Store
        raise NotImplementedError

    def experiment_project_uuid(self, experiment_uuid: str) -> str | None:  # pragma: no cover
        raise NotImplementedError

    # -- writes -----------------------------------------------------------------------------
    def upsert_traces(self, logs: Iterable[Mapping[str, Any]], owner: str = "", *, contended: bool = True) -> int:
        """Insert or merge trace logs (dicts shaped like ``TraceLogSchema``) in one transaction.

        ``contended=False`` says no other thread of the process is busy: then one row at a time
        (``executemany``) is cheaper than unpacking one JSON array in SQL, and its per-row GIL
        hand-offs cost nothing."""
        prepared = self._prepare_logs(logs, owner)
        if not prepared:
            return 0
        if contended:
            self._write_prepared(prepared, owner)
        else:
            from runner.store.common import now_iso

            created = now_iso()
            rows = [_row_tuple(d, owner, created) for d in prepared]
            with self.transaction() as c:
                c.executemany(_UPSERT_ROW, rows)
        return len(prepared)

    def _write_prepared(self, prepared: list[dict[str, Any]], owner: str, delete_first: str | None = None) -> None:
        from runner.store.common import now_iso

        params = {"owner": owner, "created": now_iso(), "logs": dumps(prepared)}
        with self.transaction() as c:
            if delete_first is not None:
                c.execute("DELETE FROM traces WHERE trace_id=? AND owner=?", (delete_first, owner))
            c.execute(_UPSERT_BATCH, params)

    def _prepare_logs(self, logs: Iterable[Mapping[str, Any]], owner: str) -> list[dict[str, Any]]:
        """Logs without ``null`` fields, with root, parent and project filled in, scores finite."""
        out: list[dict[str, Any]] = []
        for log in logs:
            scores = log.get("scores")
            if (
                "project_uuid" in log
                and "parent_trace_id" in log
                and "root_trace_id" in log
                and None not in log.values()
                and (not scores or all(type(s.get("score")) is float and math.isfinite(s["score"]) for s in scores))
            ):
                out.append(log)  # type: ignore[arg-type]  # complete already (the runner's own logs)
                continue
            data = {k: v for k, v in log.items() if v is not None}
            trace_id = data["trace_id"]
            if "root_trace_id" not in data or "parent_trace_id" not in data:
                parent = data.get("parent_trace_id")
                root = data.get("root_trace_id") or (trace_id if parent in (None, trace_id) else parent)
                data["root_trace_id"] = root
                data.setdefault("parent_trace_id", trace_id if root == trace_id else root)
            if "project_uuid" not in data:
                exp = data.get("experiment_uuid")
                project = self.experiment_project_uuid(exp) if exp is not None else None
                if project is None:
                    project = self.project_uuid(data.get("project_name") or "default", owner)
                data["project_uuid"] = project
            scores = data.get("scores")
            if scores and not all(type(s.get("score")) is float and math.isfinite(s["score"]) for s in scores):
                data["scores"] = _clean_scores(scores)
            out.append(data)
        return out

    def delete_trace_trees(self, root_trace_ids: Sequence[str], owner: str = "") -> int:
        """Delete root traces and all their descendants (a resumed run re-runs those rows)."""
        deleted = 0
        with self.transaction() as c:
            for i in range(0, len(root_trace_ids), 500):
                chunk = list(root_trace_ids[i : i + 500])
                marks = ",".join("?" * len(chunk))
                deleted += c.execute(
                    f"DELETE FROM traces WHERE owner=? AND is_root=0 AND root_trace_id IN ({marks})", (owner, *chunk)
                ).rowcount
                deleted += c.execute(
                    f"DELETE FROM traces WHERE owner=? AND trace_id IN ({marks})", (owner, *chunk)
                ).rowcount
        return deleted

    def update_trace(self, trace_id: str, fields: Mapping[str, Any], owner: str = "") -> None:
        """``PUT /trace_log``: set the given fields of an existing log.

        Read, merge and write happen in one write transaction, so concurrent updates of
        different fields (and posts racing them) all survive: SQLite's holds the write lock from
        its start (``BEGIN IMMEDIATE``), PostgreSQL's reads the row ``FOR UPDATE``."""
        with self.transaction() as c:
            row = self._read_for_update(c, trace_id, owner)
            if row is None:
                raise NotFoundError(f"trace {trace_id} not found")
            data = orjson.loads(row[0])
            data.update(fields)
            data["trace_id"] = trace_id
            self._write_prepared(self._prepare_logs([data], owner), owner, delete_first=trace_id)

    def _read_for_update(self, c: Any, trace_id: str, owner: str) -> Any:
        """The stored ``data`` row of a log, read in the write transaction ``c`` that will
        rewrite it (SQLite's write transaction holds the whole file already)."""
        return c.execute("SELECT data FROM traces WHERE trace_id=? AND owner=?", (trace_id, owner)).fetchone()

    # -- reads ------------------------------------------------------------------------------
    def stored_trace_ids(self, trace_ids: Sequence[str], owner: str = "") -> set[str]:
        """Which of ``trace_ids`` this owner already holds."""
        found: set[str] = set()
        for i in range(0, len(trace_ids), 500):
            chunk = trace_ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            found.update(
                r[0] for r in self._query(f"SELECT trace_id FROM traces WHERE owner=? AND trace_id IN ({marks})",
                                          (owner, *chunk))
            )
        return found

    def count_roots(self, experiment_uuid: str, owner: str = "") -> int:
        return int(
            self._query(
                "SELECT count(*) FROM traces WHERE experiment_uuid=? AND is_root=1 AND owner=?",
                (experiment_uuid, owner),
            )[0][0]
        )

    def count_traces(self, owner: str = "") -> int:
        return int(self._query("SELECT count(*) FROM traces WHERE owner=?", (owner,))[0][0])

    def _child_rollup(
        self, root_sql: str, params: Sequence[Any], owner: str
    ) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
        sums: dict[str, list[float]] = {}
        scores: dict[str, list[Any]] = defaultdict(list)
        # no child span in the whole store (one step on the children's index): nothing rolls up.
        # Otherwise the queries below look each of the run's roots up in that index.
        if not self._query("SELECT root_trace_id FROM traces WHERE is_root=0 ORDER BY root_trace_id LIMIT 1"):
            return sums, scores
        for r in self._query(
            "SELECT root_trace_id, sum(coalesce(input_tokens,0)), sum(coalesce(output_tokens,0)),"
            " sum(coalesce(total_tokens,0)), sum(coalesce(cost,0)) FROM traces"
            f" WHERE root_trace_id IN ({root_sql}) AND is_root=0 AND owner=? GROUP BY root_trace_id",
            (*params, owner),
        ):
            sums[r[0]] = [r[1], r[2], r[3], r[4]]
        for r in self._query(
            f"SELECT root_trace_id, scores FROM traces WHERE root_trace_id IN ({root_sql}) AND is_root=0"
            " AND owner=? AND scores IS NOT NULL AND scores != '[]'",
            (*params, owner),
        ):
            scores[r[0]].extend(orjson.loads(r[1]))
        return sums, scores

    def experiment_stats(self, experiment_uuid: str, owner: str = "") -> list[dict[str, Any]]:
        """``TraceStatsSchema`` dicts of the experiment's root traces, with children rolled up."""
        return list(self.iter_experiment_stats(experiment_uuid, owner))

    def iter_experiment_stats(
        self, experiment_uuid: str, owner: str = "", page: int = 5000
    ) -> Iterator[dict[str, Any]]:
        """Like :meth:`experiment_stats`, read a page at a time (a million-row run fits in memory)."""
        root_sql = "SELECT trace_id FROM traces WHERE experiment_uuid=? AND is_root=1 AND owner=?"
        params = (experiment_uuid, owner)
        sums, child_scores = self._child_rollup(root_sql, params, owner)
        last = 0
        while True:
            rows = self._query(
                "SELECT rowid, trace_id, latency, input_tokens, output_tokens, total_tokens, cost, scores FROM traces"
                " WHERE experiment_uuid=? AND is_root=1 AND owner=? AND rowid > ? ORDER BY rowid LIMIT ?",
                (*params, last, page),
            )
            for r in rows:
                extra = sums.get(r[1], [0, 0, 0, 0.0])
                own = orjson.loads(r[7]) if r[7] else []
                yield {
                    "trace_id": r[1],
                    "latency": r[2] or 0.0,
                    "input_tokens": (r[3] or 0) + extra[0],
                    "output_tokens": (r[4] or 0) + extra[1],
                    "total_tokens": (r[5] or 0) + extra[2],
                    "cost": (r[6] or 0.0) + extra[3],
                    "scores": merge_scores(own, child_scores[r[1]]) if r[1] in child_scores else own,
                }
            if len(rows) < page:
                return
            last = rows[-1][0]

    def experiment_rows(self, experiment_uuid: str, owner: str = "") -> list[dict[str, Any]]:
        """Root trace logs of an experiment (full data, children's scores and costs rolled up)."""
        stats = {s["trace_id"]: s for s in self.experiment_stats(experiment_uuid, owner)}
        out = []
        for r in self._query(
            "SELECT data FROM traces WHERE experiment_uuid=? AND is_root=1 AND owner=? ORDER BY rowid",
            (experiment_uuid, owner),
        ):
            d = orjson.loads(r[0])
            s = stats.get(d["trace_id"])
            if s is not None:
                d.update({k: s[k] for k in ("scores", "input_tokens", "output_tokens", "total_tokens", "cost")})
            out.append(d)
        return out

    def get_trace_tree(self, trace_id: str, owner: str = "", max_spans: int = MAX_SPANS) -> dict[str, Any]:
        """The log ``trace_id`` with its descendants nested in ``children_logs`` (at most
        ``max_spans`` spans of its tree are read: see :mod:`runner.store.tree_links`)."""
        rows = self._query("SELECT root_trace_id, data FROM traces WHERE trace_id=? AND owner=?", (trace_id, owner))
        if not rows:
            raise NotFoundError(f"trace {trace_id} not found")
        nodes = self._trees_for_roots([rows[0][0]], owner, also=trace_id, max_spans=max_spans, row=rows[0][1])
        node = nodes.get(trace_id)
        if node is None:  # pragma: no cover - defensive: the row exists
            raise NotFoundError(f"trace {trace_id} not found")
        return node

    def _trees_for_roots(
        self, roots: Sequence[str], owner: str, also: str | None = None, max_spans: int = MAX_SPANS,
        row: str | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Every node of the given traces, by id, the roots (and ``also``, if no root reaches
        it) with their rolled-up children attached (:func:`runner.store.tree_links.link`)."""
        nodes = fetch(self._query, roots, owner, max_spans)
        if also is not None and also not in nodes and row is not None:  # beyond the spans read
            nodes[also] = orjson.loads(row)
        link(nodes, [*roots, also] if also is not None else roots)
        return nodes

    def find_roots(
        self,
        owner: str = "",
        *,
        experiment_uuid: str | None = None,
        project_uuid: str | None = None,
        condition: str = "",
        params: Sequence[Any] = (),
        since: str | None = None,
        status: str | None = None,
        newest_first: bool = False,
        limit: int | None = None,
        offset: int = 0,
        roots_only: bool = True,
    ) -> tuple[int, list[str]]:
        """How many root traces match, and the ids of one page of them (for ``trace_trees``).

        ``condition``/``params`` come from :meth:`filter_sql`; ``since`` is an ISO timestamp.
        ``roots_only=False`` matches spans at any depth instead (for ``span_trees``)."""
        where = ["owner=?", "is_root=1"] if roots_only else ["owner=?"]
        args: list[Any] = [owner]
        for sql, value in (
            ("experiment_uuid=?", experiment_uuid), ("project_uuid=?", project_uuid),
            ("start_timestamp>=?", since), ("status=?", status),
        ):
            if value is not None:
                where.append(sql)
                args.append(value)
        if condition:
            where.append(f"({condition})")
            args.extend(params)
        sql_where = " AND ".join(where)
        total = int(self._query(f"SELECT count(*) FROM traces WHERE {sql_where}", args)[0][0])
        order = "start_timestamp DESC, rowid DESC" if newest_first else "rowid"
        page = f" LIMIT {int(limit)} OFFSET {int(offset)}" if limit is not None else ""
        ids = [r[0] for r in self._query(f"SELECT trace_id FROM traces WHERE {sql_where} ORDER BY {order}{page}", args)]
        return total, ids

    def span_trees(self, trace_ids: Sequence[str], owner: str = "") -> list[dict[str, Any]]:
        """The spans ``trace_ids``, roots or not, each with its descendants, in that order."""
        roots: set[str] = set()
        for i in range(0, len(trace_ids), 500):
            chunk = trace_ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            roots.update(
                r[0]
                for r in self._query(
                    f"SELECT root_trace_id FROM traces WHERE owner=? AND trace_id IN ({marks})", (owner, *chunk)
                )
            )
        nodes = self._trees_for_roots(sorted(roots), owner)
        return [nodes[t] for t in trace_ids if t in nodes]

    def trace_trees(self, root_ids: Sequence[str], owner: str = "", max_spans: int = MAX_SPANS) -> list[dict[str, Any]]:
        nodes = self._trees_for_roots(root_ids, owner, max_spans=max_spans)
        return [nodes[r] for r in root_ids if r in nodes]

    def filter_sql(
        self, field: str | None, key: str | None, operator: str | None, value: str | None
    ) -> tuple[str, list[Any]]:
        """A SQL condition (on table ``traces``) for a Parea ``FilterBaseSchema``; ``("", [])`` for none."""
        if not field or not operator:
            return "", []
        columns = {
            "trace_id", "trace_name", "status", "experiment_uuid", "root_trace_id", "parent_trace_id",
            "start_timestamp", "end_timestamp", "latency", "input_tokens", "output_tokens",
            "total_tokens", "cost", "depth",
        }
        params: list[Any] = []
        if field.startswith("score:"):
            expr = "(SELECT json_extract(value,'$.score') FROM json_each(traces.scores)" \
                   " WHERE json_extract(value,'$.name')=? LIMIT 1)"
            params.append(field[len("score:"):])
        elif field in columns:
            expr = field
        elif field in ("metadata", "inputs") and key:
            expr = f"json_extract(traces.data, '$.{field}.' || json_quote(?))"
            params.append(key)
        elif field in ("output", "target", "error", "session_id", "end_user_identifier", "tags"):
            expr = f"json_extract(traces.data, '$.{field}')"
        else:
            raise ValueError(f"cannot filter on field {field!r}")
        ops = {
            "equals": "=", "not_equals": "!=", "greater_than_or_equal": ">=", "less_than_or_equal": "<=",
            "greater_than": ">", "less_than": "<",
        }
        if operator in ops:
            num = _as_number(value)
            return f"{expr} {ops[operator]} ?", [*params, num if num is not None else value]
        if operator == "like":
            return f"CAST({expr} AS TEXT) LIKE ?", [*params, f"%{value or ''}%"]
        if operator == "is_null":
            return f"{expr} IS NULL", params
        if operator == "exists":
            return f"{expr} IS NOT NULL", params
        if operator == "in":
            items = [v.strip() for v in (value or "").split(",") if v.strip()]
            if not items:
                return "0", []
            return f"{expr} IN ({','.join('?' * len(items))})", [*params, *items]
        if operator == "between":
            parts = [v.strip() for v in (value or "").split(",")]
            if len(parts) != 2:
                raise ValueError("the 'between' filter takes two comma-separated values, e.g. '0.2,0.8'")
            lo, hi = (_as_number(p) if _as_number(p) is not None else p for p in parts)
            return f"{expr} BETWEEN ? AND ?", [*params, lo, hi]
        raise ValueError(f"unknown filter operator {operator!r}")


def _as_number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None
