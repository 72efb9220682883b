"""The trace log of a completion, shaped as Parea's ``TraceLogSchema``.

What the request asks to leave out is left out, as the spec defines it:

* ``log_omit_inputs``: no ``inputs``, and no ``messages``, ``functions``, ``function_call`` or
  ``model_params`` in ``configuration`` (model and provider stay);
* ``log_omit_outputs``: no ``output``;
* ``log_omit``: both of the above. Tokens, cost, latency and status are still logged, so the
  costs of an experiment add up; to drop the log entirely, send ``log_sample_rate: 0``.

``log_sample_rate`` keeps or drops whole traces: the decision is a hash of ``root_trace_id``, so
every LLM call of one trace is kept or dropped together.
"""

from __future__ import annotations

import hashlib
from typing import Any

from runner.proxy.models import CompletionsResponseSchema, CompletionsSchema
from runner.proxy.providers import LLMCall

__all__ = ["build_trace_log", "is_sampled"]


def is_sampled(rate: float | None, root_trace_id: str) -> bool:
    """Whether the trace ``root_trace_id`` is logged at sample rate ``rate`` (``None``: 1)."""
    if rate is None or rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(root_trace_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < rate


def _int_or(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def build_trace_log(
    req: CompletionsSchema,
    call: LLMCall,
    response: CompletionsResponseSchema,
    *,
    time_to_first_token: float | None = None,
) -> dict[str, Any]:
    """The ``TraceLogSchema`` dict for ``response`` to ``req``.

    ``parent_trace_id`` defaults to the trace itself (a root), ``root_trace_id`` to the parent;
    ``depth``, ``execution_order`` and ``session_id`` are read from ``metadata`` when given.
    """
    trace_id = response.inference_id
    omit_inputs = req.log_omit or req.log_omit_inputs
    omit_outputs = req.log_omit or req.log_omit_outputs
    cfg = req.llm_configuration
    configuration: dict[str, Any] = {"model": call.model, "provider": call.provider}
    if not omit_inputs:
        configuration.update(
            model_params=cfg.model_params.model_dump(exclude_none=True) if cfg.model_params else {},
            messages=call.messages,
            functions=cfg.functions,
            function_call=cfg.function_call,
        )
    metadata = req.metadata or {}
    return {
        "trace_id": trace_id,
        "parent_trace_id": req.parent_trace_id or trace_id,
        "root_trace_id": req.root_trace_id or req.parent_trace_id or trace_id,
        "project_name": req.project_name,
        "project_uuid": req.project_uuid,
        "experiment_uuid": req.experiment_uuid,
        "trace_name": req.trace_name or req.name or f"llm-{call.provider}",
        "configuration": configuration,
        "inputs": None if omit_inputs else req.llm_inputs,
        "output": None if omit_outputs else response.content,
        "target": req.target,
        "latency": response.latency,
        "time_to_first_token": time_to_first_token,
        "input_tokens": response.input_tokens,
        "output_tokens": response.output_tokens,
        "total_tokens": response.total_tokens,
        "cost": response.cost,
        "cache_hit": response.cache_hit,
        "status": response.status,
        "error": response.error,
        "start_timestamp": response.start_timestamp,
        "end_timestamp": response.end_timestamp,
        "depth": _int_or(metadata.get("depth"), 0),
        "execution_order": _int_or(metadata.get("execution_order"), 0),
        "metadata": req.metadata,
        "tags": req.tags,
        "end_user_identifier": req.end_user_identifier,
        "session_id": None if metadata.get("session_id") is None else str(metadata["session_id"]),
        "deployment_id": req.deployment_id,
        "evaluation_metric_ids": req.eval_metric_ids,
        "log_sample_rate": req.log_sample_rate,
    }
