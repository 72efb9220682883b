"""``wrap_openai`` / ``wrap_anthropic`` with the real ``openai`` and ``anthropic`` SDKs, pointed at
the fake providers of :mod:`tests.proxy_fakes` (one token per word: ``"hi qN"`` is 2 tokens in,
its answer ``"echo: hi qN"`` 3 out).

Inside an experiment row each call is a child span of the row (through both doors); outside one
it is a trace of its own in the store ``completion()`` would log to.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

import runner.integrations.sink
from runner import ConfigError, Experiment, trace, wrap_anthropic, wrap_openai
from runner.store import Store
from tests.doors import Door
from tests.proxy_fakes import FakeProvider
from tests.servers import start_server

MINI_IN, MINI_OUT = 0.15e-6, 0.60e-6  # gpt-4o-mini, USD per token
HAIKU_IN, HAIKU_OUT = 0.80e-6, 4.0e-6  # claude-3-5-haiku
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module")
def oai() -> Iterator[FakeProvider]:
    with FakeProvider.running("openai") as fake:
        yield fake


@pytest.fixture(scope="module")
def ant() -> Iterator[FakeProvider]:
    with FakeProvider.running("anthropic") as fake:
        yield fake


@pytest.fixture(autouse=True)
def fresh(oai: FakeProvider, ant: FakeProvider) -> Iterator[None]:
    oai.reset()
    ant.reset()
    yield
    runner.integrations.sink.close()


def openai_client(fake: FakeProvider, **kw: Any) -> openai.OpenAI:
    return wrap_openai(openai.OpenAI(api_key="sk-test", base_url=fake.base_url, **kw))


def anthropic_client(fake: FakeProvider, **kw: Any) -> anthropic.Anthropic:
    return wrap_anthropic(anthropic.Anthropic(api_key="sk-ant-test", base_url=fake.base_url, **kw))


def default_store() -> Store:
    return Store(Path(".runner") / "runner.db")


def only_child(store: Store, experiment_uuid: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    (root,) = store.experiment_rows(experiment_uuid)
    tree = store.get_trace_tree(root["trace_id"])
    return tree, tree["children_logs"]


# --- outside a row ---------------------------------------------------------------------------------


def roots(store: Store, owner: str = "") -> list[dict[str, Any]]:
    """Every root trace the store holds, as trees, oldest first."""
    _, ids = store.find_roots(owner)
    return store.trace_trees(ids, owner)


def test_a_call_outside_a_row_is_a_trace_of_its_own(oai: FakeProvider) -> None:
    client = openai_client(oai)
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello world"}], temperature=0, max_tokens=20,
        seed=7,
    )
    # the client answers exactly as the SDK does
    assert isinstance(reply, openai.types.chat.ChatCompletion)
    assert reply.choices[0].message.content == "echo: hello world"
    assert oai.requests[0]["temperature"] == 0 and oai.requests[0]["max_tokens"] == 20
    runner.integrations.sink.close()
    store = default_store()
    try:
        (log,) = roots(store)
    finally:
        store.close()
    assert log["trace_id"] == log["root_trace_id"] == log["parent_trace_id"]
    assert log["trace_name"] == "llm-openai" and log["status"] == "success"
    assert log["project_name"] == "default"
    assert log["configuration"] == {
        "model": "gpt-4o-mini", "provider": "openai",
        "model_params": {"temp": 0, "max_length": 20, "seed": 7},
        "messages": [{"role": "user", "content": "hello world"}],
    }
    assert log["output"] == "echo: hello world"
    assert (log["input_tokens"], log["output_tokens"], log["total_tokens"]) == (2, 3, 5)
    assert log["cost"] == pytest.approx(2 * MINI_IN + 3 * MINI_OUT)
    assert log["latency"] > 0 and log["metadata"]["attempts"] == 1


def test_outside_a_row_over_http_goes_to_the_server_under_its_key(
    ant: FakeProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runner.server.auth import key_owner

    with start_server(tmp_path / "server.db", api_keys=["k"]) as server:
        monkeypatch.setenv("PAREA_BASE_URL", server.base_url)
        monkeypatch.setenv("PAREA_API_KEY", "k")
        monkeypatch.setenv("RUNNER_PROJECT", "prod")
        client = anthropic_client(ant)
        reply = client.messages.create(model="claude-3-5-haiku-latest", max_tokens=50, system="be brief",
                                       messages=[{"role": "user", "content": "ping"}])
        assert isinstance(reply, anthropic.types.Message) and reply.content[0].text == "echo: ping"  # type: ignore[union-attr]
        assert server.store is not None
        (log,) = roots(server.store, key_owner("k"))
    assert log["project_name"] == "prod" and log["trace_name"] == "llm-anthropic"
    assert log["configuration"]["messages"] == [{"role": "system", "content": "be brief"},
                                                {"role": "user", "content": "ping"}]
    assert log["configuration"]["model_params"] == {"max_length": 50}
    assert (log["input_tokens"], log["output_tokens"]) == (3, 2)  # "ping be brief" in, "echo: ping" out
    assert log["cost"] == pytest.approx(3 * HAIKU_IN + 2 * HAIKU_OUT)
    assert not Path(".runner").exists()  # nothing went to the embedded store


def test_wrapping_checks_the_client_and_is_idempotent(oai: FakeProvider) -> None:
    with pytest.raises(ConfigError, match=r"wrap_openai\(\) takes an openai.OpenAI.*not Anthropic"):
        wrap_openai(anthropic.Anthropic(api_key="x"))  # type: ignore[type-var]
    with pytest.raises(ConfigError, match=r"wrap_anthropic\(\) takes .*not str"):
        wrap_anthropic("client")  # type: ignore[type-var]
    client = openai_client(oai)
    assert wrap_openai(client) is client
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "once"}])
    runner.integrations.sink.close()
    store = default_store()
    try:
        assert len(roots(store)) == 1  # wrapped twice, logged once
    finally:
        store.close()


# --- inside rows, through both doors ----------------------------------------------------------------


def test_sync_calls_are_child_spans_and_add_up_to_the_row(door: Door, oai: FakeProvider, ant: FakeProvider) -> None:
    gpt = openai_client(oai)
    claude = anthropic_client(ant)

    def answer(question: str) -> str:
        first = gpt.chat.completions.create(model="gpt-4o-mini",
                                            messages=[{"role": "user", "content": f"hi {question}"}])
        second = claude.messages.create(model="claude-3-5-haiku-latest", max_tokens=10,
                                        messages=[{"role": "user", "content": f"hi {question}"}])
        return f"{first.choices[0].message.content} / {second.content[0].text}"  # type: ignore[union-attr]

    data = [{"question": f"q{i}"} for i in range(3)]
    result = Experiment(name="wrapped", data=data, func=answer, **door.kwargs()).run(quiet=True)
    assert result.n_errors == 0 and oai.calls == 3 and ant.calls == 3
    row_cost = 2 * MINI_IN + 3 * MINI_OUT + 2 * HAIKU_IN + 3 * HAIKU_OUT
    assert (result.stats["input_tokens"], result.stats["output_tokens"]) == (3 * 4, 3 * 6)
    assert result.stats["cost"] == pytest.approx(3 * row_cost)
    for s in door.store.experiment_stats(result.experiment_uuid):
        assert (s["input_tokens"], s["output_tokens"], s["total_tokens"]) == (4, 6, 10)
        assert s["cost"] == pytest.approx(row_cost)
    tree = door.store.get_trace_tree(door.store.experiment_stats(result.experiment_uuid)[0]["trace_id"])
    first, second = tree["children_logs"]
    assert (first["trace_name"], second["trace_name"]) == ("llm-openai", "llm-anthropic")
    assert first["parent_trace_id"] == first["root_trace_id"] == tree["trace_id"]
    assert (first["depth"], first["execution_order"], second["execution_order"]) == (1, 1, 2)
    assert first["experiment_uuid"] == result.experiment_uuid
    assert first["configuration"]["model"] == "gpt-4o-mini" and first["output"].startswith("echo: hi q")
    assert second["configuration"]["provider"] == "anthropic" and second["cost"] == pytest.approx(
        2 * HAIKU_IN + 3 * HAIKU_OUT)
    assert door.store.count_traces() == 9


def test_async_clients_and_nested_spans(door: Door, oai: FakeProvider, ant: FakeProvider) -> None:
    gpt = wrap_openai(openai.AsyncOpenAI(api_key="sk-test", base_url=oai.base_url))
    claude = wrap_anthropic(anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=ant.base_url))

    @trace(name="step")
    async def step(question: str) -> str:
        a, b = await asyncio.gather(
            gpt.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": question}]),
            claude.messages.create(model="claude-3-5-haiku-latest", max_tokens=5,
                                   messages=[{"role": "user", "content": question}]),
        )
        return f"{a.choices[0].message.content}|{b.content[0].text}"  # type: ignore[union-attr]

    async def answer(question: str) -> str:
        return await step(question)

    result = Experiment(name="async", data=[{"question": "q"}], func=answer, **door.kwargs()).run(quiet=True)
    assert result.n_errors == 0
    tree, (span,) = only_child(door.store, result.experiment_uuid)
    assert span["trace_name"] == "step"
    names = sorted(c["trace_name"] for c in span["children_logs"])
    assert names == ["llm-anthropic", "llm-openai"]
    assert all(c["depth"] == 2 and c["parent_trace_id"] == span["trace_id"] for c in span["children_logs"])
    assert tree["input_tokens"] == 2 and tree["output_tokens"] == 4  # both calls, counted at the root


def test_streams_are_traced_at_their_end_with_time_to_first_token(
    door: Door, oai: FakeProvider, ant: FakeProvider
) -> None:
    gpt = openai_client(oai)
    claude = anthropic_client(ant)

    def answer(question: str) -> str:
        stream = gpt.chat.completions.create(model="gpt-4o-mini", stream=True, stream_options={"include_usage": True},
                                             messages=[{"role": "user", "content": f"stream {question} please"}])
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        with claude.messages.create(model="claude-3-5-haiku-latest", max_tokens=10, stream=True,
                                    messages=[{"role": "user", "content": "ant stream"}]) as events:
            pieces = [e.delta.text for e in events if e.type == "content_block_delta"]  # type: ignore[union-attr]
        return text + "|" + "".join(pieces)

    result = Experiment(name="streams", data=[{"question": "q"}], func=answer, **door.kwargs()).run(quiet=True)
    assert result.n_errors == 0
    (row,) = door.store.experiment_rows(result.experiment_uuid)
    assert row["output"] == "echo: stream q please|echo: ant stream"
    tree, (o, a) = only_child(door.store, result.experiment_uuid)
    assert (o["output"], a["output"]) == ("echo: stream q please", "echo: ant stream")
    assert (o["input_tokens"], o["output_tokens"], a["input_tokens"], a["output_tokens"]) == (3, 4, 2, 3)
    assert o["status"] == a["status"] == "success"
    for log in (o, a):
        assert 0 < log["time_to_first_token"] <= log["latency"]
    assert tree["cost"] == pytest.approx(3 * MINI_IN + 4 * MINI_OUT + 2 * HAIKU_IN + 3 * HAIKU_OUT)


async def test_async_stream_and_an_abandoned_stream(oai: FakeProvider) -> None:
    gpt = wrap_openai(openai.AsyncOpenAI(api_key="sk-test", base_url=oai.base_url))
    stream = await gpt.chat.completions.create(model="gpt-4o-mini", stream=True,
                                               messages=[{"role": "user", "content": "one two three"}])
    got = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert "".join(got) == "echo: one two three"
    sync = openai_client(oai)
    cut = sync.chat.completions.create(model="gpt-4o-mini", stream=True,
                                       messages=[{"role": "user", "content": "cut short here"}])
    next(cut)
    next(cut)
    cut.close()  # the user stops reading: what arrived is logged
    dropped = sync.chat.completions.create(model="gpt-4o-mini", stream=True,
                                           messages=[{"role": "user", "content": "never read"}])
    del dropped  # dropped unread (CPython frees it here): logged too
    runner.integrations.sink.close()
    store = default_store()
    try:
        done, abandoned, unread = roots(store)
    finally:
        store.close()
    assert unread["status"] == "error" and unread["metadata"]["stream_abandoned"] is True
    assert unread["configuration"]["messages"] == [{"role": "user", "content": "never read"}]
    assert done["output"] == "echo: one two three" and done["status"] == "success"
    assert done["time_to_first_token"] > 0
    assert abandoned["status"] == "error" and "closed by the client" in abandoned["error"]
    assert abandoned["metadata"]["stream_abandoned"] is True and abandoned["output"] == "echo:"


def test_tool_calls_are_logged_with_the_tools(door: Door, oai: FakeProvider, ant: FakeProvider) -> None:
    gpt = openai_client(oai)
    claude = anthropic_client(ant)
    ant_tool = {"name": "lookup", "description": "find", "input_schema": {"type": "object", "properties": {}}}

    def answer(question: str) -> str:
        r = gpt.chat.completions.create(model="gpt-4o-mini", tools=[TOOL],  # type: ignore[list-item]
                                        tool_choice={"type": "function", "function": {"name": "lookup"}},
                                        messages=[{"role": "user", "content": question}])
        m = claude.messages.create(model="claude-3-5-haiku-latest", max_tokens=20, tools=[ant_tool],  # type: ignore[list-item]
                                   tool_choice={"type": "tool", "name": "lookup"},
                                   messages=[{"role": "user", "content": question}])
        call = r.choices[0].message.tool_calls[0]  # type: ignore[index]
        return f"{call.function.name}:{m.content[0].input}"  # type: ignore[union-attr]

    result = Experiment(name="tools", data=[{"question": "find x"}], func=answer, **door.kwargs()).run(quiet=True)
    assert result.n_errors == 0
    _, (o, a) = only_child(door.store, result.experiment_uuid)
    assert json.loads(o["output"]) == [{"name": "lookup", "arguments": {"echo": "find x"}}]
    assert json.loads(a["output"]) == [{"name": "lookup", "arguments": {"echo": "find x"}}]
    assert o["configuration"]["functions"] == [TOOL]
    assert o["configuration"]["function_call"] == {"type": "function", "function": {"name": "lookup"}}
    assert a["configuration"]["functions"] == [ant_tool]
    assert o["metadata"]["tool_calls"][0]["function"]["name"] == "lookup"


def test_an_error_is_logged_and_raised_as_the_sdk_raises_it(door: Door, oai: FakeProvider) -> None:
    gpt = openai_client(oai, max_retries=0)
    oai.fail(400, message="bad request body")
    seen: list[type[BaseException]] = []

    def answer(question: str) -> str:
        try:
            gpt.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": question}])
        except openai.BadRequestError as exc:
            seen.append(type(exc))
            raise
        return "unreachable"

    result = Experiment(name="err", data=[{"question": "q"}], func=answer, **door.kwargs()).run(quiet=True)
    assert result.n_errors == 1 and seen == [openai.BadRequestError]
    root, (llm,) = only_child(door.store, result.experiment_uuid)
    assert root["status"] == "error" and llm["status"] == "error"
    assert "BadRequestError" in llm["error"] and "bad request body" in llm["error"]
    assert llm["configuration"]["messages"] == [{"role": "user", "content": "q"}]
    assert llm["metadata"]["attempts"] == 1


def test_sdk_retries_are_one_span_with_the_attempts(oai: FakeProvider, ant: FakeProvider) -> None:
    oai.fail(500, times=1, retry_after="0")
    ant.fail(529, times=2, retry_after="0")
    gpt = openai_client(oai, max_retries=2)
    claude = anthropic_client(ant, max_retries=2)
    assert gpt.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "r"}]).choices
    assert claude.messages.create(model="claude-3-5-haiku-latest", max_tokens=5,
                                  messages=[{"role": "user", "content": "r"}]).content
    assert (oai.calls, ant.calls) == (2, 3)
    runner.integrations.sink.close()
    store = default_store()
    try:
        o, a = roots(store)
    finally:
        store.close()
    assert o["status"] == a["status"] == "success"
    assert (o["metadata"]["attempts"], o["metadata"]["attempt_statuses"]) == (2, [500, 200])
    assert (a["metadata"]["attempts"], a["metadata"]["attempt_statuses"]) == (3, [529, 529, 200])
