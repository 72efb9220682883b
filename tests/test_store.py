"""The SQLite store: upserts, roll-ups, run names, isolation, and two processes on one file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runner.errors import BackendError, NotFoundError, RunNameError
from runner.store import Store


@pytest.fixture
def store(db: str | Path) -> Store:
    s = Store(db)
    yield s
    s.close()


def log(trace_id: str, **kw: object) -> dict:
    return {"trace_id": trace_id, "start_timestamp": "2026-01-01T00:00:00+00:00", **kw}


def test_children_before_parents_and_double_posts_merge(store: Store) -> None:
    p, _ = store.get_or_create_project("p")
    e = store.create_experiment(name="e", project_uuid=p["uuid"], run_name="r")
    child = log("c", parent_trace_id="r1", root_trace_id="r1", depth=1, scores=[{"name": "c", "score": True}],
                input_tokens=10, output_tokens=5, total_tokens=15, cost=0.5)
    store.upsert_traces([child])
    store.upsert_traces([log("r1", experiment_uuid=e["uuid"], output="first")])
    store.upsert_traces([log("r1", experiment_uuid=e["uuid"], scores=[{"name": "own", "score": 1}])])
    store.upsert_traces([child])  # a retried post changes nothing
    tree = store.get_trace_tree("r1")
    assert tree["output"] == "first"  # the second post did not erase it
    assert {s["name"]: s["score"] for s in tree["scores"]} == {"own": 1.0, "c": 1.0}
    assert tree["input_tokens"] == 10 and tree["cost"] == 0.5 and tree["children"] == ["c"]
    assert store.count_traces() == 2
    (stat,) = store.experiment_stats(e["uuid"])
    assert stat["total_tokens"] == 15 and {s["name"] for s in stat["scores"]} == {"own", "c"}


def test_update_trace_sets_fields(store: Store) -> None:
    store.upsert_traces([log("t", output="x", status="success")])
    store.update_trace("t", {"status": "error", "error": "bad"})
    t = store.get_trace_tree("t")
    assert (t["status"], t["error"], t["output"]) == ("error", "bad", "x")
    with pytest.raises(NotFoundError):
        store.update_trace("missing", {"status": "x"})


def test_run_names(store: Store) -> None:
    p, created = store.get_or_create_project("p")
    assert created and store.get_or_create_project("p") == (p, False)
    store.create_experiment(name="e", project_uuid=p["uuid"], run_name="a-1_B")
    with pytest.raises(RunNameError, match="already used"):
        store.create_experiment(name="other", project_uuid=p["uuid"], run_name="a-1_B")
    with pytest.raises(RunNameError, match="invalid run name"):
        store.create_experiment(name="e", project_uuid=p["uuid"], run_name="a b")
    generated = store.create_experiment(name="e", project_uuid=p["uuid"])["run_name"]
    assert generated and all(c.isalnum() or c in "-_" for c in generated)
    q, _ = store.get_or_create_project("q")
    store.create_experiment(name="e", project_uuid=q["uuid"], run_name="a-1_B")  # unique per project only


def test_owners_are_isolated(store: Store) -> None:
    pa, _ = store.get_or_create_project("p", owner="A")
    store.create_experiment(name="e", project_uuid=pa["uuid"], run_name="r", owner="A")
    store.upsert_traces([log("t")], owner="A")
    assert store.list_experiments(owner="B") == []
    with pytest.raises(NotFoundError):
        store.get_trace_tree("t", owner="B")
    store.upsert_traces([log("t", output="hijack")], owner="B")  # cannot overwrite another tenant's trace
    assert "output" not in store.get_trace_tree("t", owner="A")


def test_finish_stores_pinned_and_dataset_level_stats(store: Store) -> None:
    p, _ = store.get_or_create_project("p")
    e = store.create_experiment(name="e", project_uuid=p["uuid"])
    store.upsert_traces([log(f"t{i}", experiment_uuid=e["uuid"], latency=i, scores=[{"name": "s", "score": i % 2}])
                         for i in range(4)])
    stats = store.finish_experiment(e["uuid"], status="failed", dataset_level_stats=[{"name": "pearson", "score": 0.5}])
    assert len(stats) == 4
    got = store.get_experiment(e["uuid"])
    assert got["status"] == "failed" and got["num_samples"] == 4
    pinned = {x["var1"]: x["value"] for x in got["pinned_stats"]}
    assert pinned["s"] == 0.5 and pinned["Latency"] == 1.5 and pinned["pearson"] == 0.5
    assert got["dataset_level_stats"] == [{"name": "pearson", "score": 0.5, "reason": None}]


def test_bad_paths_and_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="is a directory"):
        Store(tmp_path)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(BackendError, match="cannot open store"):
        Store(junk)
    newer = tmp_path / "newer.db"
    sqlite3.connect(newer).execute("PRAGMA user_version=999").connection.close()
    with pytest.raises(BackendError, match="newer runner"):
        Store(newer)


def test_migrations_run_once(tmp_path: Path) -> None:
    Store(tmp_path / "m.db").close()
    s = Store(tmp_path / "m.db")  # reopening must not re-run migration 1
    assert s._query("PRAGMA user_version")[0][0] >= 1
    s.close()


def test_two_processes_on_one_file_keep_every_row(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    script = textwrap.dedent(
        f"""
        import sys
        from runner import Experiment
        from evals import exact_match
        tag = sys.argv[1]
        data = [{{"x": f"{{tag}}-{{i}}", "target": f"{{tag}}-{{i}}"}} for i in range(2000)]
        r = Experiment(name="proc-" + tag, data=data, func=lambda x: x, evals=[exact_match],
                       db={str(db)!r}).run(quiet=True)
        assert r.n_total == 2000 and r.scores["exact_match"].mean == 1.0
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, tag]) for tag in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    s = Store(db)
    exps = s.list_experiments()
    assert sorted(e["name"] for e in exps) == ["proc-a", "proc-b"]
    for e in exps:
        rows = s.experiment_rows(e["uuid"])
        assert len(rows) == 2000
        assert {r["inputs"]["x"].split("-")[0] for r in rows} == {e["name"][-1]}
    s.close()


