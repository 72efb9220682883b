"""The fast path for trace logs: JSON bytes to plain dicts, validated as ``TraceLogSchema``.

Validating into pydantic models and dumping them back costs about three times what validating
into ``TypedDict`` s does, and the store wants dicts anyway. The ``TypedDict`` here is derived
from ``TraceLogSchema`` field by field (types, constraints, required fields, the stringifying of
``output``/``target``), so the two cannot drift apart; keys the client did not send stay absent
(``exclude_unset``), which keeps the store's merge-upsert from resetting stored fields.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, TypeAdapter, with_config
from typing_extensions import NotRequired, Required, TypedDict

from runner.schema import EvaluationScoreSchema, TraceLogSchema, dumps_value

__all__ = ["parse_batch", "parse_log", "validate_logs"]

_STRINGIFIED = ("output", "target", "output_for_eval_metrics")


def _typed_dict(model: type[BaseModel], overrides: dict[str, Any]) -> Any:
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotation = overrides.get(name, info.annotation)
        if info.metadata:
            annotation = Annotated[(annotation, *info.metadata)]  # type: ignore[valid-type]
        fields[name] = Required[annotation] if info.is_required() else NotRequired[annotation]
    typed = TypedDict(model.__name__ + "Dict", fields)  # type: ignore[misc]
    return with_config(ConfigDict(extra="ignore"))(typed)


_ScoreDict = _typed_dict(EvaluationScoreSchema, {})
_TraceLogDict = _typed_dict(
    TraceLogSchema,
    {
        "scores": list[_ScoreDict] | None,  # type: ignore[valid-type]
        **{name: Annotated[str | None, BeforeValidator(dumps_value)] for name in _STRINGIFIED},
    },
)


class _Batch(TypedDict):
    logs: list[_TraceLogDict]  # type: ignore[valid-type]


_BATCH = TypeAdapter(_Batch)
_LOG = TypeAdapter(_TraceLogDict)


def parse_log(body: bytes) -> list[dict[str, Any]]:
    """The log of a ``TraceLogSchema`` body, as a one-item list; raises ``pydantic.ValidationError``."""
    log: dict[str, Any] = _LOG.validate_json(body)
    return [log]


def parse_batch(body: bytes) -> list[dict[str, Any]]:
    """The logs of a ``{"logs": [...]}`` body; raises ``pydantic.ValidationError``."""
    logs: list[dict[str, Any]] = _BATCH.validate_json(body)["logs"]
    return logs


def validate_logs(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Logs built by the server itself (e.g. from LangChain runs), validated as ``TraceLogSchema``
    like a posted batch; raises ``pydantic.ValidationError``."""
    valid: list[dict[str, Any]] = _BATCH.validate_python({"logs": logs})["logs"]
    return valid
