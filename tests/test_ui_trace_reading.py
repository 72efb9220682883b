"""Reading a trace: an LLM span as a conversation, long values folded, JSON as a collapsible tree.

Against a real server holding an LLM call logged by a bare REST client the way the SDKs' wrapped
clients log one (``configuration.messages`` with a system prompt, a user turn, an assistant turn
calling a tool and the tool's result; model parameters, tokens, cost, latency and time to first
token), in headless Chromium. LangChain chat models traced by the official SDK's tracer are
checked in ``test_ui_clients.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import ServerHandle, log, start_server
from tests.test_ui_logs import browser, shots  # noqa: F401  (fixtures)

pytest.importorskip("playwright.sync_api")

LONG = "The quick brown fox jumps over the lazy dog. " * 40

CALL = log(
    "llm-call",
    trace_name="openai.chat.completions",
    start_timestamp="2024-06-01T10:00:00+00:00",
    end_timestamp="2024-06-01T10:00:01.2+00:00",
    time_to_first_token=0.31,
    input_tokens=50,
    output_tokens=20,
    total_tokens=70,
    cost=0.0012,
    configuration={
        "model": "gpt-4o-mini",
        "provider": "openai",
        "model_params": {"temp": 0.2, "max_length": 256},
        "messages": [
            {"role": "system", "content": "You are a weather bot."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 18, "sky": "clear"}'},
        ],
        "functions": [{"name": "get_weather", "parameters": {"type": "object"}}],
    },
    output="It is 18 °C and clear in Paris.",
)
TOOLS_OUT = log(
    "llm-tools",
    trace_name="openai.chat.completions",
    start_timestamp="2024-06-01T10:01:00+00:00",
    configuration={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Weather in Rome?"}]},
    output=json.dumps(
        [{"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]
    ),
)
PLAIN = log(
    "plain",
    trace_name="prepare",
    start_timestamp="2024-06-01T10:02:00+00:00",
    inputs={"document": LONG, "options": {"depth": 3, "flags": [True, None, "x"], "deep": {"deeper": {"deepest": 1}}}},
    output=json.dumps({"chunks": [1, 2, 3], "summary": "ok"}),
)


@pytest.fixture(scope="module")
def site(db_module: str | Path) -> Iterator[ServerHandle]:
    """The server over each store in turn (``db_module``: SQLite, then PostgreSQL)."""
    with start_server(db_module) as server:
        with httpx.Client(base_url=server.base_url + "/", timeout=30) as api:
            for body in (CALL, TOOLS_OUT, PLAIN):
                assert api.post("/trace_log", json=body).status_code == 200
        yield server


@pytest.fixture
def watched(browser: Any, site: ServerHandle) -> Iterator[Any]:  # noqa: F811
    from tests.test_ui_browser import Watched

    context = browser.new_context(base_url=site.url, viewport={"width": 1200, "height": 900})
    w = Watched(context, site.url)
    yield w
    context.close()
    w.check()


def test_an_llm_span_reads_as_a_conversation(watched: Any, shots: Path) -> None:  # noqa: F811
    page = watched.page
    page.goto("/traces/llm-call")
    llm = page.locator('.llm[data-llm="llm-call"]')
    messages = llm.locator("ol.conversation > li.msg")
    assert messages.locator(".role").all_inner_texts() == ["SYSTEM", "USER", "ASSISTANT", "TOOL", "ASSISTANT"]
    assert messages.nth(0).inner_text().endswith("You are a weather bot.")
    call = messages.nth(2).locator(".tool-call")
    assert call.locator(".tool-name").inner_text() == "→ get_weather"
    assert '"city": "Paris"' in call.locator(".value").inner_text()
    assert "result of call_1" in messages.nth(3).locator(".msg-head").inner_text()
    assert '"temp_c": 18' in messages.nth(3).inner_text()
    assert messages.nth(4).inner_text().endswith("It is 18 °C and clear in Paris.")
    params = dict(
        zip(
            llm.locator("dl.llm-facts dt").all_inner_texts(),
            llm.locator("dl.llm-facts dd").all_inner_texts(),
            strict=True,
        )
    )
    assert params == {
        "provider": "openai",
        "temp": "0.2",
        "max_length": "256",
        "tools": "get_weather",
        "time to first token": "310 ms",
    }
    facts = page.locator("li.span").first.locator("dl.facts").first.inner_text()
    assert "gpt-4o-mini" in facts and "50 · 20 · 70" in facts and "$0.0012" in facts and "1.20 s" in facts
    page.screenshot(path=shots / "llm-trace.png", full_page=True)


def test_an_output_of_tool_calls_is_shown_as_the_call(watched: Any) -> None:
    page = watched.page
    page.goto("/traces/llm-tools")
    reply = page.locator("ol.conversation > li.msg.reply")
    assert reply.locator(".tool-name").inner_text() == "→ get_weather"
    assert '"city": "Rome"' in reply.inner_text()


def test_long_text_folds_and_json_is_a_collapsible_tree(watched: Any) -> None:
    page = watched.page
    page.goto("/traces/plain")
    span = page.locator("li.span").first
    fold = span.locator("details.fold").first
    assert fold.get_attribute("open") is None
    assert f"({len(LONG):,} characters: show all)" in fold.locator("summary").inner_text()
    full = fold.locator("pre.value")
    assert not full.is_visible()
    fold.locator("summary").click()
    assert full.is_visible() and full.inner_text().strip() == LONG.strip()
    # the JSON output (sent as a string) is a tree, each object and array foldable
    tree = span.locator("div.value.json.output")
    assert tree.locator(".j-key").all_inner_texts() == ['"chunks"', '"summary"']
    flags = span.locator("li", has=page.locator("> .j-key:text-is('\"flags\"')")).locator("> details.j")
    assert flags.get_attribute("open") is None  # folded below the second level
    assert "3 item(s)" in flags.locator("summary").inner_text()
    assert not flags.locator("span.j-bool").is_visible()
    flags.locator("summary").first.click()
    assert flags.get_attribute("open") == "" and flags.locator("span.j-bool").inner_text() == "true"
    top = tree.locator("details.j").first
    top.locator("summary").first.click()
    assert top.get_attribute("open") is None
    assert re.search(r"\{\s*2 key\(s\)", top.locator("summary").first.inner_text())
