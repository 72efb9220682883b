"""Datasets ("test case collections" in Parea's words): create, append, read, update, list."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from runner.errors import NotFoundError
from runner.schema import (
    CreateTestCaseCollectionRequestSchema,
    CreateTestCaseCollectionResponseSchema,
    CreateTestCasesSchema,
    GetTestCaseCollectionResponseSchema,
    GetTestCaseResponseSchema,
    UpdateTestCasePublicRequestSchema,
)
from runner.server.deps import OwnerDep, StoreDep, invalid

__all__ = ["DatasetSummarySchema", "router"]

router = APIRouter(tags=["datasets"])


class DatasetSummarySchema(BaseModel):
    """One entry of ``GET /collections`` (an extension: Parea has no dataset list)."""

    id: int
    name: str
    column_names: list[str]
    created_at: str
    last_updated_at: str
    num_rows: int


@router.post(
    "/collection",
    response_model=CreateTestCaseCollectionResponseSchema,
    responses={409: {"description": "A dataset with this name exists"}},
)
def create_collection(
    body: CreateTestCaseCollectionRequestSchema, store: StoreDep, owner: OwnerDep
) -> dict[str, Any] | JSONResponse:
    try:
        return store.create_dataset(
            body.name, body.column_names, [tc.model_dump() for tc in body.test_cases or []], owner
        )
    except ValueError as exc:  # the name is taken
        return JSONResponse({"detail": str(exc)}, status_code=409)


@router.post("/testcases", response_model=list[int])
def create_test_cases(body: CreateTestCasesSchema, store: StoreDep, owner: OwnerDep) -> list[int]:
    """Append rows to the dataset ``id`` (or ``name``; a new name creates the dataset)."""
    if body.id is None and not body.name:
        raise invalid(("body", "id"), "give the dataset's id or name")
    return store.add_test_cases(
        [tc.model_dump() for tc in body.test_cases], dataset_id=body.id, name=body.name, owner=owner
    )


@router.get(
    "/collection/{test_collection_identifier:path}", response_model=GetTestCaseCollectionResponseSchema | None
)
def get_collection(test_collection_identifier: str, store: StoreDep, owner: OwnerDep) -> dict[str, Any] | Response:
    """A dataset by id or by (URL-encoded) name, with all its rows; ``null`` (200) when there is
    none, as Parea answers: the official SDK's ``get_collection`` then returns ``None``."""
    try:
        return store.get_dataset(test_collection_identifier, owner)
    except NotFoundError:
        return Response(b"null", media_type="application/json")


@router.post("/update_test_case/{dataset_id}/{test_case_id}", response_model=GetTestCaseResponseSchema)
def update_test_case(
    dataset_id: int,
    test_case_id: int,
    body: UpdateTestCasePublicRequestSchema,
    store: StoreDep,
    owner: OwnerDep,
) -> dict[str, Any]:
    """Set the given fields of one row; ``inputs`` are merged into the row's inputs."""
    return store.update_test_case(dataset_id, test_case_id, body.model_dump(exclude_unset=True), owner)


@router.get("/collections", response_model=list[DatasetSummarySchema])
def list_collections(store: StoreDep, owner: OwnerDep) -> list[dict[str, Any]]:
    """Extension: every dataset of the caller, without rows, by name."""
    return store.list_datasets(owner)
