"""Projects and experiments: create, finish, list, and read their stats and root traces.

Routes that touch the store are plain ``def``: FastAPI runs them in its thread pool, so SQLite
never blocks the event loop.
"""

from __future__ import annotations

import uuid as _uuid
from typing import Any

from fastapi import APIRouter, Body, Response
from pydantic import BaseModel, Field, field_validator

from runner.schema import (
    CreateExperimentRequestSchema,
    CreateGetProjectRequestSchema,
    CreateGetProjectResponseSchema,
    ExperimentSchema,
    ExperimentStatsSchema,
    ExperimentWithStatsSchema,
    FilterBaseSchema,
    FinishExperimentRequestSchema,
    ListExperimentsRequestSchema,
    TraceLogTreeSchema,
)
from runner.server.deps import OwnerDep, StoreDep, invalid
from runner.server.trees import json_response, stats_out, tree_out

__all__ = ["router"]

router = APIRouter(tags=["experiments"])


class CreateExperimentBody(CreateExperimentRequestSchema):
    """``CreateExperimentRequestSchema`` plus an optional client-chosen ``uuid`` (an extension).

    With a ``uuid``, creating the same experiment twice returns the first one instead of
    refusing its run name as taken, so a client may retry the request safely."""

    uuid: str | None = None

    @field_validator("uuid")
    @classmethod
    def _is_uuid(cls, v: str | None) -> str | None:
        return None if v is None else str(_uuid.UUID(v))


class FinishExperimentBody(FinishExperimentRequestSchema):
    """``FinishExperimentRequestSchema`` plus the run's failures (an extension other Parea
    servers ignore): dataset-level evals that failed and scorers that failed on some rows, each
    name → message. Stored with the experiment and listed with it; a later finish that sends
    them replaces them, re-pins keep them."""

    dataset_level_errors: dict[str, str] | None = None
    scorer_errors: dict[str, str] | None = None


class ExperimentWithErrorsSchema(ExperimentWithStatsSchema):
    """``ExperimentWithStatsSchema`` plus the run's stored failures (extension fields)."""

    dataset_level_errors: dict[str, str] = Field(default_factory=dict)
    scorer_errors: dict[str, str] = Field(default_factory=dict)


@router.post("/project", response_model=CreateGetProjectResponseSchema)
def create_or_get_project(body: CreateGetProjectRequestSchema, store: StoreDep, owner: OwnerDep) -> dict[str, Any]:
    project, created = store.get_or_create_project(body.name, owner)
    return {**project, "was_created": created}


@router.post("/experiment", response_model=ExperimentSchema)
def create_experiment(body: CreateExperimentBody, store: StoreDep, owner: OwnerDep) -> dict[str, Any]:
    """400 ``{"detail": ...}`` for a run name that is invalid or already used in the project."""
    return store.create_experiment(
        name=body.name,
        project_uuid=body.project_uuid,
        run_name=body.run_name,
        metadata=body.metadata,
        is_public=body.is_public,
        owner=owner,
        experiment_uuid=body.uuid,
    )


@router.get("/experiment/{experiment_uuid}/stats", response_model=ExperimentStatsSchema)
def experiment_stats(experiment_uuid: str, store: StoreDep, owner: OwnerDep) -> Response:
    store.get_experiment(experiment_uuid, owner)
    return json_response(stats_out(store.experiment_stats(experiment_uuid, owner)))


@router.post("/experiment/{experiment_uuid}/finished", response_model=ExperimentStatsSchema)
def finish_experiment(
    experiment_uuid: str,
    store: StoreDep,
    owner: OwnerDep,
    body: FinishExperimentBody | None = Body(default=None),
) -> Response:
    """Store the status and dataset-level stats (and the run's failures, an extension), pin the
    means of every score, latency, tokens and cost over the root traces, and return the
    per-root stats."""
    body = body or FinishExperimentBody()
    stats = store.finish_experiment(
        experiment_uuid,
        status=body.status.value,
        dataset_level_stats=[s.model_dump() for s in body.dataset_level_stats or []],
        owner=owner,
        dataset_level_errors=body.dataset_level_errors,
        scorer_errors=body.scorer_errors,
    )
    return json_response(stats_out(stats))


@router.post("/experiments", response_model=list[ExperimentWithErrorsSchema])
def list_experiments(body: ListExperimentsRequestSchema, store: StoreDep, owner: OwnerDep) -> list[dict[str, Any]]:
    return store.list_experiments(
        owner,
        project_name=body.project_name,
        experiment_name_filter=body.experiment_name_filter,
        run_name_filter=body.run_name_filter,
        metadata_filter=body.metadata_filter,
        experiment_uuids=body.experiment_uuids,
    )


@router.post("/experiment/{experiment_uuid}/trace_logs", response_model=list[TraceLogTreeSchema])
def experiment_trace_logs(experiment_uuid: str, body: FilterBaseSchema, store: StoreDep, owner: OwnerDep) -> Response:
    """The experiment's root traces (in logging order) with their children, filtered."""
    store.get_experiment(experiment_uuid, owner)
    condition, params = filter_condition(store, body)
    _, ids = store.find_roots(owner, experiment_uuid=experiment_uuid, condition=condition, params=params)
    return json_response([tree_out(t) for t in store.trace_trees(ids, owner)])


class DeleteTracesSchema(BaseModel):
    """Body of ``POST /experiment/{uuid}/delete_traces`` (an extension)."""

    root_trace_ids: list[str]


@router.post("/experiment/{experiment_uuid}/delete_traces")
def delete_traces(experiment_uuid: str, body: DeleteTracesSchema, store: StoreDep, owner: OwnerDep) -> dict[str, int]:
    """Extension: delete root traces of the experiment with all their descendants (a resumed run
    re-runs those rows). Ids that are not roots of this experiment are left alone."""
    store.get_experiment(experiment_uuid, owner)
    roots: list[str] = []
    for i in range(0, len(body.root_trace_ids), 500):
        chunk = body.root_trace_ids[i : i + 500]
        condition = f"trace_id IN ({','.join('?' * len(chunk))})"
        roots += store.find_roots(owner, experiment_uuid=experiment_uuid, condition=condition, params=chunk)[1]
    return {"deleted": store.delete_trace_trees(roots, owner) if roots else 0}


def filter_condition(store: StoreDep, f: FilterBaseSchema) -> tuple[str, list[Any]]:
    """The SQL for a ``FilterBaseSchema``; a filter the store cannot apply is a 422."""
    operator = f.filter_operator.value if f.filter_operator is not None else None
    try:
        return store.filter_sql(f.filter_field, f.filter_key, operator, f.filter_value)
    except ValueError as exc:
        raise invalid(("body", "filter_field"), str(exc), f.filter_field) from None
