"""The store on PostgreSQL: ``Store("postgresql://USER:PASS@HOST:5432/DB")`` is a :class:`PgStore`.

The same queries as the SQLite store (:mod:`runner.store.pgsql` translates them), over a psycopg 3
connection pool: every query and every write transaction takes a connection of its own, so the
server's threads and several server processes write at once. Errors keep the SQLite store's
classes, so callers handle both alike: a unique violation is :class:`sqlite3.IntegrityError`, a
number beyond 64 bits :class:`OverflowError`, and a database that cannot be reached (down,
restarting, the pool exhausted for ``timeout`` seconds) :class:`BackendError`, which the server
answers with 503 and ``Retry-After`` (the runner's HTTP client spools and retries those).

The schema is the one chain of :data:`runner.store.migrations.MIGRATIONS`, run under an advisory
lock (two servers starting at once on an empty database migrate it once), as DDL translated by
:func:`runner.store.pgsql.translate_ddl`, plus :data:`PG_AFTER` where PostgreSQL needs more.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from runner.errors import BackendError
from runner.store.common import text_params
from runner.store.migrations import MIGRATIONS
from runner.store.pgsql import COMPAT_FUNCTIONS, serial_tables, translate, translate_ddl

__all__ = ["MIGRATION_LOCK", "PG_AFTER", "PG_INSTEAD", "PgConnection", "is_postgres_url", "normalise_url", "redact"]

_URL = re.compile(r"^(postgres|postgresql)(\+psycopg)?:/+", re.IGNORECASE)

#: the advisory lock held while migrating (any constant both processes agree on)
MIGRATION_LOCK = 7_317_017

#: statements PostgreSQL runs after migration N (1-based) of the shared chain
PG_AFTER: dict[int, str] = {
    # traces are addressed by SQLite's implicit rowid (logging order): an explicit column here
    1: """
    ALTER TABLE traces ADD COLUMN rowid BIGINT GENERATED ALWAYS AS IDENTITY;
    CREATE UNIQUE INDEX traces_rowid ON traces(rowid);
    CREATE INDEX traces_experiment_root_rowid ON traces(experiment_uuid, is_root, rowid);
    """,
}


def _traces_by_owner() -> str:
    """Issue 13's rebuild of ``traces`` (per-owner ids, stale marks) for PostgreSQL: the rows keep
    their ``rowid`` (logging order), and its triggers are one PL/pgSQL function."""
    chain = next(m for m in MIGRATIONS if "CREATE TABLE traces_by_owner" in m)
    rebuild = translate_ddl(chain[: chain.index("CREATE TRIGGER")])
    rebuild = rebuild.replace(
        "PRIMARY KEY (trace_id, owner)\n    );",
        "rowid BIGINT GENERATED ALWAYS AS IDENTITY,\n        PRIMARY KEY (trace_id, owner)\n    );",
        1,
    )
    rebuild = rebuild.replace(
        "created_at, data)\n    SELECT", "created_at, data)\n    OVERRIDING SYSTEM VALUE\n    SELECT", 1
    )
    assert "rowid BIGINT GENERATED" in rebuild and "OVERRIDING SYSTEM VALUE" in rebuild, "issue 13's migration changed"
    return rebuild + """
    SELECT setval(pg_get_serial_sequence('traces', 'rowid'), coalesce(max(rowid), 0) + 1, false) FROM traces;
    CREATE UNIQUE INDEX traces_rowid ON traces(rowid);
    CREATE INDEX traces_experiment_root_rowid ON traces(experiment_uuid, is_root, rowid);
    CREATE OR REPLACE FUNCTION runner_traces_late() RETURNS trigger LANGUAGE plpgsql AS $f$
    DECLARE
        t record;
    BEGIN
        IF TG_OP = 'DELETE' THEN t := OLD; ELSE t := NEW; END IF;
        UPDATE experiments SET stale=1 WHERE stale=0 AND finished_at IS NOT NULL AND owner=t.owner
            AND uuid=coalesce(t.experiment_uuid, (SELECT r.experiment_uuid FROM traces r
                WHERE r.trace_id=t.root_trace_id AND r.owner=t.owner));
        RETURN NULL;
    END
    $f$;
    CREATE TRIGGER traces_late AFTER INSERT OR UPDATE OR DELETE ON traces
        FOR EACH ROW EXECUTE FUNCTION runner_traces_late();
    """


# issue 20 (round 4): a run's binary columns are stored as they are (random floats compress
# badly, and the first view of a big run would pay for decompressing them)
PG_AFTER[next(i for i, m in enumerate(MIGRATIONS, 1) if "ADD COLUMN arrays BLOB" in m)] = (
    "ALTER TABLE run_columns ALTER COLUMN arrays SET STORAGE EXTERNAL;"
)


#: PostgreSQL's own text for migration N (1-based) of the shared chain, where SQLite's DDL does
#: not translate (SQLite's ``rowid`` and ``CREATE TRIGGER ... BEGIN ... END``)
PG_INSTEAD: dict[int, str] = {
    next(i for i, m in enumerate(MIGRATIONS, 1) if "CREATE TABLE traces_by_owner" in m): _traces_by_owner(),
}


def is_postgres_url(location: object) -> bool:
    """Whether a store location (a path, a URL, ``Path("postgresql://...")``) names PostgreSQL."""
    return bool(_URL.match(str(location)))


def normalise_url(location: object) -> str:
    """``postgresql://...`` for a PostgreSQL location, also one that went through ``Path()``
    (which folds ``//`` into ``/``)."""
    return _URL.sub("postgresql://", str(location), count=1)


def redact(url: str) -> str:
    """``url`` without its password, to show."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class Row(tuple):  # type: ignore[type-arg]
    """A result row read by position or by column name, like :class:`sqlite3.Row`."""

    _names: tuple[str, ...] = ()

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names.index(key))
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


def _row_factory(cursor: Any) -> Any:
    names = tuple(d.name for d in (cursor.description or ()))
    cls = type("Row", (Row,), {"_names": names, "__slots__": ()})

    def make(values: Sequence[Any]) -> Row:
        row: Row = cls(values)
        return row

    return make


_SERIAL = serial_tables(MIGRATIONS)
_INSERT = re.compile(r"^\s*INSERT INTO (\w+)", re.IGNORECASE)


class PgCursor:
    """What the store reads of a cursor: ``fetchone``, ``fetchall``, ``rowcount``, ``lastrowid``."""

    def __init__(self, cursor: Any, lastrowid: int | None = None) -> None:
        self._cursor = cursor
        self.lastrowid = lastrowid
        self.rowcount: int = cursor.rowcount

    def fetchone(self) -> Any:
        return self._cursor.fetchone() if self._cursor.description else None

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall()) if self._cursor.description else []

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class PgConnection:
    """A psycopg connection that takes the store's SQLite-style SQL (see :mod:`runner.store.pgsql`)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = (), *, binary: bool = False) -> PgCursor:
        """``sql`` run; ``binary``: its results read in PostgreSQL's binary format (for ``bytea``
        values: the text format sends them as hex). Texts are bound as on SQLite
        (:func:`runner.store.common.text_params`): PostgreSQL's text cannot hold NUL."""
        try:
            return self._execute(sql, text_params(params), binary)
        except UnicodeEncodeError:  # a lone surrogate: psycopg refused it before sending anything
            return self._execute(sql, text_params(params, surrogates=True), binary)

    def _execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any], binary: bool) -> PgCursor:
        m = _INSERT.match(sql)
        returning = m is not None and m.group(1) in _SERIAL and "RETURNING" not in sql.upper()
        text, args = translate(sql + (" RETURNING id" if returning else ""), _params(params))
        with pg_errors(conn=self._conn):
            cur = self._conn.cursor(row_factory=_row_factory)
            cur.execute(text, args, binary=binary)
            if returning:
                row = cur.fetchone()
                return PgCursor(cur, int(row[0]) if row else None)
            return PgCursor(cur)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        text, _ = translate(sql, rows[0] if rows else ())
        order = translate_order(sql)
        with pg_errors(conn=self._conn):
            self._conn.cursor().executemany(text, [[r[i] for i in order] for r in rows])


