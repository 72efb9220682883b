"""Two runs side by side: :func:`runner.results.compare.compare_rows` plus what the page draws from it.

The comparison reads both runs in full (it pairs rows by their row id and needs their inputs
and outputs for the rows that changed most), so it is kept per pair of run versions: the second
view of a comparison costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.results.compare import Comparison, compare_rows, row_key

if TYPE_CHECKING:
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
    #: row id -> trace id of the row's first trial, per run (to open the rows that changed)
    traces_a: dict[str, str]
    traces_b: dict[str, str]


def _per_row(rows: Sequence[Mapping[str, Any]]) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """score name -> row id -> mean over the row's trials; row id -> first trial's trace id."""
    sums: dict[str, dict[str, list[float]]] = {}
    first: dict[str, tuple[int, str]] = {}
    for r in rows:
        rid = row_key(r)
        trial = int((r.get("metadata") or {}).get("trial") or 0)
        if rid not in first or trial < first[rid][0]:
            first[rid] = (trial, str(r["trace_id"]))
        for s in r.get("scores") or []:
            sums.setdefault(s["name"], {}).setdefault(rid, []).append(float(s["score"]))
    means = {name: {rid: sum(v) / len(v) for rid, v in per.items()} for name, per in sums.items()}
    return means, {rid: t for rid, (_, t) in first.items()}


def build_pair(store: Store, a: RunView, b: RunView, owner: str) -> PairView:
    """Compare run ``b`` (the candidate) against run ``a`` (the baseline)."""
    rows_a = store.run_logs(a.uuid, owner)
    rows_b = rows_a if b.uuid == a.uuid else store.run_logs(b.uuid, owner)
    label_a, label_b = _labels(a.experiment, b.experiment)
    comparison = compare_rows(rows_a, rows_b, label_a=label_a, label_b=label_b, top=TOP_ROWS)
    means_a, traces_a = _per_row(rows_a)
    means_b, traces_b = _per_row(rows_b)
    points: dict[str, tuple[list[float], list[float]]] = {}
    for s in comparison.scores:
        per_a, per_b = means_a.get(s.name, {}), means_b.get(s.name, {})
        shared = [rid for rid in per_a if rid in per_b]
        points[s.name] = ([per_a[r] for r in shared], [per_b[r] for r in shared])
    return PairView(a, b, comparison, points, traces_a, traces_b)


def _labels(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[str, str]:
    """Run names, qualified with the experiment's name when the two runs' names are equal."""
    la, lb = str(a.get("run_name") or a["uuid"]), str(b.get("run_name") or b["uuid"])
    if la == lb:
        la, lb = f"{a.get('name')}/{la}", f"{b.get('name')}/{lb}"
    return la, lb
