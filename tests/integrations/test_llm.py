"""``runner.completion()`` / ``acompletion()`` against fake providers, in and out of experiments.

Inside an experiment row the tests go through both doors: embedded (the proxy runs in-process)
and HTTP (the server's ``/completion`` calls the provider and logs the call too). Token and cost
numbers follow the fake's rule (one token per word): ``"first qN"`` is 2 tokens in and its echo
``"echo: first qN"`` 3 out; ``"second qN echo: first qN"`` is 5 in, its echo 6 out.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import runner.integrations.llm
from runner import CompletionError, ConfigError, Experiment, RateLimitError, acompletion, completion, trace
from runner.proxy import ProxyConfigError
from runner.store import Store
from tests.doors import Door
from tests.proxy_fakes import FakeProvider
from tests.servers import start_server

MINI_IN, MINI_OUT = 0.15e-6, 0.60e-6  # gpt-4o-mini, USD per token
ROW_IN, ROW_OUT = 2 + 5, 3 + 6  # tokens of the two calls one row makes (see the module docstring)


@pytest.fixture(scope="module")
def openai_server() -> Iterator[FakeProvider]:
    with FakeProvider.running("openai") as fake:
        yield fake


@pytest.fixture(scope="module")
def anthropic_server() -> Iterator[FakeProvider]:
    with FakeProvider.running("anthropic") as fake:
        yield fake


@pytest.fixture(autouse=True)
def providers(
    openai_server: FakeProvider, anthropic_server: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Both fakes configured through the environment (read by the proxy in-process and by the
    test server alike); every test ends with the completion loop closed."""
    openai_server.reset()
    anthropic_server.reset()
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic_server.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    yield
    runner.integrations.llm.close()


@pytest.fixture
def fake(openai_server: FakeProvider) -> FakeProvider:
    return openai_server


def two_calls(question: str) -> str:
    first = completion(f"first {question}", model="gpt-4o-mini")
    second = completion([{"role": "user", "content": f"second {question} {first.content}"}],
                        model="gpt-4o-mini", name="second")
    return second.content


# --- outside an experiment ------------------------------------------------------------------------


def test_completion_outside_an_experiment_is_cached_and_logged(fake: FakeProvider, tmp_path: Path) -> None:
    first = completion("hello world", model="gpt-4o-mini", model_params={"temp": 0.0, "max_length": 20})
    again = completion("hello world", model="gpt-4o-mini", model_params={"temp": 0.0, "max_length": 20})
    assert (first.content, first.status, first.cache_hit, again.cache_hit) == ("echo: hello world", "success",
                                                                               False, True)
    assert (first.input_tokens, first.output_tokens, first.total_tokens) == (2, 3, 5)
    assert first.cost == pytest.approx(2 * MINI_IN + 3 * MINI_OUT) and again.cost == 0
    assert fake.calls == 1 and fake.requests[0]["temperature"] == 0.0
    assert fake.requests[0]["max_completion_tokens"] == 20
    runner.integrations.llm.close()
    store = Store(tmp_path / ".runner" / "runner.db")  # the default embedded store
    try:
        log = store.get_trace_tree(first.trace_id or "")
        assert log["output"] == "echo: hello world" and log["trace_id"] == log["root_trace_id"]
        assert log["configuration"]["messages"] == [{"role": "user", "content": "hello world"}]
        assert log["cost"] == pytest.approx(first.cost) and log["cache_hit"] is False
        assert store.get_trace_tree(again.trace_id or "")["cache_hit"] is True
    finally:
        store.close()


