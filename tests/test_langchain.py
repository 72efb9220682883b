"""``POST /trace_log/langchain``: LangChain runs from the real ``langchain-core`` and the official SDK's
tracer (``PareaAILangchainTracer``) become trace trees, with a fake chat model and no network.

One subprocess (``sdk_scripts/langchain_traces.py``) traces a chain on its own, a chain inside a
function traced by the SDK, a chain that raises, and an SDK experiment whose function runs the
chain. The older payload shape (a whole tree in ``child_runs``, no ``trace_id``) with a tool call is
built from real ``langchain-core`` runs and posted over REST.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import experiment, start_server

pytest.importorskip("parea")
pytest.importorskip("langchain_core")

SCRIPTS = Path(__file__).parent / "sdk_scripts"
KEY = "lc-key"


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], httpx.Client]]:
    tmp = tmp_path_factory.mktemp("langchain")
    with start_server(tmp / "runner.db", api_keys=[KEY]) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PAREA_", "_PAREA", "RUNNER_"))}
        env.update(PAREA_BASE_URL=server.base_url, PAREA_API_KEY=KEY)
        proc = subprocess.run(
            [sys.executable, str(SCRIPTS / "langchain_traces.py")],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "HTTP error" not in proc.stderr and "Error occurred" not in proc.stderr, proc.stderr[-3000:]
        line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT: "))
        with httpx.Client(base_url=server.base_url + "/", headers={"x-api-key": KEY}, timeout=30) as api:
            yield json.loads(line.removeprefix("RESULT: ")), api


def _tree(api: httpx.Client, trace_id: str) -> dict[str, Any]:
    response = api.get(f"/trace_log/{trace_id}")
    assert response.status_code == 200, response.text
    tree: dict[str, Any] = response.json()
    return tree


def test_a_chain_becomes_a_tree_with_its_llm_call(traced: tuple[dict[str, Any], httpx.Client]) -> None:
    result, api = traced
    root = _tree(api, result["plain"]["id"])
    assert (root["trace_name"], root["status"], root["output"]) == ("RunnableSequence", "success", "Paris 0")
    assert root["parent_trace_id"] == root["root_trace_id"] == root["trace_id"] and root["depth"] == 0
    assert root["inputs"] == {"question": "capital of France?"}
    assert root["tags"] == ["lc"] and root["metadata"]["k"] == "v" and root["project_name"] == "lc-project"
    assert root["latency"] > 0  # from start_time / end_time
    steps = {c["trace_name"]: c for c in root["children_logs"]}
    assert set(steps) == {"ChatPromptTemplate", "GenericFakeChatModel", "StrOutputParser"}
    for step in steps.values():
        assert (step["parent_trace_id"], step["root_trace_id"], step["depth"]) == (root["trace_id"],) * 2 + (1,)
    llm = steps["GenericFakeChatModel"]
    assert llm["configuration"]["model"] == "fake-gpt"
    assert llm["configuration"]["messages"][0]["role"] == "user"
    assert "capital of France?" in llm["configuration"]["messages"][0]["content"]
    assert (llm["output"], llm["input_tokens"], llm["output_tokens"], llm["total_tokens"]) == ("Paris 0", 11, 2, 13)
    assert llm["metadata"]["run_type"] == "llm"
    assert root["total_tokens"] == 13  # rolled up from the LLM call


def test_a_chain_inside_a_traced_function_hangs_under_that_span(traced: tuple[dict[str, Any], httpx.Client]) -> None:
    result, api = traced
    chain = _tree(api, result["nested"]["id"])
    root = _tree(api, chain["root_trace_id"])
    assert (root["trace_name"], root["output"]) == ("answer", "Paris 1")
    (child,) = root["children_logs"]
    assert child["trace_id"] == chain["trace_id"] and child["parent_trace_id"] == root["trace_id"]
    assert child["depth"] == 1 and child["session_id"] == "s-1"
    assert sorted(g["trace_name"] for g in child["children_logs"]) == [
        "ChatPromptTemplate", "GenericFakeChatModel", "StrOutputParser",
    ]
    assert {(g["root_trace_id"], g["depth"]) for g in child["children_logs"]} == {(root["trace_id"], 2)}
    assert root["total_tokens"] == 13


def test_a_failing_chain_is_an_error(traced: tuple[dict[str, Any], httpx.Client]) -> None:
    result, api = traced
    root = _tree(api, result["failing"]["id"])
    assert root["status"] == "error" and "the chain fails on purpose" in root["error"]


def test_langchain_traces_in_an_sdk_experiment(traced: tuple[dict[str, Any], httpx.Client]) -> None:
    result, api = traced
    uuid = result["experiment"]
    roots = api.post(f"/experiment/{uuid}/trace_logs", json={}).json()
    assert sorted(r["output"] for r in roots) == ["Paris 2", "Paris 3"]
    for r in roots:
        (chain,) = r["children_logs"]
        assert chain["trace_name"] == "RunnableSequence" and chain["experiment_uuid"] == uuid
    stats = api.post(f"/experiment/{uuid}/finished", json={}).json()["parent_trace_stats"]
    assert [s["total_tokens"] for s in stats] == [13, 13]


def test_get_trace_logs_finds_the_nested_llm_calls(traced: tuple[dict[str, Any], httpx.Client]) -> None:
    _, api = traced
    body = {"project_name": "lc-project", "filter_field": "trace_name", "filter_operator": "like",
            "filter_value": "FakeChat", "page_size": 50}
    page = api.post("/get_trace_logs", json=body).json()
    # one per chain run: alone, in a traced function, failing, and two experiment rows
    assert page["total"] == 5 and len(page["results"]) == 5
    assert {r["trace_name"] for r in page["results"]} == {"GenericFakeChatModel"}
    assert all(r["depth"] in (1, 2) for r in page["results"])
    unfiltered = api.post("/get_trace_logs", json={"project_name": "lc-project", "page_size": 50}).json()
    assert all(r["parent_trace_id"] == r["trace_id"] for r in unfiltered["results"])  # roots only


def test_the_sdk_s_readers_read_langchain_traces(traced: tuple[dict[str, Any], httpx.Client]) -> None:
    read = traced[0]["sdk_read"]
    assert read["children"] == ["ChatPromptTemplate", "GenericFakeChatModel", "StrOutputParser"]
    assert (read["llm_models"], read["llm_roles"], read["llm_total"]) == (["fake-gpt"], ["user"], 5)


def test_the_sdk_gets_none_for_a_missing_dataset(traced: tuple[dict[str, Any], httpx.Client]) -> None:
    result, _ = traced
    assert result["missing_collection"] is None


def _older_payload() -> dict[str, Any]:
    """A whole chain with a tool call, as an older ``langchain-core`` posted it: nested in
    ``child_runs``, without ``trace_id``; serialised by the SDK's own encoder."""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.runnables import RunnableLambda
    from langchain_core.tools import tool
    from langchain_core.tracers import BaseTracer
    from parea.utils.trace_integrations.langchain_utils import _dumps_json

    @tool
    def lookup(city: str) -> str:
        """The country of a city."""
        return {"Paris": "France"}.get(city, "?")

    call = {"name": "lookup", "args": {"city": "Paris"}, "id": "call-1", "type": "tool_call"}
    model = GenericFakeChatModel(messages=iter([AIMessage(content="", tool_calls=[call])]))
    chain = model | RunnableLambda(lambda m: lookup.invoke(m.tool_calls[0]["args"]))

    class Capture(BaseTracer):
        def __init__(self) -> None:
            super().__init__()
            self.roots: list[Any] = []

        def _persist_run(self, run: Any) -> None:
            self.roots.append(run)

    def nested(run: Any) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(_dumps_json(run.dict()))
        data.pop("trace_id", None)
        data["child_runs"] = [nested(c) for c in run.child_runs]
        return data

    capture = Capture()
    assert chain.invoke("Where is Paris?", config={"callbacks": [capture]}) == "France"
    (root,) = capture.roots
    return nested(root)


