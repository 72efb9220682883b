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
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from runner.errors import DatasetError, NotFoundError

if TYPE_CHECKING:
    from runner.results.result import Result

__all__ = ["datasets_list_command", "datasets_upload_command", "find_run", "list_command", "show_command"]

#: pinned stats that are not scores
_NOT_SCORES = {"Latency", "Input Tokens", "Output Tokens", "Total Tokens", "Cost"}
#: ``list`` recomputes score intervals from the stored rows of runs up to this size
LIST_CI_MAX_ROWS = 20_000
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
#: the interval a run appends to a dataset-level stat's stored reason (runner.pipeline.run._with_ci)
_CI_IN_REASON = re.compile(r"(?:; )?95% CI \[(?P<lo>[-+0-9.,e]+), (?P<hi>[-+0-9.,e]+)\] \((?P<how>[^()]*)\)$")
#: ``EXPERIMENT`` or ``EXPERIMENT~N``: the newest run of an experiment, or the N-th before it
_BY_EXPERIMENT = re.compile(r"^(?P<name>.+?)(?:~(?P<back>\d+))?$")


class Source(Protocol):
    location: str

    def experiments(self, project: str | None, name: str | None, limit: int | None) -> list[dict[str, Any]]: ...
    def find(self, ref: str, project: str | None) -> dict[str, Any]: ...
    def rows(self, uuid: str) -> list[dict[str, Any]]: ...
    def n_errors(self, uuid: str) -> int | None: ...
    def close(self) -> None: ...


class StoreSource:
    """The embedded SQLite store."""

    def __init__(self, path: Path) -> None:
        from runner.store import Store

        self.location = str(path)
        self.store = Store(path)

    def experiments(self, project: str | None, name: str | None, limit: int | None) -> list[dict[str, Any]]:
        return self.store.list_experiments(project_name=project, experiment_name_filter=name, limit=limit)

    def find(self, ref: str, project: str | None) -> dict[str, Any]:
        return self.store.find_experiment(ref, project_name=project)

    def rows(self, uuid: str) -> list[dict[str, Any]]:
        return self.store.experiment_rows(uuid)

    def n_errors(self, uuid: str) -> int | None:
        return self.store.find_roots(experiment_uuid=uuid, status="error", limit=0)[0]

    def close(self) -> None:
        self.store.close()


