"""``list``, ``show`` and ``datasets``: reading what is stored, from the SQLite store or a server.

Reading goes through a small source with the same four questions for both doors (which runs
are there, find one, its rows, how many of them errored); rendering is shared. ``show`` rebuilds
the run's :class:`~runner.results.result.Result` from the stored rows, so its summary is the same table,
computed the same way, as the one printed when the run finished.

Where the intervals come from: they are computed on read, not stored. Parea's experiment record
keeps one number per stat (``pinned_stats``: var1, operation, value), which cannot hold an
interval, and an extra field would be ours alone. The stored rows hold everything an interval
needs, and :func:`~runner.results.stats.summarize_score` is deterministic (seeded, over rows sorted by row
id), so ``show`` and ``list`` recompute exactly the ``0.820 [0.760, 0.870] n=200/200`` the run
printed, through either door, for runs made by any Parea client. ``list`` does this for runs of up
to :data:`LIST_CI_MAX_ROWS` rows and shows the backend's mean for bigger ones (``show`` always
recomputes). Intervals of dataset-level stats need the eval itself, so only the run prints them.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner._json import json_text
from runner.backends.readers import Source, find_run, open_reader
from runner.backends.target import Target, resolve_target
from runner.errors import DatasetError, NotFoundError
from runner.results.stored import parse_timestamp, rebuild_result

if TYPE_CHECKING:
    pass

__all__ = ["datasets_list_command", "datasets_upload_command", "list_command", "show_command"]

#: pinned stats that are not scores
_NOT_SCORES = {"Latency", "Input Tokens", "Output Tokens", "Total Tokens", "Cost"}
#: ``list`` recomputes score intervals from the stored rows of runs up to this size
LIST_CI_MAX_ROWS = 20_000


def open_source(args: argparse.Namespace) -> Source | None:
    """Where to read: ``--base-url`` > ``--db`` > the environment (:func:`resolve_target`);
    ``None`` if no store exists yet."""
    return open_reader(_target(args))


def _target(args: argparse.Namespace) -> Target:
    return resolve_target(base_url=args.base_url, api_key=args.api_key, db=args.db)


# -- list -----------------------------------------------------------------------------------------
def list_command(args: argparse.Namespace) -> int:
    source = open_source(args)
    if source is None:
        _no_store(args)
        return 0
    try:
        runs = source.experiments(args.project, args.name, args.last)
        entries = [_list_entry(e, source.n_errors(e["uuid"]), _summaries(source, e)) for e in runs]
    finally:
        source.close()
    if args.json:
        print(json_text(entries, indent=2))
        return 0
    if not entries:
        print(f"no runs in {source.location}{' matching the filters' if args.project or args.name else ''}")
        return 0
    several_projects = len({e["project_name"] for e in entries}) > 1
    header = ["EXPERIMENT", "RUN", "STATUS", "ROWS", "ERRORS", "SCORES", "DATE"]
    table = [
        [
            e["name"],
            e["run_name"],
            e["status"],
            str(e["rows"]),
            "-" if e["n_errors"] is None else str(e["n_errors"]),
            "  ".join(_score_cell(k, v, e["score_summaries"].get(k)) for k, v in list(e["scores"].items())[:3]) or "-",
            _date(e["created_at"]),
        ]
        for e in entries
    ]
    if several_projects:
        header.insert(0, "PROJECT")
        for row, e in zip(table, entries, strict=True):
            row.insert(0, e["project_name"] or "")
    print(_table(header, table))
    print(f"{len(entries)} run(s) in {source.location}; `python -m runner show RUN` shows one")
    return 0


def _summaries(source: Source, e: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each score's summary (with its interval) from the stored rows; ``{}`` for big runs."""
    if (e.get("num_samples") or 0) > LIST_CI_MAX_ROWS:
        return {}
    result = rebuild_result(e, source.rows(e["uuid"]), source.location)
    return {name: s.to_dict() for name, s in result.scores.items()}


def _score_cell(name: str, mean: Any, summary: dict[str, Any] | None) -> str:
    if summary is None or summary["ci_low"] is None:
        return f"{name}={_num(mean)}"
    return f"{name}={_num(summary['mean'])} [{_num(summary['ci_low'])}, {_num(summary['ci_high'])}]"


