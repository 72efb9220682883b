"""``POST /v1/traces``: the real OpenTelemetry SDK and its OTLP/HTTP exporter sending to a real
server; what is stored is read back from the store."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from runner.server.auth import key_owner
from tests.servers import ServerHandle, start_server

MINI_IN, MINI_OUT = 0.15e-6, 0.60e-6
OWNER = key_owner("k")


@pytest.fixture
def server(db: str | Path) -> Iterator[ServerHandle]:
    """A server over each store (``db``: SQLite, then PostgreSQL)."""
    with start_server(db, api_keys=["k"]) as handle:
        yield handle


def provider(exporter: Any, **resource: str) -> TracerProvider:
    tp = TracerProvider(resource=Resource.create({"service.name": "my-app", **resource}))
    tp.add_span_processor(SimpleSpanProcessor(exporter))  # children are exported before parents
    return tp


def exporter(server: ServerHandle, key: str = "k", **kw: Any) -> OTLPSpanExporter:
    return OTLPSpanExporter(endpoint=server.url + "/v1/traces", headers={"authorization": f"Bearer {key}"},
                            timeout=30, **kw)


def an_agent(tp: TracerProvider) -> str:
    """A root span, an LLM span with GenAI attributes, one with OpenInference's, one failing."""
    tracer = tp.get_tracer("tests")
    with tracer.start_as_current_span("agent", attributes={"input.value": '{"question": "capital?"}'}) as root:
        with tracer.start_as_current_span("chat gpt-4o-mini") as llm:
            llm.set_attributes({
                "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.request.temperature": 0.2, "gen_ai.request.max_tokens": 50,
                "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 4,
                "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]),
                "gen_ai.output.messages": json.dumps(
                    [{"role": "assistant", "parts": [{"type": "text", "content": "Paris"}]}]),
            })
        with tracer.start_as_current_span("llm-oi") as oi:
            oi.set_attributes({
                "openinference.span.kind": "LLM", "llm.model_name": "claude-3-5-haiku", "llm.provider": "anthropic",
                "llm.token_count.prompt": 3, "llm.token_count.completion": 2, "llm.cost.total": 0.5,
                "llm.input_messages.0.message.role": "user", "llm.input_messages.0.message.content": "again?",
                "llm.invocation_parameters": '{"temperature": 0}', "output.value": "yes",
            })
        with tracer.start_as_current_span("tool") as tool:
            try:
                raise ValueError("no such city")
            except ValueError as exc:
                tool.record_exception(exc)
                tool.set_status(Status(StatusCode.ERROR, "no such city"))
        root.set_attribute("output.value", "Paris")
        return str(uuid.UUID(int=root.get_span_context().trace_id))


def check_stored(server: ServerHandle, trace_uuid: str, owner: str = OWNER) -> None:
    assert server.store is not None
    tree = server.store.get_trace_tree(trace_uuid, owner)
    assert tree["trace_id"] == tree["root_trace_id"] == trace_uuid
    assert tree["trace_name"] == "agent" and tree["inputs"] == {"question": "capital?"} and tree["output"] == "Paris"
    (agent,) = tree["children_logs"]  # the OTel root span, under the trace's root log
    llm, oi, tool = agent["children_logs"]
    assert (agent["trace_name"], llm["trace_name"], oi["trace_name"], tool["trace_name"]) == (
        "agent", "chat gpt-4o-mini", "llm-oi", "tool")
    assert llm["parent_trace_id"] == agent["trace_id"] and llm["root_trace_id"] == trace_uuid
    assert llm["configuration"]["model"] == "gpt-4o-mini" and llm["configuration"]["provider"] == "openai"
    assert llm["configuration"]["model_params"] == {"temp": 0.2, "max_length": 50}
    assert llm["configuration"]["messages"] == [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
    assert llm["output"] == "Paris" and (llm["input_tokens"], llm["output_tokens"]) == (10, 4)
    assert llm["cost"] == pytest.approx(10 * MINI_IN + 4 * MINI_OUT)  # from the price table
    assert llm["metadata"]["gen_ai.operation.name"] == "chat" and llm["latency"] >= 0
    assert oi["configuration"]["messages"] == [{"role": "user", "content": "again?"}]
    assert oi["configuration"]["model_params"] == {"temperature": 0} and oi["output"] == "yes"
    assert (oi["input_tokens"], oi["output_tokens"], oi["cost"]) == (3, 2, 0.5)
    assert tool["status"] == "error" and "ValueError: no such city" in tool["error"]
    assert tool["metadata"]["otel.events"][0]["name"] == "exception"
    # tokens and cost add up to the root
    assert (tree["input_tokens"], tree["output_tokens"]) == (13, 6)
    assert tree["cost"] == pytest.approx(10 * MINI_IN + 4 * MINI_OUT + 0.5)
    assert agent["start_timestamp"] <= llm["start_timestamp"] <= llm["end_timestamp"] <= agent["end_timestamp"]


def test_the_sdk_exporter_over_protobuf(server: ServerHandle) -> None:
    tp = provider(exporter(server), **{"runner.project": "prod"})
    trace_uuid = an_agent(tp)
    tp.shutdown()
    check_stored(server, trace_uuid)
    assert server.store is not None
    assert server.store.get_trace_tree(trace_uuid, OWNER)["project_name"] == "prod"


def test_gzip_and_every_span_in_one_export(server: ServerHandle) -> None:
    memory = InMemorySpanExporter()
    trace_uuid = an_agent(provider(memory))
    spans = memory.get_finished_spans()
    assert exporter(server, compression=Compression.Gzip).export(spans) is SpanExportResult.SUCCESS
    check_stored(server, trace_uuid)


def test_otlp_json(server: ServerHandle) -> None:
    memory = InMemorySpanExporter()
    trace_uuid = an_agent(provider(memory))
    body = json_format.MessageToDict(encode_spans(memory.get_finished_spans()))
    for rs in body["resourceSpans"]:  # OTLP/JSON writes ids as hex, not protobuf's base64
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    response = httpx.post(server.url + "/v1/traces", json=body, headers={"x-api-key": "k"})
    assert response.status_code == 200 and response.json() == {}
    check_stored(server, trace_uuid)


def test_authenticated_and_bad_bodies_are_400(server: ServerHandle) -> None:
    memory = InMemorySpanExporter()
    an_agent(provider(memory))
    assert exporter(server, key="wrong").export(memory.get_finished_spans()) is SpanExportResult.FAILURE
    url = server.url + "/v1/traces"
    assert httpx.post(url, content=b"\x00").status_code == 401
    bad = httpx.post(url, content=b"\xff\xff\xff", headers={"x-api-key": "k", "content-type": "application/x-protobuf"})
    assert bad.status_code == 400 and "protobuf" in bad.json()["detail"]
    bad_json = httpx.post(url, json={"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]},
                          headers={"x-api-key": "k"})
    assert bad_json.status_code == 400 and "hex" in bad_json.json()["detail"]
    assert server.store is not None and server.store.count_traces(OWNER) == 0
