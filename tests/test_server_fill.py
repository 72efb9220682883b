"""What other Parea clients send, over REST: fields they leave out are filled in, ``configuration``
is validated as the reference describes it (but takes what both SDKs post), and filters of
``POST /get_trace_logs`` find nested spans. Real server, real socket, real SQLite file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.server.fill import latency_between, parse_timestamp
from tests.servers import experiment, serving


@pytest.fixture
def api(db: str | Path) -> Any:
    with serving(db) as client:
        yield client


@pytest.mark.parametrize(
    ("start", "end", "seconds"),
    [
        ("2024-05-30 13:48:34", "2024-05-30 13:48:35", 1.0),
        ("2024-05-30T13:48:34", "2024-05-30T13:48:34.250", 0.25),
        ("2024-05-30T13:48:34Z", "2024-05-30T13:48:36+00:00", 2.0),
        ("2024-05-30T15:48:34+02:00", "2024-05-30 13:48:35", 1.0),  # naive is UTC
        ("2024-05-30 13:48:35", "2024-05-30 13:48:34", None),  # the end before the start
        ("yesterday", "2024-05-30 13:48:34", None),
    ],
)
def test_latency_between(start: str, end: str, seconds: float | None) -> None:
    assert latency_between(start, end) == (pytest.approx(seconds) if seconds is not None else None)


def test_a_naive_timestamp_is_utc() -> None:
    moment = parse_timestamp("2024-05-30 13:48:34")
    assert moment is not None and moment.utcoffset() is not None and moment.utcoffset().total_seconds() == 0


def test_latency_sent_is_kept_and_absent_is_derived(api: httpx.Client) -> None:
    start, end = "2024-05-30 13:48:34", "2024-05-30 13:48:36"
    api.post("/trace_log", json={"trace_id": "a", "start_timestamp": start, "end_timestamp": end, "latency": 0.5})
    api.post("/trace_log", json={"trace_id": "b", "start_timestamp": start, "end_timestamp": end})
    api.post("/trace_log", json={"trace_id": "c", "start_timestamp": start})
    assert [api.get(f"/trace_log/{t}").json()["latency"] for t in "abc"] == [0.5, 2.0, 0.0]


def test_status_defaults_to_success_unless_there_is_an_error(api: httpx.Client) -> None:
    # the TypeScript SDK sends status only on failure
    api.post("/trace_log", json={"trace_id": "ok", "start_timestamp": "2024-05-30 13:48:34"})
    api.post("/trace_log", json={"trace_id": "bad", "start_timestamp": "2024-05-30 13:48:34", "error": "boom"})
    api.post("/trace_log", json={"trace_id": "sent", "start_timestamp": "x", "status": "error"})
    assert [api.get(f"/trace_log/{t}").json()["status"] for t in ("ok", "bad", "sent")] == ["success", "error", "error"]
    page = api.post("/get_trace_logs", json={"project_name": "default", "status": "success"}).json()
    assert [r["trace_id"] for r in page["results"]] == ["ok"]


def test_defaults_never_overwrite_what_a_stored_log_holds(api: httpx.Client) -> None:
    # a post is merged into the stored log: a default filled into a later post of that log must
    # not undo a PUT made meanwhile (a status, a project name)
    api.post("/trace_log", json={"trace_id": "t", "start_timestamp": "2024-05-30 13:48:34"})
    fields = {"status": "cancelled", "project_name": "renamed"}
    assert api.put("/trace_log", json={"trace_id": "t", "field_name_to_value_map": fields}).status_code == 200
    api.post("/trace_log", json={"trace_id": "t", "start_timestamp": "2024-05-30 13:48:34", "annotations": {"k": 1}})
    got = api.get("/trace_log/t").json()
    assert (got["status"], got["project_name"], got["annotations"]) == ("cancelled", "renamed", {"k": 1})
    api.post("/trace_log", json={"trace_id": "t", "start_timestamp": "x", "error": "boom"})  # an error says so
    assert api.get("/trace_log/t").json()["status"] == "error"


def test_project_name_is_filled_from_the_project_or_the_experiment(api: httpx.Client) -> None:
    exp = experiment(api, project="named")
    api.post("/trace_log", json={"trace_id": "p", "start_timestamp": "x", "project_uuid": exp["project_uuid"]})
    api.post("/trace_log", json={"trace_id": "e", "start_timestamp": "x", "experiment_uuid": exp["uuid"]})
    api.post("/trace_log", json={"trace_id": "n", "start_timestamp": "x"})
    assert [api.get(f"/trace_log/{t}").json()["project_name"] for t in "pen"] == ["named", "named", "default"]


def test_depth_is_derived_from_the_parent_whatever_the_order(api: httpx.Client) -> None:
    ts = "2024-05-30 13:48:34"
    # the grandchild first, then the child, then the root: none sends a depth
    api.post("/trace_log", json={"trace_id": "g", "parent_trace_id": "c", "root_trace_id": "r", "start_timestamp": ts})
    api.post("/trace_log", json={"trace_id": "c", "parent_trace_id": "r", "start_timestamp": ts})
    api.post("/trace_log", json={"trace_id": "r", "start_timestamp": ts})
    api.post("/trace_log", json={"trace_id": "d", "parent_trace_id": "r", "start_timestamp": ts, "depth": 7})
    root = api.get("/trace_log/r").json()
    depths = {c["trace_id"]: c["depth"] for c in root["children_logs"]}
    assert (root["depth"], depths) == (0, {"c": 1, "d": 7})
    assert api.get("/trace_log/g").json()["depth"] == 2
    assert root["children_logs"][0]["children_logs"][0]["depth"] == 2


@pytest.mark.parametrize(
    ("configuration", "field"),
    [
        ({"model_params": 5}, "configuration.model_params"),
        ({"messages": "not a list"}, "configuration.messages"),
        ({"messages": [{"role": "boss", "content": "hi"}]}, "configuration.messages.0.role"),
        ({"model_params": {"temp": "hot"}}, "configuration.model_params.temp"),
        ({"function_call": 3}, "configuration.function_call"),
        ({"model": ["gpt"]}, "configuration.model"),
    ],
)
def test_an_invalid_configuration_is_a_422_naming_the_field(
    api: httpx.Client, configuration: dict[str, Any], field: str
) -> None:
    body = {"trace_id": "t", "start_timestamp": "x", "configuration": configuration}
    for response in (
        api.post("/trace_log", json=body),
        api.post("/trace_logs/batch", json={"logs": [body]}),
        api.put("/trace_log", json={"trace_id": "t", "field_name_to_value_map": {"configuration": configuration}}),
    ):
        assert response.status_code == 422, response.text
        (error,) = response.json()["detail"]
        assert "configuration" in error["loc"] and field + ":" in error["msg"]
    assert api.get("/trace_log/t").status_code == 404


def test_what_both_sdks_post_as_configuration_is_accepted(api: httpx.Client) -> None:
    sdk = {  # the Python SDK's LLMInputs, with its nulls
        "model": None, "provider": None, "messages": None, "history": None, "functions": None,
        "function_call": None, "model_params": {"temp": 1.0, "top_p": 1.0, "frequency_penalty": 0.0,
                                                "presence_penalty": 0.0, "max_length": None,
                                                "response_format": None, "safe_prompt": None},
    }
    tools = {"model": "gpt-4o", "provider": "openai", "function_call": {"type": "function", "function": {"name": "f"}},
             "messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
                          {"role": "tool", "content": "42"}, {"content": "no role"}]}
    for i, configuration in enumerate((sdk, tools, {})):
        response = api.post("/trace_log", json={"trace_id": f"t{i}", "start_timestamp": "x",
                                                "configuration": configuration})
        assert response.status_code == 200, response.text
    read = api.get("/trace_log/t0").json()["configuration"]
    assert (read["messages"], read["functions"], read["function_call"]) == ([], [], None)
    messages = api.get("/trace_log/t1").json()["configuration"]["messages"]
    assert messages[0]["tool_calls"] == [{"id": "1"}]  # kept as sent
    assert messages[2] == {"content": "no role", "role": "user"}  # the reference's default role


def test_get_trace_logs_filters_match_spans_at_any_depth(api: httpx.Client) -> None:
    exp = experiment(api, project="p")
    ts = "2024-05-30 13:48:34"
    logs = []
    for i in range(3):
        logs += [
            {"trace_id": f"r{i}", "trace_name": "pipeline", "start_timestamp": ts, "experiment_uuid": exp["uuid"]},
            {"trace_id": f"f{i}", "parent_trace_id": f"r{i}", "trace_name": "retrieve", "start_timestamp": ts,
             "experiment_uuid": exp["uuid"]},
            {"trace_id": f"l{i}", "parent_trace_id": f"f{i}", "root_trace_id": f"r{i}", "trace_name": "llm",
             "start_timestamp": ts, "experiment_uuid": exp["uuid"], "input_tokens": 3},
        ]
    assert api.post("/trace_logs/batch", json={"logs": logs}).status_code == 200
    body = {"project_name": "p", "filter_field": "trace_name", "filter_operator": "like", "filter_value": "llm"}
    page = api.post("/get_trace_logs", json=body).json()
    assert page["total"] == 3
    assert sorted(r["trace_id"] for r in page["results"]) == ["l0", "l1", "l2"]
    assert {(r["root_trace_id"][:1], r["depth"], r["total_tokens"]) for r in page["results"]} == {("r", 2, 3)}
    page = api.post("/get_trace_logs", json={**body, "filter_value": "retrieve", "page_size": 2}).json()
    assert (page["total"], page["total_pages"], len(page["results"])) == (3, 2, 2)
    assert all([c["trace_id"][:1] for c in r["children_logs"]] == ["l"] for r in page["results"])
    # without a filter: root traces, as before
    assert api.post("/get_trace_logs", json={"project_name": "p"}).json()["total"] == 3
    assert {r["trace_name"] for r in api.post("/get_trace_logs", json={"project_name": "p"}).json()["results"]} == {
        "pipeline"
    }
