"""The Logs page: every trace the server holds, not only the rows of runs.

``GET /logs`` lists root traces (a run's row, a ``wrap_openai`` call, a LangChain chain, an SDK
``@trace``, a bare REST log), newest first, filtered by project, name, status, time range, a
score's range, tags and free text (inputs, output, target, error), sorted and paged on the
server (:meth:`runner.store.Store.list_logs`). A row opens its trace; feedback (``POST
/feedback``), annotations and comments are shown in the table and on the trace.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from runner.errors import NotFoundError
from runner.server.deps import StoreDep
from runner.server.ui.auth import PageOwner
from runner.server.ui.routes import render
from runner.store.logs import COUNT_CAP, LOG_SORTS, SCAN_WINDOW, LogFilter

__all__ = ["LOGS_PER_PAGE", "router"]

#: logs per page: the default, and the most one may ask for
LOGS_PER_PAGE, MAX_LOGS_PER_PAGE = 50, 500
#: the query parameters the page understands (kept in every link it makes)
PARAMS = ("project", "name", "status", "since", "until", "score", "min", "max", "tag", "q", "kind", "sort", "per")

router = APIRouter(include_in_schema=False)


def _number(raw: str, label: str, problems: list[str]) -> float | None:
    if not raw.strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        problems.append(f"{label} needs a number, not {raw!r}: ignored")
        return None
    return value


def _timestamp(raw: str, label: str, problems: list[str]) -> str:
    """An ISO timestamp as the browser's ``datetime-local`` input sends it (or a date)."""
    from runner.server.fill import parse_timestamp

    text = raw.strip()
    if not text:
        return ""
    if parse_timestamp(text) is None:
        problems.append(f"'{label}' needs a date and time such as 2024-05-30T13:48, not {raw!r}: ignored")
        return ""
    return text.replace(" ", "T")


def log_filter(request: Request, project_uuid: str | None) -> tuple[LogFilter, list[str]]:
    """The page's filter from its URL; what could not be understood is named and ignored."""
    p = request.query_params
    problems: list[str] = []
    sort = p.get("sort", "newest")
    if sort not in LOG_SORTS:
        problems.append(f"cannot sort by {sort!r}: showing the newest first")
        sort = "newest"
    status = p.get("status", "")
    if status not in ("", "success", "error"):
        problems.append(f"status is 'success' or 'error', not {status!r}: ignored")
        status = ""
    kind = p.get("kind", "")
    if kind not in ("", "experiment", "loose"):
        kind = ""
    score = p.get("score", "").strip()
    lo, hi = (
        _number(p.get("min", ""), "the score's minimum", problems),
        _number(p.get("max", ""), "the score's maximum", problems),
    )
    if (lo is not None or hi is not None) and not score:
        problems.append("a score range needs the score's name: ignored")

    def whole(name: str, default: int, top: int) -> int:
        try:
            return min(max(int(p.get(name, default)), 1), top)
        except ValueError:
            problems.append(f"{name} must be a whole number")
            return default

    f = LogFilter(
        project_uuid=project_uuid,
        name=p.get("name", "").strip(),
        status=status,
        since=_timestamp(p.get("since", ""), "from", problems),
        until=_timestamp(p.get("until", ""), "until", problems),
        score=score,
        score_min=lo,
        score_max=hi,
        tags=tuple(t.strip() for t in p.get("tag", "").split(",") if t.strip()),
        text=p.get("q", "").strip(),
        kind=kind,
        sort=sort,
        page=whole("page", 1, 10**9),
        per_page=whole("per", LOGS_PER_PAGE, MAX_LOGS_PER_PAGE),
    )
    return f, problems


@router.get("/logs", response_class=HTMLResponse)
def logs_page(request: Request, store: StoreDep, owner: PageOwner) -> HTMLResponse:
    """Every root trace, newest first, filtered, sorted and paged on the server."""
    projects = {p["uuid"]: p["name"] for p in store.list_projects(owner)}
    by_name = {name: uuid for uuid, name in projects.items()}
    problems: list[str] = []
    project = request.query_params.get("project", "")
    project_uuid: str | None = None
    if project:
        project_uuid = by_name.get(project)
        if project_uuid is None:
            problems.append(f"there is no project {project!r}: showing every project")
    f, more = log_filter(request, project_uuid)
    problems.extend(more)
    found = store.list_logs(f, owner)
    runs: dict[str, dict[str, Any] | None] = {}
    for d in found.rows:
        uid = d.get("experiment_uuid")
        if uid and uid not in runs:
            try:
                runs[uid] = store.get_experiment(uid, owner)
            except NotFoundError:
                runs[uid] = None
        if not d.get("status"):
            d["status"] = "error" if d.get("error") else "success"
    pages = None if found.capped else max(1, -(-found.total // f.per_page))
    params = {k: v for k, v in request.query_params.items() if k in PARAMS}
    first = (found.page - 1) * f.per_page + 1 if found.rows else 0
    return render(
        request,
        "logs.html",
        title="Logs",
        found=found,
        filter=f,
        runs=runs,
        projects=projects,
        names=store.log_names(owner),
        problems=problems,
        params=params,
        pages=pages,
        first=first,
        last=first + len(found.rows) - 1 if found.rows else 0,
        cap=COUNT_CAP,
        window=SCAN_WINDOW,
        sorts=list(LOG_SORTS),
        filtered=any(v for k, v in params.items() if k not in ("sort", "per")),
    )
