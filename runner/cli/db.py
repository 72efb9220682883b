"""``python -m runner db``: the store's schema (``upgrade``, ``status``) and ``copy`` between stores.

``db copy --from FILE.db --to postgresql://...`` moves a person's local history into the team
database. It is idempotent: rows already there (by trace id, experiment uuid, project, dataset
name, prompt name and version, deployment id) are left alone, so copying twice, or after a
partial copy, duplicates nothing.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import Any

from runner.errors import BackendError, RunnerError

__all__ = ["build_parser", "copy_store", "db_main", "schema_status"]

PROG = "python -m runner db"

#: tables copied row by row with their natural keys, in dependency order
_KEYED = ("projects", "experiments", "traces")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="The store's schema, and copying between stores.")
    sub = parser.add_subparsers(dest="db_command", title="commands", metavar="COMMAND", required=True)
    db_help = "a SQLite file or postgresql://USER:PASS@HOST:5432/DB (default: $RUNNER_DB, else .runner/runner.db)"
    up = sub.add_parser("upgrade", help="run the schema migrations the store has not had")
    up.add_argument("--db", default=None, help=db_help)
    st = sub.add_parser("status", help="the store's schema version and whether it is current (exit 1 if not)")
    st.add_argument("--db", default=None, help=db_help)
    cp = sub.add_parser(
        "copy", help="copy every run, trace, dataset and prompt from one store into another (idempotent)"
    )
    cp.add_argument("--from", dest="source", required=True, help="the store to read, e.g. .runner/runner.db")
    cp.add_argument("--to", dest="target", required=True, help="the store to write, e.g. postgresql://...")
    return parser


def schema_status(db: str | Path) -> tuple[int, int]:
    """The schema version of the store at ``db`` (0 for an empty one) and the version this runner needs."""
    from runner.store.migrations import MIGRATIONS
    from runner.store.postgres import PgPool, is_postgres_url, normalise_url, schema_version

    if is_postgres_url(db):
        pool = PgPool(normalise_url(db))
        try:
            return schema_version(pool), len(MIGRATIONS)
        finally:
            pool.close()
    if not Path(db).exists():
        return 0, len(MIGRATIONS)
    conn = sqlite3.connect(f"file:{Path(db).resolve()}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0]), len(MIGRATIONS)
    finally:
        conn.close()


def copy_store(source: str | Path, target: str | Path) -> dict[str, int]:
    """Copy what ``source`` holds into ``target``; how many rows of each table were new there."""
    from runner.store import Store

    src, dst = Store(source), Store(target)
    try:
        counts: dict[str, int] = {}
        for table in _KEYED:
            counts[table] = _copy_keyed(src, dst, table)
        counts["datasets"], counts["testcases"] = _copy_datasets(src, dst)
        counts["feedback"] = _copy_feedback(src, dst)
        counts.update(_copy_prompts(src, dst))
        return counts
    finally:
        src.close()
        dst.close()


def _copy_keyed(src: Any, dst: Any, table: str, page: int = 2000) -> int:
    sample = src._query(f"SELECT * FROM {table} LIMIT 1")
    if not sample:
        return 0
    columns = [c for c in sample[0].keys() if c != "rowid"]  # noqa: SIM118 - a row, not a dict
    names = ", ".join(columns)
    insert = f"INSERT INTO {table}({names}) VALUES ({', '.join('?' * len(columns))}) ON CONFLICT DO NOTHING"
    copied, last = 0, 0
    while True:  # in rowid order, so the target keeps the logging order
        rows = src._query(f"SELECT rowid, {names} FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?", (last, page))
        if not rows:
            return copied
        with dst.transaction() as c:
            for r in rows:
                copied += max(0, c.execute(insert, tuple(r)[1:]).rowcount)
        last = rows[-1][0]


def _copy_datasets(src: Any, dst: Any) -> tuple[int, int]:
    """Datasets new to the target (by owner and name), with their rows; ids are the target's."""
    n_sets = n_cases = 0
    for ds in src._query("SELECT * FROM datasets ORDER BY id"):
        if dst._query("SELECT 1 FROM datasets WHERE owner=? AND name=?", (ds["owner"], ds["name"])):
            continue
        with dst.transaction() as c:
            cur = c.execute(
                "INSERT INTO datasets(owner, name, column_names, created_at, last_updated_at) VALUES (?,?,?,?,?)",
                (ds["owner"], ds["name"], ds["column_names"], ds["created_at"], ds["last_updated_at"]),
            )
            new_id = int(cur.lastrowid or 0)
            cases = src._query("SELECT inputs, target, tags FROM testcases WHERE dataset_id=? ORDER BY id", (ds["id"],))
            for tc in cases:
                c.execute("INSERT INTO testcases(dataset_id, inputs, target, tags) VALUES (?,?,?,?)", (new_id, *tc))
                n_cases += 1
        n_sets += 1
    return n_sets, n_cases


