"""OTLP spans as Parea trace logs: ids, parents, timings, status, inputs/outputs, tokens, cost.

Two attribute vocabularies are read, the OpenTelemetry GenAI semantic conventions and
OpenInference's:

============================  ============================================  =====================================
trace log field               GenAI (``gen_ai.*``)                          OpenInference
============================  ============================================  =====================================
``configuration.provider``    ``gen_ai.provider.name``, ``gen_ai.system``   ``llm.provider``, ``llm.system``
``configuration.model``       ``gen_ai.response.model``, ``.request.model``  ``llm.model_name``
``configuration.model_params``  ``gen_ai.request.temperature|top_p|max_tokens``  ``llm.invocation_parameters``
``configuration.messages``    ``gen_ai.input.messages``, ``gen_ai.prompt.N.*``  ``llm.input_messages.N.message.*``
``inputs``                    (the messages)                                ``input.value``
``output``                    ``gen_ai.output.messages``, ``gen_ai.completion.N.content``  ``output.value``
``input_tokens``              ``gen_ai.usage.input_tokens`` (``prompt_tokens``)  ``llm.token_count.prompt``
``output_tokens``             ``gen_ai.usage.output_tokens`` (``completion_tokens``)  ``llm.token_count.completion``
``cost``                      (the price table)                             ``llm.cost.total``, else the table
============================  ============================================  =====================================

**Ids.** An OTLP trace becomes one root trace log whose id is the 16-byte trace id read as a
UUID; every span, the OTel root span included, is a child log under it with the UUID of a hash
of its trace and span ids, and the parent its parent span maps to. So spans can arrive in any
order and in any number of exports (a ``SimpleSpanProcessor`` sends children before their
parents): nothing needs to be known about a span's parent to store it. The root log takes its
name, timings, status, inputs and output from the OTel root span when that arrives (no tokens
of its own: they add up from the spans).

Every attribute that is not mapped is kept in ``metadata`` (``otel.*`` for the ids, kind and
resource), as are the span's events.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

__all__ = ["attributes", "span_logs"]

_ERROR = 2  # Status.STATUS_CODE_ERROR


def any_value(v: Any) -> Any:
    """An OTLP ``AnyValue`` message as a plain Python value."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


def _uuid(trace_id: bytes, span_id: bytes | None = None) -> str:
    if span_id is None and len(trace_id) == 16:
        return str(uuid.UUID(bytes=trace_id))
    digest = hashlib.blake2b(trace_id + (span_id or b""), digest_size=16).digest()
    return str(uuid.UUID(bytes=digest, version=4))


def _iso(nanos: int) -> str:
    return datetime.fromtimestamp(nanos / 1e9, timezone.utc).isoformat()


def _json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _indexed(attrs: Mapping[str, Any], prefix: str) -> list[dict[str, Any]]:
    """``prefix.0.role``, ``prefix.0.content`` ... as ``[{"role", "content"}, ...]`` (consumed)."""
    items: dict[int, dict[str, Any]] = {}
    for key in [k for k in attrs if k.startswith(prefix + ".")]:
        index, _, field = key[len(prefix) + 1:].partition(".")
        if index.isdigit() and field:
            items.setdefault(int(index), {})[field.removeprefix("message.")] = attrs[key]
    return [items[i] for i in sorted(items)]


