"""OTLP out: a finished run's spans sent to an OpenTelemetry collector, scores as evaluation events.

Turned on by ``Experiment(..., otlp_endpoint=URL)``, ``run --otlp-endpoint URL`` or
``RUNNER_OTLP_ENDPOINT`` (argument > flag > environment), with the official SDK and its OTLP/HTTP
exporter (``pip install 'runner[otel]'``). ``URL`` is the exporter's traces endpoint, e.g.
``http://collector:4318/v1/traces``; headers come from the exporter's own variables
(``OTEL_EXPORTER_OTLP_HEADERS``, e.g. ``authorization=Bearer <key>``).

When the run has finished, its stored trace trees are read back (the same through both doors)
and each log becomes one span, with its real start and end times and its parent:

* attributes ``runner.experiment_uuid``, ``runner.experiment_name``, ``runner.run_name``,
  ``runner.row_id``, ``runner.trial`` and ``runner.trace_id`` (the stored log's id);
  ``input.value`` / ``output.value``; for LLM spans the GenAI ones (``gen_ai.provider.name``,
  ``gen_ai.request.model``, ``gen_ai.usage.input_tokens`` / ``output_tokens``) and
  ``runner.cost``;
* each score as a ``gen_ai.evaluation.result`` event on its span (``gen_ai.evaluation.name``,
  ``gen_ai.evaluation.score.value``, ``gen_ai.evaluation.explanation``); a score that rolled up
  from a child span is sent on the child only;
* status ``ERROR`` with the error's last line for failed rows and spans.

OTel trace and span ids are hashes of the stored ids, so exporting a run twice sends the same
ids, and exporting to this project's own ``/v1/traces`` stores a copy beside the run rather
than over it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from runner._json import json_text
from runner.errors import ConfigError

__all__ = ["OTLP_ENDPOINT_ENV", "export_run", "export_trees", "resolve_endpoint", "stored_trees"]

OTLP_ENDPOINT_ENV = "RUNNER_OTLP_ENDPOINT"


def resolve_endpoint(argument: str | None) -> str | None:
    """The OTLP traces endpoint to export to: the argument, else ``RUNNER_OTLP_ENDPOINT``."""
    import os

    endpoint = argument or os.environ.get(OTLP_ENDPOINT_ENV) or None
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"otlp_endpoint must be an http(s) URL such as http://localhost:4318/v1/traces, "
                          f"not {endpoint!r}")
    return endpoint


def _id(text: str, size: int) -> int:
    value = int.from_bytes(hashlib.blake2b(f"runner-otlp/{text}".encode(), digest_size=size).digest(), "big")
    return value or 1


def _ns(iso: Any) -> int | None:
    if not isinstance(iso, str) or not iso:
        return None
    try:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1e9)
    except ValueError:
        return None


def _own_scores(node: Mapping[str, Any]) -> tuple[list[dict[str, Any]], set[str]]:
    """The scores of ``node`` that did not roll up from below, and every score name below it."""
    below: set[str] = set()
    for child in node.get("children_logs") or []:
        own, names = _own_scores(child)
        below |= names | {s["name"] for s in own}
    return [s for s in node.get("scores") or [] if s.get("name") not in below], below


def export_trees(trees: Iterable[Mapping[str, Any]], endpoint: str, *, experiment_name: str,
                 run_name: str | None = None, timeout: float = 30.0) -> int:
    """Export stored trace trees (``get_trace_tree`` shape) to ``endpoint``; returns how many
    spans were sent. Raises :class:`~runner.errors.BackendError` if the collector refused them."""
    try:
        from opentelemetry import trace as otel
        from opentelemetry.context import Context
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
        from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags
    except ImportError:
        raise ConfigError("otlp_endpoint needs the OpenTelemetry packages: pip install 'runner[otel]'") from None
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    from runner.errors import BackendError

    class _Ids(IdGenerator):
        """Hands out the ids chosen for the next span (hashes of the stored ids)."""

        def __init__(self) -> None:
            self.trace_id = 0
            self.span_id = 0

        def generate_trace_id(self) -> int:
            return self.trace_id

        def generate_span_id(self) -> int:
            return self.span_id

        def is_trace_id_random(self) -> bool:
            return False

    class _Checked(SpanExporter):
        """The OTLP exporter, remembering whether an export failed (the SDK only logs it)."""

        def __init__(self) -> None:
            self.inner = OTLPSpanExporter(endpoint=endpoint, timeout=timeout)
            self.failed = 0

        def export(self, spans: Any) -> SpanExportResult:
            result = self.inner.export(spans)
            if result is not SpanExportResult.SUCCESS:
                self.failed += len(spans)
            return result

        def shutdown(self) -> None:
            self.inner.shutdown()  # type: ignore[no-untyped-call]

    ids = _Ids()
    exporter = _Checked()
    provider = TracerProvider(resource=Resource.create({"service.name": "runner"}), id_generator=ids)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("runner")
    sent = 0
    try:
        for tree in trees:
            trace_int = _id(str(tree["trace_id"]), 16)
            meta = tree.get("metadata") or {}
            common = {
                "runner.experiment_name": experiment_name,
                "runner.row_id": str(meta.get("row_id", "")),
                "runner.trial": int(meta.get("trial") or 0),
            }
            if tree.get("experiment_uuid"):
                common["runner.experiment_uuid"] = str(tree["experiment_uuid"])
            if run_name:
                common["runner.run_name"] = run_name

            def emit(node: Mapping[str, Any], parent_span: int | None, common: dict[str, Any] = common,
                     trace_int: int = trace_int) -> None:
                span_int = _id(str(node["trace_id"]), 8)
                ids.trace_id, ids.span_id = trace_int, span_int
                if parent_span is None:
                    context = Context()
                else:
                    parent = SpanContext(trace_int, parent_span, is_remote=True, trace_flags=TraceFlags(1))
                    context = otel.set_span_in_context(NonRecordingSpan(parent))
                start = _ns(node.get("start_timestamp"))
                end = _ns(node.get("end_timestamp"))
                span = tracer.start_span(str(node.get("trace_name") or "span"), context=context, start_time=start,
                                         attributes={**common, **_attributes(node)})
                for score in _own_scores(node)[0]:
                    event: dict[str, Any] = {"gen_ai.evaluation.name": str(score["name"]),
                             "gen_ai.evaluation.score.value": float(score["score"])}
                    if score.get("reason"):
                        event["gen_ai.evaluation.explanation"] = str(score["reason"])
                    span.add_event("gen_ai.evaluation.result", event, timestamp=end)
                if node.get("status") == "error":
                    lines = str(node.get("error") or "error").strip().splitlines()
                    span.set_status(Status(StatusCode.ERROR, lines[-1] if lines else "error"))
                span.end(end_time=end)
                nonlocal sent
                sent += 1
                for child in node.get("children_logs") or []:
                    emit(child, span_int)

            emit(tree, None)
    finally:
        provider.force_flush(int(timeout * 1000))
        provider.shutdown()
    if exporter.failed:
        raise BackendError(f"the OTLP endpoint {endpoint} did not accept {exporter.failed} of {sent} spans; "
                           "is it an OTLP/HTTP traces URL (…/v1/traces), and are its headers set?")
    return sent


def _attributes(node: Mapping[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = {"runner.trace_id": str(node["trace_id"])}
    inputs = node.get("inputs")
    if inputs:
        attrs["input.value"] = json_text(inputs)
    if node.get("output") is not None:
        attrs["output.value"] = str(node["output"])
    config = node.get("configuration") or {}
    if config.get("model"):
        attrs["gen_ai.request.model"] = str(config["model"])
        attrs["gen_ai.operation.name"] = "chat"
    if config.get("provider"):
        attrs["gen_ai.provider.name"] = str(config["provider"])
    # a stored tree's inner nodes carry their subtree's totals: only leaves say what they used
    leaf = not node.get("children_logs")
    if leaf and (node.get("input_tokens") or node.get("output_tokens")):
        attrs["gen_ai.usage.input_tokens"] = int(node.get("input_tokens") or 0)
        attrs["gen_ai.usage.output_tokens"] = int(node.get("output_tokens") or 0)
    if leaf and node.get("cost"):
        attrs["runner.cost"] = float(node["cost"])
    if node.get("target") is not None:
        attrs["runner.target"] = str(node["target"])
    return attrs


def stored_trees(backend: Any, experiment_uuid: str) -> Iterable[dict[str, Any]]:
    """The trace trees of a finished run, read back where it was stored (blocking; run it on a
    worker thread): the embedded store a page at a time, or the server's
    ``POST /experiment/{uuid}/trace_logs``."""
    store = getattr(backend, "store", None)
    if store is not None:
        total, _ = store.find_roots(experiment_uuid=experiment_uuid, limit=0)
        for offset in range(0, total, 200):
            _, ids = store.find_roots(experiment_uuid=experiment_uuid, limit=200, offset=offset)
            yield from store.trace_trees(ids)
        return
    import httpx

    from runner.backends.http.transport import error_for, headers_for

    url = f"{str(backend.base_url).rstrip('/')}/experiment/{experiment_uuid}/trace_logs"
    with httpx.Client(headers=headers_for(getattr(backend, "api_key", None)), timeout=60.0) as client:
        response = client.post(url, json={})
        if response.status_code != 200:
            raise error_for("POST", url, response)
        yield from response.json()


async def export_run(backend: Any, experiment_uuid: str, endpoint: str, *, experiment_name: str,
                     run_name: str | None) -> int | None:
    """Export the run ``experiment_uuid`` stored through ``backend`` to ``endpoint``; returns how
    many spans were sent. The run is stored already: an export that fails is a warning on stderr
    (with what failed), not a failed run; ``None`` is returned then."""
    import asyncio
    import sys

    from runner.errors import BackendError

    def work() -> int:
        trees = stored_trees(backend, experiment_uuid)
        return export_trees(trees, endpoint, experiment_name=experiment_name, run_name=run_name)

    try:
        return await asyncio.to_thread(work)
    except BackendError as exc:
        print(f"warning: OTLP export of {experiment_name!r} failed: {exc}", file=sys.stderr)
        return None
