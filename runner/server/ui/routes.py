"""The pages: runs, one run, a trace, a comparison, datasets; and the login form.

Every page is server-rendered HTML (Jinja2, autoescaped: user data is shown as text, never run),
reads through the same store as the API with the caller's tenant, and keeps its state in the
query string, so any view (a sorted, filtered page of rows; a comparison) is a link. Routes are
plain ``def``: FastAPI runs them in its thread pool, so SQLite never blocks the event loop.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from runner.errors import NotFoundError
from runner.server.browser import LoginThrottle, Sessions
from runner.server.deps import StoreDep
from runner.server.ui import charts, values
from runner.server.ui.auth import COOKIE, PageOwner, safe_next
from runner.server.ui.fmt import FILTERS
from runner.server.ui.pairs import PairView, build_pair
from runner.server.ui.runs import LRU, SORT_KEYS, RowQuery, RunCache, RunView, listing
from runner.store.tree_links import MAX_SPANS_LIMIT

__all__ = ["HEADERS", "RUNS_PER_PAGE", "router"]

HERE = Path(__file__).resolve().parent
#: runs listed per page of the runs page
RUNS_PER_PAGE = 50
#: spans of a trace shown at first (``?spans=`` shows more, up to MAX_SPANS_LIMIT)
TRACE_SPANS = 2_000
#: the runs table gives each score its own (sortable) column when the page shows this many or fewer
SCORE_COLUMNS = 4
#: rows per page of the rows table: the default, and the most one may ask for
ROWS_PER_PAGE, MAX_ROWS_PER_PAGE = 50, 500
#: sent with every page: nothing but this server's own files may load or run
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

router = APIRouter(include_in_schema=False)
env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters.update(FILTERS)
env.globals.update(charts=charts, SORT_KEYS=SORT_KEYS)
env.filters["foldable"] = values.foldable
env.globals.update(
    conversation=values.conversation, llm_params=values.llm_params, is_llm=values.is_llm, diff_words=values.diff_words
)


def link(path: str, params: dict[str, Any], **changes: Any) -> str:
    """``path`` with the query ``params`` updated by ``changes`` (``None`` or ``""`` drops one)."""
    merged = {**params, **changes}
    query = urlencode({k: v for k, v in merged.items() if v is not None and v != "" and v is not False})
    return f"{path}?{query}" if query else path


env.globals["link"] = link


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    keys = request.app.state.ui_keys
    html = env.get_template(template).render(request=request, auth=keys.enabled, **context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def not_found(request: Request, message: str) -> HTMLResponse:
    return render(request, "error.html", 404, title="Not found", message=message)


def whole(value: str, default: int = 1) -> int:
    """A page number from the URL; anything else is the default (a page, not a 422)."""
    try:
        return int(value)
    except ValueError:
        return default


def _cache(request: Request) -> RunCache:
    cache: RunCache = request.app.state.ui_runs
    return cache


def _view(request: Request, store: StoreDep, owner: str, experiment: dict[str, Any]) -> RunView:
    return _cache(request).get(store, experiment, owner)


# -- runs ---------------------------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse)
def runs_page(
    request: Request, store: StoreDep, owner: PageOwner, project: str = "", q: str = "", page: str = "1"
) -> HTMLResponse:
    """Every run of every project, newest first, filtered by project and by name."""
    projects = [p["name"] for p in store.list_projects(owner)]
    runs = store.list_experiments(owner, project_name=project or None)
    needle = q.strip().lower()
    if needle:
        runs = [e for e in runs if needle in str(e["name"]).lower() or needle in str(e["run_name"]).lower()]
    pages = max(1, math.ceil(len(runs) / RUNS_PER_PAGE))
    number = min(max(whole(page), 1), pages)
    sort = request.query_params.get("sort", "")
    desc = request.query_params.get("desc") == "1"
    if sort.startswith("score:"):  # by a score's mean over every run listed (runs without it last)
        every = [listing(_cache(request), store, e, owner) for e in runs]
        every.sort(key=lambda v: _mean_key(v, sort[len("score:") :], desc))
        views = every[(number - 1) * RUNS_PER_PAGE : number * RUNS_PER_PAGE]
    else:
        shown = runs[(number - 1) * RUNS_PER_PAGE : number * RUNS_PER_PAGE]
        views = [listing(_cache(request), store, e, owner) for e in shown]
    names: list[str] = []
    for v in views:
        names.extend(n for n in v.scores if n not in names)
    return render(
        request,
        "runs.html",
        title="Runs",
        views=views,
        projects=projects,
        params={"project": project, "q": q, "sort": sort or None, "desc": "1" if desc else None},
        score_columns=names if 0 < len(names) <= SCORE_COLUMNS else [],
        sort=sort,
        desc=desc,
        total=len(runs),
        page=number,
        pages=pages,
    )


def _mean_key(view: Any, name: str, desc: bool) -> tuple[bool, float]:
    mean = view.scores.get(name, (None,))[0]
    if mean is None:
        return (True, 0.0)
    return (False, -mean if desc else mean)


# -- one run ------------------------------------------------------------------------------------
def _row_query(request: Request, view: RunView) -> tuple[RowQuery, list[str]]:
    """The rows table's query from the URL; what could not be understood is named and ignored."""
    p = request.query_params
    problems: list[str] = []
    sort = p.get("sort", "row")
    names = list(view.scores)
    if sort not in SORT_KEYS and not (sort.startswith("score:") and sort[len("score:") :] in names):
        problems.append(f"cannot sort by {sort!r}: showing the rows in logging order")
        sort = "row"
    score = p.get("score") or None
    below: float | None = None
    if p.get("below"):
        try:
            below = float(p["below"])
            if not math.isfinite(below):
                raise ValueError
        except ValueError:
            problems.append(f"'score below' needs a number, not {p['below']!r}")
    if below is not None and score is None and names:
        score = names[0]
    if score is not None and score not in names:
        problems.append(f"this run has no score {score!r}")
        score, below = None, None

    def integer(name: str, default: int, lo: int, hi: int) -> int:
        try:
            return min(max(int(p.get(name, default)), lo), hi)
        except ValueError:
            problems.append(f"{name} must be a whole number")
            return default

    query = RowQuery(
        sort=sort,
        desc=p.get("desc") == "1",
        errors_only=p.get("errors") == "1",
        score=score if below is not None else None,
        below=below,
        search=p.get("q", "").strip(),
        page=integer("page", 1, 1, 10**9),
        per_page=integer("per", ROWS_PER_PAGE, 1, MAX_ROWS_PER_PAGE),
    )
    return query, problems


