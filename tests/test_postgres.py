"""The team server on PostgreSQL: URLs wherever a store goes, 503 when the database is gone, 64-bit
ids, ``serve --workers``, ``db upgrade``/``status``/``copy``, and concurrent writers.

Every test runs against a real PostgreSQL (``tests/pg.py``); the store and server suites run on
both stores through the ``db`` and ``door`` fixtures.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from runner import Experiment
from runner.errors import BackendError
from runner.server import create_app
from runner.store import Store
from runner.store.migrations import MIGRATIONS
from tests.pg import PgCluster, start_cluster
from tests.serve_process import free_port, serve_process, worker_pids
from tests.servers import log, serving, start_app

ROOT = Path(__file__).resolve().parent.parent


def _runner(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, cwd=os.getcwd(),
    )


def _upper(question: str) -> str:
    return question.upper()


# -- a store location wherever one is accepted --------------------------------------------------
def test_a_postgresql_url_works_as_db_and_runner_db(pg: PgCluster) -> None:
    url = pg.url()
    result = Experiment(name="qa", data=[{"question": "a"}, {"question": "b"}], func=_upper, db=url).run(quiet=True)
    store = Store(url)
    assert sorted(r["output"] for r in store.experiment_rows(result.experiment_uuid)) == ["A", "B"]
    store.close()
    # through Path() (which folds '//'), RUNNER_DB, and --db of another command
    store = Store(Path(url))
    assert store.count_traces() == 2
    store.close()
    listing = _runner("list", "--json", env={"RUNNER_DB": url})
    assert listing.returncode == 0, listing.stderr
    assert result.run_name in listing.stdout
    listing = _runner("list", "--json", "--db", url)
    assert listing.returncode == 0 and result.run_name in listing.stdout, listing.stderr


def test_every_integer_column_is_64_bit(pg: PgCluster) -> None:
    url = pg.url()
    store = Store(url)
    try:
        schema = url.rsplit("%3D", 1)[1]
        types = {
            (r[0], r[1]): r[2]
            for r in store._query(
                "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema=?",
                (schema,),
            )
        }
        ints = {k: v for k, v in types.items() if v in ("integer", "smallint", "bigint")}
        assert ints and set(ints.values()) == {"bigint"}, ints
        assert types[("datasets", "id")] == types[("testcases", "id")] == types[("traces", "rowid")] == "bigint"
        big = 2**40
        project = store.project_uuid("p")
        store.upsert_traces([{"trace_id": "t", "project_uuid": project, "input_tokens": big, "total_tokens": big}])
        assert store.trace_trees(["t"])[0]["input_tokens"] == big
    finally:
        store.close()


# -- the database going away -------------------------------------------------------------------
@pytest.fixture
def own_cluster(pg: PgCluster) -> Iterator[PgCluster]:
    """A cluster of the test's own, to stop and start (durable: an immediate stop keeps commits)."""
    cluster = start_cluster(durable=True)
    assert not isinstance(cluster, str), cluster
    try:
        yield cluster
    finally:
        cluster.stop()


def test_a_database_that_goes_away_answers_503_then_recovers(own_cluster: PgCluster) -> None:
    url = own_cluster.url()
    with serving(url) as api:
        assert api.post("/trace_log", json=log("t1")).status_code == 200
        own_cluster._run("pg_ctl", "-D", str(own_cluster.data), "-m", "immediate", "-w", "stop")
        down = api.post("/trace_log", json=log("t2"))
        assert down.status_code == 503, down.text
        assert "PostgreSQL database" in down.json()["detail"] and "unavailable" in down.json()["detail"]
        assert down.headers["retry-after"] == "1"
        own_cluster._run("pg_ctl", "-D", str(own_cluster.data), "-l", str(own_cluster.root / "log"), "-w",
                         "-o", f"-c listen_addresses=127.0.0.1 -c port={own_cluster.port} "
                         f"-c unix_socket_directories={own_cluster.root}", "start")  # the same settings as before
        deadline = time.monotonic() + 60
        while (again := api.post("/trace_log", json=log("t2"))).status_code != 200:
            assert again.status_code == 503 and time.monotonic() < deadline, again.text
            time.sleep(0.2)
        assert api.get("/trace_log/t1").status_code == api.get("/trace_log/t2").status_code == 200


