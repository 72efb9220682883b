"""Trace log endpoints: upsert (single and batch), update, tree, paginated reads, feedback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.servers import experiment, log, serving

JSON = {"content-type": "application/json"}


@pytest.fixture
def api(db: str | Path) -> Iterator[httpx.Client]:
    with serving(db) as client:
        yield client


# -- POST /trace_log -----------------------------------------------------------------------------


def test_post_children_before_parent_and_scores_roll_up(api: httpx.Client) -> None:
    exp = experiment(api)["uuid"]
    grandchild = log("gc", parent="c", root="r", depth=2, experiment_uuid=exp, scores=[{"name": "ok", "score": True}])
    child = log("c", parent="r", depth=1, experiment_uuid=exp, scores=[{"name": "n", "score": 3}], input_tokens=5)
    root = log("r", experiment_uuid=exp, scores=[{"name": "own", "score": 0.5}], input_tokens=1, latency=2.0)
    for body in (grandchild, child, root):
        response = api.post("/trace_log", json=body)
        assert response.status_code == 200, response.text

    tree = api.get("/trace_log/r").json()
    assert tree["children"] == ["c"]
    assert [c["trace_id"] for c in tree["children_logs"]] == ["c"]
    assert tree["children_logs"][0]["children_logs"][0]["trace_id"] == "gc"
    scores = {s["name"]: s["score"] for s in tree["scores"]}
    assert scores == {"own": 0.5, "n": 3.0, "ok": 1.0}  # bool and int scores became floats
    assert all(isinstance(s["score"], float) for s in tree["scores"])
    assert {s["name"] for s in tree["children_logs"][0]["scores"]} == {"n", "ok"}  # populated to the parent
    assert tree["input_tokens"] == 6  # tokens of children add up to the root


def test_post_is_an_upsert_that_merges_what_was_sent(api: httpx.Client) -> None:
    api.post("/trace_log", json=log("t", output="first", latency=1.5, metadata={"a": "1"}))
    api.post("/trace_log", json=log("t", status="success", metadata={"b": "2"}))  # a retry / partial post
    api.post("/trace_log", json=log("t", status="success", metadata={"b": "2"}))
    tree = api.get("/trace_log/t").json()
    assert (tree["output"], tree["latency"], tree["status"]) == ("first", 1.5, "success")
    assert tree["metadata"] == {"a": "1", "b": "2"}
    page = api.post("/get_trace_logs", json={"project_name": "default"}).json()
    assert page["total"] == 1


def test_reads_never_return_null_for_lists_and_objects(api: httpx.Client) -> None:
    nulls = {k: None for k in ("scores", "comments", "annotations", "images", "tags", "metadata", "inputs")}
    body = log("t", configuration={"model": "m", "messages": None, "model_params": None}, **nulls)
    assert api.post("/trace_log", json=body).status_code == 200
    tree = api.get("/trace_log/t").json()
    for key in ("scores", "comments", "images", "tags", "children", "children_logs", "evaluation_metric_names"):
        assert tree[key] == [], key
    for key in ("annotations", "metadata", "inputs"):
        assert tree[key] == {}, key
    assert tree["configuration"]["messages"] == []
    assert tree["configuration"]["model_params"] == {}


def test_post_trace_log_schema_errors(api: httpx.Client) -> None:
    response = api.post("/trace_log", json={"start_timestamp": "x"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "trace_id"]
    response = api.post("/trace_log", json=log("t", scores=[{"name": "s", "score": "high"}]))
    assert response.status_code == 422
    response = api.post("/trace_log", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_post_trace_log_for_unknown_experiment_is_404(api: httpx.Client) -> None:
    response = api.post("/trace_log", json=log("t", experiment_uuid="no-such-experiment"))
    assert response.status_code == 404
    assert "no-such-experiment" in response.json()["detail"]


# -- POST /trace_logs/batch (extension) -----------------------------------------------------------


def test_batch_stores_every_log_in_any_order(api: httpx.Client) -> None:
    exp = experiment(api)["uuid"]
    logs = [
        log(f"c{i}", parent=f"r{i}", experiment_uuid=exp, scores=[{"name": "s", "score": i % 2}]) for i in range(50)
    ]
    logs += [log(f"r{i}", experiment_uuid=exp, latency=1.0) for i in range(50)]
    response = api.post("/trace_logs/batch", content=orjson.dumps({"logs": logs}), headers=JSON)
    assert response.status_code == 200
    assert response.json() == {"count": 100}
    stats = api.get(f"/experiment/{exp}/stats").json()["parent_trace_stats"]
    assert len(stats) == 50
    assert sorted(s["scores"][0]["score"] for s in stats) == [0.0] * 25 + [1.0] * 25


def test_batch_schema_errors_name_the_log_and_store_nothing(api: httpx.Client) -> None:
    logs = [log("ok"), {"trace_id": 7, "start_timestamp": "x"}]
    response = api.post("/trace_logs/batch", json={"logs": logs})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "logs", 1, "trace_id"]
    assert api.get("/trace_log/ok").status_code == 404
    assert api.post("/trace_logs/batch", content=b'{"logs": [', headers=JSON).status_code == 422
    assert api.post("/trace_logs/batch", json={"log": []}).status_code == 422


def test_batch_for_unknown_experiment_is_404(api: httpx.Client) -> None:
    response = api.post("/trace_logs/batch", json={"logs": [log("t", experiment_uuid="nope")]})
    assert response.status_code == 404
    assert api.get("/trace_log/t").status_code == 404


# -- PUT /trace_log ------------------------------------------------------------------------------


def test_put_updates_fields(api: httpx.Client) -> None:
    api.post("/trace_log", json=log("t", output="draft"))
    update = {"trace_id": "t", "field_name_to_value_map": {"output": {"a": 1}, "scores": [{"name": "s", "score": 1}]}}
    response = api.put("/trace_log", json=update)
    assert response.status_code == 200, response.text
    tree = api.get("/trace_log/t").json()
    assert tree["output"] == '{"a": 1}'  # non-string outputs are serialised
    assert tree["scores"][0]["score"] == 1.0


def test_put_schema_errors(api: httpx.Client) -> None:
    api.post("/trace_log", json=log("t"))
    response = api.put("/trace_log", json={"trace_id": "t", "field_name_to_value_map": {"no_such_field": 1}})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "field_name_to_value_map", "no_such_field"]
    response = api.put("/trace_log", json={"trace_id": "t", "field_name_to_value_map": {"latency": "slow"}})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:3] == ["body", "field_name_to_value_map", "latency"]
    assert api.put("/trace_log", json={"trace_id": "t"}).status_code == 422


def test_put_unknown_trace_is_404(api: httpx.Client) -> None:
    response = api.put("/trace_log", json={"trace_id": "nope", "field_name_to_value_map": {"output": "x"}})
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]


# -- GET /trace_log/{id} ---------------------------------------------------------------------------


def test_get_a_child_returns_its_subtree(api: httpx.Client) -> None:
    api.post("/trace_log", json=log("r"))
    api.post("/trace_log", json=log("c", parent="r", depth=1))
    api.post("/trace_log", json=log("g", parent="c", root="r", depth=2))
    child = api.get("/trace_log/c").json()
    assert child["parent_trace_id"] == "r"
    assert [g["trace_id"] for g in child["children_logs"]] == ["g"]


def test_get_unknown_trace_is_404(api: httpx.Client) -> None:
    response = api.get("/trace_log/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "trace nope not found"}


# -- POST /get_trace_logs ----------------------------------------------------------------------------


def test_get_trace_logs_pages_and_filters(api: httpx.Client) -> None:
    for i in range(5):
        ts = f"2024-05-30T13:48:3{i}+00:00"
        status = "error" if i == 4 else "success"
        api.post("/trace_log", json=log(f"r{i}", project_name="p", start_timestamp=ts, status=status))
        api.post("/trace_log", json=log(f"c{i}", parent=f"r{i}", project_name="p", start_timestamp=ts))
    page = api.post("/get_trace_logs", json={"project_name": "p", "page": 2, "page_size": 2}).json()
    assert (page["total"], page["page"], page["total_pages"], page["page_size"]) == (5, 2, 3, 2)
    assert [r["trace_id"] for r in page["results"]] == ["r2", "r1"]  # roots only, newest first
    assert page["results"][0]["children_logs"][0]["trace_id"] == "c2"
    errors = api.post("/get_trace_logs", json={"project_name": "p", "status": "error"}).json()
    assert [r["trace_id"] for r in errors["results"]] == ["r4"]
    flt = {"filter_field": "trace_id", "filter_operator": "in", "filter_value": "r0,r3"}
    found = api.post("/get_trace_logs", json={"project_name": "p", **flt}).json()
    assert sorted(r["trace_id"] for r in found["results"]) == ["r0", "r3"]
    recent = api.post("/get_trace_logs", json={"project_name": "p", "time_range": "1h"}).json()
    assert recent["total"] == 0  # every log above started in 2024


def test_get_trace_logs_schema_errors(api: httpx.Client) -> None:
    api.post("/trace_log", json=log("r", project_name="p"))
    assert api.post("/get_trace_logs", json={}).status_code == 422  # project_name is required
    assert api.post("/get_trace_logs", json={"project_name": "p", "page": 0}).status_code == 422
    assert api.post("/get_trace_logs", json={"project_name": "p", "time_range": "2d"}).status_code == 422
    bad = api.post("/get_trace_logs", json={"project_name": "p", "filter_field": "x", "filter_operator": "equals"})
    assert bad.status_code == 422
    assert "cannot filter" in bad.json()["detail"][0]["msg"]


def test_get_trace_logs_unknown_project_is_404(api: httpx.Client) -> None:
    response = api.post("/get_trace_logs", json={"project_name": "nope"})
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]


# -- POST /feedback ----------------------------------------------------------------------------------


def test_feedback_is_recorded_on_the_trace(api: httpx.Client) -> None:
    api.post("/trace_log", json=log("t"))
    response = api.post("/feedback", json={"trace_id": "t", "score": 0.25, "target": "better"})
    assert response.status_code == 200
    tree = api.get("/trace_log/t").json()
    assert (tree["feedback_score"], tree["target"]) == (0.25, "better")


def test_feedback_schema_errors(api: httpx.Client) -> None:
    api.post("/trace_log", json=log("t"))
    assert api.post("/feedback", json={"trace_id": "t", "score": 2}).status_code == 422  # 0..1
    assert api.post("/feedback", json={"trace_id": "t"}).status_code == 422
    assert api.post("/feedback", json={"score": 0.5}).status_code == 422  # about which trace?


def test_feedback_unknown_trace_is_404(api: httpx.Client) -> None:
    response = api.post("/feedback", json={"trace_id": "nope", "score": 1})
    assert response.status_code == 404
