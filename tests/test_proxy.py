"""The LLM proxy against fake OpenAI and Anthropic servers on real sockets (tests/proxy_fakes.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

import runner.proxy
from runner.errors import ConfigError
from runner.proxy import (
    CompletionsSchema,
    MemoryCompletionCache,
    ModelPrice,
    PriceTable,
    ProviderConfig,
    Proxy,
    ProxyConfigError,
    ProxySettings,
    SQLiteCompletionCache,
)
from runner.proxy.upstream import parse_retry_after
from runner.schema import TraceLogSchema
from tests.proxy_fakes import FakeProvider

# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openai_server() -> Iterator[FakeProvider]:
    with FakeProvider.running("openai") as fake:
        yield fake


@pytest.fixture(scope="module")
def anthropic_server() -> Iterator[FakeProvider]:
    with FakeProvider.running("anthropic") as fake:
        yield fake


@pytest.fixture
def openai_fake(openai_server: FakeProvider) -> FakeProvider:
    openai_server.reset()
    return openai_server


@pytest.fixture
def anthropic_fake(anthropic_server: FakeProvider) -> FakeProvider:
    anthropic_server.reset()
    return anthropic_server


@pytest.fixture
def settings(openai_server: FakeProvider, anthropic_server: FakeProvider) -> ProxySettings:
    return ProxySettings(
        providers={
            "openai": ProviderConfig("sk-openai", openai_server.base_url),
            "anthropic": ProviderConfig("sk-ant", anthropic_server.base_url),
        },
        max_retries=3,
        backoff_base=0.001,
    )


@pytest.fixture
def logs() -> list[dict[str, Any]]:
    return []


@pytest.fixture
async def proxy(settings: ProxySettings, logs: list[dict[str, Any]]) -> AsyncIterator[Proxy]:
    async with Proxy(MemoryCompletionCache(), settings=settings, log_sink=logs.append) as p:
        yield p


def request(text: str = "hello world", *, model: str = "gpt-4o-mini", provider: str | None = "openai",
            **fields: Any) -> CompletionsSchema:
    config = {"model": model, "provider": provider, "messages": [{"role": "user", "content": text}]}
    config.update(fields.pop("config", {}))
    return CompletionsSchema.model_validate({"llm_configuration": config, **fields})


# --- complete: mapping, tokens, cost ------------------------------------------------------------


async def test_openai_request_mapping_tokens_and_cost(proxy: Proxy, openai_fake: FakeProvider) -> None:
    fn = {"name": "lookup", "description": "Look it up", "parameters": {"type": "object", "properties": {}}}
    req = request("hi there", config={
        "model_params": {"temp": 0.2, "top_p": 1.0, "max_length": 50, "presence_penalty": 0.0,
                         "response_format": {"type": "json_object"}, "seed": 7},
        "functions": [fn],
        "function_call": "auto",
    })
    r = await proxy.complete(req)
    assert (r.status, r.content, r.cache_hit, r.provider, r.model) == (
        "success", "echo: hi there", False, "openai", "gpt-4o-mini")
    sent = openai_fake.requests[0]
    assert sent["temperature"] == 0.2 and sent["max_completion_tokens"] == 50 and sent["seed"] == 7
    assert "top_p" not in sent and "presence_penalty" not in sent  # defaults are not sent
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["tools"] == [{"type": "function", "function": fn}] and sent["tool_choice"] == "auto"
    assert openai_fake.headers[0]["authorization"] == "Bearer sk-openai"
    assert (r.input_tokens, r.output_tokens, r.total_tokens) == (2, 3, 5)
    assert r.cost == pytest.approx((2 * 0.15 + 3 * 0.60) / 1e6)
    assert r.trace_id == r.inference_id
    start, end = datetime.fromisoformat(r.start_timestamp), datetime.fromisoformat(r.end_timestamp)
    assert start.tzinfo is not None and start <= end and r.latency > 0


async def test_function_call_comes_back_as_json(proxy: Proxy, openai_fake: FakeProvider) -> None:
    fn = {"name": "lookup", "parameters": {"type": "object", "properties": {}}}
    r = await proxy.complete(request("x", config={"functions": [fn], "function_call": {"name": "lookup"}}))
    assert openai_fake.requests[0]["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert json.loads(r.content) == [{"name": "lookup", "arguments": {"echo": "x"}}]


async def test_anthropic_mapping_system_and_usage(proxy: Proxy, anthropic_fake: FakeProvider) -> None:
    req = CompletionsSchema.model_validate({"llm_configuration": {
        "model": "claude-sonnet-4-20250514", "provider": "anthropic",
        "model_params": {"temp": 0.5, "frequency_penalty": 1.0},
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ping"}],
    }})
    r = await proxy.complete(req)
    sent = anthropic_fake.requests[0]
    assert sent["system"] == "be brief" and sent["messages"] == [{"role": "user", "content": "ping"}]
    assert sent["max_tokens"] == 4096 and sent["temperature"] == 0.5 and "frequency_penalty" not in sent
    assert anthropic_fake.headers[0]["x-api-key"] == "sk-ant"
    assert anthropic_fake.headers[0]["anthropic-version"] == "2023-06-01"
    assert (r.content, r.input_tokens, r.output_tokens) == ("echo: ping", 3, 2)
    assert r.cost == pytest.approx((3 * 3.0 + 2 * 15.0) / 1e6)


async def test_other_openai_compatible_providers(settings: ProxySettings, openai_fake: FakeProvider) -> None:
    groq = replace(settings, providers={"groq": ProviderConfig("gsk", openai_fake.base_url)})
    async with Proxy(None, settings=groq) as p:
        r = await p.complete(request("x", model="llama-3.3-70b", provider="groq",
                                     config={"model_params": {"max_length": 9, "safe_prompt": True}}))
        assert [c async for c in p.stream(request("y", model="llama-3.3-70b", provider="groq"))]
    assert (r.status, r.provider, r.cost) == ("success", "groq", 0.0)  # no price for llama here
    sent, streamed = openai_fake.requests
    assert sent["max_tokens"] == 9 and "max_completion_tokens" not in sent and "safe_prompt" not in sent
    assert streamed["stream"] is True and "stream_options" not in streamed
    assert openai_fake.headers[0]["authorization"] == "Bearer gsk"


async def test_anthropic_tools(proxy: Proxy, anthropic_fake: FakeProvider) -> None:
    fn = {"name": "lookup", "description": "d", "parameters": {"type": "object", "properties": {}}}
    r = await proxy.complete(request("x", model="claude-sonnet-4-5", provider="anthropic",
                                     config={"functions": [fn], "function_call": {"name": "lookup"}}))
    sent = anthropic_fake.requests[0]
    assert sent["tools"] == [{"name": "lookup", "description": "d", "input_schema": fn["parameters"]}]
    assert sent["tool_choice"] == {"type": "tool", "name": "lookup"}
    assert json.loads(r.content) == [{"name": "lookup", "arguments": {"echo": "x"}}]


async def test_templates_and_history(proxy: Proxy, openai_fake: FakeProvider) -> None:
    req = request("say {{word}} {{ other }} {{missing}}", llm_inputs={"word": "hi", "other": 3},
                  config={"history": [{"role": "assistant", "content": "earlier"}]})
    r = await proxy.complete(req)
    assert r.content == "echo: say hi 3 {{missing}}"
    assert openai_fake.requests[0]["messages"][0]["content"] == "earlier"


# --- caching ------------------------------------------------------------------------------------


async def test_cache_hit_miss_and_key_rule(proxy: Proxy, openai_fake: FakeProvider) -> None:
    first = await proxy.complete(request("a", metadata={"run": 1}))
    again = await proxy.complete(request("a", metadata={"run": 2}, trace_name="other", tags=["t"]))
    assert (first.cache_hit, again.cache_hit, openai_fake.calls) == (False, True, 1)
    assert again.content == first.content and again.cost == 0 and again.input_tokens == first.input_tokens
    assert again.trace_id != first.trace_id
    same_params = await proxy.complete(request("a", config={"model_params": {"temp": 1.0}}))
    assert same_params.cache_hit  # a default value is no change
    for different in (
        request("b"),
        request("a", metadata={"cache_seed": 1}),
        request("a", config={"model_params": {"seed": 1}}),
        request("a", config={"model_params": {"temp": 0.0}}),
        request("a", model="gpt-4o"),
    ):
        assert not (await proxy.complete(different)).cache_hit
    assert openai_fake.calls == 6
    assert (await proxy.complete(request("a", metadata={"cache_seed": 1}))).cache_hit
    off = [await proxy.complete(request("a", cache=False)) for _ in range(2)]
    assert not any(r.cache_hit for r in off) and openai_fake.calls == 8


async def test_sqlite_cache_persists_across_proxies(
    tmp_path: Path, settings: ProxySettings, openai_fake: FakeProvider
) -> None:
    db = tmp_path / "runner.db"
    for expect_hit in (False, True):
        cache = SQLiteCompletionCache(db)
        async with Proxy(cache, settings=settings) as p:
            r = await p.complete(request("persist me"))
        cache.close()
        assert (r.cache_hit, r.content) == (expect_hit, "echo: persist me")
    assert openai_fake.calls == 1
    cache = SQLiteCompletionCache(db)
    assert len(cache) == 1
    cache.close()


async def test_a_broken_cache_does_not_fail_completions(
    tmp_path: Path, settings: ProxySettings, openai_fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    cache = SQLiteCompletionCache(tmp_path / "c.db")
    cache.close()
    async with Proxy(cache, settings=settings) as p:
        r = await p.complete(request("x"))
    assert r.status == "success" and "could not read the completion cache" in caplog.text


async def test_one_upstream_call_for_20_concurrent_requests(proxy: Proxy, openai_fake: FakeProvider) -> None:
    openai_fake.delay = 0.2
    results = await asyncio.gather(*(proxy.complete(request("same")) for _ in range(20)))
    assert openai_fake.calls == 1
    assert sorted(r.cache_hit for r in results) == [False] + [True] * 19
    assert {r.content for r in results} == {"echo: same"}
    assert [r.cost > 0 for r in results].count(True) == 1  # the cost is paid once


async def test_errors_are_not_cached(proxy: Proxy, openai_fake: FakeProvider) -> None:
    openai_fake.fail(400, message="bad request, truly")
    r = await proxy.complete(request("e"))
    assert r.status == "error" and r.error is not None and "bad request, truly" in r.error
    assert not r.cache_hit and r.content == "" and r.cost == 0
    r = await proxy.complete(request("e"))
    assert (r.status, r.cache_hit, openai_fake.calls) == ("success", False, 2)


# --- retries ------------------------------------------------------------------------------------


async def test_retry_on_429_honours_retry_after(proxy: Proxy, openai_fake: FakeProvider) -> None:
    openai_fake.fail(429, retry_after="1", message="slow down")
    t0 = time.perf_counter()
    r = await proxy.complete(request("r"))
    assert time.perf_counter() - t0 >= 0.95
    assert (r.status, openai_fake.calls) == ("success", 2)


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    date = (now + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after(httpx.Headers({"retry-after": date}), now) == 30
    assert parse_retry_after(httpx.Headers({"retry-after": "2"})) == 2
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250", "retry-after": "9"})) == 0.25
    assert parse_retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert parse_retry_after(httpx.Headers()) is None


async def test_retry_on_500_then_success(proxy: Proxy, anthropic_fake: FakeProvider) -> None:
    anthropic_fake.fail(500, times=2)
    r = await proxy.complete(request("x", model="claude-3-5-haiku-latest", provider="anthropic"))
    assert (r.status, r.content, anthropic_fake.calls) == ("success", "echo: x", 3)


async def test_gives_up_after_max_retries(settings: ProxySettings, openai_fake: FakeProvider) -> None:
    openai_fake.fail(503, times=5, message="overloaded")
    async with Proxy(None, settings=replace(settings, max_retries=2)) as p:
        r = await p.complete(request("x"))
    assert r.status == "error" and openai_fake.calls == 3
    assert r.error == "openai returned HTTP 503: overloaded (gave up after 3 attempts)"


async def test_no_retry_on_400(proxy: Proxy, anthropic_fake: FakeProvider) -> None:
    anthropic_fake.fail(400, times=3, message="max_tokens: too large")
    r = await proxy.complete(request("x", model="claude-3-5-haiku", provider="anthropic"))
    assert r.status == "error" and anthropic_fake.calls == 1
    assert r.error == "anthropic returned HTTP 400: max_tokens: too large"


async def test_timeout_is_retried(settings: ProxySettings, openai_fake: FakeProvider) -> None:
    openai_fake.slow(1.0)
    async with Proxy(None, settings=replace(settings, read_timeout=0.2)) as p:
        r = await p.complete(request("x"))
    assert (r.status, openai_fake.calls) == ("success", 2)


async def test_unreachable_provider_is_an_error_answer() -> None:
    settings = ProxySettings(providers={"openai": ProviderConfig("k", "http://127.0.0.1:9/v1")},
                             max_retries=1, backoff_base=0.001)
    async with Proxy(None, settings=settings) as p:
        r = await p.complete(request("x"))
    assert r.status == "error" and r.error is not None and "cannot reach openai" in r.error


# --- streaming ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model"), [("openai", "gpt-4.1-nano"), ("anthropic", "claude-haiku-4-5")]
)
async def test_streaming_chunks(
    proxy: Proxy, logs: list[dict[str, Any]], openai_fake: FakeProvider, anthropic_fake: FakeProvider,
    provider: str, model: str,
) -> None:
    stream = proxy.stream(request("one two three", model=model, provider=provider))
    chunks = [c async for c in stream]
    assert chunks == ["echo:", " one", " two", " three"]
    r = stream.result
    assert r is not None and (r.status, r.content, r.cache_hit) == ("success", "echo: one two three", False)
    assert (r.input_tokens, r.output_tokens) == (3, 4) and r.cost > 0
    assert logs[-1]["time_to_first_token"] is not None and logs[-1]["output"] == r.content
    again = proxy.stream(request("one two three", model=model, provider=provider))
    assert [c async for c in again] == ["echo: one two three"]
    assert again.result is not None and again.result.cache_hit and again.result.cost == 0
    assert openai_fake.calls + anthropic_fake.calls == 1


async def test_stream_error_and_retry(proxy: Proxy, openai_fake: FakeProvider) -> None:
    openai_fake.fail(429, retry_after="0")
    stream = proxy.stream(request("a b"))
    assert [c async for c in stream] == ["echo:", " a", " b"] and openai_fake.calls == 2
    openai_fake.fail(400, message="nope")
    stream = proxy.stream(request("c", cache=False))
    assert [c async for c in stream] == []
    assert stream.result is not None and stream.result.status == "error"
    assert stream.result.error == "openai returned HTTP 400: nope"


async def test_stream_closed_early_is_logged(proxy: Proxy, logs: list[dict[str, Any]],
                                             openai_fake: FakeProvider) -> None:
    stream = proxy.stream(request("a b c d"))
    assert await stream.__anext__() == "echo:"
    await stream.aclose()
    assert logs[-1]["status"] == "error" and "closed by the client" in logs[-1]["error"]
    assert (await proxy.complete(request("a b c d"))).cache_hit is False  # not cached


# --- pricing ------------------------------------------------------------------------------------


async def test_unknown_model_costs_zero_and_warns_once(
    proxy: Proxy, openai_fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="runner.proxy"):
        for text in ("a", "b", "c"):
            r = await proxy.complete(request(text, model="my-finetune"))
            assert r.cost == 0 and r.input_tokens > 0
    warnings = [rec for rec in caplog.records if "my-finetune" in rec.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


def test_price_lookup_and_overrides() -> None:
    table = PriceTable({"my-finetune": ModelPrice(1.0, 2.0), "gpt-4o": ModelPrice(9.0, 9.0)})
    assert table.price("gpt-4o-mini-2024-07-18") == ModelPrice(0.15, 0.60)
    assert table.price("gpt-4o-2024-05-13") == ModelPrice(5.0, 15.0)
    assert table.price("gpt-4o-2024-08-06") == ModelPrice(9.0, 9.0)  # the override wins
    assert table.price("anthropic/claude-3.5-haiku") == ModelPrice(0.80, 4.0)
    assert table.price("claude-opus-4-1-20250805") == ModelPrice(15.0, 75.0)
    assert table.price("o3-pro") == ModelPrice(20.0, 80.0) and table.price("o3-deep") is None
    assert table.cost(1_000_000, 500_000, "unknown", "my-finetune") == pytest.approx(2.0)


# --- configuration ------------------------------------------------------------------------------


async def test_missing_key_names_the_env_var(openai_fake: FakeProvider) -> None:
    async with Proxy(None, settings=ProxySettings()) as p:
        for provider, model, var in (("openai", "gpt-4o", "OPENAI_API_KEY"),
                                     ("anthropic", "claude-sonnet-4", "ANTHROPIC_API_KEY"),
                                     ("groq", "llama-3.3-70b", "GROQ_API_KEY")):
            with pytest.raises(ProxyConfigError, match=var) as info:
                await p.complete(request(model=model, provider=provider))
            assert isinstance(info.value, ConfigError)
        with pytest.raises(ProxyConfigError, match="ANTHROPIC_API_KEY"):
            p.stream(request(model="claude-sonnet-4", provider="anthropic"))  # raises before iterating
    keyless = ProxySettings(providers={"openai": ProviderConfig(base_url=openai_fake.base_url)})
    async with Proxy(None, settings=keyless) as p:
        r = await p.complete(request(provider_api_key="sk-from-request"))
    assert r.status == "success" and openai_fake.headers[0]["authorization"] == "Bearer sk-from-request"


async def test_requests_that_cannot_be_served(proxy: Proxy) -> None:
    deployed = CompletionsSchema.model_validate({"deployment_id": "p-1", "llm_inputs": {"x": 1}})
    with pytest.raises(ProxyConfigError, match="deployment p-1 was not resolved to a prompt"):
        await proxy.complete(deployed)
    with pytest.raises(ProxyConfigError, match="'cohere' is not supported"):
        await proxy.complete(request(provider="cohere"))
    with pytest.raises(ProxyConfigError, match="provider is required"):
        await proxy.complete(request(model="mystery", provider=None))
    with pytest.raises(ProxyConfigError, match="messages is empty"):
        await proxy.complete(request(config={"messages": None}))


def test_settings_from_env(tmp_path: Path) -> None:
    providers = tmp_path / "providers.json"
    providers.write_text(json.dumps({"openai": {"api_key": "from-file", "base_url": "http://file/v1"},
                                     "mistral": {"api_key": "m"}}))
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"my-model": {"input": 1, "output": 2}, "other": [3, 4]}))
    env = {"OPENAI_API_KEY": "from-env", "ANTHROPIC_BASE_URL": "http://ant", "AZURE_OPENAI_API_KEY": "az",
           "RUNNER_PROVIDERS_FILE": str(providers), "RUNNER_PRICES_FILE": str(prices)}
    s = ProxySettings.from_env(env, max_retries=5)
    assert s.resolve("openai") == ("from-env", "http://file/v1")  # env beats file, field by field
    assert s.resolve("mistral") == ("m", "https://api.mistral.ai/v1")
    assert s.providers["anthropic"] == ProviderConfig(None, "http://ant")
    assert s.prices == {"my-model": ModelPrice(1, 2), "other": ModelPrice(3, 4)} and s.max_retries == 5
    with pytest.raises(ProxyConfigError, match="AZURE_BASE_URL"):
        s.resolve("azure")
    assert s.resolve("litellm") == (None, "http://localhost:4000")  # a LiteLLM proxy may need no key
    providers.write_text("{not json")
    with pytest.raises(ProxyConfigError, match=r"RUNNER_PROVIDERS_FILE=.*not valid JSON"):
        ProxySettings.from_env(env)
    with pytest.raises(ProxyConfigError, match="cannot read RUNNER_PRICES_FILE="):
        ProxySettings.from_env({"RUNNER_PRICES_FILE": str(tmp_path / "missing.json")})


# --- logs ---------------------------------------------------------------------------------------


async def test_trace_log_shape(proxy: Proxy, logs: list[dict[str, Any]], openai_fake: FakeProvider) -> None:
    r = await proxy.complete(request(
        "x", trace_id="t-1", parent_trace_id="p-1", experiment_uuid="e-1", llm_inputs={"k": "v"},
        metadata={"depth": 1, "execution_order": 2, "session_id": "s"}, tags=["a"], target="gold",
        end_user_identifier="u", config={"model_params": {"temp": 0.3}},
    ))
    log = TraceLogSchema.model_validate(logs[-1])
    assert (log.trace_id, log.parent_trace_id, log.root_trace_id) == ("t-1", "p-1", "p-1")
    assert (log.depth, log.execution_order, log.session_id, log.experiment_uuid) == (1, 2, "s", "e-1")
    assert log.trace_name == "llm-openai" and log.output == r.content and log.inputs == {"k": "v"}
    assert log.configuration is not None and log.target == "gold"
    assert log.configuration["messages"] == [{"role": "user", "content": "x"}]
    assert log.configuration["model_params"]["temp"] == 0.3
    assert (log.cost, log.total_tokens, log.status) == (r.cost, r.total_tokens, "success")
    await proxy.complete(request("y", name="named"))
    root = logs[-1]
    assert root["trace_id"] == root["parent_trace_id"] == root["root_trace_id"]
    assert root["trace_name"] == "named"


async def test_log_omit_flags(proxy: Proxy, logs: list[dict[str, Any]], openai_fake: FakeProvider) -> None:
    await proxy.complete(request("x", llm_inputs={"k": 1}, log_omit_inputs=True))
    assert logs[-1]["inputs"] is None and set(logs[-1]["configuration"]) == {"model", "provider"}
    assert logs[-1]["output"] == "echo: x"
    await proxy.complete(request("x", llm_inputs={"k": 1}, log_omit_outputs=True))
    assert logs[-1]["output"] is None and logs[-1]["inputs"] == {"k": 1}
    await proxy.complete(request("x", llm_inputs={"k": 1}, log_omit=True))
    assert logs[-1]["output"] is None and logs[-1]["inputs"] is None and logs[-1]["total_tokens"] > 0


async def test_log_sample_rate(proxy: Proxy, logs: list[dict[str, Any]], openai_fake: FakeProvider) -> None:
    await proxy.complete(request("x", log_sample_rate=0.0))
    await proxy.complete(request("x", log_sample_rate=None))
    assert len(logs) == 1
    logs.clear()
    for i in range(400):
        await proxy.complete(request("x", trace_id=f"t{i}", log_sample_rate=0.5))
    assert 150 < len(logs) < 250
    kept = {log["trace_id"] for log in logs}
    before = len(logs)
    for i in range(20):  # the decision is per root trace: children follow their root
        child = request("x", parent_trace_id=f"t{i}", root_trace_id=f"t{i}", log_sample_rate=0.5)
        await proxy.complete(child)
    assert [log["root_trace_id"] for log in logs[before:]] == [f"t{i}" for i in range(20) if f"t{i}" in kept]


async def test_a_failing_log_sink_does_not_fail_the_call(settings: ProxySettings, openai_fake: FakeProvider,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    def sink(log: dict[str, Any]) -> None:
        raise RuntimeError("sink down")

    async with Proxy(None, settings=settings, log_sink=sink) as p:
        with caplog.at_level(logging.ERROR, logger="runner.proxy"):
            r = await p.complete(request("x"))
    assert r.status == "success" and "log_sink failed" in caplog.text


# --- wire models and public surface -------------------------------------------------------------


def test_models_accept_null_for_lists_and_dicts() -> None:
    req = CompletionsSchema.model_validate({
        "llm_configuration": {"model": "gpt-4o", "provider": "openai", "messages": None, "functions": None,
                              "history": None, "model_params": None, "function_call": None},
        "metadata": None, "tags": None, "llm_inputs": None, "eval_metric_ids": None,
        "fallback_strategy": None, "log_sample_rate": None,
    })
    assert req.cache is True and req.project_name == "default"
    assert CompletionsSchema.model_validate({"llm_configuration": None}).llm_configuration.messages is None


def test_public_api_is_sorted_and_complete() -> None:
    names = runner.proxy.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    module = type(runner)
    public = {n for n, v in vars(runner.proxy).items() if not n.startswith("_") and not isinstance(v, module)}
    assert public <= set(names) and all(hasattr(runner.proxy, n) for n in names)



async def test_a_429_with_retry_after_holds_back_every_call_of_the_process(
    proxy: Proxy, openai_fake: FakeProvider
) -> None:
    from runner.ratelimit import limiter_for

    limiter = limiter_for("llm:openai")
    openai_fake.fail(429, retry_after="2", message="slow down")
    first = asyncio.create_task(proxy.complete(request("first")))
    deadline = time.monotonic() + 60
    while limiter.paused_for() == 0:  # the 429 reached the proxy and paused the provider's limiter
        assert time.monotonic() < deadline and not first.done(), "the 429 never paused the limiter"
        await asyncio.sleep(0.01)
    pause_ends = time.monotonic() + limiter.paused_for()
    calls = openai_fake.calls
    second = await proxy.complete(request("second"))  # another row's call, not a retry
    assert time.monotonic() >= pause_ends - 0.05  # it waited out the other call's Retry-After
    r = await first
    assert (r.status, second.status) == ("success", "success")
    assert (calls, openai_fake.calls) == (1, 3)


def test_server_sent_events_are_parsed_by_httpx_sse_and_a_wrong_stream_is_named() -> None:
    import asyncio

    import httpx

    from runner.proxy.upstream import UpstreamError, iter_sse

    async def events(content_type: str) -> list[tuple[str | None, str]]:
        body = b"event: a\ndata: 1\ndata: 2\n\ndata: {\"x\": 3}\n\n: a comment\n\nevent: ping\n\n"
        response = httpx.Response(200, headers={"content-type": content_type}, content=body,
                                  request=httpx.Request("POST", "http://provider.test/v1/chat"))
        return [e async for e in iter_sse(response)]

    assert asyncio.run(events("text/event-stream; charset=utf-8")) == [("a", "1\n2"), (None, '{"x": 3}')]
    with pytest.raises(UpstreamError, match="not server-sent events"):
        asyncio.run(events("application/json"))
