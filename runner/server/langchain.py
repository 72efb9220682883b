"""``POST /trace_log/langchain``: LangChain runs, as the Parea SDK's tracer posts them, as trace logs.

The official SDK's ``PareaAILangchainTracer`` posts every finished LangChain run (``Run.dict()``,
with ``child_runs`` nested in older ``langchain-core`` releases, one run per post in newer ones)
plus its own fields: ``_parea_root_trace_id`` and ``_parea_parent_trace_id`` (the ``@trace``
span the chain ran in, if any), ``_session_id``, ``_tags``, ``_metadata``,
``_end_user_identifier``, ``_deployment_id``, ``_log_sample_rate``, ``project_uuid`` and
``experiment_uuid``. Each run becomes one trace log:

* ``trace_id`` is the run's id; its parent is ``parent_run_id``, or for the chain's top run the
  Parea span it ran in (else itself: a root); its root is ``_parea_root_trace_id``, else the
  LangChain trace the run belongs to (``trace_id``), else its parent's root;
* ``trace_name`` the run's name, timestamps from ``start_time``/``end_time`` (latency follows),
  ``status``/``error`` from ``error``, ``inputs`` and ``output`` from the run's (a single
  ``output`` key is unwrapped; anything not a string is JSON);
* an LLM or chat-model run also gets ``configuration`` (model, provider, temperature and max
  tokens, the messages it was sent with their roles mapped to Parea's), its generated text (or
  its tool calls) as ``output``, and its token usage (``llm_output.token_usage`` or each
  message's ``usage_metadata``). LangChain reports no cost: ``cost`` stays 0;
* ``tags`` the SDK's plus the run's own (LangChain's ``seq:step:N`` markers dropped), ``metadata``
  the SDK's plus the run's, with ``run_type``.

``depth`` is not sent: it is derived from the parent when read, as for any log without one. The
logs then go through the same checks, filling and upsert as ``POST /trace_log``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from runner.errors import NotFoundError
from runner.schema import dumps_value
from runner.server.deps import OwnerDep, StoreDep, invalid
from runner.server.ingest import validate_logs
from runner.server.routes_traces import _ingest
from runner.server.trees import json_response
from runner.store import Store

__all__ = ["LangChainRunSchema", "router", "runs_to_logs"]

router = APIRouter(tags=["trace logs"])

_ROLES = {"human": "user", "user": "user", "ai": "assistant", "assistant": "assistant", "system": "system",
          "tool": "tool", "function": "function"}


class LangChainRunSchema(BaseModel):
    """The fields of a LangChain ``Run`` (and of the SDK's additions) that become a trace log."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str = Field(min_length=1, max_length=200)
    name: str | None = None
    run_type: str | None = None
    start_time: str
    end_time: str | None = None
    error: str | None = None
    inputs: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None
    tags: list[str] | None = None
    parent_run_id: str | None = None
    trace_id: str | None = None
    execution_order: int | None = None
    child_runs: list[LangChainRunSchema] | None = None
    parea_root_trace_id: str | None = Field(default=None, alias="_parea_root_trace_id")
    parea_parent_trace_id: str | None = Field(default=None, alias="_parea_parent_trace_id")
    session_id: str | None = Field(default=None, alias="_session_id")
    parea_tags: list[str] | None = Field(default=None, alias="_tags")
    parea_metadata: dict[str, Any] | None = Field(default=None, alias="_metadata")
    end_user_identifier: str | None = Field(default=None, alias="_end_user_identifier")
    deployment_id: str | None = Field(default=None, alias="_deployment_id")
    log_sample_rate: float | None = Field(default=None, alias="_log_sample_rate")
    project_uuid: str | None = None
    experiment_uuid: str | None = None


def runs_to_logs(top: LangChainRunSchema, root_of: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The trace logs (dicts shaped like ``TraceLogSchema``) of ``top`` and its ``child_runs``.

    ``root_of`` maps trace ids already stored to their roots, for a run posted on its own
    whose LangChain trace id is unknown (older ``langchain-core``)."""
    root_of = root_of or {}
    # the chain's top run hangs under the Parea span it ran in, if any
    parent = (top.parea_parent_trace_id or top.id) if top.parent_run_id is None else top.parent_run_id
    root = top.parea_root_trace_id or top.trace_id
    if root is None:
        root = top.id if parent == top.id else root_of.get(parent, parent)
    shared = {
        "experiment_uuid": top.experiment_uuid,
        "project_uuid": top.project_uuid,
        "session_id": top.session_id,
        "end_user_identifier": top.end_user_identifier,
        "deployment_id": top.deployment_id,
        "log_sample_rate": top.log_sample_rate,
    }
    logs: list[dict[str, Any]] = []
    pending = [(top, parent)]
    while pending:
        run, run_parent = pending.pop()
        logs.append(_log(run, run_parent, root, top, shared))
        pending.extend((child, run.id) for child in reversed(run.child_runs or []))
    return logs


def _log(
    run: LangChainRunSchema, parent: str, root: str, top: LangChainRunSchema, shared: dict[str, Any]
) -> dict[str, Any]:
    extra = run.extra or {}
    tags = [*(top.parea_tags or []), *(t for t in run.tags or [] if not t.startswith("seq:step:"))]
    metadata = {**(extra.get("metadata") or {}), **(top.parea_metadata or {}), "run_type": run.run_type}
    log: dict[str, Any] = {
        **{k: v for k, v in shared.items() if v is not None},
        "trace_id": run.id,
        "parent_trace_id": parent,
        "root_trace_id": root,
        "trace_name": run.name,
        "start_timestamp": run.start_time,
        "end_timestamp": run.end_time,
        "status": "error" if run.error else "success",
        "error": run.error,
        "inputs": run.inputs or {},
        "output": _output(run.outputs),
        "tags": list(dict.fromkeys(tags)),
        "metadata": {k: v for k, v in metadata.items() if v is not None},
        "execution_order": run.execution_order,
    }
    if run.run_type in ("llm", "chat_model"):
        _llm(run, extra, log)
    return {k: v for k, v in log.items() if v is not None}


def _output(outputs: dict[str, Any] | None) -> str | None:
    if not outputs:
        return None
    value = outputs["output"] if set(outputs) == {"output"} else outputs
    return dumps_value(value) if value is not None else None


def _llm(run: LangChainRunSchema, extra: dict[str, Any], log: dict[str, Any]) -> None:
    """Configuration, output and tokens of an LLM run."""
    params = extra.get("invocation_params") or {}
    meta = extra.get("metadata") or {}
    outputs = run.outputs or {}
    generations = [g for batch in outputs.get("generations") or [] for g in batch or [] if isinstance(g, dict)]
    messages_out = [_kwargs(g.get("message")) for g in generations if g.get("message")]
    model = (
        params.get("model") or params.get("model_name") or meta.get("ls_model_name")
        or next((m["response_metadata"].get("model_name") for m in messages_out
                 if isinstance(m.get("response_metadata"), dict) and m["response_metadata"].get("model_name")), None)
    )
    model_params = {
        "temp": _number(params.get("temperature", meta.get("ls_temperature"))),
        "max_length": _integer(params.get("max_tokens", meta.get("ls_max_tokens"))),
        "top_p": _number(params.get("top_p")),
    }
    inputs = run.inputs or {}
    messages: list[dict[str, Any]] = []
    for batch in inputs.get("messages") or []:
        messages.extend(_message(m) for m in (batch if isinstance(batch, list) else [batch]))
    messages.extend({"role": "user", "content": p} for p in inputs.get("prompts") or [] if isinstance(p, str))
    configuration = {
        "model": model if isinstance(model, str) else None,
        "provider": meta.get("ls_provider") if isinstance(meta.get("ls_provider"), str) else None,
        "model_params": {k: v for k, v in model_params.items() if v is not None},
        "messages": messages,
    }
    log["configuration"] = {k: v for k, v in configuration.items() if v is not None}
    texts = [g["text"] for g in generations if isinstance(g.get("text"), str) and g["text"]]
    if texts:
        log["output"] = "\n".join(texts)
    else:
        calls = [c for m in messages_out for c in m.get("tool_calls") or []]
        if calls:
            log["output"] = dumps_value(calls)
    usage = (outputs.get("llm_output") or {}).get("token_usage") or {}
    if usage:
        tokens = [usage.get("prompt_tokens"), usage.get("completion_tokens"), usage.get("total_tokens")]
    else:
        per = [m.get("usage_metadata") or {} for m in messages_out]
        tokens = [sum(_integer(u.get(k)) or 0 for u in per) for k in ("input_tokens", "output_tokens", "total_tokens")]
    for key, value in zip(("input_tokens", "output_tokens", "total_tokens"), tokens, strict=True):
        if _integer(value):
            log[key] = _integer(value)
    if log.get("total_tokens") is None and (log.get("input_tokens") or log.get("output_tokens")):
        log["total_tokens"] = log.get("input_tokens", 0) + log.get("output_tokens", 0)


def _kwargs(message: Any) -> dict[str, Any]:
    """A serialised LangChain message's fields (``dumpd`` wraps them in ``kwargs``)."""
    if not isinstance(message, dict):
        return {}
    inner = message.get("kwargs")
    return inner if isinstance(inner, dict) else message


def _message(message: Any) -> dict[str, Any]:
    fields = _kwargs(message)
    kind = fields.get("type")
    if not kind and isinstance(message, dict) and isinstance(message.get("id"), list) and message["id"]:
        kind = message["id"][-1]  # the class name: HumanMessage, AIMessageChunk, ...
    kind = str(kind or "").lower().removesuffix("chunk").removesuffix("message")
    role = fields.get("role") if kind == "chat" else kind
    out: dict[str, Any] = {"role": _ROLES.get(str(role), "user"), "content": fields.get("content", "")}
    if not isinstance(out["content"], str | list):
        out["content"] = dumps_value(out["content"])
    if fields.get("tool_calls"):
        out["tool_calls"] = fields["tool_calls"]
    return out


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _integer(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _parser(store: Store, owner: str) -> Callable[[bytes], list[dict[str, Any]]]:
    def parse(body: bytes) -> list[dict[str, Any]]:
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise invalid(("body",), f"the body is not JSON: {exc}") from None
        run = LangChainRunSchema.model_validate(raw)  # a pydantic.ValidationError is a 422 (see _ingest)
        root_of: dict[str, str] = {}
        if run.parea_root_trace_id is None and run.trace_id is None and run.parent_run_id is not None:
            with contextlib.suppress(NotFoundError):  # a run posted alone by an older langchain-core
                root_of[run.parent_run_id] = store.get_trace_tree(run.parent_run_id, owner)["root_trace_id"]
        return validate_logs(runs_to_logs(run, root_of))

    return parse


_RUN_BODY = {"required": True, "content": {"application/json": {"schema": {"type": "object", "title": "Run"}}}}


@router.post("/trace_log/langchain", openapi_extra={"requestBody": _RUN_BODY})
async def record_langchain_trace_log(request: Request, store: StoreDep, owner: OwnerDep) -> Response:
    """Record a LangChain run (and its ``child_runs``) as trace logs, as the Parea SDK's tracer
    posts them; see :mod:`runner.server.langchain` for the mapping."""
    await _ingest(request, store, owner, _parser(store, owner))
    return json_response({})
