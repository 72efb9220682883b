"""Nothing lost, for real: finished rows reach the store promptly, idle threads always find the
next row, and ``kill -9`` of the runner loses at most the last fraction of a second.

Every assertion is about what is stored, read back from the real store; the times used are the
ones the rows themselves wrote down, never a count sampled at some instant. The tests of what is
stored run on both stores (the ``door`` and ``db`` fixtures: SQLite and PostgreSQL); the progress
bar, the row threads and a refused dataset never reach a store, and the full disk is SQLite's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydantic
import pytest

from runner import BackendError, DatasetError, Experiment, Score, trace
from runner.store import Store
from tests.doors import Door

#: the promise: a finished row is stored (or handed to the HTTP client) within this many seconds
PROMPT_S = 1.0
#: what the live check allows: a batch leaves 0.2 s after its first log, so 3 s is a margin for a
#: busy machine's scheduling (an HTTP round trip there can take a second), not a looser promise
LIVE_CHECK_S = 3 * PROMPT_S


def _stored_row_ids(store: Store, experiment_uuid: str) -> set[int]:
    return {int(r["metadata"]["row_id"]) for r in store.experiment_rows(experiment_uuid)}


def _uuid_of(store: Store, name: str) -> str:
    (uuid,) = [r[0] for r in store._query("SELECT uuid FROM experiments WHERE name=?", (name,))]
    return str(uuid)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_every_row_finished_a_second_ago_is_already_stored(door: Door, is_async: bool) -> None:
    # Each row, as it starts, looks in the store for every row that finished more than LIVE_CHECK_S
    # before: all of them must be there already (not once hundreds of logs have piled up).
    finished: dict[int, float] = {}
    late: list[str] = []
    checked = [0]
    lock = threading.Lock()

    def look() -> None:
        now = time.time()
        with lock:
            due = {i for i, t in finished.items() if t < now - LIVE_CHECK_S}
        if not due:
            return
        reader = Store(door.db)
        try:
            stored = _stored_row_ids(reader, _uuid_of(reader, "prompt"))
        finally:
            reader.close()
        checked[0] += len(due)
        missing = due - stored
        if missing:
            late.append(f"rows {sorted(missing)} finished over {LIVE_CHECK_S} s ago and are not stored")

    def done(i: int) -> int:
        with lock:
            finished[i] = time.time()
        return i

    def slow_sync(i: int) -> int:
        look()
        time.sleep(0.3)
        return done(i)

    async def slow_async(i: int) -> int:
        await asyncio.to_thread(look)
        await asyncio.sleep(0.3)
        return done(i)

    data = [{"id": i, "i": i} for i in range(30)]  # 4.5 s of rows: the later ones have something to check
    fn = slow_async if is_async else slow_sync
    result = Experiment(name="prompt", data=data, func=fn, n_workers=2, **door.kwargs()).run(quiet=True)
    assert result.status == "completed" and result.n_total == 30
    assert checked[0] > 0, f"no row started {LIVE_CHECK_S} s after another finished: nothing was checked"
    assert late == []


def test_the_progress_bar_moves_row_by_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # the bar is drawn on terminals only

    def slow(i: int) -> int:
        time.sleep(0.25)
        return i

    Experiment(name="bar", data=[{"i": i} for i in range(8)], func=slow, n_workers=1, db=tmp_path / "b.db").run()
    err = capsys.readouterr().err
    shown = {int(n) for n in re.findall(r"(\d+)/8 \[", err)}
    # the bar redraws at most every 0.2 s: with a row every 0.25 s it shows counts along the way
    assert len(shown - {0, 8}) >= 3, f"the bar showed only {sorted(shown)}"


def test_an_idle_thread_always_finds_the_next_row(tmp_path: Path) -> None:
    # Row 40 waits until every row after it has run. If a thread held rows it had not started
    # (taking the next ones in a batch after a fast row), those rows would wait behind row 40
    # and row 40 would wait for them: the gate would time out instead of opening.
    after = 40
    ran_after = threading.Semaphore(0)
    opened: list[bool] = []

    def fn(i: int) -> int:
        if i == 40:
            opened.append(all(ran_after.acquire(timeout=30) for _ in range(after)))
        elif i > 40:
            ran_after.release()
        return i

    data = [{"i": i} for i in range(41 + after)]
    result = Experiment(name="gate", data=data, func=fn, n_workers=2, db=tmp_path / "g.db").run(quiet=True)
    assert result.n_total == 81 and opened == [True]


# -- kill -9 of the runner ------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from runner import Experiment

    db, log_path, mode, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def slow(i: int) -> int:
        time.sleep(0.2)
        # one write(2) per row: it survives the SIGKILL (the kernel has it), unlike a buffer
        os.write(fd, f"{mode} {i} {time.time()!r}\\n".encode())
        return i

    exp = Experiment(name="killed", data=[{"id": i, "i": i} for i in range(n)], func=slow, n_workers=4, db=db)
    exp.run("victim", resume=(mode == "resume"), quiet=True)
    """
)


