"""Big runs open at once (issue 20): the run and compare pages read the compact columns a finished
run stores (``runner/store/columns.py``) instead of scanning its rows, and still show exactly the
numbers of the API, ``show`` and ``compare``, also after a late write to a finished run.

The runs are made by the runner itself, through a real server (the first test, on SQLite and on
PostgreSQL) or into the SQLite file the server then serves; ``show`` and ``compare`` are the CLI,
run in a subprocess against the server's API.
"""

from __future__ import annotations

import gc
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner import Experiment, Score
from runner.results.format import num, signed
from runner.store import Store, columns
from tests.servers import ServerHandle, start_server
from tests.test_ui import text

ROOT = Path(__file__).resolve().parent.parent
ROWS = [{"id": f"r{i:02d}", "question": f"question {i} on topic {i % 5}", "target": f"answer {i}"} for i in range(40)]


def answer_a(question: str, id: str) -> str:
    if id.endswith("7"):
        raise RuntimeError("the model timed out")
    return question[::-1]


def answer_b(question: str, id: str) -> str:
    return question.upper() if int(id[1:]) % 3 else question[::-1]


def scores(log: Any) -> list[Score]:
    h = sum(map(ord, str(log.output))) * 2654435761 % 2**32
    return [Score("accuracy", float(h % 2)), Score("similarity", (h % 1000) / 1000)]


def make_runs(**where: Any) -> dict[str, str]:
    """Runs A and B of the same rows, made by the runner (``where``: ``base_url=`` or ``db=``)."""
    out = {}
    for label, func in (("a", answer_a), ("b", answer_b)):
        result = Experiment(name="big", data=ROWS, func=func, evals=[scores], project_name="ui", **where).run(
            run_name=f"run-{label}", quiet=True
        )
        out[label] = result.experiment_uuid
    return out


def cli(base_url: str, *args: str) -> Any:
    """A ``python -m runner`` command against the server's API, its ``--json`` output parsed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAREA_", "RUNNER_"))}
    done = subprocess.run(
        [sys.executable, "-m", "runner", *args, "--base-url", base_url, "--project", "ui", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def page_scores(web: httpx.Client, uuid: str) -> dict[str, str]:
    """Each score card of the run page, as text."""
    page = web.get(f"/runs/{uuid}")
    assert page.status_code == 200, page.text
    names = re.findall(r'data-score="([^"]+)">', page.text)
    return {n: text(page.text.split(f'data-score="{n}">', 1)[1].split("</div>", 1)[0]) for n in names}


def compare_rows_text(web: httpx.Client, a: str, b: str) -> dict[str, str]:
    """Each score's row of the compare page, as text."""
    page = web.get("/compare", params={"a": a, "b": b})
    assert page.status_code == 200, page.text
    names = re.findall(r'<tr data-score="([^"]+)">', page.text)
    return {n: text(page.text.split(f'<tr data-score="{n}">', 1)[1].split("</tr>", 1)[0]) for n in names}


def assert_pages_agree(server: ServerHandle, web: httpx.Client, runs: dict[str, str]) -> tuple[Any, ...]:
    """The run pages and the compare page show what the API, ``show`` and ``compare`` say."""
    shown = {}
    for label, uuid in runs.items():
        summary = cli(server.base_url, "show", uuid)
        cards = page_scores(web, uuid)
        assert set(cards) == set(summary["scores"]) == {"accuracy", "similarity"}
        listed = httpx.post(server.base_url + "/experiments", json={"experiment_uuids": [uuid]}).json()
        pinned = {p["var1"]: p["value"] for p in listed[0]["pinned_stats"] if p["operation"] == "mean"}
        for name, s in summary["scores"].items():
            assert f"{num(s['mean'])} [{num(s['ci_low'])}, {num(s['ci_high'])}]" in cards[name]
            assert f"n = {s['n']} scored of {s['n_total']}" in cards[name]
            # one trial per row: show's mean over rows is the backend's pinned mean of the score
            assert s["mean"] == pytest.approx(pinned[name])
        assert listed[0]["num_samples"] == summary["n_total"] == len(ROWS)
        shown[label] = (cards, summary["scores"])
    expected = cli(server.base_url, "compare", runs["a"], runs["b"])
    rows = compare_rows_text(web, runs["a"], runs["b"])
    assert set(rows) == {s["name"] for s in expected["scores"]}
    for s in expected["scores"]:
        row = rows[s["name"]]
        assert f"{signed(s['diff'])} [{signed(s['diff_ci_low'])}, {signed(s['diff_ci_high'])}]" in row
        assert f"{s['wins']} / {s['ties']} / {s['losses']}" in row
    return shown["a"], shown["b"], rows