class HttpSource:
    """A Parea-compatible server (``POST /experiments``, ``/experiment/{uuid}/trace_logs``)."""

    def __init__(self, base_url: str, api_key: str | None) -> None:
        from runner.backends.datasets import SyncApi

        self.api = SyncApi(base_url, api_key)
        self.location = self.api.base_url

    def experiments(self, project: str | None, name: str | None, limit: int | None) -> list[dict[str, Any]]:
        body = {"project_name": project, "experiment_name_filter": name}
        found: list[dict[str, Any]] = self.api.request("POST", "/experiments", body).json()
        found.sort(key=lambda e: e.get("created_at") or "", reverse=True)
        return found[:limit] if limit is not None else found

    def find(self, ref: str, project: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"project_name": project}
        if _UUID.match(ref):
            body["experiment_uuids"] = [ref]
        else:
            body["run_name_filter"] = ref
        found = [
            e
            for e in self.api.request("POST", "/experiments", body).json()
            if ref in (e.get("uuid"), e.get("run_name"))
        ]
        if not found:
            raise NotFoundError(
                f"no run or experiment called {ref!r} on {self.location}; `python -m runner list` shows them"
            )
        exp: dict[str, Any] = max(found, key=lambda e: e.get("created_at") or "")
        return exp

    def rows(self, uuid: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.api.request(
            "POST", f"/experiment/{quote(uuid, safe='')}/trace_logs", {}
        ).json()
        for row in rows:
            row.pop("children_logs", None)
        return rows

    def n_errors(self, uuid: str) -> int | None:
        return None  # the Parea API lists runs without their error counts

    def close(self) -> None:
        self.api.__exit__()


def find_run(source: Source, ref: str, project: str | None) -> dict[str, Any]:
    """The run ``ref`` names: a run name or an experiment uuid (the newest run of that name), else
    an experiment's name for its newest run, ``NAME~1`` for the one before, ``NAME~2`` ...

    A run name wins over an experiment of the same name; ``~`` is not allowed in run names, so
    ``NAME~N`` is never ambiguous. ``NotFoundError`` when nothing matches."""
    try:
        return source.find(ref, project)
    except NotFoundError as exc:
        m = _BY_EXPERIMENT.match(ref)
        if m is None:  # pragma: no cover - the pattern matches any non-empty text
            raise
        name, back = m["name"], int(m["back"] or 0)
        runs = [e for e in source.experiments(project, name, None) if e.get("name") == name]
        runs.sort(key=lambda e: e.get("created_at") or "", reverse=True)
        if back < len(runs):
            return runs[back]
        if runs:
            oldest = f"{name}~{len(runs) - 1}" if len(runs) > 1 else name
            raise NotFoundError(
                f"{ref!r}: experiment {name!r} has {len(runs)} run(s): {name} is the newest, {oldest} the oldest"
            ) from None
        raise exc from None


def open_source(args: argparse.Namespace) -> Source | None:
    """Where to read: ``--base-url`` > ``--db`` > the environment; ``None`` if no store exists yet."""
    from runner.settings import Settings

    settings = Settings.from_env()
    base_url = args.base_url or (None if args.db else settings.base_url)
    if base_url:
        return HttpSource(base_url, args.api_key or settings.api_key)
    path = Path(args.db) if args.db else settings.db_path
    from runner.store.postgres import is_postgres_url

    if not path.exists() and not is_postgres_url(path):
        return None
    return StoreSource(path)


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
        print(json.dumps(entries, indent=2, default=str))
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
    from runner.settings import Settings

    path = Path(args.db) if args.db else Settings.from_env().db_path
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
        print(json.dumps({**result.to_dict(), "worst_rows": [_row_json(r) for r in worst]}, indent=2, default=str))
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
    from runner.settings import Settings

    return str(Path(args.db) if args.db else Settings.from_env().db_path)


def rebuild_result(exp: dict[str, Any], rows: Sequence[dict[str, Any]], location: str) -> Result:
    """The :class:`Result` of a stored run, from its root rows (as the run computed it)."""
    from runner.results.result import Result, Tally, run_stats
    from runner.scoring import Log, Score

    tally = Tally(keep_logs=False)
    for r in rows:
        meta = r.get("metadata") or {}
        scores = [Score(s["name"], float(s["score"]), s.get("reason")) for s in r.get("scores") or []]
        log = Log(
            inputs=r.get("inputs") or {},
            output=r.get("output"),
            target=r.get("target"),
            status=r.get("status") or "success",
            error=r.get("error"),
            latency=float(r.get("latency") or 0.0),
            trace_id=r.get("trace_id", ""),
            metadata=meta,
            scores=scores,
            score_errors=dict(meta.get("scorer_errors") or {}),
        )
        tally.add(log, str(meta.get("row_id", r.get("trace_id"))), [r])
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
    from runner.backends.datasets import upload_dataset

    path = Path(args.file)
    if not path.is_file():
        raise DatasetError(f"dataset file {path} not found")
    name = args.name or path.stem
    info = upload_dataset(path, name, base_url=args.base_url, api_key=_api_key(args), db=args.db)
    if args.json:
        print(json.dumps(info, default=str))
    else:
        print(f"uploaded {info['num_rows']} rows as dataset {name!r} (id {info['id']}) to {info['location']}")
        print(f'use it with Experiment(..., data="{name}")')
    return 0


def datasets_list_command(args: argparse.Namespace) -> int:
    from runner.backends.datasets import list_datasets

    found = list_datasets(base_url=args.base_url, api_key=_api_key(args), db=args.db)
    if args.json:
        print(json.dumps(found, indent=2, default=str))
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


def _api_key(args: argparse.Namespace) -> str | None:
    from runner.settings import Settings

    key: str | None = args.api_key or Settings.from_env().api_key
    return key


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
    text = v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _last_line(text: str | None) -> str:
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def _parse(ts: str | None) -> dt.datetime | None:
    if not ts:
        return None
    try:
        t = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.timezone.utc)  # naive: UTC, as the store writes


def _date(ts: str | None) -> str:
    t = _parse(ts)
    if t is None:
        return "-"
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.astimezone().strftime("%Y-%m-%d %H:%M")


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
        if (a := _parse(r.get("start_timestamp"))) is not None and (b := _parse(r.get("end_timestamp"))) is not None
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
    a, b = _parse(start), _parse(end)
    return max((b - a).total_seconds(), 0.0) if a is not None and b is not None else 0.0