@router.get("/runs/{uuid}", response_class=HTMLResponse)
def run_page(request: Request, uuid: str, store: StoreDep, owner: PageOwner) -> HTMLResponse:
    """One run: its summary, a histogram per score, and one page of its rows."""
    try:
        experiment = store.get_experiment(uuid, owner)
    except NotFoundError:
        return not_found(request, f"There is no run {uuid} here.")
    view = _view(request, store, owner, experiment)
    query, problems = _row_query(request, view)
    rows = view.page(store, query, owner)
    siblings = [
        e
        for e in store.list_experiments(owner, project_name=experiment["project_name"])
        if e["uuid"] != uuid and e["name"] == experiment["name"]
    ]
    params = {
        k: v for k, v in request.query_params.items() if k in ("sort", "desc", "errors", "score", "below", "q", "per")
    }
    return render(
        request,
        "run.html",
        title=f"{experiment['name']} · {experiment['run_name']}",
        view=view,
        exp=experiment,
        query=query,
        problems=problems,
        rows=rows,
        histograms=view.histograms(),
        siblings=siblings,
        params=params,
        path=f"/runs/{uuid}",
    )


# -- a trace ------------------------------------------------------------------------------------
def _flatten(node: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """The spans of a tree in reading order, with their nesting level (iteratively: any depth)."""
    out: list[tuple[int, dict[str, Any]]] = []
    stack = [(0, node)]
    while stack:
        depth, span = stack.pop()
        out.append((depth, span))
        stack.extend((depth + 1, child) for child in reversed(span.get("children_logs") or []))
    return out


def _offset(start: str | None, origin: str | None) -> float:
    from runner.server.ui.runs import seconds_between

    return seconds_between(origin, start) or 0.0


@router.get("/traces/{trace_id}", response_class=HTMLResponse)
def trace_page(request: Request, trace_id: str, store: StoreDep, owner: PageOwner, partial: str = "") -> HTMLResponse:
    """A row's trace: the span tree, each span's inputs, output, timings, scores, tokens, cost
    and error. ``?partial=1`` sends the tree alone (the run page opens it beside the rows)."""
    limit = min(max(whole(request.query_params.get("spans", ""), TRACE_SPANS), 1), MAX_SPANS_LIMIT)
    try:
        span = store.get_trace_tree(trace_id, owner, max_spans=limit)
        root = span if span["root_trace_id"] == trace_id else store.get_trace_tree(span["root_trace_id"], owner, limit)
    except NotFoundError:
        return not_found(request, f"There is no trace {trace_id} here.")
    experiment = None
    if root.get("experiment_uuid"):
        try:
            experiment = store.get_experiment(root["experiment_uuid"], owner)
        except NotFoundError:
            experiment = None
    spans = _flatten(root)
    if not any(s["trace_id"] == trace_id for _, s in spans):  # cut off from its root (a parent cycle)
        root, spans = span, _flatten(span)
    origin = root.get("start_timestamp")
    total = max([_offset(s.get("end_timestamp"), origin) for _, s in spans] + [float(root.get("latency") or 0)])
    timeline = {
        s["trace_id"]: charts.span_bar(_offset(s.get("start_timestamp"), origin), float(s.get("latency") or 0), total)
        for _, s in spans
    }
    cut = root.get("_spans")
    more = None
    if cut is not None and limit < MAX_SPANS_LIMIT:
        more = link(f"/traces/{trace_id}", {"partial": partial or None}, spans=min(limit * 4, MAX_SPANS_LIMIT))
    context: dict[str, Any] = {
        "cut": cut,
        "more": more,
        "root": root,
        "spans": spans,
        "selected": trace_id,
        "exp": experiment,
        "timeline": timeline,
        "feedback": store.feedback_for([s["trace_id"] for _, s in spans], owner),
    }
    if partial not in ("", "0"):
        return render(request, "trace_fragment.html", **context)
    return render(request, "trace.html", title=f"Trace {root.get('trace_name') or trace_id}", **context)


# -- compare ------------------------------------------------------------------------------------
@router.get("/compare", response_class=HTMLResponse, response_model=None)
def compare_page(
    request: Request, store: StoreDep, owner: PageOwner, a: str = "", b: str = ""
) -> HTMLResponse | RedirectResponse:
    """Run B against run A: per score the difference, its interval and p-value, win/tie/loss,
    a scatter of per-row scores, and the rows that changed most."""
    chosen = request.query_params.getlist("run")
    if chosen:  # from the runs page's checkboxes: the older run is the baseline
        if len(chosen) != 2:
            return render(request, "error.html", 400, title="Compare", message="Select exactly two runs to compare.")
        try:
            pair = sorted((store.get_experiment(u, owner) for u in chosen), key=lambda e: e["created_at"])
        except NotFoundError as exc:
            return not_found(request, str(exc))
        return RedirectResponse(link("/compare", {"a": pair[0]["uuid"], "b": pair[1]["uuid"]}), status_code=303)
    runs = store.list_experiments(owner)
    if not a or not b:
        return render(request, "compare_pick.html", title="Compare", runs=runs, a=a, b=b)
    try:
        exp_a, exp_b = store.get_experiment(a, owner), store.get_experiment(b, owner)
    except NotFoundError as exc:
        return not_found(request, str(exc))
    view_a = _view(request, store, owner, exp_a)
    view_b = _view(request, store, owner, exp_b)
    pairs: LRU[tuple[Any, ...], PairView] = request.app.state.ui_pairs
    key = (owner, a, view_a.version, b, view_b.version)
    pair_view = pairs.get(key)
    if pair_view is None or pair_view.a is not view_a or pair_view.b is not view_b:
        pair_view = build_pair(store, view_a, view_b, owner)
        pairs.put(key, pair_view)
    return render(request, "compare.html", title="Compare", pair=pair_view, runs=runs, a=a, b=b)


# -- datasets -----------------------------------------------------------------------------------
@router.get("/datasets", response_class=HTMLResponse)
def datasets_page(request: Request, store: StoreDep, owner: PageOwner) -> HTMLResponse:
    """The named datasets."""
    return render(request, "datasets.html", title="Datasets", datasets=store.list_datasets(owner))


@router.get("/datasets/{ref}", response_class=HTMLResponse)
def dataset_page(request: Request, ref: str, store: StoreDep, owner: PageOwner, page: str = "1") -> HTMLResponse:
    """One dataset's rows, a page at a time."""
    try:
        meta, total, _ = store.dataset_rows(ref, owner, limit=0)
        pages = max(1, math.ceil(total / ROWS_PER_PAGE))
        number = min(max(whole(page), 1), pages)
        _, _, rows = store.dataset_rows(ref, owner, limit=ROWS_PER_PAGE, offset=(number - 1) * ROWS_PER_PAGE)
    except NotFoundError:
        return not_found(request, f"There is no dataset {ref!r} here.")
    columns = list(meta["column_names"])
    for r in rows:
        columns.extend(k for k in r["inputs"] if k not in columns)
    return render(
        request,
        "dataset.html",
        title=f"Dataset {meta['name']}",
        ds=meta,
        rows=rows,
        columns=columns,
        total=total,
        page=number,
        pages=pages,
        first=(number - 1) * ROWS_PER_PAGE + 1,
    )


# -- login ----------------------------------------------------------------------------------------
_LOGIN_ERRORS = {
    "url": "Keys in links are not accepted (they end up in logs and browser history): enter the key here.",
}


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/", error: str = "") -> HTMLResponse:
    message = _LOGIN_ERRORS.get(error, "That key is not accepted by this server.") if error else None
    status = 401 if error and error not in _LOGIN_ERRORS else 200
    return render(request, "login.html", status, title="Log in", next=safe_next(next), error=message)


@router.post("/login", response_model=None)
async def login(request: Request) -> Response:
    """Check the key from the form (a same-origin post: see :mod:`runner.server.browser`);
    keep a signed session naming its tenant in an HttpOnly cookie, and go where the user was.
    Wrong keys from one address are throttled (429 with ``Retry-After``)."""
    throttle: LoginThrottle = request.app.state.ui_throttle
    address = request.client.host if request.client else ""
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    key = (form.get("key") or [""])[0].strip()
    target = safe_next((form.get("next") or ["/"])[0])
    wait = throttle.wait(address)
    if wait > 0:
        response = render(
            request, "login.html", 429, title="Log in", next=target,
            error=f"Too many wrong keys: wait {math.ceil(wait)} s before the next try.",
        )
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    owner = request.app.state.ui_keys.owner_for(key)
    if owner is None:
        throttle.failed(address)
        return render(
            request, "login.html", 401, title="Log in", next=target, error="That key is not accepted by this server."
        )
    sessions: Sessions = request.app.state.ui_sessions
    redirect = RedirectResponse(target, status_code=303)
    redirect.set_cookie(
        COOKIE, sessions.issue(owner), max_age=sessions.seconds, httponly=True, samesite="lax",
        secure=request.url.scheme == "https", path="/",
    )
    return redirect


@router.post("/logout")
def logout() -> RedirectResponse:
    """End the session (a same-origin ``POST``: a link or an image elsewhere cannot log you out)."""
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
