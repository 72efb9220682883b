"""Dataset endpoints: create, append, read by id or name, update a row, and the list extension."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import serving


@pytest.fixture
def api(db: str | Path) -> Iterator[httpx.Client]:
    with serving(db) as client:
        yield client


ROWS = [
    {"inputs": {"question": "2+2", "n": 4}, "target": "4", "tags": ["math"]},
    {"inputs": {"question": "capital of France"}, "target": {"city": "Paris"}},
]


def _create(api: httpx.Client, name: str = "qa", rows: list[dict[str, Any]] = ROWS) -> dict[str, Any]:
    response = api.post("/collection", json={"name": name, "column_names": ["question", "n"], "test_cases": rows})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_create_and_get_by_id_and_by_name(api: httpx.Client) -> None:
    created = _create(api, name="qa/v1 (draft)")
    assert len(created["test_case_ids"]) == 2 and created["last_updated_at"]
    by_id = api.get(f"/collection/{created['id']}").json()
    by_name = api.get("/collection/qa%2Fv1%20%28draft%29").json()
    assert by_id == by_name
    assert by_id["name"] == "qa/v1 (draft)" and by_id["column_names"] == ["question", "n"]
    first, second = (by_id["test_cases"][str(i)] for i in created["test_case_ids"])
    assert first["inputs"] == {"question": "2+2", "n": 4} and first["tags"] == ["math"]
    assert second["target"] == '{"city": "Paris"}' and second["tags"] == []  # targets are strings
    assert first["test_case_collection_id"] == created["id"]


def test_create_with_a_taken_name_is_409(api: httpx.Client) -> None:
    _create(api)
    response = api.post("/collection", json={"name": "qa", "column_names": []})
    assert response.status_code == 409
    assert "already exists" in response.json()["detail"]


def test_create_schema_errors(api: httpx.Client) -> None:
    assert api.post("/collection", json={"name": "x"}).status_code == 422  # column_names is required
    response = api.post("/collection", json={"name": "x", "column_names": [], "test_cases": [{"target": "t"}]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "test_cases", 0, "inputs"]


def test_get_unknown_collection_is_null_as_parea_answers(api: httpx.Client) -> None:
    # the reference declares the answer nullable; the official SDK's get_collection returns None on it
    for ref in ("nope", "999"):
        response = api.get(f"/collection/{ref}")
        assert response.status_code == 200
        assert response.json() is None


def test_testcases_append_by_id_or_create_by_name(api: httpx.Client) -> None:
    dataset_id = _create(api)["id"]
    ids = api.post("/testcases", json={"id": dataset_id, "test_cases": [{"inputs": {"question": "1+1"}}]}).json()
    assert len(ids) == 1
    assert len(api.get(f"/collection/{dataset_id}").json()["test_cases"]) == 3
    new_ids = api.post("/testcases", json={"name": "fresh", "test_cases": ROWS}).json()
    fresh = api.get("/collection/fresh").json()
    assert sorted(map(int, fresh["test_cases"])) == sorted(new_ids)
    assert fresh["column_names"] == ["n", "question"]


def test_testcases_schema_errors(api: httpx.Client) -> None:
    assert api.post("/testcases", json={"name": "x"}).status_code == 422  # test_cases is required
    response = api.post("/testcases", json={"test_cases": []})
    assert response.status_code == 422  # neither id nor name
    assert response.json()["detail"][0]["loc"] == ["body", "id"]


def test_testcases_unknown_dataset_id_is_404(api: httpx.Client) -> None:
    response = api.post("/testcases", json={"id": 999, "test_cases": []})
    assert response.status_code == 404


def test_update_test_case(api: httpx.Client) -> None:
    created = _create(api)
    dataset_id, case_id = created["id"], created["test_case_ids"][0]
    response = api.post(f"/update_test_case/{dataset_id}/{case_id}", json={"inputs": {"n": 5}, "target": 5})
    assert response.status_code == 200
    row = api.get(f"/collection/{dataset_id}").json()["test_cases"][str(case_id)]
    assert row["inputs"] == {"question": "2+2", "n": 5}  # merged
    assert (row["target"], row["tags"]) == ("5", ["math"])


def test_update_test_case_schema_errors(api: httpx.Client) -> None:
    created = _create(api)
    assert api.post(f"/update_test_case/{created['id']}/abc", json={}).status_code == 422
    assert api.post(f"/update_test_case/{created['id']}/1", json={"inputs": "x"}).status_code == 422


def test_update_test_case_not_found(api: httpx.Client) -> None:
    created = _create(api)
    assert api.post(f"/update_test_case/{created['id']}/999", json={"target": "x"}).status_code == 404
    assert api.post("/update_test_case/999/1", json={"target": "x"}).status_code == 404


def test_collections_lists_datasets_without_rows(api: httpx.Client) -> None:
    assert api.get("/collections").json() == []
    _create(api, name="b")
    _create(api, name="a", rows=ROWS[:1])
    listed = api.get("/collections").json()
    assert [(d["name"], d["num_rows"]) for d in listed] == [("a", 1), ("b", 2)]
    assert "test_cases" not in listed[0] and "owner" not in listed[0]