def test_a_nested_run_tree_with_a_tool_call(tmp_path: Path) -> None:
    payload = _older_payload()
    with start_server(tmp_path / "r.db") as server, httpx.Client(base_url=server.base_url + "/") as api:
        exp = experiment(api, project="lc")
        payload.update(project_uuid=exp["project_uuid"], experiment_uuid=exp["uuid"], _tags=["t"])
        assert api.post("/trace_log/langchain", json=payload).status_code == 200
        assert api.post("/trace_log/langchain", json=payload).status_code == 200  # a retry changes nothing
        (root,) = api.post(f"/experiment/{exp['uuid']}/trace_logs", json={}).json()
        assert root["trace_id"] == payload["id"] and root["output"] == "France"
        llm, step = sorted(root["children_logs"], key=lambda c: c["metadata"]["run_type"] != "llm")
        assert json.loads(llm["output"])[0]["name"] == "lookup"  # the model answered with a tool call
        (tool_span,) = step["children_logs"]
        assert (tool_span["trace_name"], tool_span["output"], tool_span["metadata"]["run_type"]) == (
            "lookup", "France", "tool",
        )
        assert (tool_span["root_trace_id"], tool_span["depth"], tool_span["tags"]) == (root["trace_id"], 2, ["t"])
        assert tool_span["experiment_uuid"] == exp["uuid"] and tool_span["project_name"] == "lc"


def test_a_body_that_is_not_a_run_is_a_422_naming_the_field(tmp_path: Path) -> None:
    with start_server(tmp_path / "r.db") as server, httpx.Client(base_url=server.base_url + "/") as api:
        response = api.post("/trace_log/langchain", json={"name": "no id", "start_time": "2024-05-30T13:48:34"})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "id"]
        response = api.post("/trace_log/langchain", json={"id": "r", "start_time": "x", "child_runs": [{"id": 5}]})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"][:3] == ["body", "child_runs", 0]
