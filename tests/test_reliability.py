"""Nothing lost: timeouts, retries, the watchdog, and resuming an interrupted run."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from evals import exact_match
from runner import ConfigError, DatasetError, Experiment
from runner.store import Store
from tests.doors import Door

never = threading.Event()


def test_a_sync_row_that_hangs_forever_times_out_and_frees_its_worker(door: Door) -> None:
    def fn(x: int) -> int:
        if x == 3:
            never.wait()  # hangs forever
        return x

    started = time.perf_counter()
    result = Experiment(name="hang", data=[{"x": i} for i in range(20)], func=fn, n_workers=2, timeout=0.3,
                        **door.kwargs()).run(quiet=True)
    assert time.perf_counter() - started < 5
    assert (result.n_total, result.n_errors) == (20, 1)
    (bad,) = [r for r in door.store.experiment_rows(result.experiment_uuid) if r["status"] == "error"]
    assert bad["error"] == "timeout after 0.3 s" and bad["inputs"] == {"x": 3}


def test_an_async_row_that_hangs_forever_times_out(door: Door) -> None:
    async def fn(x: int) -> int:
        if x == 1:
            await asyncio.Event().wait()
        return x

    result = Experiment(name="ahang", data=[{"x": i} for i in range(5)], func=fn, timeout=0.2,
                        **door.kwargs()).run(quiet=True)
    assert result.n_errors == 1
    errors = [r["error"] for r in door.store.experiment_rows(result.experiment_uuid) if r["status"] == "error"]
    assert errors == ["timeout after 0.2 s"]


def test_a_scorer_that_hangs_times_out_as_that_scorers_error(door: Door) -> None:
    def slow(log: Any) -> float:
        never.wait()
        return 1.0

    result = Experiment(name="shang", data=[{"x": "a", "target": "a"}], func=lambda x: x, evals=[slow, exact_match],
                        timeout=0.2, **door.kwargs()).run(quiet=True)
    assert result.scores["exact_match"].mean == 1.0
    assert result.scores["slow"].n_errors == 1 and "timeout after 0.2 s" in result.scorer_errors["slow"]


@pytest.mark.parametrize("is_async", [False, True])
def test_retries_rerun_a_flaky_function_and_record_attempts(door: Door, is_async: bool) -> None:
    attempts: dict[int, int] = {}
    lock = threading.Lock()

    def flaky_sync(x: int) -> int:
        with lock:
            attempts[x] = attempts.get(x, 0) + 1
            n = attempts[x]
        if x % 2 == 0 and n < 3:
            raise ConnectionError(f"flaky {x} attempt {n}")
        return x

    async def flaky_async(x: int) -> int:
        return flaky_sync(x)

    fn = flaky_async if is_async else flaky_sync
    result = Experiment(name="flaky", data=[{"x": i} for i in range(6)], func=fn, retries=2, retry_backoff=0.01,
                        **door.kwargs()).run(quiet=True)
    assert result.n_errors == 0
    rows = {r["inputs"]["x"]: r for r in door.store.experiment_rows(result.experiment_uuid)}
    assert len(rows) == 6
    assert rows[0]["metadata"]["attempts"] == 3
    assert rows[0]["metadata"]["retry_errors"] == [
        "ConnectionError: flaky 0 attempt 1",
        "ConnectionError: flaky 0 attempt 2",
    ]
    assert "attempts" not in rows[1]["metadata"]


def test_retries_give_up_after_the_limit(door: Door) -> None:
    def always(x: int) -> int:
        raise ValueError("still broken")

    result = Experiment(name="give-up", data=[{"x": 1}], func=always, retries=2, retry_backoff=0.01,
                        **door.kwargs()).run(quiet=True)
    (row,) = door.store.experiment_rows(result.experiment_uuid)
    assert row["status"] == "error" and row["metadata"]["attempts"] == 3 and "still broken" in row["error"]


def test_watchdog_names_the_rows_still_running() -> None:
    def fn(x: int) -> int:
        time.sleep(1.0 if x == 7 else 0)
        return x

    result = Experiment(name="wd", data=[{"x": i} for i in range(10)], func=fn, stall_after=0.3, db="w.db").run(
        quiet=True
    )
    assert result.stalls and "still running" in result.stalls[0]
    assert "watchdog" in result.summary_text()


def _resume_exp(db: Path, data: Any, **kw: Any) -> Experiment:
    def answer(question: str) -> str:
        time.sleep(0.002)
        return question.upper() if int(question[1:]) % 5 else "wrong"

    return Experiment(name="resumable", data=data, func=answer, evals=[exact_match], n_trials=2, db=db, **kw)


def test_resume_after_sigkill_stores_every_row_once_and_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    data_path = tmp_path / "qa.jsonl"
    data_path.write_text("".join(f'{{"question": "q{i}", "target": "Q{i}"}}\n' for i in range(300)))
    db = tmp_path / "kill.db"
    script = textwrap.dedent(
        f"""
        import time
        from evals import exact_match
        from runner import Experiment
        def answer(question):
            time.sleep(0.02)  # slow enough (about 3 s in all) to be killed mid-run
            return question.upper() if int(question[1:]) % 5 else "wrong"
        Experiment(name="resumable", data={str(data_path)!r}, func=answer, evals=[exact_match], n_trials=2,
                   n_workers=4, db={str(db)!r}).run("to-resume", quiet=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    stored = 0
    while time.monotonic() < deadline:  # kill it once some rows, not all, are stored
        time.sleep(0.05)
        if db.exists():
            try:
                s = Store(db)
                stored = s._query("SELECT count(*) FROM traces")[0][0]
                s.close()
            except Exception:
                continue
            if stored >= 100:
                break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 100 <= stored < 600, stored

    resumed = _resume_exp(db, data_path).run("to-resume", resume=True, quiet=True)
    reference = _resume_exp(tmp_path / "ref.db", data_path).run("reference", quiet=True)

    s = Store(db)
    rows = s.experiment_rows(resumed.experiment_uuid)
    keys = [(r["metadata"]["row_id"], r["metadata"]["trial"]) for r in rows]
    assert len(keys) == len(set(keys)) == 600  # every row-trial exactly once
    assert s.get_experiment(resumed.experiment_uuid)["status"] == "completed"
    s.close()
    assert resumed.status == "completed" and resumed.resumed_rows >= 1
    a, b = resumed.scores["exact_match"], reference.scores["exact_match"]
    assert (a.mean, a.std, a.n, a.n_errors, a.n_total, a.ci_low, a.ci_high) == (
        b.mean, b.std, b.n, b.n_errors, b.n_total, b.ci_low, b.ci_high
    )


def test_resume_reruns_errored_rows_unless_keep_errors(door: Door) -> None:
    calls: list[int] = []
    fail = {"on": True}

    def fn(x: int) -> int:
        calls.append(x)
        if fail["on"] and x == 2:
            raise RuntimeError("transient")
        return x

    data = [{"x": i} for i in range(5)]
    first = Experiment(name="r", data=data, func=fn, **door.kwargs()).run("run-1", quiet=True)
    assert first.n_errors == 1
    kept = Experiment(name="r", data=data, func=fn, **door.kwargs()).run(
        "run-1", resume=True, keep_errors=True, quiet=True
    )
    assert calls.count(2) == 1 and kept.n_errors == 1 and kept.n_total == 5
    fail["on"] = False
    again = Experiment(name="r", data=data, func=fn, **door.kwargs()).run("run-1", resume=True, quiet=True)
    assert calls.count(2) == 2 and calls.count(0) == 1
    assert again.n_errors == 0 and again.n_total == 5
    rows = door.store.experiment_rows(again.experiment_uuid)
    assert len(rows) == 5 and all(r["status"] == "success" and "error" not in r for r in rows)


def test_resume_is_keyed_by_row_id_so_a_reordered_file_resumes(tmp_path: Path) -> None:
    calls: list[int] = []

    def fn(x: int) -> int:
        calls.append(x)
        return x

    data = [{"x": i} for i in range(6)]
    Experiment(name="o", data=data[:3], func=fn, db="o.db").run("run-1", quiet=True)
    result = Experiment(name="o", data=list(reversed(data)), func=fn, db="o.db").run("run-1", resume=True, quiet=True)
    assert sorted(calls) == [0, 1, 2, 3, 4, 5] and result.n_total == 6


def test_resume_detects_a_changed_dataset(tmp_path: Path) -> None:
    Experiment(name="c", data=[{"id": 1, "x": 1}, {"id": 2, "x": 2}], func=lambda id, x: x, db="c.db").run(
        "run-1", quiet=True
    )
    with pytest.raises(DatasetError, match=r"changed since it ran: 1 row\(s\) changed \(e.g. row 2\)"):
        Experiment(name="c", data=[{"id": 1, "x": 1}, {"id": 2, "x": 99}], func=lambda id, x: x, db="c.db").run(
            "run-1", resume=True, quiet=True
        )
    with pytest.raises(DatasetError, match="no longer in the data"):
        Experiment(name="c", data=[{"id": 1, "x": 1}], func=lambda id, x: x, db="c.db").run(
            "run-1", resume=True, quiet=True
        )


def test_resume_errors_name_the_problem() -> None:
    exp = Experiment(name="e", data=[{"x": 1}], func=lambda x: x, db="e.db")
    with pytest.raises(ConfigError, match="needs the run name"):
        exp.run(resume=True, quiet=True)
    with pytest.raises(ConfigError, match="no run called 'nope'"):
        exp.run("nope", resume=True, quiet=True)
    Experiment(name="other", data=[{"x": 1}], func=lambda x: x, db="e.db").run("theirs", quiet=True)
    with pytest.raises(ConfigError, match="belongs to experiment 'other'"):
        exp.run("theirs", resume=True, quiet=True)
    with pytest.raises(ConfigError, match="read again"):
        Experiment(name="other", data=iter([{"x": 1}]), func=lambda x: x, db="e.db").run(
            "theirs", resume=True, quiet=True
        )
    with pytest.raises(ConfigError, match="timeout"):
        Experiment(name="e", data=[], func=lambda x: x, timeout=0)
