"""Helpers every store module shares: timestamps, run names, JSON columns, pinned stats.

Imports nothing of the store, so the query mixins and both dialects can use them.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from runner._json import json_default, nul_free
from runner.errors import RunNameError

__all__ = ["RUN_NAME_RE", "USAGE", "dumps", "dumps_logs", "loads", "now_iso", "pinned_stats", "validate_run_name"]

RUN_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


def now_iso() -> str:
    """The current UTC time as ISO 8601 with microseconds (sorts as text)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def validate_run_name(run_name: str) -> str:
    if not RUN_NAME_RE.match(run_name):
        from runner.names import sanitise_run_name

        raise RunNameError(
            f"invalid run name {run_name!r}: use 1-100 letters, digits, '-' or '_', "
            f"e.g. {sanitise_run_name(str(run_name))!r}"
        )
    return run_name


def dumps(value: Any) -> str:
    """A JSON column's text: the one rendering of stored values (:func:`runner._json.json_default`)."""
    return orjson.dumps(value, default=json_default, option=orjson.OPT_NON_STR_KEYS).decode()


def dumps_logs(logs: Any) -> str:
    """:func:`dumps` of trace logs to store, with every NUL character in them as U+FFFD on both
    stores alike (PostgreSQL's text cannot hold NUL: :func:`runner._json.nul_free`)."""
    return nul_free(logs, dumps)[0]


def loads(text: str | bytes | None) -> Any:
    return None if text is None else orjson.loads(text)


#: the usage means of the pinned stats: (label, column)
USAGE = (
    ("Latency", "latency"),
    ("Input Tokens", "input_tokens"),
    ("Output Tokens", "output_tokens"),
    ("Total Tokens", "total_tokens"),
    ("Cost", "cost"),
)



def pinned_stats(stats: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Means of every score, latency, tokens and cost over root-trace stats (Parea's pinned stats),
    in one pass; also how many roots there were."""
    score_sums: dict[str, list[float]] = {}  # name -> [sum, count]
    usage = [0.0] * len(USAGE)
    n = 0
    for s in stats:
        n += 1
        for sc in s.get("scores") or ():
            acc = score_sums.get(sc["name"])
            if acc is None:
                acc = score_sums[sc["name"]] = [0.0, 0.0]
            acc[0] += float(sc["score"])
            acc[1] += 1
        for i, (_, key) in enumerate(USAGE):
            usage[i] += float(s.get(key) or 0)
    out = [{"var1": k, "operation": "mean", "value": v[0] / v[1]} for k, v in score_sums.items()]
    if n:
        out.extend({"var1": label, "operation": "mean", "value": usage[i] / n} for i, (label, _) in enumerate(USAGE))
    return out, n