def test_processes_opening_a_new_file_at_the_same_instant_all_get_in(tmp_path: Path) -> None:
    # Switching a new file to WAL answers "database is locked" at once, without the busy
    # handler, when another process is switching it too; each opener must wait its turn.
    script = textwrap.dedent(
        """
        import sys, time
        from runner.store import Store
        start = float(sys.argv[2])
        while time.time() < start:
            pass
        s = Store(sys.argv[1])
        s.get_or_create_project("p" + sys.argv[3])
        s.close()
        """
    )
    for attempt in range(5):
        db = tmp_path / f"new-{attempt}.db"
        start = time.time() + 1.0  # after every interpreter has started
        procs = [
            subprocess.Popen([sys.executable, "-c", script, str(db), str(start), str(i)], stderr=subprocess.PIPE)
            for i in range(6)
        ]
        errors = [p.communicate(timeout=60)[1].decode() for p in procs]
        assert [p.returncode for p in procs] == [0] * 6, errors
        s = Store(db)
        assert len(s.list_projects()) == 6
        assert s._query("PRAGMA journal_mode")[0][0] == "wal"
        s.close()


def test_shared_store_is_reused_and_reopened_when_the_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    a = Store.shared(path)
    b = Store.shared(path)
    assert a is b
    Store.release(a)
    Store.release(b)
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"shared.db{suffix}").unlink(missing_ok=True)
    c = Store.shared(path)  # the file is gone: a fresh store, not the one on the deleted inode
    assert c is not a
    c.get_or_create_project("p")
    assert path.exists()
    Store.release(c)