def test_messages_history_functions_and_anthropic(anthropic_server: FakeProvider, fake: FakeProvider) -> None:
    r = completion(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ping {{x}}"}],
        model="claude-3-5-haiku-latest", provider="anthropic", llm_inputs={"x": "pong"},
        history=[{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "ok"}],
    )
    assert r.content == "echo: ping pong" and r.provider == "anthropic"
    sent = anthropic_server.requests[0]
    assert sent["system"] == "be brief" and sent["messages"][0] == {"role": "user", "content": "earlier"}
    fn = {"name": "lookup", "parameters": {"type": "object", "properties": {}}}
    called = completion("x", model="gpt-4o-mini", functions=[fn], function_call={"name": "lookup"}, cache=False)
    assert called.content == '[{"name": "lookup", "arguments": {"echo": "x"}}]'
    assert fake.requests[0]["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}


async def test_acompletion_and_one_upstream_call_for_identical_concurrent_calls(fake: FakeProvider) -> None:
    fake.delay = 0.2
    answers = await asyncio.gather(*(acompletion("same", model="gpt-4o-mini") for _ in range(5)))
    assert fake.calls == 1
    assert {a.content for a in answers} == {"echo: same"}
    assert sorted(a.cache_hit for a in answers) == [False, True, True, True, True]

    fake.reset()
    fake.delay = 0.2
    got: list[Any] = []
    threads = [threading.Thread(target=lambda: got.append(completion("sync same", model="gpt-4o-mini")))
               for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake.calls == 1 and len(got) == 5
    # one loop thread serves every call, whichever thread or loop makes it
    assert [t.name for t in threading.enumerate()].count("runner-llm") == 1


# --- errors ---------------------------------------------------------------------------------------


def test_rate_limited_after_retries_raises_rate_limit_error(fake: FakeProvider) -> None:
    fake.fail(429, times=4, retry_after="0", message="slow down")
    with pytest.raises(RateLimitError, match="429") as err:
        completion("x", model="gpt-4o-mini")
    assert fake.calls == 4  # the first attempt and the proxy's 3 retries
    assert err.value.response.status == "error" and "slow down" in err.value.response.error


def test_a_provider_still_rate_limiting_slows_every_later_call(fake: FakeProvider) -> None:
    from runner.ratelimit import limiter_for

    limiter = limiter_for("llm:openai")  # process-wide: other tests may have lowered it already
    decreases = limiter.decreases
    fake.fail(429, times=4, retry_after="0", message="slow down")
    with pytest.raises(RateLimitError):
        completion("x", model="gpt-4o-mini")
    # fewer calls in flight for every row of the process (then back up after successes)
    assert limiter.decreases == decreases + 1 and limiter.limit <= max(1, limiter.max_concurrency // 2)
    assert completion("y", model="gpt-4o-mini").content == "echo: y"


def test_retry_on_500_then_success_and_no_retry_on_400(fake: FakeProvider) -> None:
    fake.fail(500, times=1, retry_after="0")
    assert completion("a", model="gpt-4o-mini").content == "echo: a" and fake.calls == 2
    fake.reset()
    fake.fail(400, message="bad request body")
    with pytest.raises(CompletionError, match="bad request body") as err:
        completion("b", model="gpt-4o-mini")
    assert not isinstance(err.value, RateLimitError) and fake.calls == 1


def test_configuration_errors_name_what_to_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(ProxyConfigError, match="ANTHROPIC_API_KEY"):
        completion("x", model="claude-3-5-haiku-latest", provider="anthropic")
    with pytest.raises(ConfigError, match=r"unexpected keyword argument.*temperature"):
        completion("x", model="gpt-4o-mini", temperature=0)
    with pytest.raises(ConfigError, match="provider"):
        completion("x", model="m", provider="nope")
    with start_server(tmp_path / "server.db") as server:  # over HTTP: the server's 400, as the same error
        monkeypatch.setenv("PAREA_BASE_URL", server.base_url)
        with pytest.raises(ProxyConfigError, match="ANTHROPIC_API_KEY"):
            completion("x", model="claude-3-5-haiku-latest", provider="anthropic")
        with pytest.raises(ProxyConfigError, match="messages is empty"):  # checked before sending
            completion([], model="gpt-4o-mini")


def test_over_http_outside_an_experiment(fake: FakeProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with start_server(tmp_path / "server.db", api_keys=["k"]) as server:
        monkeypatch.setenv("PAREA_BASE_URL", server.base_url)
        monkeypatch.setenv("PAREA_API_KEY", "k")
        r = completion("over http", model="gpt-4o-mini", tags=["t"])
        assert (r.content, r.cache_hit, fake.calls) == ("echo: over http", False, 1)
        assert server.store is not None
        from runner.server.auth import key_owner

        log = server.store.get_trace_tree(r.trace_id or "", key_owner("k"))
        assert log["output"] == "echo: over http" and log["tags"] == ["t"]
        fake.fail(429, times=4, retry_after="0")
        with pytest.raises(RateLimitError):
            completion("limited", model="gpt-4o-mini")


# --- inside experiments: the rollup, through both doors --------------------------------------------


def test_tokens_and_cost_add_up_to_the_root_and_the_result(door: Door, fake: FakeProvider) -> None:
    data = [{"question": f"q{i}"} for i in range(3)]
    result = Experiment(name="llm", data=data, func=two_calls, **door.kwargs()).run(quiet=True)
    assert result.n_errors == 0 and fake.calls == 6
    row_cost = ROW_IN * MINI_IN + ROW_OUT * MINI_OUT
    assert (result.stats["input_tokens"], result.stats["output_tokens"]) == (3 * ROW_IN, 3 * ROW_OUT)
    assert result.stats["cost"] == pytest.approx(3 * row_cost)
    stats = door.store.experiment_stats(result.experiment_uuid)
    assert len(stats) == 3
    for s in stats:
        assert (s["input_tokens"], s["output_tokens"], s["total_tokens"]) == (ROW_IN, ROW_OUT, ROW_IN + ROW_OUT)
        assert s["cost"] == pytest.approx(row_cost)
    tree = door.store.get_trace_tree(stats[0]["trace_id"])
    first, second = tree["children_logs"]
    assert (first["trace_name"], second["trace_name"]) == ("llm-openai", "second")
    assert (first["depth"], first["execution_order"], second["execution_order"]) == (1, 1, 2)
    assert first["root_trace_id"] == first["parent_trace_id"] == tree["trace_id"]
    assert first["experiment_uuid"] == result.experiment_uuid and first["cache_hit"] is False
    assert first["configuration"]["model"] == "gpt-4o-mini" and first["output"].startswith("echo: first q")
    assert door.store.count_traces() == 9  # 3 roots and 6 calls: the server's log and the row's are one
    # the calls went where the experiment's results go: its store (a file or PostgreSQL) or its
    # server, whose store holds the completion cache; not to the default store
    assert int(door.store._query("SELECT count(*) FROM completion_cache")[0][0]) == 6
    assert not Path(".runner").exists()


def test_async_function_nested_span_and_log_omit(door: Door, fake: FakeProvider) -> None:
    @trace(name="step")
    async def step(question: str) -> str:
        r = await acompletion(f"secret {question}", model="gpt-4o-mini", log_omit=True)
        return r.content

    async def answer(question: str) -> str:
        return await step(question)

    result = Experiment(name="nested", data=[{"question": "q"}], func=answer, **door.kwargs()).run(quiet=True)
    assert result.n_errors == 0
    (root,) = door.store.experiment_rows(result.experiment_uuid)
    tree = door.store.get_trace_tree(root["trace_id"])
    (span,) = tree["children_logs"]
    (llm,) = span["children_logs"]
    assert (span["depth"], llm["depth"], llm["parent_trace_id"]) == (1, 2, span["trace_id"])
    assert "output" not in llm and "messages" not in llm["configuration"]  # log_omit
    assert llm["input_tokens"] == 2 and tree["input_tokens"] == 2  # still counted at the root


def test_each_trial_is_its_own_sample_and_reruns_are_cached(door: Door, fake: FakeProvider) -> None:
    def answer(question: str) -> str:
        return completion(question, model="gpt-4o-mini").content

    exp = Experiment(name="trials", data=[{"question": "q"}], func=answer, n_trials=3, **door.kwargs())
    exp.run(quiet=True)
    assert fake.calls == 3
    exp.run(quiet=True)
    assert fake.calls == 3


def test_a_rate_limited_row_is_run_again_with_retries(door: Door, fake: FakeProvider) -> None:
    fake.fail(429, times=4, retry_after="0")
    result = Experiment(name="rl", data=[{"question": "q"}], func=two_calls, retries=1, retry_backoff=0.01,
                        **door.kwargs()).run(quiet=True)
    assert result.n_errors == 0
    (root,) = door.store.experiment_rows(result.experiment_uuid)
    assert root["metadata"]["attempts"] == 2 and "RateLimitError" in root["metadata"]["retry_errors"][0]
