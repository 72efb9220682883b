""":class:`PgStore`: the store's methods over PostgreSQL (what ``Store("postgresql://...")`` makes).

Everything but the plumbing is inherited from :class:`runner.store.Store`: the queries run as
written, translated by :mod:`runner.store.pgsql`. Only the batch upsert of trace logs (SQLite's
fast path unpacks a JSON array with ``json_each``) and the filters on JSON fields have their own
PostgreSQL text here.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runner.errors import BackendError
from runner.store.migrations import MIGRATIONS
from runner.store.postgres import PgConnection, PgPool, migrate, normalise_url, redact, schema_version
from runner.store.sqlite import DIALECTS, Store
from runner.store.traces import _COLUMNS, _ON_CONFLICT, _as_number

__all__ = ["PgStore"]

#: the column types of the log's fields, as ``json_to_record`` reads them (integers go through
#: numeric, so ``3.0`` and ``"3"`` are read as ``(v->>'depth')::numeric::bigint`` would)
_RECORD = {
    "depth": "numeric", "execution_order": "numeric", "latency": "float8", "input_tokens": "numeric",
    "output_tokens": "numeric", "total_tokens": "numeric", "cost": "float8",
}
_FIELDS = (
    "trace_id", "root_trace_id", "parent_trace_id", "experiment_uuid", "project_uuid", "trace_name", "status",
    "depth", "execution_order", "start_timestamp", "end_timestamp", "latency", "input_tokens", "output_tokens",
    "total_tokens", "cost",
)


def _f(name: str) -> str:
    return f"x.{name}::bigint" if _RECORD.get(name) == "numeric" else f"x.{name}"


# Each log is parsed once, by json_to_record, into every column it fills: ``v->>'field'`` on a
# json value re-reads the text from its start for each of the 16 fields, which cost PostgreSQL
# twice the CPU per log (measured: 60 against 30 us a log of three-log rows, batches of 30).
_PG_UPSERT_BATCH = f"""
INSERT INTO traces({_COLUMNS})
SELECT
    {_f("trace_id")}, :owner, {_f("root_trace_id")}, {_f("parent_trace_id")}, {_f("experiment_uuid")},
    {_f("project_uuid")}, {_f("trace_name")}, {_f("status")}, coalesce({_f("depth")}, 0),
    coalesce({_f("execution_order")}, 0), {_f("start_timestamp")}, {_f("end_timestamp")}, {_f("latency")},
    {_f("input_tokens")}, {_f("output_tokens")}, {_f("total_tokens")}, {_f("cost")},
    ({_f("root_trace_id")} = {_f("trace_id")})::int, (v->'scores')::text, :created, v::text
FROM json_array_elements(:logs::json) WITH ORDINALITY AS b(v, n),
    json_to_record(v) AS x({", ".join(f"{f} {_RECORD.get(f, 'text')}" for f in _FIELDS)})
ORDER BY n
{_ON_CONFLICT}
"""

#: the first key of the advisory locks a PUT takes on one log (the second is a hash of the log)
TRACE_LOCK = 17

_COLUMN_FIELDS = {
    "trace_id", "trace_name", "status", "experiment_uuid", "root_trace_id", "parent_trace_id",
    "start_timestamp", "end_timestamp",
}


def _rounds(prepared: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The batch as statements PostgreSQL can run: one statement may not upsert a row twice, so
    a trace posted twice in one batch goes into a later round (in order: later fields win)."""
    rounds: list[list[dict[str, Any]]] = []
    seen: list[set[str]] = []
    for log in prepared:
        for i, ids in enumerate(seen):
            if log["trace_id"] not in ids:
                ids.add(log["trace_id"])
                rounds[i].append(log)
                break
        else:
            seen.append({log["trace_id"]})
            rounds.append([log])
    return rounds