def _finished(log_path: Path, mode: str) -> dict[int, float]:
    out: dict[int, float] = {}
    if log_path.exists():
        for line in log_path.read_text().splitlines():
            m, i, t = line.split()
            if m == mode:
                out[int(i)] = float(t)
    return out


def test_kill_9_loses_only_the_last_second_and_resume_runs_only_the_rest(db: str | Path, tmp_path: Path) -> None:
    # on both stores (``db``): what a killed writer leaves behind, and resume reading it, are the store's
    log_path, n = tmp_path / "finished.log", 200
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNNER_", "PAREA_"))}
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(db), str(log_path), "run", str(n)], env=env)
    try:
        # kill once rows have been finishing for a while (and well before the run could end)
        deadline = time.monotonic() + 120
        while True:
            done = _finished(log_path, "run")
            if len(done) >= 40 and max(done.values()) - min(done.values()) > 2 * PROMPT_S:
                break
            assert proc.poll() is None, "the runner exited before it could be killed"
            assert time.monotonic() < deadline, "rows did not finish"
            time.sleep(0.05)
        killed_at = time.time()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = _finished(log_path, "run")

    store = Store(db)
    try:
        uuid = _uuid_of(store, "killed")
        rows = store.experiment_rows(uuid)
        assert store._query("SELECT status FROM experiments WHERE uuid=?", (uuid,))[0][0] == "running"
    finally:
        store.close()
    stored = {int(r["metadata"]["row_id"]) for r in rows if r["status"] == "success"}
    finished_long_before = {i for i, t in done.items() if t < killed_at - PROMPT_S}
    assert len(finished_long_before) >= 20
    assert finished_long_before - stored == set(), "rows finished over a second before the kill were lost"
    assert len(stored) < n  # the kill came mid-run

    # resume runs exactly the rows that are not stored, and then every row is stored once
    subprocess.run(
        [sys.executable, str(script), str(db), str(log_path), "resume", str(n)], env=env, check=True, timeout=300
    )
    rerun = _finished(log_path, "resume")
    assert set(rerun) == set(range(n)) - stored
    store = Store(db)
    try:
        final = store.experiment_rows(uuid)
        total = store._query("SELECT count(*) FROM traces WHERE experiment_uuid=?", (uuid,))[0][0]
    finally:
        store.close()
    assert total == len(final) == n and {int(r["metadata"]["row_id"]) for r in final} == set(range(n))
    print(
        f"\nkill -9 mid-run: {n} rows, {len(done)} finished before the kill, {len(stored)} stored, "
        f"{len(finished_long_before)} finished > {PROMPT_S} s before it (all stored); resume ran {len(rerun)}, "
        f"0 duplicated, 0 lost"
    )


# -- a bad row is that row's error, never the run's -------------------------------------------------------


