"""Trace logs: the upsert (one or a batch), updates, trees, paginated reads, and feedback.

A trace log POST is an upsert keyed by ``trace_id`` that merges the fields the client sent into
what is stored, so children may arrive before their parents and retries change nothing. Only
fields the client actually sent are merged (``exclude_unset``): a later partial post never
resets stored values to the schema's defaults.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from runner.errors import NotFoundError
from runner.schema import (
    FeedbackRequestSchema,
    PaginatedResponse,
    QueryParamsPaginationPublic,
    TraceLogSchema,
    TraceLogTreeSchema,
    UpdateLogSchema,
)
from runner.server.deps import OwnerDep, StoreDep, invalid, invalid_from
from runner.server.fill import ProjectNames, fill_logs
from runner.server.ingest import parse_batch, parse_log
from runner.server.routes_experiments import filter_condition
from runner.server.trees import json_response, tree_out
from runner.store import Store
from runner.store.tree_links import MAX_SPANS, MAX_SPANS_LIMIT

__all__ = ["ExperimentCheck", "router"]

router = APIRouter(tags=["trace logs"])

_TIME_RANGES = {
    "1h": _dt.timedelta(hours=1),
    "3h": _dt.timedelta(hours=3),
    "6h": _dt.timedelta(hours=6),
    "24h": _dt.timedelta(hours=24),
    "7d": _dt.timedelta(days=7),
    "1m": _dt.timedelta(days=30),
    "3m": _dt.timedelta(days=91),
    "6m": _dt.timedelta(days=182),
    "1y": _dt.timedelta(days=365),
}
_UPDATABLE = frozenset(TraceLogSchema.model_fields) - {"trace_id"}


class ExperimentCheck:
    """Remembers which experiments each owner may log to, so a batch costs no extra query.

    A log naming an unknown experiment, or another tenant's, is refused (404): it would otherwise be counted
    in that experiment's stats."""

    def __init__(self) -> None:
        self._known: set[tuple[str, str]] = set()

    def check(self, store: Store, owner: str, logs: Iterable[Mapping[str, Any]]) -> None:
        for uid in {log["experiment_uuid"] for log in logs if log.get("experiment_uuid") is not None}:
            if (owner, uid) not in self._known:
                store.get_experiment(uid, owner)  # NotFoundError -> 404
                if len(self._known) > 100_000:
                    self._known.clear()
                self._known.add((owner, uid))


def _checker(request: Request) -> ExperimentCheck:
    checker: ExperimentCheck = request.app.state.experiment_check  # set by create_app
    return checker


def _body_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_LOG_REF = {"$ref": "#/components/schemas/TraceLogSchema"}  # added to the components by create_app


def _project_names(request: Request) -> ProjectNames:
    state = request.app.state
    if not hasattr(state, "project_names"):
        state.project_names = ProjectNames()
    names: ProjectNames = state.project_names
    return names


async def _ingest(request: Request, store: Store, owner: str, parse: Callable[[bytes], list[dict[str, Any]]]) -> int:
    """Validate the body straight from bytes into dicts (``runner.server.ingest``), fill in what the
    client left out (``runner.server.fill``) and store it, all on one worker thread: the event loop
    only reads the body."""
    body = await request.body()
    checker = _checker(request)
    names = _project_names(request)

    def ingest() -> int:
        try:
            logs = parse(body)
        except ValidationError as exc:
            raise invalid_from(exc) from None
        checker.check(store, owner, logs)
        fill_logs(store, owner, logs, names)
        return store.upsert_traces(logs, owner)

    return await run_in_threadpool(ingest)


@router.post("/trace_log", openapi_extra=_body_schema(_LOG_REF))
async def record_trace_log(request: Request, store: StoreDep, owner: OwnerDep) -> Response:
    """Upsert one log (``TraceLogSchema``), merged into what is stored under its ``trace_id``."""
    await _ingest(request, store, owner, parse_log)
    return json_response({})


_BATCH_SCHEMA = {
    "type": "object",
    "title": "TraceLogBatchSchema",
    "required": ["logs"],
    "properties": {"logs": {"type": "array", "items": _LOG_REF}},
}


