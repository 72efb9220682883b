"""``POST /completion``, ``/completion/stream`` and ``/deployed-prompt`` on a real server, with
fake OpenAI and Anthropic providers on loopback (the server reads them from its environment);
and the official ``parea-ai`` SDK's ``p.completion(...)`` / ``p.stream(...)`` against it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.proxy import (
    CompletionsSchema,
    MemoryCompletionCache,
    Proxy,
    SQLiteCompletionCache,
    StoreCompletionCache,
    is_rate_limited,
    resolve_call,
)
from runner.server import create_app
from runner.server.auth import key_owner
from runner.server.routes_completion import proxy_for
from runner.store import Store
from tests.proxy_fakes import FakeProvider
from tests.servers import ServerHandle, experiment, log, start_server

KEY = "completion-key"
OWNER = key_owner(KEY)
MINI_IN, MINI_OUT = 0.15e-6, 0.60e-6  # gpt-4o-mini, USD per token


@pytest.fixture(scope="module")
def openai_server() -> Iterator[FakeProvider]:
    with FakeProvider.running("openai") as fake:
        yield fake


@pytest.fixture(scope="module")
def anthropic_server() -> Iterator[FakeProvider]:
    with FakeProvider.running("anthropic") as fake:
        yield fake


@pytest.fixture
def fake(openai_server: FakeProvider, anthropic_server: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> FakeProvider:
    openai_server.reset()
    anthropic_server.reset()
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic_server.base_url)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    return openai_server


@pytest.fixture
def server(db: str | Path, fake: FakeProvider) -> Iterator[ServerHandle]:
    """A server over each store (``db``: SQLite, then PostgreSQL): logs and the completion cache
    live in the store."""
    with start_server(db, api_keys=[KEY, "other-key"]) as handle:
        yield handle


@pytest.fixture
def api(server: ServerHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url + "/", headers={"x-api-key": KEY}, timeout=30) as client:
        yield client


def body(text: str = "hello world", *, model: str = "gpt-4o-mini", provider: str = "openai",
         **fields: Any) -> dict[str, Any]:
    config = {"model": model, "provider": provider, "messages": [{"role": "user", "content": text}]}
    config.update(fields.pop("config", {}))
    return {"llm_configuration": config, **fields}


def stored(server: ServerHandle, trace_id: str, owner: str = OWNER) -> dict[str, Any]:
    assert server.store is not None
    return server.store.get_trace_tree(trace_id, owner)


# --- /completion ---------------------------------------------------------------------------------


def test_completion_returns_the_full_response_and_logs_it(server: ServerHandle, api: httpx.Client,
                                                          fake: FakeProvider) -> None:
    req = body("hi there", config={"model_params": {"temp": 0.3}}, trace_name="greet", tags=["a"],
               metadata={"k": "v"})
    r = api.post("/completion", json=req)
    assert r.status_code == 200, r.text
    got = r.json()
    assert set(got) == {"content", "latency", "input_tokens", "output_tokens", "total_tokens", "cost", "model",
                        "provider", "cache_hit", "status", "error", "trace_id", "start_timestamp",
                        "end_timestamp", "inference_id"}
    assert (got["content"], got["status"], got["cache_hit"], got["provider"]) == ("echo: hi there", "success",
                                                                                  False, "openai")
    assert (got["input_tokens"], got["output_tokens"], got["total_tokens"]) == (2, 3, 5)
    assert got["cost"] == pytest.approx(2 * MINI_IN + 3 * MINI_OUT) and got["latency"] > 0
    assert got["trace_id"] == got["inference_id"] and got["error"] is None
    assert fake.requests[0]["temperature"] == 0.3
    # logged before the answer was sent: readable at once, through the API too
    log_ = api.get(f"/trace_log/{got['trace_id']}").json()
    assert (log_["trace_name"], log_["output"], log_["cache_hit"], log_["tags"]) == ("greet", "echo: hi there",
                                                                                     False, ["a"])
    assert log_["configuration"]["model_params"]["temp"] == 0.3
    assert log_["configuration"]["messages"] == [{"role": "user", "content": "hi there"}]
    assert (log_["input_tokens"], log_["cost"]) == (2, pytest.approx(got["cost"]))
    assert log_["metadata"] == {"k": "v"} and log_["start_timestamp"] == got["start_timestamp"]

    again = api.post("/completion", json=req).json()
    assert (again["cache_hit"], again["cost"], again["content"], fake.calls) == (True, 0, "echo: hi there", 1)
    assert api.get(f"/trace_log/{again['trace_id']}").json()["cache_hit"] is True
    # another tenant cannot read it
    other = httpx.get(f"{server.base_url}/trace_log/{got['trace_id']}", headers={"x-api-key": "other-key"})
    assert other.status_code == 404


def test_completions_add_up_to_the_root_of_an_experiment_row(server: ServerHandle, api: httpx.Client) -> None:
    exp = experiment(api, "proj", "with-llm")
    uuid = exp["uuid"]
    assert api.post("/trace_log", json=log("root-1", experiment_uuid=uuid, output="x")).status_code == 200
    costs = []
    for i, text in enumerate(("one", "two three")):
        r = api.post("/completion", json=body(text, trace_id=f"llm-{i}", parent_trace_id="root-1",
                                              root_trace_id="root-1", experiment_uuid=uuid,
                                              metadata={"depth": 1, "execution_order": i + 1})).json()
        costs.append(r["cost"])
    (stats,) = api.get(f"/experiment/{uuid}/stats").json()["parent_trace_stats"]
    assert (stats["input_tokens"], stats["output_tokens"]) == (1 + 2, 2 + 3)
    assert stats["cost"] == pytest.approx(sum(costs))
    tree = api.get("/trace_log/root-1").json()
    assert [c["trace_id"] for c in tree["children_logs"]] == ["llm-0", "llm-1"]
    assert [c["depth"] for c in tree["children_logs"]] == [1, 1]
    assert tree["children_logs"][0]["experiment_uuid"] == uuid


def test_unknown_experiment_is_404_before_any_provider_call(api: httpx.Client, fake: FakeProvider) -> None:
    r = api.post("/completion", json=body(experiment_uuid="no-such-experiment"))
    assert r.status_code == 404 and "no-such-experiment" in r.json()["detail"]
    assert fake.calls == 0


def test_log_omit_flags_and_sample_rate(server: ServerHandle, api: httpx.Client) -> None:
    ids = {}
    for flag in ("log_omit_inputs", "log_omit_outputs", "log_omit"):
        omit: dict[str, Any] = {flag: True}
        ids[flag] = api.post("/completion", json=body(f"{flag} secret", cache=False, **omit)).json()["trace_id"]
    omitted_in = stored(server, ids["log_omit_inputs"])
    assert "messages" not in omitted_in["configuration"] and omitted_in["output"].startswith("echo:")
    omitted_out = stored(server, ids["log_omit_outputs"])
    assert "output" not in omitted_out and omitted_out["configuration"]["messages"]
    both = stored(server, ids["log_omit"])
    assert "output" not in both and "messages" not in both["configuration"] and both["input_tokens"] > 0
    dropped = api.post("/completion", json=body("unlogged", log_sample_rate=0)).json()
    assert dropped["status"] == "success"
    assert api.get(f"/trace_log/{dropped['trace_id']}").status_code == 404


def test_config_errors_are_400_naming_the_env_var(api: httpx.Client) -> None:
    r = api.post("/completion", json=body("x", model="claude-3-5-haiku-latest", provider="anthropic"))
    assert r.status_code == 400 and "ANTHROPIC_API_KEY" in r.json()["detail"]
    r = api.post("/completion", json={"llm_configuration": {"model": "gpt-4o-mini", "messages": []}})
    assert r.status_code == 400 and "messages is empty" in r.json()["detail"]
    r = api.post("/completion/stream", json=body("x", model="claude-3-5-haiku-latest", provider="anthropic"))
    assert r.status_code == 400 and "ANTHROPIC_API_KEY" in r.json()["detail"]
    bad = api.post("/completion", json=body(config={"model_params": {"temp": 3}}))
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "temp"


def test_retries_and_errors_come_back_as_status_error(api: httpx.Client, fake: FakeProvider) -> None:
    fake.fail(429, retry_after="0")
    fake.fail(500, retry_after="0")
    assert api.post("/completion", json=body("a")).json()["content"] == "echo: a" and fake.calls == 3
    fake.reset()
    fake.fail(429, times=4, retry_after="0", message="slow down")
    r = api.post("/completion", json=body("b"))
    assert r.status_code == 200 and fake.calls == 4  # gave up after the proxy's 3 retries
    assert r.json()["status"] == "error" and is_rate_limited(r.json()["error"])
    assert "slow down" in r.json()["error"] and "gave up after 4 attempts" in r.json()["error"]
    assert api.get(f"/trace_log/{r.json()['trace_id']}").json()["status"] == "error"  # failures are logged
    fake.reset()
    fake.fail(400, message="no such thing")
    r = api.post("/completion", json=body("c"))
    assert (r.json()["status"], fake.calls) == ("error", 1) and not is_rate_limited(r.json()["error"])


def test_one_upstream_call_for_concurrent_identical_requests(server: ServerHandle, fake: FakeProvider) -> None:
    fake.delay = 0.3

    def post(_: int) -> dict[str, Any]:
        r = httpx.post(server.base_url + "/completion", json=body("same"), headers={"x-api-key": KEY}, timeout=30)
        return dict(r.json())

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(8)))
    assert fake.calls == 1
    assert sorted(a["cache_hit"] for a in answers) == [False] + [True] * 7
    assert len({a["trace_id"] for a in answers}) == 8  # each request is its own trace


# --- /completion/stream ----------------------------------------------------------------------------


def _events(text: str) -> list[tuple[str | None, dict[str, Any]]]:
    out = []
    for block in text.split("\r\n\r\n"):
        if not block:
            continue
        event = None
        data = None
        for line in block.split("\r\n"):
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
        assert data is not None
        out.append((event, data))
    return out


@pytest.mark.parametrize(("provider", "model"), [("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku-4-5")])
def test_stream_sends_chunks_then_the_full_response(server: ServerHandle, api: httpx.Client,
                                                    monkeypatch: pytest.MonkeyPatch, provider: str, model: str) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant")
    with api.stream("POST", "/completion/stream", json=body("one two three", model=model, provider=provider)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = _events(r.read().decode())
    *chunks, (event, final) = events
    assert [e for e, _ in chunks] == [None] * len(chunks) and event == "result"
    text = "".join(d["chunk"] for _, d in chunks)
    result = final["result"]
    assert text == result["content"] == "echo: one two three" and final["chunk"] == ""
    assert (result["status"], result["cache_hit"], result["input_tokens"]) == ("success", False, 3)
    assert result["cost"] > 0
    logged = stored(server, result["trace_id"])
    assert logged["output"] == text and logged["time_to_first_token"] > 0
    with api.stream("POST", "/completion/stream", json=body("one two three", model=model, provider=provider)) as r:
        again = _events(r.read().decode())
    assert again[0][1] == {"chunk": "echo: one two three"} and again[-1][1]["result"]["cache_hit"] is True


def test_stream_failure_shows_in_the_final_event(api: httpx.Client, fake: FakeProvider) -> None:
    fake.fail(400, message="refused")
    with api.stream("POST", "/completion/stream", json=body("x")) as r:
        events = _events(r.read().decode())
    assert len(events) == 1 and events[0][1]["result"]["status"] == "error"
    assert "refused" in events[0][1]["result"]["error"]


def test_an_unknown_deployment_is_a_clear_404(api: httpx.Client) -> None:
    # deployed prompts themselves: tests/test_prompts_server.py
    r = api.post("/deployed-prompt", json={"deployment_id": "p-123", "llm_inputs": {"x": 1}})
    assert r.status_code == 404 and "deployment 'p-123' not found" in r.json()["detail"]


async def test_one_proxy_per_app_made_on_first_use_and_closed_at_shutdown(db: str | Path, fake: FakeProvider) -> None:
    store = Store(db)
    app = create_app(store)
    try:
        async with app.router.lifespan_context(app):  # what uvicorn runs around serving
            proxy = proxy_for(app)
            assert proxy_for(app) is proxy
            cache = proxy.cache
            if isinstance(db, Path):  # its own connections to the SQLite file, closed with the proxy
                assert isinstance(cache, SQLiteCompletionCache) and str(cache.path) == store.path
            else:  # the store's table, through the store's pool: shared by every server process
                assert isinstance(cache, StoreCompletionCache) and cache.store is store
        assert app.state.completion_proxy is None
        if isinstance(cache, SQLiteCompletionCache):
            with pytest.raises(RuntimeError, match="closed"):
                cache.get("key")
        else:  # the store is the server's to close, not the cache's
            assert cache.get("key") is None and store.count_traces() == 0
    finally:
        store.close()


# --- the proxy pieces the server and the client rely on ---------------------------------------------


async def test_per_call_log_sink_and_resolve_call(fake: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    from runner.proxy import ProxySettings

    default: list[dict[str, Any]] = []
    mine: list[dict[str, Any]] = []
    req = CompletionsSchema.model_validate(body("say {{w}}", llm_inputs={"w": "hi"}))
    async with Proxy(MemoryCompletionCache(), settings=ProxySettings.from_env(), log_sink=default.append) as proxy:
        await proxy.complete(req, log_sink=mine.append)
        await proxy.complete(req)
    assert len(mine) == 1 and len(default) == 1
    call = resolve_call(req)  # no settings needed: a client describes the call as the proxy does
    assert (call.provider, call.model, call.messages) == ("openai", "gpt-4o-mini",
                                                          [{"role": "user", "content": "say hi"}])
    monkeypatch.delenv("OPENAI_API_KEY")
    assert resolve_call(req).provider == "openai"


# --- the official SDK -----------------------------------------------------------------------------


def test_the_official_sdk_completion_and_stream(server: ServerHandle, fake: FakeProvider) -> None:
    pytest.importorskip("parea")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAREA_", "_PAREA", "RUNNER_"))}
    env.update(PAREA_BASE_URL=server.base_url, PAREA_API_KEY=KEY)
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "sdk_scripts" / "completion.py")],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Error" not in proc.stdout.replace("RESULT", ""), proc.stdout[-2000:]
    result = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT: ")).removeprefix("RESULT: "))
    plain = result["plain"]
    assert (plain["content"], plain["status"], plain["cache_hit"], plain["provider"]) == ("echo: hi", "success",
                                                                                          False, "openai")
    assert plain["tokens"] == [1, 2, 3] and plain["cost"] == pytest.approx(1 * MINI_IN + 2 * MINI_OUT)
    assert result["again"] == {"cache_hit": True, "cost": 0.0, "content": "echo: hi"}
    assert "".join(c for c in result["chunks"] if c) == "echo: stream me please" and result["chunks"][-1] == ""
    assert result["nested"] == "echo: inside a trace"
    assert fake.requests[0]["temperature"] == 0.0 and fake.requests[0]["max_completion_tokens"] == 32
    logged = stored(server, plain["inference_id"])
    assert logged["output"] == "echo: hi" and logged["metadata"] == {"source": "sdk"}
    # inside its @trace the SDK names the parent span: the call is stored as that span's child
    logs = {d["trace_id"]: d for d in _all_logs(server)}
    child = next(d for d in logs.values() if d.get("output") == "echo: inside a trace")
    assert child["parent_trace_id"] != child["trace_id"]
    assert logs[child["parent_trace_id"]]["trace_name"] == "traced"


def _all_logs(server: ServerHandle) -> list[dict[str, Any]]:
    assert server.store is not None
    return [json.loads(r[0]) for r in server.store._query("SELECT data FROM traces WHERE owner=?", (OWNER,))]
