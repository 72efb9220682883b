"""Helpers every store module shares: timestamps, run names, JSON columns, text, pinned stats.

No text either store keeps holds a NUL character (PostgreSQL's text cannot) or a lone UTF-16
surrogate (neither store can encode one): each is stored as U+FFFD, on both stores alike, in
every column. The two places that see all of it: :func:`dumps` for JSON columns, and
:func:`text_params` for every value bound to a statement (each dialect's connection applies it),
so a name written with a NUL is found again by the same name, on SQLite and PostgreSQL.

Imports nothing of the store, so the query mixins and both dialects can use them.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson

from runner._json import json_default, nul_free, without_nul
from runner.errors import RunNameError

__all__ = [
    "RUN_NAME_RE", "USAGE", "dumps", "dumps_clean", "loads", "now_iso", "pinned_stats", "score_means",
    "text_params", "validate_run_name",
]

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


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=json_default, option=orjson.OPT_NON_STR_KEYS).decode()


def dumps(value: Any) -> str:
    """A JSON column's text: the one rendering of stored values (:func:`runner._json.json_default`),
    with every NUL character and lone surrogate in it as U+FFFD (:func:`runner._json.nul_free`)."""
    return nul_free(value, _dumps)[0]


def dumps_clean(value: Any) -> tuple[str, Any]:
    """:func:`dumps` of ``value``, and the value it encodes: ``value`` itself, or its copy with
    every NUL character and lone surrogate as U+FFFD (for the columns filled from it)."""
    return nul_free(value, _dumps)


Params = Sequence[Any] | Mapping[str, Any]


def text_params(params: Params, *, surrogates: bool = False) -> Params:
    """A statement's parameters with every NUL character in its texts as U+FFFD, and with
    ``surrogates`` every lone surrogate too (:func:`runner._json.without_nul`); the parameters
    themselves when there is nothing to change (one substring search per text).

    Each dialect's connection binds a statement's parameters through this, and again with
    ``surrogates`` after the driver failed to encode one (which costs nothing until then).
    ``executemany`` binds its rows as they are (a scan of each row would cost SQLite's
    one-row-at-a-time upsert 5%): its one caller builds them with :func:`dumps_clean`.

    >>> text_params(("a\\x00b", 1))
    ['a\ufffdb', 1]
    """
    values = params.values() if isinstance(params, Mapping) else params
    if not any(isinstance(v, str) and (surrogates or "\x00" in v) for v in values):
        return params
    if isinstance(params, Mapping):
        return {k: without_nul(v) if isinstance(v, str) else v for k, v in params.items()}
    return [without_nul(v) if isinstance(v, str) else v for v in params]


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



def score_means(scores: Iterable[Iterable[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """The pinned mean of each score name over rows' ``[{name, score}]`` lists, names in the
    order first seen (what :func:`pinned_stats` and ``RootColumns.pinned_stats`` pin)."""
    score_sums: dict[str, list[float]] = {}  # name -> [sum, count]
    for row in scores:
        for sc in row:
            acc = score_sums.get(sc["name"])
            if acc is None:
                acc = score_sums[sc["name"]] = [0.0, 0.0]
            acc[0] += float(sc["score"])
            acc[1] += 1
    return [{"var1": k, "operation": "mean", "value": v[0] / v[1]} for k, v in score_sums.items()]


def pinned_stats(stats: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Means of every score, latency, tokens and cost over root-trace stats (Parea's pinned stats),
    in one pass; also how many roots there were."""
    usage = [0.0] * len(USAGE)
    n = 0

    def scores() -> Iterator[Iterable[Mapping[str, Any]]]:
        nonlocal n
        for s in stats:
            n += 1
            for i, (_, key) in enumerate(USAGE):
                usage[i] += float(s.get(key) or 0)
            yield s.get("scores") or ()

    out = score_means(scores())
    if n:
        out.extend({"var1": label, "operation": "mean", "value": usage[i] / n} for i, (label, _) in enumerate(USAGE))
    return out, n