def _list_entry(e: dict[str, Any], n_errors: int | None, summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    pinned = e.get("pinned_stats") or []
    scores = {p["var1"]: p["value"] for p in pinned if p.get("var1") not in _NOT_SCORES}
    for name, summary in summaries.items():  # a score without a pinned mean (e.g. run still going)
        scores.setdefault(name, summary["mean"])
    return {
        "uuid": e["uuid"],
        "name": e["name"],
        "run_name": e.get("run_name"),
        "project_name": e.get("project_name"),
        "status": e.get("status"),
        "rows": e.get("num_samples") or 0,
        "n_errors": n_errors,
        "scores": scores,
        "score_summaries": summaries,
        "created_at": e.get("created_at"),
    }


def _no_store(args: argparse.Namespace) -> None:
    path = _target(args).db
    print(
        f"no runs yet: {path} does not exist. Run an experiment first, e.g. python -m runner experiments/sentiment.py"
    )


# -- show -----------------------------------------------------------------------------------------
def show_command(args: argparse.Namespace) -> int:
    source = open_source(args)
    if source is None:
        raise NotFoundError(f"no run called {args.ref!r}: there is no store yet (looked for {_db_hint(args)})")
    try:
        exp = find_run(source, args.ref, args.project)
        rows = source.rows(exp["uuid"])
        result = rebuild_result(exp, rows, source.location)
    finally:
        source.close()
    worst = worst_rows(rows, args.rows)
    if args.json:
        print(json_text({**result.to_dict(), "worst_rows": [_row_json(r) for r in worst]}, indent=2))
        return 0
    print(result.summary_text())
    meta = exp.get("metadata") or {}
    if meta:
        print("  metadata: " + ", ".join(f"{k}={v}" for k, v in meta.items()))
    print(f"  started {_date(exp.get('created_at'))} in project {result.project_name}")
    if worst:
        print(f"\nworst {len(worst)} of {len(rows)} rows (errors first, then lowest mean score):")
        for r in worst:
            print(_row_text(r))
    return 0


def _db_hint(args: argparse.Namespace) -> str:
    return _target(args).location


def worst_rows(rows: Sequence[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Errored rows first, then by their mean score, lowest first; rows without scores last."""

    def key(r: dict[str, Any]) -> tuple[int, float]:
        if r.get("status") == "error":
            return (0, 0.0)
        values = [float(s["score"]) for s in r.get("scores") or []]
        return (1, sum(values) / len(values)) if values else (2, 0.0)

    return sorted(rows, key=key)[: max(n, 0)]


def _row_text(r: dict[str, Any]) -> str:
    meta = r.get("metadata") or {}
    trial = f" trial {meta['trial']}" if meta.get("trial") else ""
    scores = "  ".join(f"{s['name']}={_num(s['score'])}" for s in r.get("scores") or [])
    lines = [f"  - row {meta.get('row_id', '?')}{trial}: {r.get('status')}" + (f"  {scores}" if scores else "")]
    for k, v in (r.get("inputs") or {}).items():
        if k == "id" and str(v) == str(meta.get("row_id")):
            continue
        lines.append(f"      {k}: {_short(v)}")
    if r.get("status") == "error":
        lines.append(f"      error: {_short(_last_line(r.get('error')))}")
    else:
        lines.append(f"      output: {_short(r.get('output'))}")
    if r.get("target") is not None:
        lines.append(f"      target: {_short(r.get('target'))}")
    return "\n".join(lines)


def _row_json(r: dict[str, Any]) -> dict[str, Any]:
    keys = ("trace_id", "inputs", "output", "target", "status", "error", "scores", "latency")
    return {"row_id": (r.get("metadata") or {}).get("row_id"), **{k: r.get(k) for k in keys}}


# -- datasets -------------------------------------------------------------------------------------
def datasets_upload_command(args: argparse.Namespace) -> int:
    from runner.cli.datasets import upload_dataset

    path = Path(args.file)
    if not path.is_file():
        raise DatasetError(f"dataset file {path} not found")
    name = args.name or path.stem
    info = upload_dataset(path, name, base_url=args.base_url, api_key=args.api_key, db=args.db)
    if args.json:
        print(json_text(info))
    else:
        print(f"uploaded {info['num_rows']} rows as dataset {name!r} (id {info['id']}) to {info['location']}")
        print(f'use it with Experiment(..., data="{name}")')
    return 0


def datasets_list_command(args: argparse.Namespace) -> int:
    from runner.cli.datasets import list_datasets

    found = list_datasets(base_url=args.base_url, api_key=args.api_key, db=args.db)
    if args.json:
        print(json_text(found, indent=2))
        return 0
    if not found:
        print("no datasets yet; upload one with: python -m runner datasets upload FILE --name NAME")
        return 0
    table = [
        [
            str(d["id"]),
            d["name"],
            str(d.get("num_rows", "")),
            ", ".join(d.get("column_names") or []),
            _date(d.get("last_updated_at")),
        ]
        for d in found
    ]
    print(_table(["ID", "NAME", "ROWS", "COLUMNS", "UPDATED"], table))
    return 0


# -- formatting -----------------------------------------------------------------------------------
def _table(header: list[str], rows: list[list[str]], max_width: int = 40) -> str:
    """Aligned columns; cells past ``max_width`` are cut, except in the SCORES column."""
    keep = {i for i, h in enumerate(header) if h == "SCORES"}
    cells = [
        [c if len(c) <= max_width or i in keep else c[: max_width - 1] + "…" for i, c in enumerate(row)]
        for row in [header, *rows]
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def _num(v: Any) -> str:
    from runner.results.format import num

    return num(None if v is None else float(v))


def _short(v: Any, width: int = 100) -> str:
    text = v if isinstance(v, str) else json_text(v, ascii_only=False)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _last_line(text: str | None) -> str:
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def _date(ts: str | None) -> str:
    t = parse_timestamp(ts)
    if t is None:
        return "-"
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.astimezone().strftime("%Y-%m-%d %H:%M")