@pytest.fixture
def big(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs of these tests' size count as big: they store their columns when they finish."""
    monkeypatch.setattr(columns, "MIN_ROWS", 10)


@pytest.mark.usefixtures("big")
def test_pages_show_the_numbers_of_the_api_show_and_compare_before_and_after_a_late_score(db: str | Path) -> None:
    with start_server(db) as server, httpx.Client(base_url=server.url, timeout=60) as web:
        runs = make_runs(base_url=server.base_url)
        store = server.store
        assert store is not None
        assert store.columns_generation(runs["b"]) is not None  # stored when the run finished
        assert store.run_columns(runs["b"]) is not None
        _, (cards_b, summary_b), rows = assert_pages_agree(server, web, runs)
        # a late score: PUT /trace_log on a row of the finished run B flips its accuracy
        row = next(r for r in store.experiment_rows(runs["b"]) if r["status"] == "success")
        old = {s["name"]: s["score"] for s in row["scores"]}
        late = [{"name": "accuracy", "score": 1.0 - old["accuracy"]}, {"name": "similarity", "score": 0.0}]
        put = httpx.put(
            server.base_url + "/trace_log",
            json={"trace_id": row["trace_id"], "field_name_to_value_map": {"scores": late}},
        )
        assert put.status_code == 200, put.text
        _, (cards_after, summary_after), rows_after = assert_pages_agree(server, web, runs)
        assert summary_after["accuracy"]["mean"] != summary_b["accuracy"]["mean"]
        assert cards_after["accuracy"] != cards_b["accuracy"] and rows_after["accuracy"] != rows["accuracy"]


# -- the compact columns are what the pages read ------------------------------------------------
def _scans(statements: list[str]) -> list[str]:
    """Statements that read every root (or every span) of a run: anything on ``traces`` that is
    not a lookup of given rowids or trace ids, or of a run's highest rowid."""
    out = []
    for sql in statements:
        if "traces" not in sql or "run_columns" in sql:
            continue
        if "json_each" in sql or "max(rowid)" in sql or "trace_id=" in sql.replace(" ", ""):
            continue
        out.append(sql)
    return out


@pytest.fixture
def served(tmp_path: Path, big: None) -> Iterator[tuple[ServerHandle, httpx.Client, dict[str, str], list[str]]]:
    """Two finished runs in a SQLite file, then a server started afresh on it (nothing cached), with
    every statement its store runs recorded."""
    path = tmp_path / "runner.db"
    runs = make_runs(db=path)
    with start_server(path) as server, httpx.Client(base_url=server.url, timeout=60) as web:
        assert server.store is not None
        statements: list[str] = []
        conn: sqlite3.Connection = server.store._conn
        conn.set_trace_callback(statements.append)
        yield server, web, runs, statements


def test_a_finished_run_s_first_view_and_compare_read_its_stored_columns_not_its_rows(served: Any) -> None:
    _, web, runs, statements = served
    cards = page_scores(web, runs["a"])
    assert f"n = 36 scored of {len(ROWS)}" in cards["accuracy"]  # 4 rows (ids ending in 7) raise
    assert any("c.data FROM experiments e LEFT JOIN run_columns" in s for s in statements)  # one document
    assert _scans(statements) == [], "the run page scanned the run"
    statements.clear()
    assert compare_rows_text(web, runs["a"], runs["b"])
    assert _scans(statements) == [], "the compare page scanned a run"
    assert sum("c.pairing FROM experiments" in s for s in statements) == 2  # each run as compare reads it
    assert gc.isenabled()  # paused while comparing (runner/server/ui/pairs.py), back on after
    # only the rows the comparison lists are read in full (one lookup per run)
    full_reads = [s for s in statements if "SELECT rowid, data FROM traces" in s]
    assert 1 <= len(full_reads) <= 2


@pytest.mark.parametrize("size", ["big", "small"])
def test_a_late_upsert_in_place_is_seen_at_once(served: Any, size: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A log posted again with the same trace id (an upsert in place keeps its rowid) after the run
    finished: the views of the run show it on the next request, and match ``show``; whether the run
    is big (its columns stored) or small (read live, :data:`runner.store.columns.MIN_ROWS`)."""
    server, web, runs, _ = served
    if size == "small":
        monkeypatch.setattr(columns, "MIN_ROWS", 1000)
        server.store.finish_experiment(runs["b"])  # finished again: its columns are now an empty document
        assert server.store.columns_generation(runs["b"]) == 2 and server.store.run_columns(runs["b"]) is None
    before = page_scores(web, runs["b"])
    store: Store = server.store
    row = next(r for r in store.experiment_rows(runs["b"]) if r["scores"])
    old = {s["name"]: s["score"] for s in row["scores"]}
    flipped = [{"name": "accuracy", "score": 1.0 - old["accuracy"]}, {"name": "similarity", "score": 1.0}]
    log = {**row, "scores": flipped}
    assert httpx.post(server.base_url + "/trace_log", json=log).status_code == 200
    after = page_scores(web, runs["b"])
    assert after != before
    summary = cli(server.base_url, "show", runs["b"])
    for name, s in summary["scores"].items():
        assert f"{num(s['mean'])} [{num(s['ci_low'])}, {num(s['ci_high'])}]" in after[name]


def test_a_run_finished_without_stored_columns_gets_them_on_its_first_view(served: Any) -> None:
    """Runs finished before the columns were stored (an older runner): computed once, then kept."""
    server, web, runs, statements = served
    store: Store = server.store
    with store.transaction() as c:
        c.execute("DELETE FROM run_columns")
    assert store.columns_generation(runs["a"]) is None
    first = page_scores(web, runs["a"])
    assert store.columns_generation(runs["a"]) == 1
    statements.clear()
    with start_server(server.store.path) as again, httpx.Client(base_url=again.url, timeout=60) as web2:
        assert again.store is not None
        seen: list[str] = []
        again.store._conn.set_trace_callback(seen.append)
        assert page_scores(web2, runs["a"]) == first
        assert _scans(seen) == []


@pytest.mark.usefixtures("big")
def test_a_big_run_s_per_row_columns_are_stored_in_binary_and_read_back_exactly(db: str | Path) -> None:
    """The stored document keeps its per-row columns as raw arrays (``run_columns.arrays``; on
    PostgreSQL a ``bytea`` read in binary), so a first view parses no JSON number per row; read
    back by a fresh store they are exactly the columns read live from the rows."""
    import numpy as np

    runs = make_runs(db=db)
    store = Store(db)
    try:
        data, arrays = store._query("SELECT data, arrays FROM run_columns WHERE experiment_uuid=?", (runs["b"],))[0]
        assert isinstance(arrays, bytes) and len(arrays) >= len(ROWS) * (3 * 8 + 2 * 8 + 8 + 3)
        doc = json.loads(data)
        assert not [k for k, v in doc.items() if isinstance(v, list) and len(v) >= len(ROWS)], "per-row JSON"
        stored = store.run_columns(runs["b"])
        live = store.live_columns(runs["b"], store.get_experiment(runs["b"]))
        assert stored is not None and stored.generation >= 1
        for name in ("rowid", "error", "status_code", "latency", "total_tokens", "cost", "scorer_failed"):
            assert np.array_equal(getattr(stored, name), getattr(live, name)), name
        assert list(stored.scores) == list(live.scores) == ["accuracy", "similarity"]
        for name, column in stored.scores.items():
            assert np.array_equal(column, live.scores[name], equal_nan=True)
        for name in ("row_id", "pair_key", "trial", "row_hash", "statuses", "summaries", "latency_stats",
                     "error_keys", "input_tokens", "output_tokens", "cost_total", "run_seconds"):
            assert getattr(stored, name) == getattr(live, name), name
    finally:
        store.close()
