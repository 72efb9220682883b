"""``wrap_anthropic``: every ``messages.create`` of an ``anthropic.Anthropic`` / ``AsyncAnthropic``
client, traced.

>>> import anthropic                                                        # doctest: +SKIP
>>> client = wrap_anthropic(anthropic.Anthropic())                          # doctest: +SKIP
>>> client.messages.create(model="claude-3-5-haiku-latest", max_tokens=100, messages=[...])  # doctest: +SKIP

As :func:`runner.integrations.openai.wrap_openai`: the same client object, ``messages.create``
replaced by a traced call; ``stream=True`` returns the SDK's stream, recorded until it ends, is
closed or is dropped (tokens come from its ``message_start`` and ``message_delta`` events). The
``system`` prompt is logged as the first message of the configuration. ``messages.stream()``
(the SDK's stream helper) is not traced.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, TypeVar

from runner.errors import ConfigError
from runner.integrations.record import (
    TRACED_MARK,
    LLMCallRecord,
    StreamAccumulator,
    configuration,
    install_hooks,
    traced_method,
)

__all__ = ["wrap_anthropic"]

C = TypeVar("C")


def wrap_anthropic(client: C) -> C:
    """Trace ``client``'s messages (an ``anthropic.Anthropic`` or ``AsyncAnthropic``); returns it.

    Wrapping twice is harmless. A call raises what the SDK raises, after logging it as an error.
    """
    import anthropic

    if not isinstance(client, (anthropic.Anthropic, anthropic.AsyncAnthropic)):
        raise ConfigError(
            f"wrap_anthropic() takes an anthropic.Anthropic or anthropic.AsyncAnthropic client, not "
            f"{type(client).__name__}; for OpenAI clients use wrap_openai()"
        )
    is_async = isinstance(client, anthropic.AsyncAnthropic)
    messages = client.messages
    create = messages.create
    if getattr(create, TRACED_MARK, False):
        return client
    install_hooks(getattr(client, "_client", None), is_async)
    traced = traced_method(create, _start, _finish, _Accumulator, is_async)
    messages.create = traced  # type: ignore[method-assign]
    return client


def _start(kwargs: dict[str, Any], attempts: list[int]) -> LLMCallRecord:
    messages = list(kwargs.get("messages") or [])
    system = kwargs.get("system")
    if system and type(system).__name__ != "NotGiven":
        messages = [{"role": "system", "content": system}, *messages]
    config = configuration("anthropic", kwargs, messages)
    return LLMCallRecord("llm-anthropic", config, attempts)


def _output(text: str, tools: list[dict[str, Any]]) -> str:
    """The text, or the tool calls as JSON (as :func:`runner.completion` logs them)."""
    if not tools:
        return text
    calls = json.dumps([{"name": t.get("name"), "arguments": t.get("input")} for t in tools])
    return f"{text}\n{calls}" if text else calls


def _finish(record: LLMCallRecord, message: Any) -> None:
    text: list[str] = []
    tools: list[dict[str, Any]] = []
    for block in getattr(message, "content", None) or []:
        kind = getattr(block, "type", None)
        if kind == "text":
            text.append(block.text)
        elif kind == "tool_use":
            tools.append({"id": block.id, "name": block.name, "input": block.input})
    if tools:
        record.span.metadata["tool_calls"] = tools
    usage = getattr(message, "usage", None)
    record.succeed(
        _output("".join(text), tools),
        int(getattr(usage, "input_tokens", 0) or 0),
        int(getattr(usage, "output_tokens", 0) or 0),
        getattr(message, "model", None),
    )


class _Accumulator(StreamAccumulator):
    """What the events of a stream said so far."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tools: dict[int, dict[str, Any]] = {}

    def feed(self, record: LLMCallRecord, event: Any) -> None:
        kind = getattr(event, "type", None)
        if kind == "message_start":
            message = event.message
            self.model = getattr(message, "model", None) or self.model
            usage = getattr(message, "usage", None)
            self.input_tokens = int(getattr(usage, "input_tokens", 0) or 0)
            self.output_tokens = int(getattr(usage, "output_tokens", 0) or 0)
        elif kind == "content_block_start":
            block = event.content_block
            if getattr(block, "type", None) == "tool_use":
                record.first_token()
                self.tools[int(event.index)] = {"name": block.name, "input": "", "id": block.id}
        elif kind == "content_block_delta":
            delta = event.delta
            dtype = getattr(delta, "type", None)
            if dtype == "text_delta":
                record.first_token()
                self.text.append(delta.text)
            elif dtype == "input_json_delta" and int(event.index) in self.tools:
                self.tools[int(event.index)]["input"] += delta.partial_json
        elif kind == "message_delta":
            usage = getattr(event, "usage", None)
            if usage is not None and getattr(usage, "output_tokens", None) is not None:
                self.output_tokens = int(usage.output_tokens)

    def output(self) -> str:
        tools = []
        for i in sorted(self.tools):
            tool = dict(self.tools[i])
            with contextlib.suppress(ValueError):
                tool["input"] = json.loads(tool["input"]) if tool["input"] else {}
            tools.append(tool)
        return _output("".join(self.text), tools)
