"""The OpenAI-compatible gateway (``/v1/chat/completions``, ``/v1/models``) with the real ``openai``
SDK as the client, a real server on a loopback port, and the fake providers upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from runner.errors import NotFoundError
from runner.server.auth import key_owner
from tests.proxy_fakes import FakeProvider
from tests.servers import ServerHandle, start_server

MINI_IN, MINI_OUT = 0.15e-6, 0.60e-6


@pytest.fixture(scope="module")
def oai() -> Iterator[FakeProvider]:
    with FakeProvider.running("openai") as fake:
        yield fake


@pytest.fixture(scope="module")
def ant() -> Iterator[FakeProvider]:
    with FakeProvider.running("anthropic") as fake:
        yield fake


@pytest.fixture
def server(oai: FakeProvider, ant: FakeProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           ) -> Iterator[ServerHandle]:
    oai.reset()
    ant.reset()
    monkeypatch.setenv("OPENAI_BASE_URL", oai.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-upstream")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", ant.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-upstream")
    with start_server(tmp_path / "gw.db", api_keys=["k1", "k2"]) as handle:
        yield handle


def client(server: ServerHandle, key: str = "k1", **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, **kw)


def stored(server: ServerHandle, completion_id: str, key: str = "k1") -> dict[str, Any]:
    assert server.store is not None and completion_id.startswith("chatcmpl-")
    return server.store.get_trace_tree(completion_id.removeprefix("chatcmpl-"), key_owner(key))


def test_a_second_identical_call_is_a_cache_hit_and_both_are_traces(server: ServerHandle, oai: FakeProvider) -> None:
    gpt = client(server)
    messages: list[Any] = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    first = gpt.chat.completions.create(model="gpt-4o-mini", messages=messages, temperature=0, max_tokens=30)
    second = gpt.chat.completions.create(model="gpt-4o-mini", messages=messages, temperature=0, max_tokens=30)
    assert first.choices[0].message.content == second.choices[0].message.content == "echo: hello there"
    assert first.choices[0].finish_reason == "stop" and first.model == "gpt-4o-mini"
    assert oai.calls == 1  # the second came from the cache
    assert oai.headers[0]["authorization"] == "Bearer sk-upstream"  # the provider's key, not the caller's
    assert oai.requests[0]["temperature"] == 0 and oai.requests[0]["max_completion_tokens"] == 30
    assert first.usage is not None and (first.usage.prompt_tokens, first.usage.completion_tokens) == (4, 3)
    a, b = stored(server, first.id), stored(server, second.id)
    assert (a["cache_hit"], b["cache_hit"]) == (False, True)
    assert a["trace_name"] == "gateway-openai" and a["output"] == "echo: hello there"
    assert a["configuration"]["messages"] == messages and a["cost"] == pytest.approx(4 * MINI_IN + 3 * MINI_OUT)
    assert b["cost"] == 0
    # tenants stay apart: the other key cannot see these calls, nor read their cached answer
    with pytest.raises(NotFoundError):
        stored(server, first.id, key="k2")
    other = client(server, key="k2").chat.completions.create(model="gpt-4o-mini", messages=messages, temperature=0,
                                                             max_tokens=30)
    assert oai.calls == 2 and stored(server, other.id, key="k2")["cache_hit"] is False


def test_the_provider_is_chosen_by_the_model_prefix(server: ServerHandle, ant: FakeProvider) -> None:
    reply = client(server).chat.completions.create(model="anthropic/claude-3-5-haiku-latest",
                                                   messages=[{"role": "user", "content": "hi claude"}])
    assert reply.choices[0].message.content == "echo: hi claude" and reply.model == "anthropic/claude-3-5-haiku-latest"
    assert ant.calls == 1 and ant.requests[0]["model"] == "claude-3-5-haiku-latest"
    assert ant.headers[0]["x-api-key"] == "sk-ant-upstream"
    assert stored(server, reply.id)["configuration"]["provider"] == "anthropic"


def test_a_429_is_retried_by_the_gateway(server: ServerHandle, oai: FakeProvider) -> None:
    oai.fail(429, times=1, retry_after="0")
    gpt = client(server, max_retries=0)  # so any retry seen upstream is the gateway's
    reply = gpt.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "retry me"}])
    assert reply.choices[0].message.content == "echo: retry me" and oai.calls == 2
    oai.reset()
    oai.fail(429, times=10, retry_after="0", message="slow down")
    with pytest.raises(openai.RateLimitError, match="slow down"):
        gpt.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "limited"}])
    assert oai.calls == 4  # the first attempt and the proxy's 3 retries


def test_a_stream(server: ServerHandle, oai: FakeProvider) -> None:
    stream = client(server).chat.completions.create(
        model="openai/gpt-4o-mini", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "stream this please"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream this please"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (3, 4)
    log = stored(server, chunks[0].id)
    assert log["output"] == "echo: stream this please" and log["status"] == "success"
    assert log["time_to_first_token"] > 0 and (log["input_tokens"], log["output_tokens"]) == (3, 4)


def test_tool_calls_come_back_as_tool_calls(server: ServerHandle, oai: FakeProvider) -> None:
    tool: Any = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    reply = client(server).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "find it"}], tools=[tool],
        tool_choice={"type": "function", "function": {"name": "lookup"}})
    (call,) = reply.choices[0].message.tool_calls or []
    assert call.function.name == "lookup" and call.function.arguments == '{"echo": "find it"}'  # type: ignore[union-attr]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert oai.requests[0]["tools"] == [tool]


def test_keys_models_and_bad_requests(server: ServerHandle, oai: FakeProvider) -> None:
    with pytest.raises(openai.AuthenticationError, match="not accepted"):
        client(server, key="wrong").chat.completions.create(model="gpt-4o-mini",
                                                            messages=[{"role": "user", "content": "x"}])
    no_key = httpx.post(server.url + "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []})
    assert no_key.status_code == 401 and "Authorization: Bearer" in no_key.json()["error"]["message"]
    ids = [m.id for m in client(server).models.list()]
    assert "openai/gpt-4o-mini" in ids and "anthropic/claude-3-5-haiku" in ids
    with pytest.raises(openai.BadRequestError, match="n > 1"):
        client(server).chat.completions.create(model="gpt-4o-mini", n=2, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="messages"):
        client(server).chat.completions.create(model="gpt-4o-mini", messages=[])
    assert oai.calls == 0


def test_a_web_page_cannot_spend_the_gateway_on_a_keyless_server(
    oai: FakeProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the "simple" requests any page may send cross-site without a preflight: a text/plain or a
    # form body, or a JSON body from a foreign Origin; a program's JSON and OTLP still go through
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
    monkeypatch.setenv("OPENAI_BASE_URL", oai.base_url)
    body = '{"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "spend"}]}'
    with start_server(tmp_path / "open.db") as handle:
        before = oai.calls
        url = handle.url + "/v1/chat/completions"
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
            assert httpx.post(url, content=body, headers={"content-type": ctype}).status_code == 415
        foreign = httpx.post(url, content=body, headers={"content-type": "application/json",
                                                         "origin": "http://evil.example"})
        assert foreign.status_code == 403
        otlp = httpx.post(handle.url + "/v1/traces", content=b"x", headers={"content-type": "text/plain"})
        assert otlp.status_code == 415
        assert oai.calls == before
        # the first gateway call of the process imports and opens the proxy: generous on a loaded machine
        answer = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=60)
        assert answer.status_code == 200
        assert oai.calls == before + 1
