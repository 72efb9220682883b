"""Finishing a big run reads its roots once (issue 22, W5): its pinned stats and its compact columns
come from one paged read of the run, and the children's roll-up costs nothing when the store holds
no child span. The values are those the per-root stats give (``iter_experiment_stats``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from runner import Experiment, Score, trace
from runner.store import Store, columns
from runner.store.common import pinned_stats


def graded(log: Any) -> list[Score]:
    n = int(str(log.output))
    return [Score("even", float(n % 2 == 0)), Score("third", (n % 3) / 2)]


@trace(eval_funcs=[lambda log: 0.25])
def step(x: int) -> int:
    from runner.pipeline.tracing import current_span

    span = current_span()
    assert span is not None
    span.record_usage(input_tokens=x, output_tokens=1, cost=0.001 * x)
    return x


def plain(x: int) -> int:
    return x


def with_child(x: int) -> int:
    return step(x) if x % 4 == 0 else x


def _root_reads(statements: list[str], uuid: str) -> list[str]:
    """Statements that read the roots of the run ``uuid`` (its rows, not one row, nor its children)."""
    flat = [(s, s.replace(" ", "")) for s in statements]
    return [s for s, f in flat if "FROMtraces" in f and uuid in s and "is_root=1" in f and "is_root=0" not in f
            and "count(*)" not in f]  # counting the roots reads the index, not the rows


def _finish_again(db: Path, uuid: str) -> tuple[list[str], Store]:
    store = Store(db)
    statements: list[str] = []
    conn: sqlite3.Connection = store._conn
    conn.set_trace_callback(statements.append)
    store.finish_experiment(uuid, status="completed", dataset_level_stats=[], return_stats=False)
    conn.set_trace_callback(None)
    return statements, store


@pytest.fixture
def big(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(columns, "MIN_ROWS", 10)


@pytest.mark.usefixtures("big")
def test_finishing_a_big_run_reads_its_roots_once_and_skips_an_empty_roll_up(tmp_path: Path) -> None:
    db = tmp_path / "runner.db"
    r = Experiment(name="once", data=[{"x": i} for i in range(60)], func=plain, evals=[graded], db=db).run(quiet=True)
    statements, store = _finish_again(db, r.experiment_uuid)
    try:
        reads = _root_reads(statements, r.experiment_uuid)
        assert len(reads) == 1, reads  # one page: the stats and the columns from one read
        # no child span anywhere: the roll-up that looks each root up among the children never ran
        assert not [s for s in statements if "FROM traces WHERE root_trace_id IN" in s]
        assert store.run_columns(r.experiment_uuid) is not None
    finally:
        store.close()


@pytest.mark.usefixtures("big")
def test_the_pinned_stats_of_one_read_are_those_of_the_per_root_stats_children_included(tmp_path: Path) -> None:
    db = tmp_path / "runner.db"
    r = Experiment(name="kids", data=[{"x": i} for i in range(40)], func=with_child, evals=[graded], db=db).run(
        quiet=True
    )
    statements, store = _finish_again(db, r.experiment_uuid)
    try:
        expected, n = pinned_stats(store.iter_experiment_stats(r.experiment_uuid))
        row = store._query("SELECT pinned_stats, num_samples FROM experiments WHERE uuid=?", (r.experiment_uuid,))[0]
        stored = orjson.loads(row[0])
        assert row[1] == n == 40
        assert stored == expected  # same names, order and values: scores of the children rolled up
        means = {p["var1"]: p["value"] for p in stored}
        assert means["score"] == 0.25  # the child spans' score reached the roots
        assert means["Input Tokens"] == pytest.approx(sum(range(0, 40, 4)) / 40)
        assert len(_root_reads(statements, r.experiment_uuid)) == 1
    finally:
        store.close()


def test_root_columns_read_in_pages_are_the_columns_read_at_once(tmp_path: Path) -> None:
    db = tmp_path / "runner.db"
    r = Experiment(name="pages", data=[{"x": i} for i in range(25)], func=with_child, evals=[graded], db=db).run(
        quiet=True
    )
    store = Store(db)
    try:
        whole = store.root_columns(r.experiment_uuid)
        for page in (1, 4, 25, 26):
            assert store.root_columns(r.experiment_uuid, page=page) == whole
        assert len(whole) == 25 and len(set(whole.rowid)) == 25
        assert whole.pinned_stats() == pinned_stats(store.iter_experiment_stats(r.experiment_uuid))
    finally:
        store.close()


@pytest.mark.usefixtures("big")
def test_a_run_past_max_rows_keeps_no_document_and_streams_its_stats(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # a million-row run's document held ~1.2 KB a row in the finishing process (W5's peak: 1.5 GB)
    monkeypatch.setattr(columns, "MAX_ROWS", 30)
    db = tmp_path / "runner.db"
    r = Experiment(name="huge", data=[{"x": i} for i in range(40)], func=with_child, evals=[graded], db=db).run(
        quiet=True
    )
    statements, store = _finish_again(db, r.experiment_uuid)
    try:
        # the stats were streamed root by root, not read as columns
        assert not [s for s in statements if "json_extract(data, '$.metadata.score_sources')" in s]
        assert store.run_columns(r.experiment_uuid) is None  # no document: its pages read it live
        (doc,) = store._query("SELECT data FROM run_columns WHERE experiment_uuid=?", (r.experiment_uuid,))[0]
        assert doc == ""
        expected, n = pinned_stats(store.iter_experiment_stats(r.experiment_uuid))
        row = store._query("SELECT pinned_stats, num_samples FROM experiments WHERE uuid=?", (r.experiment_uuid,))[0]
        assert orjson.loads(row[0]) == expected and row[1] == n == 40
        # the same run, one row-trial under the bound, gets its document, with the same stats
        monkeypatch.setattr(columns, "MAX_ROWS", 40)
        store.finish_experiment(r.experiment_uuid, status="completed", dataset_level_stats=[], return_stats=False)
        assert store.run_columns(r.experiment_uuid) is not None
        row = store._query("SELECT pinned_stats FROM experiments WHERE uuid=?", (r.experiment_uuid,))[0]
        assert orjson.loads(row[0]) == expected
    finally:
        store.close()
