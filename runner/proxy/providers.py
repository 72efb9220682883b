"""Provider adapters: an :class:`LLMCall` in, an HTTP request out; a response body in, a
:class:`Completion` out. No I/O here — :mod:`runner.proxy.upstream` sends what these build.

Two wire dialects cover every served provider:

* OpenAI chat completions (``POST {base_url}/chat/completions``): ``openai``, ``azure``,
  ``openrouter``, ``groq``, ``fireworks``, ``mistral``, ``anyscale``, ``litellm``;
* Anthropic Messages (``POST {base_url}/v1/messages``): ``anthropic``.

Parameters equal to the spec's defaults (``temp`` 1, ``top_p`` 1, penalties 0) are not sent:
every provider has the same defaults, and reasoning models (o-series, gpt-5) reject them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "PROVIDERS",
    "AnthropicAdapter",
    "Completion",
    "LLMCall",
    "OpenAIAdapter",
    "ProviderAdapter",
    "ProviderSpec",
    "StreamParser",
    "UpstreamRequest",
    "adapter_for",
]

#: Parameters whose value equals the provider default are left out of the request and the key.
PARAM_DEFAULTS: Mapping[str, float] = {
    "temp": 1.0,
    "top_p": 1.0,
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
}


@dataclass(frozen=True)
class ProviderSpec:
    """Static facts about a provider: its dialect, env vars and default base URL."""

    name: str
    dialect: Literal["openai", "anthropic"]
    key_env: str
    base_url_env: str
    default_base_url: str | None
    key_required: bool = True
    #: Env vars read when ``key_env`` / ``base_url_env`` are unset (the official SDK's names).
    key_env_aliases: tuple[str, ...] = ()
    base_url_env_aliases: tuple[str, ...] = ()


def _spec(name: str, base_url: str | None, **kw: Any) -> ProviderSpec:
    upper = name.upper()
    return ProviderSpec(name, kw.pop("dialect", "openai"), f"{upper}_API_KEY", f"{upper}_BASE_URL",
                        base_url, **kw)


#: Every provider the proxy serves, by Parea provider name.
PROVIDERS: Mapping[str, ProviderSpec] = {
    s.name: s
    for s in (
        _spec("openai", "https://api.openai.com/v1"),
        _spec("anthropic", "https://api.anthropic.com", dialect="anthropic"),
        # Azure base URLs name the resource: https://<resource>.openai.azure.com/openai/v1
        _spec("azure", None, key_env_aliases=("AZURE_OPENAI_API_KEY",),
              base_url_env_aliases=("AZURE_OPENAI_BASE_URL",)),
        _spec("openrouter", "https://openrouter.ai/api/v1"),
        _spec("groq", "https://api.groq.com/openai/v1"),
        _spec("fireworks", "https://api.fireworks.ai/inference/v1"),
        _spec("mistral", "https://api.mistral.ai/v1"),
        _spec("anyscale", "https://api.endpoints.anyscale.com/v1"),
        # A LiteLLM proxy runs wherever you started it, often without a key.
        _spec("litellm", "http://localhost:4000", key_required=False),
    )
}


@dataclass(frozen=True)
class LLMCall:
    """A request resolved to exactly what determines the provider's answer.

    ``params`` uses Parea's names (``temp``, ``max_length`` ...), holds only non-default values,
    and includes unknown model params (``seed``, ``stop`` ...) as given. The cache key is a hash
    of this object.
    """

    provider: str
    model: str
    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    functions: list[Any] | None = None
    function_call: str | dict[str, str] | None = None


@dataclass(frozen=True)
class UpstreamRequest:
    url: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass(frozen=True)
class Completion:
    """What a provider answered: the part of a response that is cached."""

    content: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0


def _tool_calls_json(calls: list[dict[str, Any]]) -> str:
    """Function calls as content: ``[{"name": ..., "arguments": {...}}]`` (arguments parsed)."""
    out = []
    for call in calls:
        args: Any = call.get("arguments") or ""
        if isinstance(args, str):
            with contextlib.suppress(ValueError):
                args = json.loads(args) if args else {}
        out.append({"name": call.get("name", ""), "arguments": args})
    return json.dumps(out, ensure_ascii=False)


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _error_message(body: Any, text: str) -> str:
    """The provider's own message: ``{"error": {"message": ...}}`` in both dialects."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if body.get("message"):
            return str(body["message"])
    return text.strip()[:500] or "(empty body)"


