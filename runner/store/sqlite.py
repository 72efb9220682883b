"""The SQLite store: projects, experiments, traces, datasets, feedback and prompts in one file.

One connection per :class:`Store`, guarded by a lock, in WAL mode with a busy timeout, so two
experiments in one process (sharing a Store) and two processes on one file (each with its own)
never corrupt or mix each other's data: every write is one ``BEGIN IMMEDIATE`` transaction.

Every method takes ``owner``: the tenant (an API key's id on the server, ``""`` embedded). Rows
of one owner are invisible to every other.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sqlite3
import threading
import time
import uuid as _uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import BackendError, ConflictError, NotFoundError, RunNameError
from runner.store.columns import ColumnQueries
from runner.store.common import RUN_NAME_RE, dumps, loads, now_iso, pinned_stats, text_params, validate_run_name
from runner.store.datasets import DatasetQueries
from runner.store.logs import LogQueries
from runner.store.migrations import MIGRATIONS
from runner.store.pages import PageQueries
from runner.store.pinning import PinQueries
from runner.store.postgres import is_postgres_url
from runner.store.prompts import PromptQueries
from runner.store.traces import TraceQueries

__all__ = ["DIALECTS", "RUN_NAME_RE", "Store", "now_iso", "pinned_stats", "validate_run_name"]

#: the other stores a location can name: "postgresql" -> PgStore, registered by
#: :mod:`runner.store.pgstore` (which :mod:`runner.store` imports), so this module never imports it
DIALECTS: dict[str, type[Store]] = {}


class _Connection(sqlite3.Connection):
    """sqlite3's connection, binding text as PostgreSQL's store does (:func:`common.text_params`):
    a NUL character or a lone surrogate is U+FFFD, in what is written and in what is looked up
    (``executemany`` binds its rows as they are: see there)."""

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        try:
            return super().execute(sql, text_params(parameters))
        except UnicodeEncodeError:  # a lone surrogate, refused before anything ran
            return super().execute(sql, text_params(parameters, surrogates=True))


def enable_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch ``conn``'s file to WAL, waiting out other processes opening it at the same moment.

    The switch needs the write lock while holding a read lock, so SQLite answers "database is
    locked" at once, without its busy handler, when another process is doing the same (two runs
    started together on a new file). WAL is stored in the file: once one process has switched
    it, the others find it done. In-memory databases stay as they are."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            if mode not in ("wal", "memory"):
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            transient = "locked" in str(exc) or "busy" in str(exc)
            if not transient or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _statements(script: str) -> Iterator[str]:
    """The SQL statements of a migration, split at the semicolons that end one (a trigger's body
    holds semicolons of its own)."""
    pending = ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""
    if pending.strip(" \n;"):
        yield pending


class Store(TraceQueries, DatasetQueries, PageQueries, PromptQueries, PinQueries, LogQueries, ColumnQueries):
    """A SQLite file holding everything the runner and the server record.

    >>> store = Store(":memory:")
    >>> project, created = store.get_or_create_project("default")
    """

    def __new__(cls, path: str | Path, **kwargs: Any) -> Store:
        # a postgresql:// location is the same store in PostgreSQL (issue 17)
        if cls is Store and is_postgres_url(path):
            return super().__new__(DIALECTS["postgresql"])
        return super().__new__(cls)

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = str(path)
        new_file = False
        if self.path != ":memory:":
            p = Path(self.path)
            new_file = not p.exists() or (p.is_file() and p.stat().st_size == 0)
            if p.is_dir():
                raise BackendError(f"store path {self.path} is a directory; give a file path such as {p}/runner.db")
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BackendError(f"cannot create the folder for store {self.path}: {exc.strerror}") from None
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False, factory=_Connection
            )
            if new_file:
                # a new file holds nothing a crash could lose: its switch to WAL need not wait
                # for the disk (17-28 ms of a W4 run's 200, issue 22); a file with data keeps
                # its syncs while it switches
                self._conn.execute("PRAGMA synchronous=OFF")
            enable_wal(self._conn, timeout)
            self._conn.execute("PRAGMA synchronous=NORMAL")
            # checkpoints (which fsync) every ~40 MB of log rather than every 4 MB
            self._conn.execute("PRAGMA wal_autocheckpoint=10000")
            self._conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            self._conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as exc:
            raise BackendError(
                f"cannot open store {self.path}: {exc}; is it a runner SQLite file? "
                "Point RUNNER_DB or --db at another path"
            ) from None
        self._lock = threading.RLock()
        self._project_cache: dict[tuple[str, str], str] = {}
        self._experiment_project: dict[str, str] = {}
        self._migrate()

    @classmethod
    def shared(cls, path: str | Path) -> Store:
        """An open store for ``path`` shared in the process; give it back with :meth:`release`.

        Experiments run one after another reuse it instead of opening the file, checking its
        schema and checkpointing it on close each time. The few most recently used stay open
        (until exit); if the file was deleted or replaced meanwhile (a notebook user starting
        afresh, say), a new store is opened."""
        if is_postgres_url(path):  # one pool per database while in use
            from runner.store.postgres import normalise_url

            url = normalise_url(path)
            with _shared_lock:
                pg = _shared_pg.get(url)
                if pg is None:
                    pg = _shared_pg[url] = _Shared(cls(url), 0)
                pg.refs += 1
                return pg.store
        key = os.path.abspath(str(path))
        try:
            inode: int | None = os.stat(key).st_ino
        except OSError:
            inode = None
        with _shared_lock:
            entry = _shared.pop(key, None)
            if entry is None or inode is None or entry.inode != inode:
                if entry is not None:
                    entry.stale = True
                    if entry.refs == 0:
                        entry.store.close()
                store = cls(key)
                entry = _Shared(store, os.stat(key).st_ino)
            entry.refs += 1
            _shared[key] = entry  # most recently used last
            idle = [k for k, e in _shared.items() if e.refs == 0]
            for k in idle[: max(0, len(_shared) - _KEEP_OPEN)]:
                _shared.pop(k).store.close()
            return entry.store

    @staticmethod
    def release(store: Store) -> None:
        """Give back a store from :meth:`shared` (closed now if it was replaced meanwhile)."""
        with _shared_lock:
            pg = _shared_pg.get(store.path)
            if pg is not None and pg.store is store:
                pg.refs -= 1
                if pg.refs <= 0:
                    del _shared_pg[store.path]
                    store.close()
                return
            entry = _shared.get(os.path.abspath(store.path))
            if entry is not None and entry.store is store:
                entry.refs = max(0, entry.refs - 1)
                return
        store.close()  # replaced or evicted while in use: nobody else holds it

    # -- plumbing ---------------------------------------------------------------------------
    def _migrate(self) -> None:
        with self._lock:
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise BackendError(
                    f"store {self.path} was written by a newer runner (schema {version}); upgrade runner"
                )
            for i in range(version, len(MIGRATIONS)):
                with self.transaction() as c:
                    # re-check inside the write lock: another process may have migrated meanwhile
                    if c.execute("PRAGMA user_version").fetchone()[0] > i:
                        continue
                    for stmt in _statements(MIGRATIONS[i]):
                        c.execute(stmt)
                    c.execute(f"PRAGMA user_version={i + 1}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken with the write lock up front (``BEGIN IMMEDIATE``).

        Nested in another one (on the thread holding the lock), it is part of the outer one."""
        with self._lock:
            if self._conn.in_transaction:
                yield self._conn
                return
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            cur = self._conn.execute(sql, params)
            cur.row_factory = sqlite3.Row
            return cur.fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- projects ---------------------------------------------------------------------------
    def get_or_create_project(self, name: str, owner: str = "") -> tuple[dict[str, Any], bool]:
        """The project called ``name`` (created if missing) and whether it was created."""
        rows = self._query("SELECT * FROM projects WHERE owner=? AND name=?", (owner, name))
        if rows:
            return dict(rows[0]), False
        with self.transaction() as c:
            row = c.execute("SELECT * FROM projects WHERE owner=? AND name=?", (owner, name)).fetchone()
            if row is not None:  # created by another process meanwhile
                return self.get_or_create_project(name, owner)
            uid = str(_uuid.uuid4())
            c.execute(
                "INSERT INTO projects(uuid, owner, name, created_at) VALUES (?,?,?,?)", (uid, owner, name, now_iso())
            )
        # read back: the name as stored (a NUL character is U+FFFD: common.text_params)
        return self.get_project(uid, owner), True

    def project_uuid(self, name: str, owner: str = "") -> str:
        key = (owner, name)
        uid = self._project_cache.get(key)
        if uid is None:
            uid = self.get_or_create_project(name, owner)[0]["uuid"]
            self._project_cache[key] = uid
        return uid

    def get_project(self, project_uuid: str, owner: str = "") -> dict[str, Any]:
        rows = self._query("SELECT * FROM projects WHERE uuid=? AND owner=?", (project_uuid, owner))
        if not rows:
            raise NotFoundError(f"project {project_uuid} not found")
        return dict(rows[0])

    def list_projects(self, owner: str = "") -> list[dict[str, Any]]:
        rows = self._query("SELECT * FROM projects WHERE owner=? ORDER BY name COLLATE BINARY", (owner,))
        return [dict(r) for r in rows]

    # -- experiments ------------------------------------------------------------------------
    def create_experiment(
        self,
        *,
        name: str,
        project_uuid: str,
        run_name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        is_public: bool = False,
        owner: str = "",
        experiment_uuid: str | None = None,
    ) -> dict[str, Any]:
        """Create an experiment run; a taken or invalid ``run_name`` raises :class:`RunNameError`."""
        self.get_project(project_uuid, owner)
        if run_name is None:
            run_name = self._unique_run_name(project_uuid)
        validate_run_name(run_name)
        uid = experiment_uuid or str(_uuid.uuid4())
        created = now_iso()
        try:
            with self.transaction() as c:
                c.execute(
                    "INSERT INTO experiments(uuid, owner, project_uuid, name, run_name, is_public, metadata,"
                    " status, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    (uid, owner, project_uuid, name, run_name, int(is_public), dumps(dict(metadata or {})),
                     "running", created),
                )
        except sqlite3.IntegrityError:
            existing = self._query("SELECT uuid FROM experiments WHERE uuid=?", (uid,))
            if existing and experiment_uuid:
                return self.get_experiment(uid, owner)
            raise RunNameError(
                f"run name {run_name!r} is already used in this project; pick another name or leave it "
                "out to get a generated one"
            ) from None
        self._experiment_project[uid] = project_uuid
        return self.get_experiment(uid, owner)

    def _unique_run_name(self, project_uuid: str) -> str:
        from runner.names import generate_run_name

        for _ in range(50):
            candidate = generate_run_name()
            if not self._query(
                "SELECT 1 FROM experiments WHERE project_uuid=? AND run_name=?", (project_uuid, candidate)
            ):
                return candidate
        return f"run-{_uuid.uuid4().hex[:12]}"  # pragma: no cover - 50 collisions in a row

    def run_name_taken(self, project_uuid: str, run_name: str) -> bool:
        return bool(
            self._query("SELECT 1 FROM experiments WHERE project_uuid=? AND run_name=?", (project_uuid, run_name))
        )

    def _experiment_dict(self, row: sqlite3.Row) -> dict[str, Any]:
        d = dict(row)
        d["metadata"] = loads(d["metadata"]) or {}
        d["dataset_level_stats"] = loads(d["dataset_level_stats"]) or []
        d["pinned_stats"] = loads(d["pinned_stats"]) or []
        d["is_public"] = bool(d["is_public"])
        errors = loads(d.pop("run_errors", None)) or {}  # the finish call's extension (issue 15)
        d["dataset_level_errors"] = dict(errors.get("dataset_level") or {})
        d["scorer_errors"] = dict(errors.get("scorers") or {})
        return d

    def get_experiment(self, experiment_uuid: str, owner: str = "") -> dict[str, Any]:
        rows = self._query(
            "SELECT e.*, p.name AS project_name FROM experiments e JOIN projects p ON p.uuid=e.project_uuid"
            " WHERE e.uuid=? AND e.owner=?",
            (experiment_uuid, owner),
        )
        if not rows:
            raise NotFoundError(f"experiment {experiment_uuid} not found")
        return self._experiment_dict(self._fresh(rows)[0])

    def find_experiment(self, ref: str, owner: str = "", project_name: str | None = None) -> dict[str, Any]:
        """An experiment by uuid, or the newest run with run name ``ref``."""
        sql = (
            "SELECT e.*, p.name AS project_name FROM experiments e JOIN projects p ON p.uuid=e.project_uuid"
            " WHERE e.owner=? AND (e.uuid=? OR e.run_name=?)"
        )
        params: list[Any] = [owner, ref, ref]
        if project_name is not None:
            sql += " AND p.name=?"
            params.append(project_name)
        rows = self._query(sql + " ORDER BY e.created_at DESC LIMIT 1", params)
        if not rows:
            raise NotFoundError(f"no run or experiment called {ref!r}; `python -m runner list` shows them")
        return self._experiment_dict(self._fresh(rows)[0])

    def list_experiments(
        self,
        owner: str = "",
        *,
        project_name: str | None = None,
        experiment_name_filter: str | None = None,
        run_name_filter: str | None = None,
        metadata_filter: Mapping[str, Any] | None = None,
        experiment_uuids: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        sql = (
            "SELECT e.*, p.name AS project_name FROM experiments e JOIN projects p ON p.uuid=e.project_uuid"
            " WHERE e.owner=?"
        )
        params: list[Any] = [owner]
        if project_name is not None:
            sql += " AND p.name=?"
            params.append(project_name)
        if experiment_name_filter:
            sql += " AND instr(lower(e.name), lower(?)) > 0"
            params.append(experiment_name_filter)
        if run_name_filter:
            sql += " AND instr(lower(e.run_name), lower(?)) > 0"
            params.append(run_name_filter)
        if experiment_uuids is not None:
            sql += f" AND e.uuid IN ({','.join('?' * len(experiment_uuids))})"
            params.extend(experiment_uuids)
        sql += " ORDER BY e.created_at DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        out = [self._experiment_dict(r) for r in self._fresh(self._query(sql, params))]
        if metadata_filter:
            out = [
                e for e in out if all(str(e["metadata"].get(k)) == str(v) for k, v in metadata_filter.items())
            ]
        for e in out:
            if e["num_samples"] is None:
                e["num_samples"] = self.count_roots(e["uuid"], owner)
        return out

    def experiment_project_uuid(self, experiment_uuid: str) -> str | None:
        uid = self._experiment_project.get(experiment_uuid)
        if uid is None:
            rows = self._query("SELECT project_uuid FROM experiments WHERE uuid=?", (experiment_uuid,))
            if rows:
                uid = rows[0][0]
                self._experiment_project[experiment_uuid] = uid
        return uid

    def finish_experiment(
        self,
        experiment_uuid: str,
        *,
        status: str = "completed",
        dataset_level_stats: Iterable[Mapping[str, Any]] | None = None,
        owner: str = "",
        return_stats: bool = True,
        dataset_level_errors: Mapping[str, str] | None = None,
        scorer_errors: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Mark the experiment finished, store its pinned and dataset-level stats; return root stats.

        ``dataset_level_errors`` (dataset-level evals that failed, name → message) and
        ``scorer_errors`` (scorers that failed on some rows, name → an example message) are
        stored with the run when either is given, replacing what an earlier finish stored (a
        resumed run's finish); when neither is given they are kept. Re-pins never touch them.

        With ``return_stats=False`` the per-root stats are streamed into the pinned stats and not
        kept (``[]`` is returned): the embedded runner needs only what is stored.

        Finishing again is allowed and re-pins the stats from every stored row (a resumed run
        finishes its experiment a second time), except that a ``completed`` run is never turned
        ``failed``: that is a :class:`ConflictError` (the server's 409), and nothing changes.
        Rows written after the finish mark the experiment stale, and the next read re-pins it
        (see :meth:`_fresh`): the pinned stats always describe every stored row."""
        dls = [
            {"name": s["name"], "score": float(s["score"]), "reason": s.get("reason")}
            for s in (dataset_level_stats or [])
        ]
        with self.transaction() as c:
            current = self._query(
                "SELECT status, finished_at FROM experiments WHERE uuid=? AND owner=?", (experiment_uuid, owner)
            )
            if not current:
                raise NotFoundError(f"experiment {experiment_uuid} not found")
            if current[0][1] is not None and current[0][0] == "completed" and status != "completed":
                raise ConflictError(
                    f"experiment {experiment_uuid} already finished as completed; finishing it again as {status!r}"
                    " would hide its results. Start a new run instead"
                )
            stats: list[dict[str, Any]] | None = [] if return_stats else None
            c.execute(
                "UPDATE experiments SET finished_at=? WHERE uuid=? AND owner=?", (now_iso(), experiment_uuid, owner)
            )
            # its stats, then its columns with the finish time just written, from one read of its rows
            self._repin(experiment_uuid, owner, dls, status, stats)
            if dataset_level_errors is not None or scorer_errors is not None:
                errors = {
                    "dataset_level": {str(k): str(v) for k, v in (dataset_level_errors or {}).items()},
                    "scorers": {str(k): str(v) for k, v in (scorer_errors or {}).items()},
                }
                c.execute(
                    "UPDATE experiments SET run_errors=? WHERE uuid=? AND owner=?",
                    (dumps(errors) if any(errors.values()) else None, experiment_uuid, owner),
                )
        return stats or []

    def set_experiment_status(self, experiment_uuid: str, status: str, owner: str = "") -> None:
        with self.transaction() as c:
            c.execute("UPDATE experiments SET status=? WHERE uuid=? AND owner=?", (status, experiment_uuid, owner))

    # -- feedback ---------------------------------------------------------------------------
    def record_feedback(
        self, trace_id: str, score: float, comment: str | None, target: str | None, owner: str = ""
    ) -> None:
        fields: dict[str, Any] = {"feedback_score": float(score)}
        if target is not None:
            fields["target"] = target
        with self.transaction() as c:  # one transaction: no update is lost to a concurrent one
            if not c.execute("SELECT 1 FROM traces WHERE trace_id=? AND owner=?", (trace_id, owner)).fetchone():
                raise NotFoundError(f"trace {trace_id} not found")
            c.execute(
                "INSERT INTO feedback(owner, trace_id, score, comment, target, created_at) VALUES (?,?,?,?,?,?)",
                (owner, trace_id, float(score), comment, target, now_iso()),
            )
            self.update_trace(trace_id, fields, owner)


@dataclass
class _Shared:
    store: Store
    inode: int
    refs: int = 0
    stale: bool = False


#: idle shared stores kept open
_KEEP_OPEN = 4
_shared: dict[str, _Shared] = {}
_shared_pg: dict[str, _Shared] = {}
_shared_lock = threading.Lock()


@atexit.register
def _close_shared() -> None:
    with _shared_lock:
        for entry in _shared.values():
            with contextlib.suppress(Exception):
                entry.store.close()
        _shared.clear()
        for pg in _shared_pg.values():
            with contextlib.suppress(Exception):
                pg.store.close()
        _shared_pg.clear()
