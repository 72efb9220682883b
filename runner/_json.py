"""Small JSON helpers shared by the tracing hot path and the wire schema (no pydantic here)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps_value"]


def dumps_value(value: Any) -> str | None:
    """Serialise a non-string output/target to a string, as the Parea spec asks."""
    if value is None or isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)