class StreamParser:
    """Reads one provider's server-sent events; collects the final :class:`Completion`."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.text: list[str] = []
        self.input_tokens = 0
        self.output_tokens = 0
        self.done = False
        self.error: str | None = None
        self._calls: dict[int, dict[str, Any]] = {}

    def feed(self, event: str | None, data: str) -> str:
        """One SSE event in; the text it adds out (possibly ``""``)."""
        raise NotImplementedError

    def tail(self) -> str:
        """Text to emit after the last event: function calls, when the answer was only those."""
        if self._calls and not self.text:
            return _tool_calls_json([self._calls[i] for i in sorted(self._calls)])
        return ""

    def result(self) -> Completion:
        return Completion("".join(self.text) + self.tail(), self.model, self.input_tokens,
                          self.output_tokens)


class ProviderAdapter:
    """Builds requests for and parses responses of one wire dialect."""

    def __init__(self, spec: ProviderSpec) -> None:
        self.spec = spec

    def build(self, call: LLMCall, *, api_key: str | None, base_url: str, stream: bool,
              ) -> UpstreamRequest:
        raise NotImplementedError

    def parse(self, body: Any) -> Completion:
        raise NotImplementedError

    def stream_parser(self, model: str) -> StreamParser:
        raise NotImplementedError

    def error_message(self, body: Any, text: str) -> str:
        return _error_message(body, text)


# --- OpenAI chat completions -------------------------------------------------------------------

_OPENAI_PARAMS = {
    "temp": "temperature",
    "top_p": "top_p",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "response_format": "response_format",
}


class OpenAIAdapter(ProviderAdapter):
    def build(self, call: LLMCall, *, api_key: str | None, base_url: str, stream: bool,
              ) -> UpstreamRequest:
        body: dict[str, Any] = {"model": call.model, "messages": call.messages}
        for name, value in call.params.items():
            if name in _OPENAI_PARAMS:
                body[_OPENAI_PARAMS[name]] = value
            elif name == "max_length":
                # OpenAI deprecated max_tokens, and o-series/gpt-5 reject it.
                official = self.spec.name in ("openai", "azure")
                body["max_completion_tokens" if official else "max_tokens"] = value
            elif name == "safe_prompt":
                if self.spec.name == "mistral":
                    body["safe_prompt"] = value
            else:
                body[name] = value
        if call.functions:
            body["tools"] = [{"type": "function", "function": f} for f in call.functions]
        if call.function_call is not None:
            fc = call.function_call
            body["tool_choice"] = (
                fc if isinstance(fc, str) else {"type": "function", "function": {"name": fc["name"]}}
            )
        if stream:
            body["stream"] = True
            if self.spec.name in ("openai", "azure"):
                body["stream_options"] = {"include_usage": True}
        headers = {}
        if api_key:
            if self.spec.name == "azure":
                headers["api-key"] = api_key
            else:
                headers["authorization"] = f"Bearer {api_key}"
        return UpstreamRequest(f"{base_url.rstrip('/')}/chat/completions", headers, body)

    def parse(self, body: Any) -> Completion:
        message = body["choices"][0]["message"]
        content = message.get("content") or ""
        calls = [c["function"] for c in message.get("tool_calls") or [] if c.get("function")]
        if message.get("function_call"):
            calls.append(message["function_call"])
        if calls and not content:
            content = _tool_calls_json(calls)
        usage = body.get("usage") or {}
        return Completion(content, str(body.get("model") or ""), _int(usage.get("prompt_tokens")),
                          _int(usage.get("completion_tokens")))

    def stream_parser(self, model: str) -> StreamParser:
        return _OpenAIStreamParser(model)


class _OpenAIStreamParser(StreamParser):
    def feed(self, event: str | None, data: str) -> str:
        if data.strip() == "[DONE]":
            self.done = True
            return ""
        chunk = json.loads(data)
        if "error" in chunk:
            self.error = _error_message(chunk, data)
            return ""
        self.model = chunk.get("model") or self.model
        usage = chunk.get("usage") or (chunk.get("x_groq") or {}).get("usage")
        if usage:
            self.input_tokens = _int(usage.get("prompt_tokens"))
            self.output_tokens = _int(usage.get("completion_tokens"))
        text = ""
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                text += delta["content"]
            for tc in delta.get("tool_calls") or []:
                slot = self._calls.setdefault(tc.get("index", 0), {"name": "", "arguments": ""})
                fn = tc.get("function") or {}
                slot["name"] += fn.get("name") or ""
                slot["arguments"] += fn.get("arguments") or ""
        if text:
            self.text.append(text)
        return text


# --- Anthropic Messages ------------------------------------------------------------------------

ANTHROPIC_VERSION = "2023-06-01"
#: Model params beyond Parea's that the Messages API accepts and are forwarded as given.
_ANTHROPIC_EXTRAS = frozenset({"top_k", "stop_sequences", "thinking", "metadata", "service_tier"})


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


class AnthropicAdapter(ProviderAdapter):
    """System messages go to ``system``; ``max_tokens`` is required, so it has a default."""

    def __init__(self, spec: ProviderSpec, *, default_max_tokens: int = 4096) -> None:
        super().__init__(spec)
        self.default_max_tokens = default_max_tokens

    def build(self, call: LLMCall, *, api_key: str | None, base_url: str, stream: bool,
              ) -> UpstreamRequest:
        system = [_text_of(m.get("content")) for m in call.messages if m.get("role") == "system"]
        messages = [
            {"role": "assistant" if m.get("role") == "assistant" else "user", "content": m.get("content")}
            for m in call.messages
            if m.get("role") != "system"
        ]
        body: dict[str, Any] = {
            "model": call.model,
            "messages": messages,
            "max_tokens": call.params.get("max_length") or self.default_max_tokens,
        }
        if system:
            body["system"] = "\n\n".join(system)
        for name, value in call.params.items():
            if name == "temp":
                body["temperature"] = value
            elif name == "top_p":
                body["top_p"] = value
            elif name == "stop":
                body["stop_sequences"] = [value] if isinstance(value, str) else value
            elif name in _ANTHROPIC_EXTRAS:
                body[name] = value
            # penalties, response_format, seed, ...: no Anthropic equivalent, so not sent
            # (they still count in the cache key).
        if call.functions:
            body["tools"] = [
                {
                    "name": f.get("name", ""),
                    "description": f.get("description", ""),
                    "input_schema": f.get("parameters") or {"type": "object", "properties": {}},
                }
                for f in call.functions
            ]
        fc = call.function_call
        if isinstance(fc, dict):
            body["tool_choice"] = {"type": "tool", "name": fc["name"]}
        elif fc in ("auto", "none"):
            body["tool_choice"] = {"type": fc}
        elif fc in ("required", "any"):
            body["tool_choice"] = {"type": "any"}
        if stream:
            body["stream"] = True
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return UpstreamRequest(f"{base_url.rstrip('/')}/v1/messages", headers, body)

    def parse(self, body: Any) -> Completion:
        text, calls = [], []
        for block in body.get("content") or []:
            if block.get("type") == "text":
                text.append(block.get("text", ""))
            elif block.get("type") == "tool_use":
                calls.append({"name": block.get("name", ""), "arguments": block.get("input", {})})
        content = "".join(text) or (_tool_calls_json(calls) if calls else "")
        usage = body.get("usage") or {}
        return Completion(content, str(body.get("model") or ""), _int(usage.get("input_tokens")),
                          _int(usage.get("output_tokens")))

    def stream_parser(self, model: str) -> StreamParser:
        return _AnthropicStreamParser(model)


class _AnthropicStreamParser(StreamParser):
    def feed(self, event: str | None, data: str) -> str:
        msg = json.loads(data)
        kind = msg.get("type") or event
        if kind == "message_start":
            message = msg.get("message") or {}
            self.model = message.get("model") or self.model
            self.input_tokens = _int((message.get("usage") or {}).get("input_tokens"))
        elif kind == "content_block_start":
            block = msg.get("content_block") or {}
            if block.get("type") == "tool_use":
                self._calls[msg.get("index", 0)] = {"name": block.get("name", ""), "arguments": ""}
        elif kind == "content_block_delta":
            delta = msg.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                self.text.append(delta["text"])
                return str(delta["text"])
            if delta.get("type") == "input_json_delta" and msg.get("index", 0) in self._calls:
                self._calls[msg.get("index", 0)]["arguments"] += delta.get("partial_json", "")
        elif kind == "message_delta":
            usage = msg.get("usage") or {}
            self.output_tokens = _int(usage.get("output_tokens")) or self.output_tokens
            if usage.get("input_tokens"):
                self.input_tokens = _int(usage["input_tokens"])
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            self.error = _error_message(msg, data)
        return ""


def adapter_for(provider: str, *, anthropic_max_tokens: int = 4096) -> ProviderAdapter:
    """The adapter of a served provider (``KeyError`` for others: check :data:`PROVIDERS`)."""
    spec = PROVIDERS[provider]
    if spec.dialect == "anthropic":
        return AnthropicAdapter(spec, default_max_tokens=anthropic_max_tokens)
    return OpenAIAdapter(spec)