def _first(attrs: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        value = attrs.get(name)
        if value is not None and value != "":
            return value
    return None


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _messages_output(messages: Any) -> Any:
    """The text of output messages (GenAI ``parts`` or plain ``content``), else them as given."""
    if isinstance(messages, list) and messages:
        texts = []
        for m in messages:
            if not isinstance(m, dict):
                return messages
            if isinstance(m.get("content"), str):
                texts.append(m["content"])
            for part in m.get("parts") or []:
                if isinstance(part, dict) and part.get("type") == "text":
                    texts.append(str(part.get("content", "")))
        if texts:
            return "".join(texts)
    return messages


def span_logs(span: Any, resource: Mapping[str, Any], scope_name: str, project_name: str,
              prices: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The child log of ``span`` and the (partial) root log of its trace."""
    attrs = attributes(span.attributes)
    trace_bytes, span_bytes = bytes(span.trace_id), bytes(span.span_id)
    root_id = _uuid(trace_bytes)
    own_id = _uuid(trace_bytes, span_bytes)
    parent_bytes = bytes(span.parent_span_id)
    parent_id = _uuid(trace_bytes, parent_bytes) if parent_bytes else root_id
    start, end = int(span.start_time_unix_nano), int(span.end_time_unix_nano) or int(span.start_time_unix_nano)

    provider = _first(attrs, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
    model = _first(attrs, "gen_ai.response.model", "gen_ai.request.model", "llm.model_name")
    params: dict[str, Any] = {}
    for name, key in (("temperature", "temp"), ("top_p", "top_p"), ("max_tokens", "max_length"),
                      ("frequency_penalty", "frequency_penalty"), ("presence_penalty", "presence_penalty"),
                      ("seed", "seed")):
        value = attrs.get(f"gen_ai.request.{name}")
        if value is not None:
            params[key] = value
    invocation = _json(attrs.get("llm.invocation_parameters"))
    if isinstance(invocation, dict):
        params.update(invocation)
    messages = _json(attrs.get("gen_ai.input.messages")) or _indexed(attrs, "gen_ai.prompt") or _indexed(
        attrs, "llm.input_messages")
    out_messages = _json(attrs.get("gen_ai.output.messages")) or _indexed(attrs, "gen_ai.completion") or _indexed(
        attrs, "llm.output_messages")
    system = attrs.get("gen_ai.system_instructions")
    if system is not None and isinstance(messages, list):
        messages = [{"role": "system", "content": _json(system)}, *messages]

    input_value = _json(attrs.get("input.value"))
    if isinstance(input_value, dict):
        inputs: dict[str, Any] = input_value
    elif input_value is not None:
        inputs = {"input": input_value}
    elif messages:
        inputs = {"messages": messages}
    else:
        inputs = {}
    output = attrs.get("output.value")
    if output is None and out_messages:
        output = _messages_output(out_messages)

    input_tokens = _int(_first(attrs, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens",
                               "llm.token_count.prompt"))
    output_tokens = _int(_first(attrs, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens",
                                "llm.token_count.completion"))
    cost_attr = _first(attrs, "llm.cost.total", "gen_ai.usage.cost")
    if cost_attr is not None:
        cost = float(cost_attr)
    elif model and input_tokens + output_tokens > 0:
        cost = float(prices.cost(input_tokens, output_tokens, str(model)))
    else:
        cost = 0.0

    status = "error" if span.status.code == _ERROR else "success"
    error = None
    events = []
    for event in span.events:
        event_attrs = attributes(event.attributes)
        events.append({"name": event.name, "time": _iso(int(event.time_unix_nano)), "attributes": event_attrs})
        if event.name == "exception" and status == "error":
            error = event_attrs.get("exception.stacktrace") or (
                f"{event_attrs.get('exception.type', 'Exception')}: {event_attrs.get('exception.message', '')}")
    if status == "error" and error is None:
        error = span.status.message or "error (no message)"

    mapped = {"input.value", "output.value", "gen_ai.input.messages", "gen_ai.output.messages",
              "gen_ai.system_instructions", "llm.invocation_parameters"}
    extra = {k: v for k, v in attrs.items() if k not in mapped and not k.startswith(
        ("gen_ai.prompt.", "gen_ai.completion.", "llm.input_messages.", "llm.output_messages."))}
    metadata: dict[str, Any] = {
        **{k: v if isinstance(v, (str, int, float, bool)) else json.dumps(v) for k, v in extra.items()},
        "otel.trace_id": trace_bytes.hex(),
        "otel.span_id": span_bytes.hex(),
        "otel.span_kind": int(span.kind),
        "otel.scope": scope_name,
    }
    if parent_bytes:
        metadata["otel.parent_span_id"] = parent_bytes.hex()
    if resource:
        metadata["otel.resource"] = {k: v for k, v in resource.items() if isinstance(v, (str, int, float, bool))}
    if events:
        metadata["otel.events"] = events

    log: dict[str, Any] = {
        "trace_id": own_id,
        "parent_trace_id": parent_id,
        "root_trace_id": root_id,
        "project_name": project_name,
        "trace_name": span.name or "span",
        "start_timestamp": _iso(start),
        "end_timestamp": _iso(end),
        "latency": max(0.0, (end - start) / 1e9),
        "status": status,
        "inputs": inputs,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
        "cost": cost,
        "metadata": metadata,
    }
    if output is not None:
        log["output"] = _text(output)
    if error is not None:
        log["error"] = error
    if model or provider or messages:
        log["configuration"] = {"model": str(model or ""), "provider": str(provider or ""),
                                "model_params": params, "messages": messages or []}
    root: dict[str, Any] = {
        "trace_id": root_id, "parent_trace_id": root_id, "root_trace_id": root_id, "project_name": project_name,
        "trace_name": str(resource.get("service.name") or "otel-trace"),
        "start_timestamp": _iso(start), "end_timestamp": _iso(end),
        "metadata": {"otel.trace_id": trace_bytes.hex(), "source": "otlp"},
    }
    if not parent_bytes:  # the OTel root span: the root log takes its name, times, status, I/O
        root.update(trace_name=log["trace_name"], latency=log["latency"], status=status, inputs=inputs)
        for key in ("output", "error"):
            if key in log:
                root[key] = log[key]
    return log, root
