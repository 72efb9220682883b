"""Text and numbers one store could keep and the other cannot are stored alike through every door.

PostgreSQL's text cannot hold a NUL character; SQLite's can, and the server refuses one (422).
So that a run reads back the same whatever the store, a NUL anywhere in a row's log is stored
as U+FFFD, as a lone UTF-16 surrogate already is; a non-finite number is ``null`` (or
``"Infinity"`` as a whole output). The ``door`` fixture runs each test through the embedded
SQLite store, HTTP to a server, and the embedded PostgreSQL store.
"""

from __future__ import annotations

import html
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner import Experiment, trace
from runner._json import without_nul
from runner.schema import API_PREFIX
from runner.store import Store
from tests.doors import Door
from tests.servers import experiment, log, serving, start_server

CUT = json.loads('"cut \\ud83d"')  # a model answer cut inside an escape: a lone surrogate


@trace
def step(text: Any) -> Any:
    return text


def _answer(kind: str, text: str) -> Any:
    if kind == "span":
        return step(text)
    if kind == "json":
        return {"k\x00": text}
    if kind == "inf":
        return float("inf")
    if kind == "span-inf":
        return step(float("-inf"))
    if kind == "surrogate":
        return {"k" + CUT: CUT}
    return text


def test_nul_surrogates_and_infinities_read_back_the_same_through_every_door(door: Door, tmp_path: Path) -> None:
    kinds = ["plain", "span", "json", "inf", "span-inf", "surrogate"]
    data = [{"id": i, "kind": k, "text": f"{k}\x00{i}", "col\x00": float("inf")} for i, k in enumerate(kinds)]

    def answer(kind: str, text: str, **_: Any) -> Any:
        return _answer(kind, text)

    result = Experiment(name="nul", data=data, func=answer, **door.kwargs()).run("nul-1", quiet=True)
    assert result.status == "completed" and result.n_total == 6 and result.n_errors == 0
    rows = {int(r["metadata"]["row_id"]): r for r in door.store.experiment_rows(result.experiment_uuid)}
    assert sorted(rows) == list(range(6)) and all(r["status"] == "success" for r in rows.values())
    for i, kind in enumerate(kinds):
        assert rows[i]["inputs"] == {"id": i, "kind": kind, "text": f"{kind}\ufffd{i}", "col\ufffd": None}
    assert rows[0]["output"] == "plain\ufffd0"
    assert rows[1]["output"] == "span\ufffd1"
    (child,) = door.store.get_trace_tree(rows[1]["trace_id"])["children_logs"]
    assert (child["inputs"], child["output"]) == ({"text": "span\ufffd1"}, "span\ufffd1")
    # a JSON output is text holding the escape: it keeps the NUL (json.loads gives it back)
    assert json.loads(rows[2]["output"]) == {"k\x00": "json\x002"}
    assert rows[3]["output"] == "Infinity"
    (child,) = door.store.get_trace_tree(rows[4]["trace_id"])["children_logs"]
    assert (child["inputs"], child["output"]) == ({"text": None}, "-Infinity")
    assert json.loads(rows[5]["output"]) == {"kcut \ufffd": "cut \ufffd"}
    # and `show --json` reads the same values back
    shown = subprocess.run(
        [sys.executable, "-m", "runner", "show", "nul-1", "--json", "--db", str(door.db)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert shown.returncode == 0, shown.stderr
    listed = {r["row_id"]: r for r in json.loads(shown.stdout)["worst_rows"]}
    assert (listed["0"]["output"], listed["0"]["inputs"]["text"]) == ("plain\ufffd0", "plain\ufffd0")


def test_without_nul_leaves_everything_else_alone() -> None:
    value = {"a\x00": ["b\x00c", 1, 2.5, None, True, {"d": "\\u0000"}]}
    assert without_nul(value) == {"a\ufffd": ["b\ufffdc", 1, 2.5, None, True, {"d": "\\u0000"}]}
    assert without_nul("plain") == "plain"


# -- names and texts that are not a trace log (round 5) ---------------------------------------------
#
# The rule is the logs': no text either store keeps holds a NUL character or a lone surrogate, each
# is U+FFFD, in every column, on SQLite and PostgreSQL alike, and a name given with one is found
# again by the same name. A JSON body holding one is a 422 naming the field (as for POST /trace_log).

FFFD = "\ufffd"


@pytest.fixture(params=["embedded-sqlite", "http-sqlite", "embedded-postgresql", "http-postgresql"])
def way(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | Path, str]]:
    """``(door, store location, base URL of a server over that store)``: a run goes through the
    door; what it stored is read back through that server, whichever door wrote it."""
    door, kind = request.param.split("-")
    db: str | Path = tmp_path / "runner.db" if kind == "sqlite" else request.getfixturevalue("pg").url()
    Store(db).close()  # migrated before the server starts
    with start_server(db) as server:
        yield door, db, server.base_url


def test_names_metadata_and_datasets_read_back_alike_through_every_door_on_both_stores(
    way: tuple[str, str | Path, str], tmp_path: Path
) -> None:
    door, db, base_url = way
    store = Store(db)
    try:
        row = {"inputs": {"q\x00": "a\x00" + CUT}, "target": "t\x00", "tags": ["g\x00"]}
        store.create_dataset("set\x00", ["q"], [row])
    finally:
        store.close()
    kwargs: dict[str, Any] = {"db": db} if door == "embedded" else {"base_url": base_url}
    result = Experiment(
        name="exp\x00" + CUT, project_name="proj\x00", data="set\x00", func=lambda **row: row,
        metadata={"m\x00": "v\x00", "cut": CUT}, **kwargs,
    ).run("nul-names", quiet=True)
    assert result.status == "completed" and (result.n_total, result.n_errors) == (1, 0)
    name, project, metadata = f"exp{FFFD}cut {FFFD}", f"proj{FFFD}", {f"m{FFFD}": f"v{FFFD}", "cut": f"cut {FFFD}"}

    with httpx.Client(base_url=base_url + "/", timeout=30) as api:
        (listed,) = api.post("/experiments", json={}).json()
        assert (listed["name"], listed["metadata"]) == (name, metadata)
        assert api.post("/project", json={"name": project}).json()["uuid"] == listed["project_uuid"]
        (row,) = api.post(f"/experiment/{result.experiment_uuid}/trace_logs", json={}).json()
        assert row["inputs"] == {f"q{FFFD}": f"a{FFFD}cut {FFFD}"} and row["target"] == f"t{FFFD}"
        dataset = api.get("/collection/set%00").json()  # found by the name it was given
        assert dataset is not None and dataset["name"] == f"set{FFFD}"
        assert api.get(f"/collection/set{FFFD}").json()["id"] == dataset["id"]
        (case,) = dataset["test_cases"].values()
        assert case["inputs"] == {f"q{FFFD}": f"a{FFFD}cut {FFFD}"}
        assert (case["target"], case["tags"]) == (f"t{FFFD}", [f"g{FFFD}"])
        ui = api.get(base_url.removesuffix(API_PREFIX) + "/")  # the web UI's list of runs
        assert ui.status_code == 200 and html.escape(name) in ui.text
        page = api.get(base_url.removesuffix(API_PREFIX) + f"/runs/{result.experiment_uuid}")
        assert page.status_code == 200 and html.escape(name) in page.text

    shown = subprocess.run(
        [sys.executable, "-m", "runner", "show", "nul-names", "--json", "--db", str(db)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert shown.returncode == 0, shown.stderr
    assert (json.loads(shown.stdout)["name"], json.loads(shown.stdout)["project_name"]) == (name, project)


def test_the_store_keeps_every_text_alike_on_both_stores(db: str | Path) -> None:
    store = Store(db)
    try:
        project, created = store.get_or_create_project("p\x00" + CUT)
        assert created and project["name"] == f"p{FFFD}cut {FFFD}"
        assert store.get_or_create_project("p\x00" + CUT)[0]["uuid"] == project["uuid"]  # found again
        exp = store.create_experiment(name="e\x00", project_uuid=project["uuid"], run_name="r1",
                                      metadata={"k\x00": ["v\x00", CUT]})
        assert (exp["name"], exp["metadata"]) == (f"e{FFFD}", {f"k{FFFD}": [f"v{FFFD}", f"cut {FFFD}"]})
        assert store.find_experiment("r1")["name"] == f"e{FFFD}"
        assert [e["uuid"] for e in store.list_experiments(experiment_name_filter="e\x00")] == [exp["uuid"]]
        store.finish_experiment(exp["uuid"], dataset_level_errors={"d\x00": "boom\x00"}, scorer_errors={"s": CUT})
        finished = store.get_experiment(exp["uuid"])
        assert finished["dataset_level_errors"] == {f"d{FFFD}": f"boom{FFFD}"}
        assert finished["scorer_errors"] == {"s": f"cut {FFFD}"}

        store.upsert_traces([log("t", experiment_uuid=exp["uuid"])])
        store.record_feedback("t", 0.5, "nice\x00" + CUT, "better\x00")
        assert store.get_trace_tree("t")["target"] == f"better{FFFD}"
        (fb,) = store.feedback_for(["t"])["t"]
        assert fb["comment"] == f"nice{FFFD}cut {FFFD}"

        ds = store.create_dataset("d\x00", ["a\x00"], [{"inputs": {"a": "x"}, "target": None}])
        (case_id,) = ds["test_case_ids"]
        store.update_test_case(ds["id"], case_id, {"inputs": {"b\x00": CUT}, "target": "t\x00", "tags": ["g\x00"]})
        got = store.get_dataset("d\x00")
        assert (got["name"], got["column_names"]) == (f"d{FFFD}", [f"a{FFFD}"])
        assert got["test_cases"][str(case_id)] | {"id": 0, "test_case_collection_id": 0} == {
            "id": 0, "test_case_collection_id": 0, "inputs": {"a": "x", f"b{FFFD}": f"cut {FFFD}"},
            "target": f"t{FFFD}", "tags": [f"g{FFFD}"],
        }
        with pytest.raises(ValueError, match="already exists"):  # the same name as stored
            store.create_dataset(f"d{FFFD}", [])

        spec = {"messages": [{"role": "user", "content": "hi\x00" + CUT}]}
        version = store.save_prompt_version("greet", spec, message="m\x00", author="a\x00")
        assert version["spec"]["messages"][0]["content"] == f"hi{FFFD}cut {FFFD}"
        assert (version["message"], version["author"]) == (f"m{FFFD}", f"a{FFFD}")
        assert store.save_prompt_version("greet", spec)["created"] is False  # the same spec as stored
    finally:
        store.close()


def test_a_nul_in_a_path_or_query_is_looked_up_alike_on_both_stores(db: str | Path) -> None:
    """Text that reaches the store outside a JSON body (a path, a query) is a lookup like any
    other: not found (or found under the name stored), never a 500 on PostgreSQL."""
    with start_server(db) as server, httpx.Client(base_url=server.url, timeout=30) as web:
        api = API_PREFIX
        answers = {
            f"GET {api}/collection/a%00b": (200, "null"),
            f"GET {api}/prompts/a%00b": (404, "not found"),
            f"POST {api}/prompts/a%00b/deploy": (404, "not found"),
            f"GET {api}/deployments/a%00b": (404, "not found"),
            f"GET {api}/trace_log/a%00b": (404, "not found"),
            f"GET {api}/experiment/a%00b/stats": (404, "not found"),
            f"POST {api}/experiment/a%00b/finished": (404, "not found"),
            f"POST {api}/experiment/a%00b/trace_logs": (404, "not found"),
            "GET /runs/a%00b": (404, "Not found"),
            "GET /datasets/a%00b": (404, "Not found"),
            "GET /prompts/a%00b": (404, "Not found"),
            "GET /compare?a=a%00b&b=c%00d": (404, "Not found"),
            "GET /logs?name=a%00b&q=c%00d": (200, "Logs"),
        }
        for request, (status, text) in answers.items():
            method, url = request.split(" ")
            body = {"version": 1} if "deploy" in url else {} if method == "POST" else None
            response = web.request(method, url, json=body)
            assert (response.status_code, text in response.text) == (status, True), (request, response.text[:300])


def test_a_json_body_holding_a_nul_is_a_422_naming_the_field_on_both_stores(db: str | Path) -> None:
    """As ``POST /trace_log`` answers: every route that writes text refuses it alike."""
    with serving(db) as api:
        exp = experiment(api)
        api.post("/trace_log", json=log("t", experiment_uuid=exp["uuid"]))
        bodies: list[tuple[str, str, dict[str, Any], list[Any]]] = [
            ("POST", "/project", {"name": "p\x00"}, ["name"]),
            ("POST", "/experiment", {"name": "e\x00", "project_uuid": exp["project_uuid"]}, ["name"]),
            ("POST", "/experiment", {"name": "e", "project_uuid": exp["project_uuid"], "metadata": {"k": "v\x00"}},
             ["metadata", "k"]),
            ("POST", "/collection", {"name": "d\x00", "column_names": []}, ["name"]),
            ("POST", "/testcases", {"name": "d", "test_cases": [{"inputs": {"a\x00": "x"}}]},
             ["test_cases", 0, "inputs", "a\x00"]),
            ("POST", "/feedback", {"trace_id": "t", "score": 0.5, "comment": "c\x00"}, ["comment"]),
            ("POST", "/prompts", {"name": "greet", "prompt": {"messages": [{"role": "user", "content": "x\x00"}]}},
             ["prompt", "messages", 0, "content"]),
            ("PUT", "/trace_log", {"trace_id": "t", "field_name_to_value_map": {"error": "x\x00"}},
             ["field_name_to_value_map", "error"]),
            ("POST", "/trace_log", log("u", trace_name="n\x00"), ["trace_name"]),
        ]
        for method, path, body, loc in bodies:
            response = api.request(method, path, json=body)
            assert response.status_code == 422, (path, response.text)
            (error,) = response.json()["detail"]
            assert error["loc"] == ["body", *loc] and "NUL" in error["msg"], (path, error)
        assert api.post("/experiments", json={}).json()[0]["name"] == "exp"  # nothing half-written


def test_otlp_spans_and_project_names_holding_a_nul_are_stored_alike_on_both_stores(db: str | Path) -> None:
    """Protobuf text may hold a NUL (it is valid UTF-8): stored as U+FFFD on both stores, where
    PostgreSQL's store answered the exporter 500 (the project could not be created)."""
    from opentelemetry.sdk.trace.export import SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tests.test_server_otlp import OWNER, exporter, provider

    spans = InMemorySpanExporter()
    tp = provider(spans, **{"runner.project": "team\x00"})
    with tp.get_tracer("tests").start_as_current_span("agent\x00", attributes={"input.value": "in\x00"}):
        pass
    with start_server(db, api_keys=["k"]) as server:
        assert exporter(server).export(spans.get_finished_spans()) is SpanExportResult.SUCCESS
        assert server.store is not None
        assert [p["name"] for p in server.store.list_projects(OWNER)] == [f"team{FFFD}"]
        assert f"agent{FFFD}" in server.store.log_names(OWNER)
