"""Two runs side by side: :func:`runner.results.compare.compare_rows` plus what the page draws from it.

The comparison pairs the runs' rows as :func:`runner.results.compare.compare_rows` does (the same code,
so the same numbers as ``python -m runner compare``), on what :func:`~runner.results.compare.run_rows`
reads of each run: stored with a big finished run's compact columns (one read, nothing scanned),
else made from the run view's columns (:func:`runner.store.columns.logs_of`). Only the rows that
changed most, which the page shows with their inputs and outputs, are then read in full. A
comparison is kept per pair of run versions: the second view of it costs nothing.
"""

from __future__ import annotations

import dataclasses
import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.results.compare import Comparison, RowChange, RunRows, _output, compare_runs, run_rows
from runner.store.columns import logs_of

if TYPE_CHECKING:
    from collections.abc import Mapping

    from runner.server.ui.runs import RunView
    from runner.store import Store

__all__ = ["PairView", "build_pair"]

#: rows that regressed (and improved) most, listed on the page
TOP_ROWS = 10


@dataclass
class PairView:
    """A comparison of run B against run A, with the per-row points of its scatter plots."""

    a: RunView
    b: RunView
    comparison: Comparison
    #: score name -> (A's value, B's value) per row scored in both, trials averaged
    points: dict[str, tuple[list[float], list[float]]]
    #: row id -> trace id of the row's first trial, per run, for the rows listed (to open them)
    traces_a: dict[str, str]
    traces_b: dict[str, str]


def _with_logs(change: RowChange, a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> RowChange:
    """``change`` with the inputs and outputs of the rows' full logs (as compare_rows reads them)."""
    if a is None or b is None:  # rewritten since the columns were read: shown without them
        return change
    return dataclasses.replace(
        change,
        inputs=dict(a.get("inputs") or {}),
        output_a=_output(a),
        output_b=_output(b),
        status_a=str(a.get("status") or "success"),
        status_b=str(b.get("status") or "success"),
    )


_gc_lock = threading.Lock()
#: [comparisons under way, whether the collector was on when the first began]
_gc_state: list[Any] = [0, False]


@contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused while a comparison builds its few hundred thousand
    small dicts and lists (none in a cycle: reference counting frees them). Its passes over the
    growing heap otherwise take about half the time of comparing two 100,000-row runs. Concurrent
    comparisons share one pause; the last to end puts the collector back as the first found it."""
    with _gc_lock:
        if _gc_state[0] == 0:
            _gc_state[1] = gc.isenabled()
            gc.disable()
        _gc_state[0] += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_state[0] -= 1
            if _gc_state[0] == 0 and _gc_state[1]:
                gc.enable()


def _run_rows(store: Store, view: RunView, owner: str) -> RunRows:
    """The run as a comparison reads it: stored with its columns, else from them."""
    assert view.compact is not None, "a RunView is made of its columns"
    if view.compact.generation:
        stored = store.run_pairing(view.uuid, view.compact.generation, owner)
        if stored is not None:
            return stored
    return run_rows(logs_of(view.compact))


def build_pair(store: Store, a: RunView, b: RunView, owner: str) -> PairView:
    """Compare run ``b`` (the candidate) against run ``a`` (the baseline)."""
    with _gc_paused():
        return _build_pair(store, a, b, owner)


def _build_pair(store: Store, a: RunView, b: RunView, owner: str) -> PairView:
    rows_a = _run_rows(store, a, owner)
    rows_b = rows_a if b.uuid == a.uuid else _run_rows(store, b, owner)
    label_a, label_b = _labels(a.experiment, b.experiment)
    comparison = compare_runs(rows_a, rows_b, label_a=label_a, label_b=label_b, top=TOP_ROWS)
    shown = {c.row_id for c in (*comparison.regressions, *comparison.improvements)}
    firsts_a = {rid: int(rows_a.first[rid]["rowid"]) for rid in shown if rid in rows_a.first}
    firsts_b = {rid: int(rows_b.first[rid]["rowid"]) for rid in shown if rid in rows_b.first}
    full_a = store.roots_by_rowid(a.uuid, list(firsts_a.values()), owner)
    full_b = full_a if b.uuid == a.uuid else store.roots_by_rowid(b.uuid, list(firsts_b.values()), owner)
    log_a = {rid: full_a.get(rowid) for rid, rowid in firsts_a.items()}
    log_b = {rid: full_b.get(rowid) for rid, rowid in firsts_b.items()}
    comparison.regressions = [_with_logs(c, log_a.get(c.row_id), log_b.get(c.row_id)) for c in comparison.regressions]
    comparison.improvements = [
        _with_logs(c, log_a.get(c.row_id), log_b.get(c.row_id)) for c in comparison.improvements
    ]
    points: dict[str, tuple[list[float], list[float]]] = {}
    for s in comparison.scores:
        per_a, per_b = comparison.per_row_a.get(s.name, {}), comparison.per_row_b.get(s.name, {})
        shared = list(filter(per_b.__contains__, per_a))  # C loops: 100,000 rows
        points[s.name] = (list(map(per_a.__getitem__, shared)), list(map(per_b.__getitem__, shared)))
    traces_a = {rid: str(log["trace_id"]) for rid, log in log_a.items() if log is not None}
    traces_b = {rid: str(log["trace_id"]) for rid, log in log_b.items() if log is not None}
    return PairView(a, b, comparison, points, traces_a, traces_b)


def _labels(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[str, str]:
    """Run names, qualified with the experiment's name when the two runs' names are equal."""
    la, lb = str(a.get("run_name") or a["uuid"]), str(b.get("run_name") or b["uuid"])
    if la == lb:
        la, lb = f"{a.get('name')}/{la}", f"{b.get('name')}/{lb}"
    return la, lb
