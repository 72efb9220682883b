"""Two runs side by side: :func:`runner.compare.compare_rows` plus what the page draws from it.

The comparison pairs the runs' rows on their compact columns (the run views' :class:`CompactRun`:
row id, trial, status, scores, usage; stored with a finished run, so nothing is scanned), given
to :func:`~runner.compare.compare_rows` as minimal logs: the same code as ``python -m runner
compare`` computes the same numbers. Only the rows that changed most, which the page shows with
their inputs and outputs, are then read in full. A comparison is kept per pair of run versions:
the second view of it costs nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.compare import Comparison, RowChange, _output, compare_rows

if TYPE_CHECKING:
    from collections.abc import Mapping

    from runner.server.ui.runs import RunView
    from runner.store import Store
    from runner.store.columns import CompactRun

__all__ = ["PairView", "build_pair", "logs_of"]

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


def logs_of(columns: CompactRun) -> list[dict[str, Any]]:
    """The run's root logs as far as a comparison reads them (row id, trial, row hash, status,
    scores, latency, tokens, cost), in logging order; ``rowid`` locates the full log."""
    names = list(columns.scores)
    values = [columns.scores[n].tolist() for n in names]
    statuses = columns.statuses
    out = []
    for rowid, key, trial, row_hash, code, latency, tokens, cost, *row in zip(
        columns.rowid.tolist(),
        columns.pair_key,
        columns.trial,
        columns.row_hash,
        columns.status_code.tolist(),
        columns.latency.tolist(),
        columns.total_tokens.tolist(),
        columns.cost.tolist(),
        *values,
        strict=True,
    ):
        meta: dict[str, Any] = {"row_id": key}
        if trial is not None:
            meta["trial"] = trial
        if row_hash is not None:
            meta["row_hash"] = row_hash
        out.append(
            {
                "rowid": rowid,
                "metadata": meta,
                "status": statuses[code],
                # NaN (no value) is the one value unequal to itself
                "scores": [{"name": n, "score": v} for n, v in zip(names, row, strict=True) if v == v],
                "latency": latency,
                "total_tokens": tokens,
                "cost": cost,
            }
        )
    return out


def _first_trials(rows: Sequence[Mapping[str, Any]], wanted: set[str]) -> dict[str, int]:
    """row id -> rowid of its first trial, for the rows ``wanted`` (the one compare_rows shows)."""
    first: dict[str, tuple[Any, int]] = {}
    for r in rows:
        meta = r["metadata"]
        rid = meta["row_id"]
        if rid in wanted and (rid not in first or meta.get("trial", 0) < first[rid][0]):
            first[rid] = (meta.get("trial", 0), r["rowid"])
    return {rid: rowid for rid, (_, rowid) in first.items()}


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


def build_pair(store: Store, a: RunView, b: RunView, owner: str) -> PairView:
    """Compare run ``b`` (the candidate) against run ``a`` (the baseline)."""
    assert a.compact is not None and b.compact is not None, "a RunView is made of its columns"
    rows_a = logs_of(a.compact)
    rows_b = rows_a if b.uuid == a.uuid else logs_of(b.compact)
    label_a, label_b = _labels(a.experiment, b.experiment)
    comparison = compare_rows(rows_a, rows_b, label_a=label_a, label_b=label_b, top=TOP_ROWS)
    shown = {c.row_id for c in (*comparison.regressions, *comparison.improvements)}
    firsts_a, firsts_b = _first_trials(rows_a, shown), _first_trials(rows_b, shown)
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
        shared = [rid for rid in per_a if rid in per_b]
        points[s.name] = ([per_a[r] for r in shared], [per_b[r] for r in shared])
    traces_a = {rid: str(log["trace_id"]) for rid, log in log_a.items() if log is not None}
    traces_b = {rid: str(log["trace_id"]) for rid, log in log_b.items() if log is not None}
    return PairView(a, b, comparison, points, traces_a, traces_b)


def _labels(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[str, str]:
    """Run names, qualified with the experiment's name when the two runs' names are equal."""
    la, lb = str(a.get("run_name") or a["uuid"]), str(b.get("run_name") or b["uuid"])
    if la == lb:
        la, lb = f"{a.get('name')}/{la}", f"{b.get('name')}/{lb}"
    return la, lb
