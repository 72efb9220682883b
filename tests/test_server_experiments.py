"""Project and experiment endpoints: create, stats, finish, list, and an experiment's traces."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import experiment, log, serving


@pytest.fixture
def api(db: str | Path) -> Iterator[httpx.Client]:
    with serving(db) as client:
        yield client


# -- GET / and POST /project -----------------------------------------------------------------------


def test_health_names_the_extensions(api: httpx.Client) -> None:
    health = api.get("/").json()
    assert health["status"] == "ok"
    assert all(isinstance(v, str) for v in health.values())  # the spec: a str -> str map
    assert {"trace_logs_batch", "collections", "experiment_uuid"} <= set(health["extensions"].split(","))


def test_project_is_created_once(api: httpx.Client) -> None:
    first = api.post("/project", json={"name": "p"}).json()
    again = api.post("/project", json={"name": "p"}).json()
    assert first["was_created"] is True and again["was_created"] is False
    assert first["uuid"] == again["uuid"] and again["name"] == "p" and again["created_at"]


def test_project_schema_errors(api: httpx.Client) -> None:
    response = api.post("/project", json={"name": ""})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "name"]
    assert api.post("/project", json={}).status_code == 422


# -- POST /experiment ---------------------------------------------------------------------------------


def test_create_experiment(api: httpx.Client) -> None:
    exp = experiment(api, run_name="baseline-1", metadata={"model": "m"})
    assert exp["run_name"] == "baseline-1" and exp["metadata"] == {"model": "m"}
    assert uuid.UUID(exp["uuid"]) and exp["created_at"]
    generated = experiment(api)  # no run name: one is generated
    assert generated["run_name"] and generated["run_name"] != "baseline-1"


@pytest.mark.parametrize("run_name", ["has space", "x" * 101, "slash/no"])
def test_invalid_run_name_is_400(api: httpx.Client, run_name: str) -> None:
    project_uuid = api.post("/project", json={"name": "p"}).json()["uuid"]
    response = api.post("/experiment", json={"name": "e", "project_uuid": project_uuid, "run_name": run_name})
    assert response.status_code == 400
    assert "run name" in response.json()["detail"]


def test_run_name_used_in_the_project_is_400_but_free_in_another(api: httpx.Client) -> None:
    experiment(api, project="p", run_name="r1")
    project_uuid = api.post("/project", json={"name": "p"}).json()["uuid"]
    response = api.post("/experiment", json={"name": "e", "project_uuid": project_uuid, "run_name": "r1"})
    assert response.status_code == 400
    assert "already used" in response.json()["detail"]
    assert experiment(api, project="other", run_name="r1")["run_name"] == "r1"


def test_create_with_a_client_uuid_is_idempotent(api: httpx.Client) -> None:
    project_uuid = api.post("/project", json={"name": "p"}).json()["uuid"]
    body = {"name": "e", "project_uuid": project_uuid, "run_name": "r", "uuid": str(uuid.uuid4())}
    first = api.post("/experiment", json=body)
    retry = api.post("/experiment", json=body)
    assert first.status_code == retry.status_code == 200
    assert first.json() == retry.json()
    assert api.post("/experiment", json={**body, "uuid": "not-a-uuid"}).status_code == 422


def test_create_experiment_schema_errors(api: httpx.Client) -> None:
    project_uuid = api.post("/project", json={"name": "p"}).json()["uuid"]
    response = api.post("/experiment", json={"project_uuid": project_uuid})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "name"]
    assert api.post("/experiment", json={"name": "e"}).status_code == 422


def test_create_experiment_in_unknown_project_is_404(api: httpx.Client) -> None:
    response = api.post("/experiment", json={"name": "e", "project_uuid": "nope"})
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]


# -- stats and finished ----------------------------------------------------------------------------------


def _log_rows(api: httpx.Client, exp: str) -> None:
    logs = [
        log("r1", experiment_uuid=exp, latency=1.0, cost=0.5, scores=[{"name": "acc", "score": True}]),
        log(
            "c1",
            parent="r1",
            experiment_uuid=exp,
            input_tokens=10,
            total_tokens=10,
            cost=0.25,
            scores=[{"name": "judge", "score": 1}],
        ),
        log("r2", experiment_uuid=exp, latency=3.0, cost=0.5, status="error", scores=[{"name": "acc", "score": 0}]),
    ]
    assert api.post("/trace_logs/batch", json={"logs": logs}).status_code == 200


def test_stats_roll_children_up_to_roots(api: httpx.Client) -> None:
    exp = experiment(api)["uuid"]
    _log_rows(api, exp)
    stats = {s["trace_id"]: s for s in api.get(f"/experiment/{exp}/stats").json()["parent_trace_stats"]}
    assert set(stats) == {"r1", "r2"}
    assert {s["name"]: s["score"] for s in stats["r1"]["scores"]} == {"acc": 1.0, "judge": 1.0}
    assert (stats["r1"]["input_tokens"], stats["r1"]["cost"]) == (10, 0.75)


def test_stats_of_unknown_experiment_is_404(api: httpx.Client) -> None:
    response = api.get("/experiment/nope/stats")
    assert response.status_code == 404
    assert response.json() == {"detail": "experiment nope not found"}


def test_finish_pins_averages_and_dataset_level_stats(api: httpx.Client) -> None:
    exp = experiment(api, project="p")["uuid"]
    _log_rows(api, exp)
    body = {"status": "failed", "dataset_level_stats": [{"name": "pearson", "score": 0.5, "reason": "r"}]}
    response = api.post(f"/experiment/{exp}/finished", json=body)
    assert response.status_code == 200
    assert len(response.json()["parent_trace_stats"]) == 2
    (listed,) = api.post("/experiments", json={"experiment_uuids": [exp]}).json()
    assert listed["status"] == "failed" and listed["num_samples"] == 2
    pinned = {(p["var1"], p["operation"]): p["value"] for p in listed["pinned_stats"]}
    assert pinned[("acc", "mean")] == 0.5
    assert pinned[("judge", "mean")] == 1.0  # a child's score counts for its root
    assert pinned[("Latency", "mean")] == 2.0
    assert pinned[("Cost", "mean")] == 0.625
    assert pinned[("pearson", "custom")] == 0.5


def test_finish_without_a_body_completes(api: httpx.Client) -> None:
    exp = experiment(api)["uuid"]
    assert api.post(f"/experiment/{exp}/finished").status_code == 200
    (listed,) = api.post("/experiments", json={"experiment_uuids": [exp]}).json()
    assert listed["status"] == "completed" and listed["num_samples"] == 0


def test_finish_schema_errors(api: httpx.Client) -> None:
    exp = experiment(api)["uuid"]
    assert api.post(f"/experiment/{exp}/finished", json={"status": "done"}).status_code == 422
    bad_stat = {"dataset_level_stats": [{"name": "x", "score": "high"}]}
    assert api.post(f"/experiment/{exp}/finished", json=bad_stat).status_code == 422


def test_finish_unknown_experiment_is_404(api: httpx.Client) -> None:
    response = api.post("/experiment/nope/finished", json={"status": "completed"})
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]


# -- POST /experiments -----------------------------------------------------------------------------------


def test_list_experiments_filters(api: httpx.Client) -> None:
    a = experiment(api, project="p1", name="alpha", run_name="run-a", metadata={"model": "x"})
    b = experiment(api, project="p1", name="beta", run_name="run-b", metadata={"model": "y"})
    c = experiment(api, project="p2", name="alpha", run_name="other")

    def names(**flt: object) -> list[str]:
        return sorted(e["uuid"] for e in api.post("/experiments", json=flt).json())

    assert names() == sorted([a["uuid"], b["uuid"], c["uuid"]])
    assert names(project_name="p1") == sorted([a["uuid"], b["uuid"]])
    assert names(experiment_name_filter="alp") == sorted([a["uuid"], c["uuid"]])
    assert names(run_name_filter="run-") == sorted([a["uuid"], b["uuid"]])
    assert names(metadata_filter={"model": "y"}) == [b["uuid"]]
    assert names(experiment_uuids=[c["uuid"]]) == [c["uuid"]]
    assert names(experiment_uuids=[]) == []  # an empty list: PostgreSQL has no `IN ()`
    assert names(project_name="nope") == []
    listed = api.post("/experiments", json={"experiment_uuids": [a["uuid"]]}).json()[0]
    assert (listed["status"], listed["pinned_stats"], listed["num_samples"]) == ("running", [], 0)


def test_list_experiments_schema_errors(api: httpx.Client) -> None:
    assert api.post("/experiments", json={"experiment_uuids": "abc"}).status_code == 422
    assert api.post("/experiments", json={"metadata_filter": []}).status_code == 422
    assert api.post("/experiments").status_code == 422  # the body is required


# -- POST /experiment/{uuid}/trace_logs --------------------------------------------------------------------


def test_experiment_trace_logs_filtered(api: httpx.Client) -> None:
    exp = experiment(api)["uuid"]
    _log_rows(api, exp)
    other = experiment(api, run_name="other")["uuid"]
    api.post("/trace_log", json=log("o1", experiment_uuid=other))

    roots = api.post(f"/experiment/{exp}/trace_logs", json={}).json()
    assert [r["trace_id"] for r in roots] == ["r1", "r2"]
    assert roots[0]["children_logs"][0]["trace_id"] == "c1"
    flt = {"filter_field": "status", "filter_operator": "equals", "filter_value": "error"}
    assert [r["trace_id"] for r in api.post(f"/experiment/{exp}/trace_logs", json=flt).json()] == ["r2"]
    flt = {"filter_field": "score:acc", "filter_operator": "greater_than", "filter_value": "0.5"}
    assert [r["trace_id"] for r in api.post(f"/experiment/{exp}/trace_logs", json=flt).json()] == ["r1"]


def test_experiment_trace_logs_schema_errors(api: httpx.Client) -> None:
    exp = experiment(api)["uuid"]
    flt = {"filter_field": "status", "filter_operator": "sounds_like"}
    assert api.post(f"/experiment/{exp}/trace_logs", json=flt).status_code == 422
    flt = {"filter_field": "latency", "filter_operator": "between", "filter_value": "1"}
    response = api.post(f"/experiment/{exp}/trace_logs", json=flt)
    assert response.status_code == 422
    assert "between" in response.json()["detail"][0]["msg"]


def test_experiment_trace_logs_unknown_experiment_is_404(api: httpx.Client) -> None:
    response = api.post("/experiment/nope/trace_logs", json={})
    assert response.status_code == 404


# -- POST /experiment/{uuid}/delete_traces (extension) -------------------------------------------------


def test_delete_traces_removes_roots_of_the_experiment_with_descendants(api: httpx.Client) -> None:
    exp = experiment(api)["uuid"]
    _log_rows(api, exp)
    other = experiment(api, run_name="other")["uuid"]
    api.post("/trace_log", json=log("o1", experiment_uuid=other))
    response = api.post(f"/experiment/{exp}/delete_traces", json={"root_trace_ids": ["r1", "o1", "c1", "nope"]})
    assert response.status_code == 200
    assert response.json() == {"deleted": 2}  # r1 and its child c1; o1 is another run's, c1 no root
    assert [r["trace_id"] for r in api.post(f"/experiment/{exp}/trace_logs", json={}).json()] == ["r2"]
    assert api.get("/trace_log/c1").status_code == 404
    assert api.get("/trace_log/o1").status_code == 200


def test_delete_traces_schema_errors_and_not_found(api: httpx.Client) -> None:
    exp = experiment(api)["uuid"]
    assert api.post(f"/experiment/{exp}/delete_traces", json={"root_trace_ids": "r1"}).status_code == 422
    assert api.post(f"/experiment/{exp}/delete_traces", json={}).status_code == 422
    assert api.post("/experiment/nope/delete_traces", json={"root_trace_ids": []}).status_code == 404