def _copy_feedback(src: Any, dst: Any) -> int:
    n = 0
    for fb in src._query("SELECT owner, trace_id, score, comment, target, created_at FROM feedback ORDER BY id"):
        if dst._query(
            "SELECT 1 FROM feedback WHERE owner=? AND trace_id=? AND created_at=? AND score=?",
            (fb[0], fb[1], fb[5], fb[2]),
        ):
            continue
        with dst.transaction() as c:
            c.execute(
                "INSERT INTO feedback(owner, trace_id, score, comment, target, created_at) VALUES (?,?,?,?,?,?)",
                tuple(fb),
            )
        n += 1
    return n


def _copy_prompts(src: Any, dst: Any) -> dict[str, int]:
    """Prompts new to the target (by owner and name; ids are the target's), their versions (by
    prompt and number), deployments (by owner and deployment id) and deployment events (by
    deployment, time, action and version)."""
    n = {"prompts": 0, "prompt_versions": 0, "prompt_deployments": 0, "prompt_deployment_events": 0}
    ids: dict[int, int] = {}
    for pr in src._query("SELECT id, owner, name, created_at FROM prompts ORDER BY id"):
        with dst.transaction() as c:
            row = c.execute("SELECT id FROM prompts WHERE owner=? AND name=?", (pr[1], pr[2])).fetchone()
            if row is None:
                cur = c.execute("INSERT INTO prompts(owner, name, created_at) VALUES (?,?,?)", tuple(pr)[1:])
                ids[int(pr[0])] = int(cur.lastrowid or 0)
                n["prompts"] += 1
            else:
                ids[int(pr[0])] = int(row[0])
            versions = src._query(
                "SELECT version, spec, message, author, created_at FROM prompt_versions WHERE prompt_id=?"
                " ORDER BY version",
                (pr[0],),
            )
            for v in versions:
                n["prompt_versions"] += max(0, c.execute(
                    "INSERT INTO prompt_versions(prompt_id, version, spec, message, author, created_at)"
                    " VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                    (ids[int(pr[0])], *v),
                ).rowcount)
    with dst.transaction() as c:
        for d in src._query(
            "SELECT owner, deployment_id, prompt_id, version, created_at, updated_at FROM prompt_deployments"
        ):
            n["prompt_deployments"] += max(0, c.execute(
                "INSERT INTO prompt_deployments(owner, deployment_id, prompt_id, version, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                (d[0], d[1], ids[int(d[2])], *tuple(d)[3:]),
            ).rowcount)
        for e in src._query(
            "SELECT owner, deployment_id, action, version, previous_version, author, created_at"
            " FROM prompt_deployment_events ORDER BY id"
        ):
            if c.execute(
                "SELECT 1 FROM prompt_deployment_events WHERE owner=? AND deployment_id=? AND created_at=?"
                " AND action=? AND version=?",
                (e[0], e[1], e[6], e[2], e[3]),
            ).fetchone():
                continue
            c.execute(
                "INSERT INTO prompt_deployment_events(owner, deployment_id, action, version, previous_version,"
                " author, created_at) VALUES (?,?,?,?,?,?,?)",
                tuple(e),
            )
            n["prompt_deployment_events"] += 1
    return n


def db_main(argv: list[str], *, prog: str = PROG) -> int:
    """Run ``db`` with command-line arguments; the exit code."""
    from runner.settings import Settings

    args = build_parser(prog).parse_args(argv)
    try:
        if args.db_command == "copy":
            counts = copy_store(args.source, args.target)
            print("copied (new in the target): " + ", ".join(f"{n} {t}" for t, n in counts.items()))
            return 0
        db = args.db or Settings.from_env().db_path
        if args.db_command == "upgrade":
            from runner.store import Store

            Store(db).close()
        version, needed = schema_status(db)
        state = "current" if version == needed else f"behind: run `{PROG} upgrade`" if version < needed else "newer"
        print(f"schema {version} of {needed} ({state})")
        return 0 if version == needed else 1
    except (RunnerError, BackendError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