class PgStore(Store):
    """The store in a PostgreSQL database, for a team server and several server processes.

    ``migrate=False`` refuses a database whose schema is not current instead of upgrading it."""

    def __init__(
        self, path: str | Path, *, timeout: float = 30.0, migrate: bool = True, pool_size: int = 8
    ) -> None:
        self.path = normalise_url(path)
        self.shown = redact(self.path)
        self._pool = PgPool(self.path, timeout=timeout, max_size=pool_size)
        self._lock = threading.RLock()  # the mixins' type; PostgreSQL needs no process-wide lock
        self._tx = threading.local()  # the write transaction this thread is in, if any
        self._project_cache: dict[tuple[str, str], str] = {}
        self._experiment_project: dict[str, str] = {}
        if migrate:
            self._migrate()
        else:
            version = schema_version(self._pool)
            if version != len(MIGRATIONS):
                self._pool.close()
                raise BackendError(
                    f"database {self.shown} has schema {version}, this runner needs {len(MIGRATIONS)}: "
                    f"run `python -m runner db upgrade --db URL` (or serve without --no-migrate)"
                )

    def _migrate(self) -> None:
        migrate(self._pool)

    def schema_version(self) -> int:
        return schema_version(self._pool)

    @contextmanager
    def transaction(self) -> Iterator[PgConnection]:  # type: ignore[override]
        """One write transaction on a connection of its own. Nested in another one on the same
        thread, it is part of the outer one (as on SQLite), and reads of that thread see its writes."""
        outer: PgConnection | None = getattr(self._tx, "conn", None)
        if outer is not None:
            yield outer
            return
        with self._pool.connection() as conn, conn.transaction():
            self._tx.conn = PgConnection(conn)
            try:
                yield self._tx.conn
            finally:
                self._tx.conn = None

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        outer: PgConnection | None = getattr(self._tx, "conn", None)
        if outer is not None:
            return outer.execute(sql, params).fetchall()
        with self._pool.connection() as conn:
            return PgConnection(conn).execute(sql, params).fetchall()

    def _query_blobs(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        outer: PgConnection | None = getattr(self._tx, "conn", None)
        if outer is not None:
            return outer.execute(sql, params, binary=True).fetchall()
        with self._pool.connection() as conn:
            return PgConnection(conn).execute(sql, params, binary=True).fetchall()

    def close(self) -> None:
        self._pool.close()

    def get_or_create_project(self, name: str, owner: str = "") -> tuple[dict[str, Any], bool]:
        try:
            return super().get_or_create_project(name, owner)
        except sqlite3.IntegrityError:  # created by another process between the read and the write
            return super().get_or_create_project(name, owner)

    def _write_prepared(self, prepared: list[dict[str, Any]], owner: str, delete_first: str | None = None) -> None:
        from runner.store.common import dumps, now_iso

        created = now_iso()
        statements = [{"owner": owner, "created": created, "logs": dumps(batch)} for batch in _rounds(prepared)]
        # One statement is a transaction of its own on the pool's autocommit connections: no
        # BEGIN and COMMIT round trips (half of a one-log POST's trips to the database)
        alone = delete_first is None and len(statements) == 1 and getattr(self._tx, "conn", None) is None
        for attempt in range(5):
            try:
                if alone:
                    with self._pool.connection() as conn:
                        PgConnection(conn).execute(_PG_UPSERT_BATCH, statements[0])
                    return
                with self.transaction() as c:
                    if delete_first is not None:
                        c.execute("DELETE FROM traces WHERE trace_id=? AND owner=?", (delete_first, owner))
                    for params in statements:
                        c.execute(_PG_UPSERT_BATCH, params)
                return
            except BackendError as exc:  # two writers upserting the same traces in other orders
                if "deadlock" not in str(exc) or attempt == 4 or getattr(self._tx, "conn", None) is not None:
                    raise

    def _read_for_update(self, c: Any, trace_id: str, owner: str) -> Any:
        """A PUT's read, holding the log until its rewrite commits: ``FOR UPDATE`` makes a racing
        post wait. A racing PUT must wait *before* it reads, on a lock of its own (an advisory
        one per log): the rewrite deletes the row and inserts it anew, and a ``FOR UPDATE`` that
        waited on a row deleted meanwhile would find no row at all."""
        c.execute("SELECT pg_advisory_xact_lock(?, hashtext(? || '/' || ?))", (TRACE_LOCK, owner, trace_id))
        return c.execute(
            "SELECT data FROM traces WHERE trace_id=? AND owner=? FOR UPDATE", (trace_id, owner)
        ).fetchone()

    def update_trace(self, trace_id: str, fields: Mapping[str, Any], owner: str = "") -> None:
        for attempt in range(5):  # a PUT and a batch that takes its log and the same experiment
            try:
                return super().update_trace(trace_id, fields, owner)
            except BackendError as exc:
                if "deadlock" not in str(exc) or attempt == 4 or getattr(self._tx, "conn", None) is not None:
                    raise

    def upsert_traces(self, logs: Any, owner: str = "", *, contended: bool = True) -> int:
        prepared = self._prepare_logs(logs, owner)
        if prepared:
            self._write_prepared(prepared, owner)
        return len(prepared)

    def filter_sql(
        self, field: str | None, key: str | None, operator: str | None, value: str | None
    ) -> tuple[str, list[Any]]:
        """:meth:`TraceQueries.filter_sql` for PostgreSQL: JSON fields and scores are compared
        as numbers when the value is one (as SQLite compares them), else as text."""
        sql, params = super().filter_sql(field, key, operator, value)  # validates field and operator
        if not sql:
            return sql, params
        if sql == "0":
            return "false", []
        assert field is not None
        params = []
        if field.startswith("score:"):
            expr = "(SELECT s->>'score' FROM json_array_elements(traces.scores::json) AS s WHERE s->>'name'=? LIMIT 1)"
            params.append(field[len("score:"):])
        elif field in _COLUMN_FIELDS or field not in ("metadata", "inputs", "output", "target", "error",
                                                      "session_id", "end_user_identifier", "tags"):
            expr = field
        elif field in ("metadata", "inputs"):
            expr = f"(traces.data::json -> '{field}' ->> ?)"
            params.append(key)
        else:
            expr = f"(traces.data::json ->> '{field}')"
        text_expr = expr not in ("latency", "input_tokens", "output_tokens", "total_tokens", "cost", "depth")
        num_expr = f"runner_float({expr})" if text_expr else expr
        ops = {
            "equals": "=", "not_equals": "!=", "greater_than_or_equal": ">=", "less_than_or_equal": "<=",
            "greater_than": ">", "less_than": "<",
        }
        if operator in ops:
            num = _as_number(value)
            if num is not None:
                return f"{num_expr} {ops[operator]} ?", [*params, num]
            return f"CAST({expr} AS TEXT) {ops[operator]} ?", [*params, value]
        if operator == "like":
            return f"CAST({expr} AS TEXT) LIKE ?", [*params, f"%{value or ''}%"]
        if operator == "is_null":
            return f"{expr} IS NULL", params
        if operator == "exists":
            return f"{expr} IS NOT NULL", params
        if operator == "in":
            items = [v.strip() for v in (value or "").split(",") if v.strip()]
            return f"CAST({expr} AS TEXT) IN ({','.join('?' * len(items))})", [*params, *items]
        parts = [v.strip() for v in (value or "").split(",")]
        nums = [_as_number(p) for p in parts]
        if all(n is not None for n in nums):
            return f"{num_expr} BETWEEN ? AND ?", [*params, *nums]
        return f"CAST({expr} AS TEXT) BETWEEN ? AND ?", [*params, *parts]


DIALECTS["postgresql"] = PgStore