def test_a_read_only_database_answers_503_and_still_serves_reads(pg: PgCluster) -> None:
    # a standby after a failover, or a database set read-only: psycopg raises InternalError
    # (SQLSTATE 25006), which the store's mapping once let through as a 500
    url = pg.url()
    store = Store(url)
    store.upsert_traces([log("t1")])
    store.close()
    read_only = url + "%20-cdefault_transaction_read_only%3Don"
    with pytest.raises(BackendError, match="is read-only"):
        Store(read_only)  # migrating needs a write: a clear error, not psycopg's
    store = Store(read_only, migrate=False)  # type: ignore[call-arg]
    with start_app(create_app(store), store=store) as server, httpx.Client(base_url=server.base_url) as api:
        refused = api.post("/trace_log", json=log("t2"))
        assert refused.status_code == 503, refused.text
        assert "is read-only" in refused.json()["detail"] and refused.headers["retry-after"] == "1"
        assert api.get("/trace_log/t1").status_code == 200


def _found(store: Store, exp: str, text: str) -> list[str]:
    """The trace ids of the run's rows the run page's search finds for ``text``."""
    return sorted(d["trace_id"] for d in store.roots_by_rowid(exp, store.search_roots(exp, text)).values())


def test_rows_sort_and_search_as_on_sqlite_whatever_the_database_collation(pg: PgCluster, tmp_path: Path) -> None:
    # a managed PostgreSQL is often made with an ICU or en_US collation, not the tests' C.UTF-8:
    # the run page's text sort and search must still give SQLite's answers (byte order, missing
    # values first, ASCII-only case folding), and so must lists by name
    import psycopg

    name = f"icu_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{pg.base}/postgres", autocommit=True) as conn:
        conn.execute(  # type: ignore[call-overload]
            f"CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        )
    outputs = ["b", "B", "a", "_x", "A", None, "Ünïcode"]
    answers = []
    for db in (tmp_path / "r.db", f"{pg.base}/{name}"):
        store = Store(db)
        try:
            exp = store.create_experiment(name="e", project_uuid=store.project_uuid("p"))["uuid"]
            store.upsert_traces([
                {"trace_id": f"t{i}", "experiment_uuid": exp, **({"output": out} if out else {})}
                for i, out in enumerate(outputs)
            ])
            order = store.root_order(exp, "output")
            logs = store.roots_by_rowid(exp, order)

            for project in ("b", "B", "_x", "a"):
                store.project_uuid(project)
            answers.append((
                [logs[r]["trace_id"] for r in order],
                *(_found(store, exp, text) for text in ("ÜNÏCODE", "ÜNïCODE", "b")),
                [p["name"] for p in store.list_projects()],
            ))
        finally:
            store.close()
    sqlite, postgres = answers
    assert sqlite == (["t5", "t4", "t1", "t3", "t2", "t0", "t6"], [], ["t6"], ["t0", "t1"], ["B", "_x", "a", "b", "p"])
    assert postgres == sqlite


# -- serve --workers -----------------------------------------------------------------------------
def test_serve_refuses_several_workers_on_sqlite(tmp_path: Path) -> None:
    proc = _runner("serve", "--db", str(tmp_path / "r.db"), "--workers", "2")
    assert proc.returncode == 2
    assert "--workers 2 needs a PostgreSQL store" in proc.stderr and "one worker" in proc.stderr


def test_serve_with_two_workers_on_postgresql(pg: PgCluster) -> None:
    url = pg.url()
    with serve_process(url, "--workers", "2") as (base, proc):
        assert len(worker_pids(proc.pid)) == 2
        with httpx.Client(base_url=base, timeout=30) as api:
            ids = [f"w-{i}" for i in range(200)]
            with ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(lambda t: api.post("/trace_log", json=log(t)).status_code, ids))
            assert set(codes) == {200}
            assert all(api.get(f"/trace_log/{t}").status_code == 200 for t in ids[::37])
    store = Store(url)
    assert store.count_traces() == 200
    store.close()


