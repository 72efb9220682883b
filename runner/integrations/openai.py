"""``wrap_openai``: every chat completion of an ``openai.OpenAI`` / ``AsyncOpenAI`` client, traced.

>>> import openai                                                           # doctest: +SKIP
>>> client = wrap_openai(openai.OpenAI())                                   # doctest: +SKIP
>>> client.chat.completions.create(model="gpt-4o-mini", messages=[...])     # doctest: +SKIP

The client is the same object, still behaving exactly as before: ``chat.completions.create`` is
replaced on it by a function that calls the original and records the call (see
:mod:`runner.integrations.record`). A streamed call (``stream=True``) returns the SDK's stream
wrapped so that the span is written when the stream ends, is closed, or is dropped, with the
time to the first token; tokens of a stream are known only if the provider sends them
(``stream_options={"include_usage": True}``).
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
    jsonable,
    traced_method,
)

__all__ = ["wrap_openai"]

C = TypeVar("C")


def wrap_openai(client: C) -> C:
    """Trace ``client``'s chat completions (an ``openai.OpenAI`` or ``AsyncOpenAI``); returns it.

    Wrapping twice is harmless. A call raises what the SDK raises, after logging it as an error.
    """
    import openai

    if not isinstance(client, (openai.OpenAI, openai.AsyncOpenAI)):
        raise ConfigError(
            f"wrap_openai() takes an openai.OpenAI or openai.AsyncOpenAI client, not {type(client).__name__}; "
            "for Anthropic clients use wrap_anthropic()"
        )
    is_async = isinstance(client, openai.AsyncOpenAI)
    completions = client.chat.completions
    create = completions.create
    if getattr(create, TRACED_MARK, False):
        return client
    install_hooks(getattr(client, "_client", None), is_async)
    traced = traced_method(create, _start, _finish, _Accumulator, is_async)
    completions.create = traced  # type: ignore[method-assign]
    return client


def _start(kwargs: dict[str, Any], attempts: list[int]) -> LLMCallRecord:
    config = configuration("openai", kwargs, list(kwargs.get("messages") or []))
    return LLMCallRecord("llm-openai", config, attempts)


def _output(content: str | None, tool_calls: list[dict[str, Any]]) -> str:
    """The span's output: the text, or the tool calls as JSON (as :func:`runner.completion` logs them)."""
    if not tool_calls:
        return content or ""
    calls = []
    for call in tool_calls:
        arguments: Any = call.get("arguments") or ""
        with contextlib.suppress(TypeError, ValueError):
            arguments = json.loads(arguments)
        calls.append({"name": call.get("name"), "arguments": arguments})
    text = json.dumps(calls)
    return f"{content}\n{text}" if content else text


def _finish(record: LLMCallRecord, completion: Any) -> None:
    usage = getattr(completion, "usage", None)
    choices = getattr(completion, "choices", None) or []
    message = choices[0].message if choices else None
    tool_calls = [
        {"name": c.function.name, "arguments": c.function.arguments}
        for c in (getattr(message, "tool_calls", None) or [])
        if getattr(c, "function", None) is not None
    ]
    output = _output(getattr(message, "content", None), tool_calls)
    if tool_calls:
        record.span.metadata["tool_calls"] = jsonable(message.tool_calls)  # type: ignore[union-attr]
    record.succeed(
        output,
        int(getattr(usage, "prompt_tokens", 0) or 0),
        int(getattr(usage, "completion_tokens", 0) or 0),
        getattr(completion, "model", None),
    )


class _Accumulator(StreamAccumulator):
    """What the chunks of a stream said so far."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tools: dict[int, dict[str, Any]] = {}

    def feed(self, record: LLMCallRecord, chunk: Any) -> None:
        self.model = getattr(chunk, "model", None) or self.model
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
            self.output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        for choice in getattr(chunk, "choices", None) or []:
            delta = getattr(choice, "delta", None)
            if delta is None:
                continue
            if delta.content:
                record.first_token()
                self.text.append(delta.content)
            for call in getattr(delta, "tool_calls", None) or []:
                record.first_token()
                slot = self.tools.setdefault(int(call.index or 0), {"name": None, "arguments": ""})
                fn = getattr(call, "function", None)
                if fn is not None:
                    if fn.name:
                        slot["name"] = fn.name
                    if fn.arguments:
                        slot["arguments"] += fn.arguments

    def output(self) -> str:
        return _output("".join(self.text), [self.tools[i] for i in sorted(self.tools)])
