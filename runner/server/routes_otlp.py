"""``POST /v1/traces``: OTLP/HTTP trace export in, protobuf or JSON, stored as trace logs.

Point any OpenTelemetry SDK's OTLP/HTTP exporter at the server::

    OTLPSpanExporter(endpoint="http://127.0.0.1:8000/v1/traces", headers={"authorization": "Bearer <key>"})

(or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` and ``OTEL_EXPORTER_OTLP_HEADERS``). The body is an
``ExportTraceServiceRequest``, as ``application/x-protobuf`` (the exporters' default, gzip
allowed) or ``application/json`` (OTLP's JSON encoding: hex trace and span ids); it is decoded
with the official ``opentelemetry-proto`` package (``pip install 'runner[otel]'``). Spans are
mapped by :mod:`runner.server.otlp_mapping` and stored under the caller's tenant, in the
project named by the resource attribute ``runner.project`` (else ``RUNNER_PROJECT``, else
``default``). Authenticated like the rest of ``/v1`` (``Authorization: Bearer`` or
``x-api-key``). The answer is an ``ExportTraceServiceResponse`` in the request's encoding; a
body that cannot be decoded is a 400 (which exporters do not retry).
"""

from __future__ import annotations

import base64
import os
import zlib
from collections.abc import Iterator
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from runner.server.deps import OwnerDep, StoreDep
from runner.server.routes_openai import PREFIX
from runner.store import Store

__all__ = ["decode_request", "router"]

router = APIRouter(prefix=PREFIX, tags=["opentelemetry"])

#: the most a gzip body may inflate to (bytes)
MAX_INFLATED = 64 * 1024 * 1024
_PROTOBUF = "application/x-protobuf"


class OTLPError(Exception):
    pass


def _inflate(body: bytes) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, MAX_INFLATED)
    except zlib.error as exc:
        raise OTLPError(f"the body is not valid gzip: {exc}") from None
    if inflater.unconsumed_tail:
        raise OTLPError(f"the gzip body inflates to more than {MAX_INFLATED} bytes; export fewer spans at a time")
    return out


def _hex_ids_to_base64(data: Any) -> None:
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping reads bytes as base64."""
    for rs in data.get("resourceSpans") or data.get("resource_spans") or []:
        for ss in rs.get("scopeSpans") or rs.get("scope_spans") or []:
            for span in ss.get("spans") or []:
                for obj in (span, *(span.get("links") or [])):
                    for key in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"):
                        value = obj.get(key)
                        if isinstance(value, str) and value:
                            try:
                                obj[key] = base64.b64encode(bytes.fromhex(value)).decode()
                            except ValueError:
                                raise OTLPError(f"{key} {value!r} is not a hex id") from None


def decode_request(body: bytes, content_type: str, encoding: str) -> Any:
    """The ``ExportTraceServiceRequest`` in ``body``; raises :class:`OTLPError` if unreadable."""
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    if encoding == "gzip":
        body = _inflate(body)
    elif encoding not in ("", "identity"):
        raise OTLPError(f"content-encoding {encoding!r} is not supported: send gzip or none")
    message = ExportTraceServiceRequest()
    if content_type.startswith("application/json"):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise OTLPError(f"the body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise OTLPError("the JSON body must be an ExportTraceServiceRequest object")
        _hex_ids_to_base64(data)
        try:
            json_format.ParseDict(data, message, ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            raise OTLPError(f"the JSON body is not an ExportTraceServiceRequest: {exc}") from None
        return message
    if content_type.startswith(_PROTOBUF) or not content_type:
        try:
            message.ParseFromString(body)
        except DecodeError as exc:
            raise OTLPError(f"the body is not a protobuf ExportTraceServiceRequest: {exc}") from None
        return message
    raise OTLPError(f"content-type {content_type!r} is not supported: send {_PROTOBUF} or application/json")


def _spans(message: Any) -> Iterator[tuple[Any, dict[str, Any], str]]:
    from runner.server.otlp_mapping import attributes

    for rs in message.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for span in ss.spans:
                yield span, resource, ss.scope.name


def _logs(store: Store, owner: str, message: Any) -> tuple[list[dict[str, Any]], int]:
    """The trace logs of an export, and how many spans were rejected (no trace or span id)."""
    from runner.proxy import PriceTable
    from runner.server.otlp_mapping import span_logs

    prices = PriceTable()
    default_project = os.environ.get("RUNNER_PROJECT") or "default"
    children: list[dict[str, Any]] = []
    roots: dict[str, dict[str, Any]] = {}
    from_root_span: set[str] = set()
    rejected = 0
    for span, resource, scope in _spans(message):
        if len(span.trace_id) != 16 or len(span.span_id) != 8:
            rejected += 1
            continue
        project = str(resource.get("runner.project") or default_project)
        log, root = span_logs(span, resource, scope, project, prices)
        children.append(log)
        rid = root["trace_id"]
        if not span.parent_span_id:
            roots[rid] = root
            from_root_span.add(rid)
        else:
            roots.setdefault(rid, root)
    # a trace whose root span is not in this export gets a placeholder root, unless it has one
    missing = [rid for rid in roots if rid not in from_root_span]
    if missing:
        marks = ",".join("?" * len(missing))
        _, existing = store.find_roots(owner, condition=f"trace_id IN ({marks})", params=missing)
        for rid in existing:
            roots.pop(rid, None)
    return [*roots.values(), *children], rejected


def _answer(content_type: str, rejected: int, status: int = 200) -> Response:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = "spans without a 16-byte trace id and an 8-byte span id"
    if content_type.startswith("application/json"):
        from google.protobuf import json_format

        return JSONResponse(json_format.MessageToDict(response), status_code=status)
    return Response(response.SerializeToString(), status_code=status, media_type=_PROTOBUF)


@router.post("/traces", response_model=None)
async def export_traces(request: Request, store: StoreDep, owner: OwnerDep) -> Response:
    """OTLP/HTTP trace export: ``ExportTraceServiceRequest`` (protobuf or JSON) in, trace logs stored."""
    content_type = request.headers.get("content-type", "").lower()
    try:
        import opentelemetry.proto  # noqa: F401
    except ImportError:
        return JSONResponse({"detail": "OTLP ingestion needs the opentelemetry-proto package on the server: "
                                       "pip install 'runner[otel]'"}, status_code=501)
    try:
        message = decode_request(await request.body(), content_type,
                                 request.headers.get("content-encoding", "").lower())
    except OTLPError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=400)
    logs, rejected = await run_in_threadpool(_logs, store, owner, message)
    if logs:
        await run_in_threadpool(store.upsert_traces, logs, owner)
    return _answer(content_type, rejected)
