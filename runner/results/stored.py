"""A stored run read back: its rows as the scorers saw them, and its :class:`Result`, computed
as the run computed it (``show``, ``--baseline``, resume and the web UI all read runs this way).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from runner.results.result import Result, Tally, run_stats
from runner.scoring import Log, Score

__all__ = ["DEAD_GAP", "parse_timestamp", "rebuild_result", "run_seconds", "stored_log"]

#: the interval a run appends to a dataset-level stat's stored reason (runner.pipeline.run._with_ci)
_CI_IN_REASON = re.compile(r"(?:; )?95% CI \[(?P<lo>[-+0-9.,e]+), (?P<hi>[-+0-9.,e]+)\] \((?P<how>[^()]*)\)$")


def stored_log(r: Mapping[str, Any], target: Any, *, parse_output: bool = True) -> Log:
    """The scorer's view of a stored root log (``target``: the row's target, as the data has it).

    ``parse_output=False`` keeps a JSON output as its stored text: a summary never reads it."""
    meta = r.get("metadata") or {}
    output = r.get("output")
    if parse_output and meta.get("output_is_json") and isinstance(output, str):
        with contextlib.suppress(ValueError):
            output = json.loads(output)
    return Log(
        inputs=r.get("inputs") or {},
        output=output,
        target=target,
        status=r.get("status") or "success",
        error=r.get("error"),
        latency=float(r.get("latency") or 0.0),
        trace_id=r.get("trace_id", ""),
        metadata=meta,
        scores=[Score(s["name"], float(s["score"]), s.get("reason")) for s in r.get("scores") or []],
        score_errors=dict(meta.get("scorer_errors") or {}),
    )


def rebuild_result(exp: dict[str, Any], rows: Sequence[dict[str, Any]], location: str) -> Result:
    """The :class:`Result` of a stored run, from its root rows (as the run computed it)."""
    tally = Tally(keep_logs=False)
    for r in rows:
        meta = r.get("metadata") or {}
        tally.add(stored_log(r, r.get("target"), parse_output=False), str(meta.get("row_id", r.get("trace_id"))), [r])
    dls = exp.get("dataset_level_stats")
    if dls is None:  # a Parea server: dataset-level stats are the pinned "custom" ones
        dls = [
            {"name": p["var1"], "score": p["value"]}
            for p in exp.get("pinned_stats") or []
            if p.get("operation") == "custom"
        ]
    details: dict[str, Score] = {}
    cis: dict[str, tuple[float | None, float | None]] = {}
    for d in dls:  # the run stored each stat's interval at the end of its reason: show it as the run did
        reason = d.get("reason")
        m = _CI_IN_REASON.search(reason or "")
        if m is not None and reason is not None:
            cis[d["name"]] = (float(m["lo"].replace(",", "")), float(m["hi"].replace(",", "")))
            reason = reason[: m.start()] or None
        details[d["name"]] = Score(d["name"], float(d["score"]), reason)
    return Result(
        name=exp["name"],
        experiment_uuid=exp["uuid"],
        run_name=exp.get("run_name") or "",
        project_name=exp.get("project_name") or "",
        status=exp.get("status") or "",
        scores=tally.summaries(),
        dataset_level_stats={k: v.score for k, v in details.items()},
        stats=run_stats(tally),
        n_total=tally.n_total,
        n_errors=tally.n_errors,
        location=location,
        duration=run_seconds(rows, exp),
        dataset_level_details=details,
        # the failures the run stored with it (a Parea server without the extension has none);
        # the rows' own scorer errors first, as the run computed them
        dataset_level_errors=dict(exp.get("dataset_level_errors") or {}),
        scorer_errors={**(exp.get("scorer_errors") or {}), **tally.scorer_failure_examples},
        scorer_scores={k: sorted(v) for k, v in tally.produces.items() if k in tally.scorer_failure_examples},
        dataset_level_ci=cis,
    )


def parse_timestamp(ts: str | None) -> dt.datetime | None:
    """A stored timestamp as an aware datetime (naive ones are UTC); ``None`` if absent or unreadable."""
    if not ts:
        return None
    try:
        t = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.timezone.utc)  # naive: UTC, as the store writes


#: a pause longer than this with no row running is time the run was not running (killed, resumed later)
DEAD_GAP = 1.0


def run_seconds(rows: Sequence[dict[str, Any]], exp: dict[str, Any]) -> float:
    """How long a run was running rows: from its first row's start to its last row's end, less
    the pauses of more than :data:`DEAD_GAP` seconds in which no row ran.

    The run's own time, whatever happened around it: a run killed before it finished, synced
    over HTTP hours later, or resumed after a pause counts only its sessions (a live run's
    summary measures the same span: the rows, not the start-up or the dataset-level stats).
    Without row timestamps: created to finished."""
    spans = sorted(
        (a, b)
        for r in rows
        if (a := parse_timestamp(r.get("start_timestamp"))) is not None
        and (b := parse_timestamp(r.get("end_timestamp"))) is not None
    )
    if not spans:
        return _seconds_between(exp.get("created_at"), exp.get("finished_at"))
    total = 0.0
    start, end = spans[0]
    for a, b in spans[1:]:
        if (a - end).total_seconds() > DEAD_GAP:
            total += (end - start).total_seconds()
            start, end = a, b
        else:
            end = max(end, b)
    return total + (end - start).total_seconds()


def _seconds_between(start: str | None, end: str | None) -> float:
    a, b = parse_timestamp(start), parse_timestamp(end)
    return max((b - a).total_seconds(), 0.0) if a is not None and b is not None else 0.0