@dataclasses.dataclass
class Answer:
    text: str
    when: datetime.datetime
    tags: set[str]


class Model(pydantic.BaseModel):
    n: int
    at: datetime.date


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")

    __str__ = __repr__


def _deep(n: int) -> list[Any]:
    out: list[Any] = []
    cur = out
    for _ in range(n):
        cur.append([])
        cur = cur[0]
    return out


CUT = json.loads('"cut \\ud83d"')  # a model answer cut inside an escape: a lone surrogate


@trace
def step(text: str) -> str:
    return text


def _awkward(kind: str, big: Any) -> Any:
    if kind == "surrogate":
        return CUT
    if kind == "big-int":
        return 2**70
    if kind == "deep":
        return _deep(5000)
    if kind == "unprintable":
        return Unprintable()
    if kind == "span-surrogate":
        return step(CUT)
    if kind == "rich":
        return {
            "np_int": np.int64(3), "np_float": np.float32(0.5), "array": np.arange(3), "ts": pd.Timestamp("2024-05-01"),
            "na": pd.NA, "answer": Answer("hi", datetime.datetime(2024, 1, 2, 3, 4), {"b", "a"}),
            "model": Model(n=1, at=datetime.date(2024, 1, 1)), "bytes": b"raw", "set": {3, 1, 2},
        }
    return kind


KINDS = ["surrogate", "big-int", "deep", "unprintable", "span-surrogate", "rich"]


def test_awkward_outputs_and_inputs_are_stored_faithfully_and_cost_no_other_row(door: Door, tmp_path: Path) -> None:
    kinds = KINDS * 2 + ["plain"] * 8
    data = [{"id": i, "kind": k, "big": 2**70 if k == "big-int" else i} for i, k in enumerate(kinds)]
    exp = Experiment(name="awkward", data=data, func=_awkward, evals=[lambda log: 1.0], **door.kwargs())
    result = exp.run("awkward-1", quiet=True)
    assert result.status == "completed" and result.n_total == 20 and result.n_errors == 0
    rows = {int(r["metadata"]["row_id"]): r for r in door.store.experiment_rows(result.experiment_uuid)}
    assert len(rows) == 20 and all(r["status"] == "success" for r in rows.values())
    assert all(r["scores"] and r["scores"][0]["score"] == 1.0 for r in rows.values())
    out = {KINDS[i]: rows[i]["output"] for i in range(len(KINDS))}
    assert out["surrogate"] == "cut \ufffd"
    assert out["big-int"] == str(2**70) and rows[1]["inputs"]["big"] in (2**70, str(2**70))
    assert out["deep"].startswith("[[[[") and "nested deeper than" in out["deep"]
    unprintable = "<unrepresentable Unprintable: repr() raised RuntimeError: no repr for you>"
    assert json.loads(out["unprintable"]) == unprintable
    assert out["span-surrogate"] == "cut \ufffd"
    assert json.loads(out["rich"]) == {
        "np_int": 3, "np_float": 0.5, "array": [0, 1, 2], "ts": "2024-05-01T00:00:00", "na": None,
        "answer": {"text": "hi", "when": "2024-01-02T03:04:00", "tags": ["a", "b"]},
        "model": {"n": 1, "at": "2024-01-01"}, "bytes": "raw", "set": [1, 2, 3],
    }
    span_row = rows[4]
    (child,) = door.store.get_trace_tree(span_row["trace_id"])["children_logs"]
    assert child["inputs"] == {"text": "cut \ufffd"}
    # every command that reads the store still works
    for args in (["list"], ["show", "awkward-1"]):
        cli = subprocess.run(
            [sys.executable, "-m", "runner", *args, "--db", str(door.db)],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )
        assert cli.returncode == 0, cli.stderr
    print(f"\nawkward values ({door.kind}): 20 rows sent, {len(rows)} stored, 0 duplicated, 0 lost")


