"""Deployed prompts on a real server with fake providers upstream: the extension routes, Parea's
``POST /deployed-prompt``, ``/completion`` and ``/completion/stream`` with ``deployment_id``, and
the official ``parea-ai`` SDK's ``get_prompt`` / ``completion`` against them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.server.auth import key_owner
from tests.proxy_fakes import FakeProvider
from tests.servers import ServerHandle, start_server
from tests.test_server_completion import anthropic_server, fake, openai_server  # noqa: F401 - fixtures

KEY, OTHER = "prompts-key", "prompts-other-key"

V1 = {
    "model": "gpt-4o-mini",
    "provider": "openai",
    "model_params": {"temp": 0.2, "max_length": 64},
    "messages": [
        {"role": "system", "content": "You greet people from {{place}}."},
        {"role": "user", "content": "Say hello to {{ name }}."},
    ],
}
V2 = {
    "model": "claude-3-5-haiku-latest",
    "provider": "anthropic",
    "model_params": {"temp": 0.7},
    "messages": [{"role": "user", "content": "Hi {{name}}, literal \\{{braces}} stay."}],
}


@pytest.fixture
def server(db: str | Path, fake: FakeProvider) -> Iterator[ServerHandle]:  # noqa: F811 - the fixture
    with start_server(db, api_keys=[KEY, OTHER]) as handle:
        yield handle


def client(server: ServerHandle, key: str = KEY) -> httpx.Client:
    return httpx.Client(base_url=server.base_url + "/", headers={"x-api-key": key}, timeout=30)


@pytest.fixture
def api(server: ServerHandle) -> Iterator[httpx.Client]:
    with client(server) as c:
        yield c


def push(api: httpx.Client, spec: dict[str, Any], message: str, name: str = "greeter") -> dict[str, Any]:
    r = api.post("/prompts", json={"name": name, "prompt": spec, "message": message, "author": "ada"})
    assert r.status_code == 200, r.text
    return dict(r.json())


def deploy(api: httpx.Client, version: int, name: str = "greeter", **fields: Any) -> dict[str, Any]:
    r = api.post(f"/prompts/{name}/deploy", json={"version": version, **fields})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_health_advertises_prompts(api: httpx.Client) -> None:
    assert "prompts" in api.get("/").json()["extensions"].split(",")


def test_versions_are_immutable_and_numbered(api: httpx.Client) -> None:
    one = push(api, V1, "first")
    assert (one["version"], one["ref"], one["created"], one["message"], one["author"]) == (1, "greeter@1", True,
                                                                                           "first", "ada")
    assert one["spec"] == V1
    again = push(api, V1, "retried push")  # the same spec: no new version
    assert (again["version"], again["created"], again["message"]) == (1, False, "first")
    two = push(api, V2, "move to claude")
    assert (two["version"], two["created"]) == (2, True)
    versions = api.get("/prompts/greeter").json()["versions"]
    assert [(v["version"], v["message"]) for v in versions] == [(1, "first"), (2, "move to claude")]
    assert api.get("/prompts/greeter/versions/1").json()["spec"] == V1
    listed = api.get("/prompts").json()
    assert [(p["name"], p["latest_version"], p["n_versions"], p["deployments"]) for p in listed] == [
        ("greeter", 2, 2, [])
    ]
    assert api.get("/prompts/greeter/versions/3").status_code == 404
    assert api.get("/prompts/nope").status_code == 404


def test_a_bad_prompt_is_a_422_naming_the_problem(api: httpx.Client) -> None:
    r = api.post("/prompts", json={"name": "p", "prompt": {**V1, "temperature": 1}})
    assert r.status_code == 422 and "unknown key(s) temperature" in r.json()["detail"][0]["msg"]
    r = api.post("/prompts", json={"name": "p", "prompt": {"model": "gpt-4o-mini"}})
    assert r.status_code == 422 and "needs messages" in r.json()["detail"][0]["msg"]
    r = api.post("/prompts", json={"name": "bad name!", "prompt": V1})
    assert r.status_code == 400 and "invalid prompt name" in r.json()["detail"]


def test_deploy_fetch_complete_override_move_and_roll_back(server: ServerHandle, api: httpx.Client,
                                                           fake: FakeProvider,  # noqa: F811 - the fixture
                                                           anthropic_server: FakeProvider,  # noqa: F811
                                                           ) -> None:
    push(api, V1, "first")
    push(api, V2, "second")
    d = deploy(api, 1, author="ada")
    dep = d["deployment_id"]
    assert re.fullmatch(r"p-[A-Za-z0-9_-]{21}", dep) and (d["version"], d["ref"]) == (1, "greeter@1")

    # fetched unfilled: messages as written; filled: from llm_inputs (unused inputs are fine)
    plain = api.post("/deployed-prompt", json={"deployment_id": dep}).json()
    assert (plain["deployment_id"], plain["version_number"], plain["name"]) == (dep, 1.0, "greeter")
    assert (plain["model"], plain["provider"], plain["model_params"]) == ("gpt-4o-mini", "openai",
                                                                          {"temp": 0.2, "max_length": 64})
    assert plain["prompt"]["messages"] == plain["prompt"]["raw_messages"] == V1["messages"]
    assert plain["prompt"]["inputs"] is None and plain["functions"] == []
    inputs = {"name": "Ada", "place": "Paris", "unused": 1}
    filled = api.post("/deployed-prompt", json={"deployment_id": dep, "llm_inputs": inputs}).json()
    assert filled["prompt"]["messages"] == [
        {"role": "system", "content": "You greet people from Paris."},
        {"role": "user", "content": "Say hello to Ada."},
    ]
    assert filled["prompt"]["raw_messages"] == V1["messages"] and filled["prompt"]["inputs"] == inputs

    # complete with it: the provider sees the rendered messages and the deployed model and params
    r = api.post("/completion", json={"deployment_id": dep, "llm_inputs": inputs, "trace_id": "t-1"}).json()
    assert (r["status"], r["content"], r["model"]) == ("success", "echo: Say hello to Ada.", "gpt-4o-mini")
    sent = fake.requests[-1]
    assert sent["messages"] == filled["prompt"]["messages"]
    assert (sent["model"], sent["temperature"], sent["max_completion_tokens"]) == ("gpt-4o-mini", 0.2, 64)
    logged = api.get("/trace_log/t-1").json()
    assert logged["deployment_id"] == dep
    assert {k: logged["metadata"][k] for k in ("deployment_id", "prompt", "prompt_version")} == {
        "deployment_id": dep, "prompt": "greeter@1", "prompt_version": 1}
    assert logged["configuration"]["messages"] == filled["prompt"]["messages"]

    # a field sent in llm_configuration overrides the deployed one; the others stay deployed
    override = {"model": "gpt-4o", "model_params": {"temp": 0.9, "top_p": 1.0}}
    r = api.post("/completion", json={"deployment_id": dep, "llm_inputs": inputs, "llm_configuration": override,
                                      "cache": False}).json()
    assert r["status"] == "success" and r["model"] == "gpt-4o"
    sent = fake.requests[-1]
    assert (sent["model"], sent["temperature"], sent["max_completion_tokens"]) == ("gpt-4o", 0.9, 64)
    assert sent["messages"] == filled["prompt"]["messages"]

    # move the deployment to version 2 (another provider), then roll back to 1
    moved = deploy(api, 2, author="bob")
    assert (moved["deployment_id"], moved["version"]) == (dep, 2)
    r = api.post("/completion", json={"deployment_id": dep, "llm_inputs": {"name": "Bo"},
                                      "provider_api_key": "sk-ant-test"}).json()
    assert (r["status"], r["provider"], r["content"]) == ("success", "anthropic",
                                                          "echo: Hi Bo, literal {{braces}} stay.")
    assert anthropic_server.requests[-1]["temperature"] == 0.7
    back = api.post(f"/deployments/{dep}/rollback", json={"author": "ada"}).json()
    assert back["version"] == 1
    assert [(h["action"], h["version"], h["previous_version"], h["author"]) for h in back["history"]] == [
        ("rollback", 1, 2, "ada"), ("move", 2, 1, "bob"), ("deploy", 1, None, "ada")]
    assert api.post("/deployed-prompt", json={"deployment_id": dep}).json()["version_number"] == 1.0
    assert api.get("/prompts").json()[0]["deployments"] == [{"deployment_id": dep, "version": 1}]

    # the stream route serves the deployment too
    with api.stream("POST", "/completion/stream", json={"deployment_id": dep, "llm_inputs": inputs,
                                                        "cache": False}) as s:
        events = [json.loads(line.removeprefix("data: ")) for line in s.iter_lines() if line.startswith("data: ")]
    assert "".join(e["chunk"] for e in events) == "echo: Say hello to Ada."
    assert events[-1]["result"]["status"] == "success" and events[-1]["result"]["model"] == "gpt-4o-mini"
    assert fake.requests[-1]["stream"] is True and fake.requests[-1]["temperature"] == 0.2


def test_missing_variables_are_a_422_naming_them_before_any_call(api: httpx.Client,
                                                                  fake: FakeProvider) -> None:  # noqa: F811
    push(api, V1, "first")
    dep = deploy(api, 1)["deployment_id"]
    r = api.post("/deployed-prompt", json={"deployment_id": dep, "llm_inputs": {"name": "Ada"}})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "llm_inputs", "place"]
    assert "'place'" in r.json()["detail"][0]["msg"]
    r = api.post("/completion", json={"deployment_id": dep, "llm_inputs": {}})
    assert r.status_code == 422 and "'name', 'place'" in r.json()["detail"][0]["msg"]
    r = api.post("/completion/stream", json={"deployment_id": dep})
    assert r.status_code == 422
    assert fake.calls == 0
    r = api.post("/completion", json={"deployment_id": "p-unknown", "llm_inputs": {}})
    assert r.status_code == 404 and "p-unknown" in r.json()["detail"]


def test_tenants_are_isolated(server: ServerHandle, api: httpx.Client) -> None:
    push(api, V1, "first")
    dep = deploy(api, 1, deployment_id="p-shared-name")["deployment_id"]
    with client(server, OTHER) as other:
        assert other.get("/prompts").json() == []
        assert other.post("/deployed-prompt", json={"deployment_id": dep}).status_code == 404
        assert other.get("/prompts/greeter").status_code == 404
        assert other.post("/prompts/greeter/deploy", json={"version": 1}).status_code == 404
        assert other.post(f"/deployments/{dep}/rollback").status_code == 404
        # the same names are free in another tenant, and independent
        push(other, V2, "theirs")
        theirs = deploy(other, 1, deployment_id="p-shared-name")
        assert theirs["spec"] == V2
    assert api.post("/deployed-prompt", json={"deployment_id": dep}).json()["model"] == "gpt-4o-mini"
    assert httpx.post(f"{server.base_url}/deployed-prompt", json={"deployment_id": dep}).status_code == 401


def test_deployments_choose_and_refuse(api: httpx.Client) -> None:
    push(api, V1, "first")
    push(api, V2, "second")
    a = deploy(api, 1, deployment_id="p-prod")
    b = deploy(api, 2, deployment_id="p-staging")
    assert (a["version"], b["version"]) == (1, 2)
    r = api.post("/prompts/greeter/deploy", json={"version": 2})
    assert r.status_code == 400 and "several deployments (p-prod, p-staging)" in r.json()["detail"]
    r = api.post("/deployments/p-staging/rollback")
    assert r.status_code == 400 and "never been moved" in r.json()["detail"]
    assert api.post("/prompts/greeter/deploy", json={"version": 9, "deployment_id": "p-prod"}).status_code == 404
    push(api, V1, "other", name="other")
    r = api.post("/prompts/other/deploy", json={"version": 1, "deployment_id": "p-prod"})
    assert r.status_code == 400 and "serves another prompt" in r.json()["detail"]


def test_the_official_sdk_gets_and_completes_a_deployed_prompt(server: ServerHandle, api: httpx.Client,
                                                                fake: FakeProvider) -> None:  # noqa: F811
    pytest.importorskip("parea")
    push(api, V1, "first")
    dep = deploy(api, 1)["deployment_id"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAREA_", "_PAREA", "RUNNER_"))}
    env.update(PAREA_BASE_URL=server.base_url, PAREA_API_KEY=KEY, DEPLOYMENT_ID=dep)
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "sdk_scripts" / "deployed_prompt.py")],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT: "))
    result = json.loads(line.removeprefix("RESULT: "))
    unfilled, filled = result["unfilled"], result["filled"]
    assert (unfilled["deployment_id"], unfilled["version_number"], unfilled["name"]) == (dep, 1.0, "greeter")
    assert (unfilled["model"], unfilled["provider"]) == ("gpt-4o-mini", "openai")
    assert unfilled["messages"] == unfilled["raw_messages"] == V1["messages"]
    assert filled["messages"][1] == {"role": "user", "content": "Say hello to Ada."}
    assert filled["inputs"] == {"name": "Ada", "place": "Paris"}
    answer = result["answer"]
    assert (answer["status"], answer["content"], answer["model"]) == ("success", "echo: Say hello to Ada.",
                                                                      "gpt-4o-mini")
    # the SDK sends its default model_params (temp 1.0 ...): the deployed 0.2 is kept
    sent = fake.requests[-1]
    assert (sent["model"], sent["temperature"], sent["max_completion_tokens"]) == ("gpt-4o-mini", 0.2, 64)
    assert sent["messages"][0] == {"role": "system", "content": "You greet people from Paris."}
    assert server.store is not None
    logged = server.store.get_trace_tree(answer["inference_id"], key_owner(KEY))
    assert logged["deployment_id"] == dep and logged["metadata"]["prompt"] == "greeter@1"