def translate_order(sql: str) -> tuple[int, ...]:
    from runner.store.pgsql import _translate_text

    return _translate_text(sql)[1]


def _params(params: Sequence[Any] | Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
    return dict(params) if isinstance(params, Mapping) else params


@contextmanager
def pg_errors(where: str = "", conn: Any = None) -> Iterator[None]:
    """psycopg's errors as the SQLite store's (see the module's docstring).

    A database that cannot take the request now is :class:`BackendError` (503, retried), whatever
    psycopg's class for it: a connection error, a pool timeout, a database that is read-only (a
    standby after a failover, ``default_transaction_read_only``: psycopg's ``InternalError``),
    and any error that left ``conn`` broken (a connection lost mid-statement can surface as
    ``InternalError`` or a ``DatabaseError`` without SQLSTATE, not only ``OperationalError``)."""
    import psycopg
    import psycopg_pool

    try:
        yield
    except psycopg.errors.NumericValueOutOfRange as exc:
        raise OverflowError(f"a number is out of range: {exc}") from None
    except psycopg.IntegrityError as exc:
        raise sqlite3.IntegrityError(str(exc)) from None
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
        raise _unavailable(where, exc) from None
    except psycopg.errors.ReadOnlySqlTransaction as exc:
        raise BackendError(
            f"the PostgreSQL database {where} is read-only ({str(exc).strip()}): a standby, or one set "
            "read-only; retry later, or point the store at the primary"
        ) from None
    except psycopg.DataError as exc:
        if conn is not None and conn.broken:
            raise _unavailable(where, exc) from None
        raise ValueError(f"the database rejected a value: {exc}") from None
    except psycopg.Error as exc:
        if conn is not None and conn.broken:
            raise _unavailable(where, exc) from None
        raise


def _unavailable(where: str, exc: BaseException) -> BackendError:
    return BackendError(
        f"the PostgreSQL database {where} is unavailable ({str(exc).strip() or type(exc).__name__}); "
        "retry later, or check that the server is running and reachable"
    )


def _numeric_loader() -> Any:
    from psycopg.adapt import Loader

    class NumericLoader(Loader):
        """``sum()`` of integers is ``numeric``: read it as int (or float), never Decimal."""

        def load(self, data: Any) -> Any:
            text = bytes(data).decode()
            try:
                return int(text)
            except ValueError:
                return float(text)

    return NumericLoader


class PgPool:
    """A psycopg pool for one database URL, with the store's connection settings."""

    def __init__(self, url: str, *, timeout: float = 30.0, max_size: int = 8) -> None:
        try:
            import psycopg  # noqa: F401
            import psycopg_pool
        except ImportError:
            raise BackendError(
                "a postgresql:// store needs psycopg 3: pip install 'runner[postgres]'"
            ) from None
        self.url = url
        self.shown = redact(url)
        self.timeout = timeout
        loader = _numeric_loader()

        def configure(conn: Any) -> None:
            conn.autocommit = True  # a read is one statement; writes take conn.transaction()
            conn.adapters.register_loader("numeric", loader)

        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            num_workers=1,
            timeout=timeout,
            configure=configure,
            kwargs={"connect_timeout": max(1, int(min(timeout, 10)))},
            open=False,
        )
        with pg_errors(self.shown):
            self._pool.open(wait=True, timeout=timeout)

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A connection of the pool. When none comes within a second, a direct connection tells
        a busy pool (wait on, up to ``timeout``) from a database that is gone (fail now)."""
        import psycopg
        import psycopg_pool

        with pg_errors(self.shown):
            try:
                conn = self._pool.getconn(timeout=min(1.0, self.timeout))
            except psycopg_pool.PoolTimeout:
                psycopg.connect(self.url, connect_timeout=2).close()  # raises if the database is gone
                conn = self._pool.getconn(timeout=self.timeout)
        # what the caller runs on it, a commit at the end included, is mapped knowing the connection
        with pg_errors(self.shown, conn):
            try:
                yield conn
            finally:
                self._pool.putconn(conn)

    def close(self) -> None:
        self._pool.close()


_lock = threading.Lock()


def migrate(pool: PgPool) -> int:
    """Run the migrations this database has not had, under the advisory lock; the version after."""
    with pool.connection() as conn, conn.transaction():
        c = PgConnection(conn)
        c.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        c.execute("CREATE TABLE IF NOT EXISTS runner_schema (version BIGINT NOT NULL)")
        row = c.execute("SELECT version FROM runner_schema").fetchone()
        version = int(row[0]) if row else 0
        if row is None:
            c.execute("INSERT INTO runner_schema(version) VALUES (0)")
        if version > len(MIGRATIONS):
            raise BackendError(
                f"database {pool.shown} was written by a newer runner (schema {version}); upgrade runner"
            )
        conn.execute(COMPAT_FUNCTIONS)
        for i in range(version, len(MIGRATIONS)):
            conn.execute(PG_INSTEAD.get(i + 1) or translate_ddl(MIGRATIONS[i]))
            if i + 1 in PG_AFTER:
                conn.execute(PG_AFTER[i + 1])
            c.execute("UPDATE runner_schema SET version=?", (i + 1,))
        return len(MIGRATIONS)


def schema_version(pool: PgPool) -> int:
    with pool.connection() as conn:
        c = PgConnection(conn)
        exists = c.execute("SELECT to_regclass('runner_schema')").fetchone()
        if exists is None or exists[0] is None:
            return 0
        row = c.execute("SELECT version FROM runner_schema").fetchone()
        return int(row[0]) if row else 0