def test_an_output_too_big_for_the_server_is_that_rows_error(door: Door) -> None:
    huge = "x" * (17 * 1024 * 1024)

    def fn(i: int) -> str:
        return huge if i == 3 else str(i)

    result = Experiment(name="huge", data=[{"id": i, "i": i} for i in range(20)], func=fn, **door.kwargs()).run(
        quiet=True
    )
    assert result.status == "completed"
    rows = {int(r["metadata"]["row_id"]): r for r in door.store.experiment_rows(result.experiment_uuid)}
    assert sorted(rows) == list(range(20))
    assert all(rows[i]["status"] == "success" and rows[i]["output"] == str(i) for i in range(20) if i != 3)
    if door.kind == "http":  # the server takes at most 16 MiB a request: the row says so
        assert rows[3]["status"] == "error" and "413" in rows[3]["error"]
    else:
        assert rows[3]["status"] == "success" and len(rows[3]["output"]) == len(huge)
    print(f"\n17 MB output ({door.kind}): 20 rows sent, {len(rows)} stored, 0 duplicated, 0 lost")


# -- score names and row ids ------------------------------------------------------------------------------


def _twice(log: Any) -> list[Score]:
    return [Score("s", 1.0), Score("s", 0.0)]


def _named_like_twice(log: Any) -> Score:
    return Score("t", 1.0)


def _also_t(log: Any) -> Score:
    return Score("t", 0.5)


def test_duplicate_score_names_are_that_rows_scorer_error_and_every_command_still_works(
    door: Door, tmp_path: Path
) -> None:
    evals = [_twice, _named_like_twice, _also_t, lambda log: 1.0, lambda log: 0.0]
    exp = Experiment(name="dups", data=[{"i": i} for i in range(6)], func=lambda i: i, evals=evals, **door.kwargs())
    result = exp.run("dups-1", quiet=True)
    assert result.status == "completed" and result.n_total == 6
    # two lambdas are both "score": the second becomes score_2 (README: scorer names)
    assert result.scores["score"].mean == 1.0 and result.scores["score_2"].mean == 0.0
    for name in ("s", "t"):  # a name given twice on a row counts neither, and says why
        summary = result.scores[name]
        assert summary.n == 0 and summary.n_errors == 6
        assert f"scores named {name!r}" in result.scorer_errors[name]
    rows = door.store.experiment_rows(result.experiment_uuid)
    assert len(rows) == 6 and all(sorted(s["name"] for s in r["scores"]) == ["score", "score_2"] for r in rows)
    for args in (["list"], ["show", "dups-1"]):
        cli = subprocess.run(
            [sys.executable, "-m", "runner", *args, "--db", str(door.db)],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )
        assert cli.returncode == 0, cli.stderr


def test_a_stored_run_with_one_score_name_twice_cannot_break_list_or_show(db: str | Path) -> None:
    # another client (the Parea SDK, a script) may post such rows: the readers of both stores must cope
    store = Store(db)
    try:
        project = store.project_uuid("default")
        exp = store.create_experiment(name="x", project_uuid=project, run_name="dup-1", metadata={})
        store.upsert_traces([
            {"trace_id": f"t{i}", "experiment_uuid": exp["uuid"], "status": "success", "metadata": {"row_id": str(i)},
             "scores": [{"name": "s", "score": 1.0}, {"name": "s", "score": 0.0}]}
            for i in range(5)
        ])
        store.finish_experiment(exp["uuid"])
    finally:
        store.close()
    for args in (["list"], ["show", "dup-1"]):
        cli = subprocess.run(
            [sys.executable, "-m", "runner", *args, "--db", str(db)], capture_output=True, text=True, timeout=120
        )
        assert cli.returncode == 0 and "Traceback" not in cli.stderr, cli.stderr


