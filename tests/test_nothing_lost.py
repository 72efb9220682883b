"""Nothing lost, for real: finished rows reach the store promptly, idle threads always find the
next row, and ``kill -9`` of the runner loses at most the last fraction of a second.

Every assertion is about what is stored, read back from the real SQLite file; the times used
are the ones the rows themselves wrote down, never a count sampled at some instant.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from runner import Experiment
from runner.store import Store
from tests.doors import Door

#: the promise: a finished row is stored (or handed to the HTTP client) within this many seconds
PROMPT_S = 1.0


def _stored_row_ids(store: Store, experiment_uuid: str) -> set[int]:
    return {int(r["metadata"]["row_id"]) for r in store.experiment_rows(experiment_uuid)}


def _uuid_of(store: Store, name: str) -> str:
    (uuid,) = [r[0] for r in store._query("SELECT uuid FROM experiments WHERE name=?", (name,))]
    return str(uuid)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_every_row_finished_a_second_ago_is_already_stored(door: Door, is_async: bool) -> None:
    # Each row, as it starts, looks in the store for every row that finished more than a second
    # before: all of them must be there already (not once hundreds of logs have piled up).
    finished: dict[int, float] = {}
    late: list[str] = []
    checked = [0]
    lock = threading.Lock()

    def look() -> None:
        now = time.time()
        with lock:
            due = {i for i, t in finished.items() if t < now - PROMPT_S}
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
            late.append(f"rows {sorted(missing)} finished over {PROMPT_S} s ago and are not stored")

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

    data = [{"id": i, "i": i} for i in range(14)]
    fn = slow_async if is_async else slow_sync
    result = Experiment(name="prompt", data=data, func=fn, n_workers=2, **door.kwargs()).run(quiet=True)
    assert result.status == "completed" and result.n_total == 14
    assert checked[0] > 0, "no row started more than a second after another finished: nothing was checked"
    assert late == []


def test_the_progress_bar_moves_row_by_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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


def test_kill_9_loses_only_the_last_second_and_resume_runs_only_the_rest(tmp_path: Path) -> None:
    db, log_path, n = tmp_path / "k.db", tmp_path / "finished.log", 200
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