@router.post("/trace_logs/batch", openapi_extra=_body_schema(_BATCH_SCHEMA))
async def record_trace_logs_batch(request: Request, store: StoreDep, owner: OwnerDep) -> dict[str, int]:
    """Extension: upsert many logs in one transaction (``{"logs": [TraceLogSchema, ...]}``)."""
    return {"count": await _ingest(request, store, owner, parse_batch)}


@router.put("/trace_log")
def update_trace_log(request: Request, body: UpdateLogSchema, store: StoreDep, owner: OwnerDep) -> dict[str, Any]:
    """Set fields of an existing log; each value is validated as that field of ``TraceLogSchema``.
    A new ``experiment_uuid`` must be one of the caller's experiments (404 otherwise), as for a POST."""
    fields = body.field_name_to_value_map
    unknown = sorted(set(fields) - _UPDATABLE)
    if unknown:
        raise invalid(
            ("body", "field_name_to_value_map", unknown[0]),
            f"{unknown[0]!r} is not a field of a trace log",
            None,
        )
    try:
        model = TraceLogSchema.model_validate({"trace_id": body.trace_id, "start_timestamp": "", **fields})
    except ValidationError as exc:
        raise invalid_from(exc, ("body", "field_name_to_value_map")) from None
    _checker(request).check(store, owner, [fields])
    store.update_trace(body.trace_id, model.model_dump(include=set(fields)), owner)
    return {}


@router.get("/trace_log/{trace_id}", response_model=TraceLogTreeSchema)
def get_trace_log(
    trace_id: str, store: StoreDep, owner: OwnerDep, max_spans: int = Query(MAX_SPANS, ge=1, le=MAX_SPANS_LIMIT)
) -> Response:
    """The log with its descendants nested in ``children_logs``, scores and costs rolled up.

    At most ``max_spans`` spans of the tree are read (10,000 by default, 100,000 at most), the
    first logged; a tree cut so says ``X-Runner-Spans-Shown`` and ``X-Runner-Spans-Total``."""
    tree = store.get_trace_tree(trace_id, owner, max_spans=max_spans)
    response = json_response(tree_out(tree))
    if "_spans" in tree:  # the root of a tree cut short
        shown, total = tree["_spans"]
        response.headers["X-Runner-Spans-Shown"] = str(shown)
        response.headers["X-Runner-Spans-Total"] = str(total)
    return response


@router.post("/get_trace_logs", response_model=PaginatedResponse[TraceLogTreeSchema])
def get_trace_logs(body: QueryParamsPaginationPublic, store: StoreDep, owner: OwnerDep) -> Response:
    """One page of a project's root traces with their children, newest first.

    With a filter (``filter_field``), the page holds the matching spans at any depth instead,
    each with its own children: ``trace_name LIKE 'llm'`` finds the LLM calls nested under traced
    functions. ``status`` and ``time_range`` apply to the same logs as the filter."""
    project = next((p for p in store.list_projects(owner) if p["name"] == body.project_name), None)
    if project is None:
        raise NotFoundError(f"project {body.project_name!r} not found")
    condition, params = filter_condition(store, body)
    delta = _TIME_RANGES.get(body.time_range.value)
    since = (_dt.datetime.now(_dt.timezone.utc) - delta).isoformat() if delta else None
    total, ids = store.find_roots(
        owner,
        project_uuid=project["uuid"],
        condition=condition,
        params=params,
        since=since,
        status=body.status,
        newest_first=True,
        limit=body.page_size,
        offset=(body.page - 1) * body.page_size,
        roots_only=not condition,
    )
    trees = store.span_trees(ids, owner) if condition else store.trace_trees(ids, owner)
    return json_response(
        {
            "total": total,
            "page": body.page,
            "total_pages": math.ceil(total / body.page_size),
            "page_size": body.page_size,
            "results": [tree_out(t) for t in trees],
        }
    )


@router.post("/feedback")
def record_feedback(body: FeedbackRequestSchema, store: StoreDep, owner: OwnerDep) -> dict[str, Any]:
    """Record a 0-1 feedback score (and optionally a corrected target) on a log."""
    trace_id = body.trace_id or body.inference_id
    if not trace_id:
        raise invalid(("body", "trace_id"), "give the trace_id (or inference_id) the feedback is about")
    store.record_feedback(trace_id, body.score, body.comment, body.target, owner)
    return {}