@pytest.mark.parametrize("ids", [[1, 2, 1, 3], [1, 2, "1", 3]], ids=["1,1", "1,'1'"])
def test_a_repeated_row_id_is_refused_before_any_row_runs(door: Door, ids: list[Any]) -> None:
    ran: list[int] = []

    def fn(i: int) -> int:
        ran.append(i)
        return i

    data = [{"id": v, "i": k} for k, v in enumerate(ids)]
    with pytest.raises(DatasetError, match=r"rows 1 and 3 .* same id '1'"):
        Experiment(name="ids", data=data, func=fn, **door.kwargs()).run(quiet=True)
    assert ran == []
    assert door.store._query("SELECT count(*) FROM traces")[0][0] == 0


def test_a_repeated_row_id_in_a_file_is_refused_before_any_row_runs(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("id,i\n7,0\n8,1\n7,2\n")
    ran: list[str] = []

    def fn(i: str) -> str:
        ran.append(i)
        return i

    with pytest.raises(DatasetError, match=r"rows 1 and 3 .* same id '7'"):
        Experiment(name="ids", data=str(path), func=fn, db=tmp_path / "f.db").run(quiet=True)
    assert ran == []


def test_resume_still_matches_rows_by_id(db: str | Path) -> None:
    data = [{"id": f"r{i}", "i": i} for i in range(6)]
    first: list[int] = []

    def flaky(i: int) -> int:
        first.append(i)
        if i % 2:
            raise RuntimeError("down")
        return i

    Experiment(name="res", data=data, func=flaky, db=db).run("res-1", quiet=True)
    again: list[int] = []

    def fine(i: int) -> int:
        again.append(i)
        return i

    result = Experiment(name="res", data=list(reversed(data)), func=fine, db=db).run("res-1", resume=True, quiet=True)
    assert sorted(again) == [1, 3, 5] and result.n_total == 6 and result.n_errors == 0


# -- a full disk, too many workers ------------------------------------------------------------------------


def test_a_full_disk_names_the_file_and_what_to_free_and_the_run_ends_failed(tmp_path: Path) -> None:
    # SQLite only: a full disk under the store file (PostgreSQL's disk is its server's, not ours).
    # The disk is simulated with SQLite's own size limit (PRAGMA max_page_count): the write then
    # fails with SQLITE_FULL, "database or disk is full", exactly as on a full disk.
    db = tmp_path / "full.db"
    store = Store.shared(db)
    try:
        pages = int(store._query("PRAGMA page_count")[0][0])
        store._query(f"PRAGMA max_page_count={pages + 1500}")  # about 6 MB: room for some rows, not all
        exp = Experiment(name="full", data=[{"i": i} for i in range(2000)], func=lambda i: "x" * 4000 + str(i), db=db)
        with pytest.raises(BackendError, match=r"full\.db: the disk is full.*free space.*--resume") as info:
            exp.run("full-1", quiet=True)
        assert "database or disk is full" in str(info.value)
        store._query("PRAGMA max_page_count=1073741823")  # space freed: the store is intact and readable
        (status,) = [r[0] for r in store._query("SELECT status FROM experiments WHERE run_name='full-1'")]
        n_stored = store._query("SELECT count(*) FROM traces")[0][0]
        assert str(store._query("PRAGMA integrity_check")[0][0]) == "ok"
    finally:
        Store.release(store)
    assert status == "failed" and 0 < n_stored < 2000


def test_n_workers_never_exceeds_the_rows_and_an_absurd_number_is_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    threads: set[int] = set()
    most = [0]

    def fn(i: int) -> int:
        threads.add(threading.get_ident())
        most[0] = max(most[0], threading.active_count())
        time.sleep(0.01)
        return i

    before = threading.active_count()
    exp = Experiment(name="many", data=[{"i": i} for i in range(20)], func=fn, n_workers=5000, db=tmp_path / "m.db")
    result = exp.run(quiet=True)
    assert result.n_total == 20 and len(threads) <= 20
    assert most[0] <= before + 20 + 2  # the row threads, the store's writer, the run's loop thread
    assert "n_workers=5000 is more than a run can use; starting at most 1024 threads" in capsys.readouterr().err