# -- the migration chain -------------------------------------------------------------------------
def test_db_status_upgrade_and_no_migrate(pg: PgCluster, tmp_path: Path) -> None:
    url = pg.database()
    status = _runner("db", "status", "--db", url)
    assert status.returncode == 1 and f"schema 0 of {len(MIGRATIONS)} (behind" in status.stdout, status.stderr
    refused = _runner("serve", "--db", url, "--no-migrate", "--port", str(free_port()))
    assert refused.returncode == 1 and "db upgrade" in refused.stderr, refused.stderr
    upgrade = _runner("db", "upgrade", "--db", url)
    assert upgrade.returncode == 0 and f"schema {len(MIGRATIONS)} of {len(MIGRATIONS)} (current)" in upgrade.stdout
    assert _runner("db", "status", "--db", url).returncode == 0
    # and SQLite
    sqlite_db = tmp_path / "r.db"
    assert _runner("db", "status", "--db", str(sqlite_db)).returncode == 1
    assert _runner("db", "upgrade", "--db", str(sqlite_db)).returncode == 0
    assert _runner("db", "status", "--db", str(sqlite_db)).returncode == 0


def test_processes_migrating_an_empty_database_at_once_do_not_race(pg: PgCluster) -> None:
    url = pg.database()
    procs = [
        subprocess.Popen([sys.executable, "-m", "runner", "db", "upgrade", "--db", url],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    store = Store(url)
    try:
        assert store._query("SELECT version FROM runner_schema")[0][0] == len(MIGRATIONS)
        assert int(store._query("SELECT count(*) FROM runner_schema")[0][0]) == 1
    finally:
        store.close()


# -- db copy -------------------------------------------------------------------------------------
def test_db_copy_moves_everything_and_twice_duplicates_nothing(pg: PgCluster, tmp_path: Path) -> None:
    local = tmp_path / "local.db"
    rows = [{"question": q} for q in "abc"]
    result = Experiment(name="qa", data=rows, func=_upper, db=local).run(quiet=True)
    src = Store(local)
    src.create_dataset("ds", ["question"], [{"inputs": {"question": "x"}, "target": "X"}])
    root = src.experiment_rows(result.experiment_uuid)[0]["trace_id"]
    src.record_feedback(root, 0.5, "fine", None)
    src.finish_experiment(result.experiment_uuid, scorer_errors={"judge": "timed out"})
    src.save_prompt_version("greeter", {"messages": [{"role": "user", "content": "hi {{name}}"}]}, message="one")
    src.save_prompt_version("greeter", {"messages": [{"role": "user", "content": "hello {{name}}"}]}, message="two")
    src.deploy_prompt("greeter", 1, deployment_id="p-greet")
    src.deploy_prompt("greeter", 2, deployment_id="p-greet")
    src.close()
    url = pg.url()
    first = _runner("db", "copy", "--from", str(local), "--to", url)
    assert first.returncode == 0, first.stderr
    assert "3 traces" in first.stdout and "1 datasets" in first.stdout and "1 feedback" in first.stdout
    assert "1 prompts, 2 prompt_versions, 1 prompt_deployments, 2 prompt_deployment_events" in first.stdout
    second = _runner("db", "copy", "--from", str(local), "--to", url)
    assert second.returncode == 0, second.stderr
    assert "0 projects, 0 experiments, 0 traces, 0 datasets, 0 testcases, 0 feedback" in second.stdout
    assert "0 prompts, 0 prompt_versions, 0 prompt_deployments, 0 prompt_deployment_events" in second.stdout
    dst = Store(url)
    try:
        assert dst.count_traces() == 3
        assert sorted(r["output"] for r in dst.experiment_rows(result.experiment_uuid)) == ["A", "B", "C"]
        assert dst.find_experiment(result.run_name)["uuid"] == result.experiment_uuid
        assert [tc["target"] for tc in dst.get_dataset("ds")["test_cases"].values()] == ["X"]
        assert len(dst._query("SELECT * FROM feedback")) == 1
        assert dst.get_experiment(result.experiment_uuid)["scorer_errors"] == {"judge": "timed out"}
        assert [v["message"] for v in dst.list_prompt_versions("greeter")] == ["one", "two"]
        assert dst.get_deployment("p-greet")["version"] == 2
        assert dst.rollback_deployment("p-greet")["version"] == 1  # the copied history knows where to go back
    finally:
        dst.close()


def test_rows_written_after_finish_mark_the_experiment_stale_on_postgresql(pg: PgCluster) -> None:
    """Issue 13's SQLite triggers, as PostgreSQL's trigger function: a log written, changed or
    deleted after the finish marks the experiment stale, and the next read re-pins its stats."""
    url = pg.url()
    store = Store(url)
    try:
        result = Experiment(name="late", data=[{"question": "a"}], func=_upper, db=url).run(quiet=True)
        uuid = result.experiment_uuid
        stale = "SELECT stale FROM experiments WHERE uuid=?"
        assert store._query(stale, (uuid,))[0][0] == 0
        assert store.get_experiment(uuid)["num_samples"] == 1
        ts = "2026-01-01T00:00:00+00:00"
        store.upsert_traces([{"trace_id": "late-1", "root_trace_id": "late-1", "experiment_uuid": uuid,
                              "start_timestamp": ts}])
        assert store._query(stale, (uuid,))[0][0] == 1
        assert store.get_experiment(uuid)["num_samples"] == 2
        assert store._query(stale, (uuid,))[0][0] == 0
        store.upsert_traces([{"trace_id": "late-1-child", "root_trace_id": "late-1", "parent_trace_id": "late-1",
                              "start_timestamp": ts}])  # no experiment_uuid: found through its root
        assert store._query(stale, (uuid,))[0][0] == 1
        store.get_experiment(uuid)
        store.delete_trace_trees(["late-1"])
        assert store._query(stale, (uuid,))[0][0] == 1
        assert store.get_experiment(uuid)["num_samples"] == 1
        rowids = [r[0] for r in store._query("SELECT rowid FROM traces ORDER BY rowid")]
        assert len(set(rowids)) == len(rowids) == store.count_traces()
    finally:
        store.close()


# -- concurrency ---------------------------------------------------------------------------------
_WRITER = """
import sys, httpx
base, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with httpx.Client(base_url=base, timeout=60) as api:
    for i in range(0, n, 20):
        # every id twice: a retried batch, and the same ids from the other writers
        batch = [{"trace_id": f"shared-{j}", "parent_trace_id": f"shared-{j}", "root_trace_id": f"shared-{j}",
                  "start_timestamp": "2026-01-01T00:00:00+00:00", "output": prefix} for j in range(i, i + 20)]
        batch += [{"trace_id": f"{prefix}-{j}", "parent_trace_id": f"{prefix}-{j}", "root_trace_id": f"{prefix}-{j}",
                  "start_timestamp": "2026-01-01T00:00:00+00:00"} for j in range(i, i + 20)]
        for _ in range(2):
            r = api.post("/trace_logs/batch", json={"logs": batch})
            assert r.status_code == 200, r.text
"""


def test_writer_processes_and_server_workers_keep_each_row_exactly_once(pg: PgCluster, tmp_path: Path) -> None:
    url = pg.url()
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    with serve_process(url, "--workers", "2") as (base, _):
        writers = [
            subprocess.Popen([sys.executable, str(script), base, f"p{k}", "200"], stderr=subprocess.PIPE, text=True)
            for k in range(4)
        ]
        errors = [w.communicate(timeout=240)[1] for w in writers]
        assert [w.returncode for w in writers] == [0, 0, 0, 0], errors
    store = Store(url)
    try:
        assert store.count_traces() == 200 + 4 * 200
        dupes = store._query("SELECT trace_id FROM traces GROUP BY trace_id HAVING count(*) > 1")
        assert dupes == []
    finally:
        store.close()


def test_kill_9_of_a_server_worker_under_load_loses_no_acknowledged_trace(pg: PgCluster) -> None:
    url = pg.url()
    acknowledged: list[str] = []
    with serve_process(url, "--workers", "2") as (base, proc):
        victims = worker_pids(proc.pid)
        assert len(victims) == 2

        def write(k: int) -> None:
            with httpx.Client(base_url=base, timeout=30) as api:
                for i in range(150):
                    trace_id = f"k{k}-{i}-{uuid.uuid4().hex[:6]}"
                    try:
                        r = api.post("/trace_log", json=log(trace_id))
                    except httpx.HTTPError:
                        continue  # the worker died mid-request: not acknowledged
                    if r.status_code == 200:
                        acknowledged.append(trace_id)
                    if k == 0 and i == 40:
                        os.kill(victims[0], signal.SIGKILL)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(write, range(4)))
        assert victims[0] not in worker_pids(proc.pid)
    assert len(acknowledged) > 300
    store = Store(url)
    try:
        stored = {r[0] for r in store._query("SELECT trace_id FROM traces")}
    finally:
        store.close()
    assert set(acknowledged) <= stored
