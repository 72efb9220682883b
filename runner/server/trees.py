"""Read responses, fast: trace trees shaped as ``TraceLogTreeSchema`` without pydantic per node.

Validating every node of a large read through the response model costs ~50 µs a node (half a
second for an experiment of 10,000 rows); the stored logs were validated on the way in, so all a
read needs is the schema's shape: every field present, in order, with its default when absent,
and never ``null`` where a reader expects a list or a dict. :func:`tree_out` does that in plain
Python from defaults computed once from the model, so the two cannot drift apart. The official
SDK posts ``null`` for ``configuration.messages`` and friends yet iterates over them on reads:
those are emptied too.

Routes keep ``response_model=`` (for the OpenAPI schema) and return :func:`json_response`, which
FastAPI sends as is.
"""

from __future__ import annotations

import copy
import typing
from typing import Any

import orjson
from fastapi import Response
from pydantic.fields import FieldInfo

from runner.schema import TraceLogTreeSchema

__all__ = ["json_response", "scores_out", "stats_out", "tree_out"]

_CONFIG_LISTS = ("messages", "history", "functions")


def _empty(info: FieldInfo) -> list[Any] | dict[str, Any] | None:
    """``[]`` or ``{}`` for a list or dict field (possibly optional), else ``None``."""
    for arg in (info.annotation, *typing.get_args(info.annotation)):
        origin = typing.get_origin(arg) or arg
        if origin is list:
            return []
        if origin is dict:
            return {}
    return None


def _defaults() -> tuple[tuple[str, Any, bool], ...]:
    out = []
    for name, info in TraceLogTreeSchema.model_fields.items():
        if name == "children_logs":
            continue
        empty = _empty(info)
        if info.is_required():
            default = None
        elif info.default_factory is not None:
            default = info.default_factory()  # type: ignore[call-arg]
        else:
            default = empty if info.default is None else info.default
        out.append((name, default, empty is not None))
    return tuple(out)


#: (field, default, is a list/dict) for every field of TraceLogTreeSchema but children_logs
_FIELDS = _defaults()


def tree_out(node: dict[str, Any]) -> dict[str, Any]:
    """``node`` (and its ``children_logs``) as ``TraceLogTreeSchema`` would serialise it."""
    out: dict[str, Any] = {}
    for name, default, container in _FIELDS:
        value = node.get(name)
        if value is None:
            value = copy.copy(default) if container else default
        out[name] = value
    config = out["configuration"]
    for key in _CONFIG_LISTS:
        if key in config and config[key] is None:
            config[key] = []
    if "model_params" in config and config["model_params"] is None:
        config["model_params"] = {}
    out["scores"] = scores_out(out["scores"])
    out["children_logs"] = [tree_out(child) for child in node.get("children_logs") or ()]
    return out


def scores_out(scores: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scores as ``EvaluationScoreSchema`` serialises them: every field, in order."""
    return [
        {
            "name": s["name"],
            "score": s["score"],
            "evaluation_metric_id": s.get("evaluation_metric_id"),
            "reason": s.get("reason"),
        }
        for s in scores
    ]


def stats_out(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """``ExperimentStatsSchema`` of the store's per-root stats."""
    return {"parent_trace_stats": [{**s, "scores": scores_out(s.get("scores") or [])} for s in stats]}


def json_response(content: Any) -> Response:
    """``content`` as a JSON response, serialised by orjson (no response-model validation)."""
    return Response(orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS), media_type="application/json")
