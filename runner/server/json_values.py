"""The one check every JSON body passes on its way in: no value the store cannot keep faithfully.

Two kinds of value are valid to some JSON parsers (Python's, pydantic's) and break the server
later, so they are refused, with a 422 naming the field, before any route sees the body:

* **non-finite numbers**: ``NaN``, ``Infinity`` (not JSON, but Python's ``json`` writes them) and
  numbers too large for a double (``1e999``, valid JSON, read as infinity). Stored, they turn into
  ``null`` or break every later read that serialises them;
* **lone UTF-16 surrogates** (``"\\ud800"``: valid JSON escapes, not text): SQLite cannot encode
  them, so any write holding one failed with a 500;
* **NUL characters** (``"\\u0000"``): PostgreSQL's text cannot hold them, so they are refused on
  both stores alike. (The runner's own client sends both as U+FFFD, which is how both stores keep
  such text from every other door: :mod:`runner.store.common`. Text that reaches the store other
  than in a JSON body, a path or a query parameter say, is stored and looked up so too.)

orjson refuses the first two (and is the fastest strict parser at hand), so a body orjson reads
without a ``\\u0000`` escape is fine; only a body it refuses is read again, by Python's lenient
parser, to find and name the field (:func:`bad_value`). A body neither reads is left to the
route's own parser and its 422.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

__all__ = ["bad_value", "first_bad"]


def bad_value(body: bytes) -> tuple[list[str | int], str] | None:
    """``(location, message)`` of the first non-finite number or lone surrogate in ``body``;
    ``None`` for a clean body, and for one that is not JSON at all."""
    if not body:
        return None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    else:
        return first_bad(parsed) if b"\\u0000" in body else None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None  # malformed: the route's parser says where
    return first_bad(value)


def first_bad(value: Any) -> tuple[list[str | int], str] | None:
    """Where in ``value`` (a parsed JSON document) the first non-finite float or string (key or
    value) holding a lone surrogate is, with a message saying what to send instead. Iterative:
    any depth."""
    stack: list[tuple[list[str | int], Any]] = [([], value)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, float):
            if not math.isfinite(v):
                return path, (
                    f"{v} is not a finite number: JSON numbers must be finite (send null, or the value as a string)"
                )
        elif isinstance(v, str):
            if _lone_surrogate(v):
                return path, (
                    "the text holds a lone UTF-16 surrogate (an escape such as \\ud800 without its pair): "
                    "send valid Unicode text (replace or drop the broken character)"
                )
            if "\x00" in v:
                return path, _NUL
        elif isinstance(v, dict):
            items = list(v.items())
            for key, _ in items:
                if _lone_surrogate(key):
                    return [*path, key.encode("utf-8", "backslashreplace").decode()], (
                        "the key holds a lone UTF-16 surrogate: send valid Unicode text"
                    )
                if "\x00" in key:
                    return [*path, key], "the key " + _NUL[9:]
            stack.extend(([*path, k], item) for k, item in reversed(items))
        elif isinstance(v, list):
            stack.extend(([*path, i], item) for i, item in reversed(list(enumerate(v))))
    return None


_NUL = (
    "the text holds a NUL character (\\u0000), which the store cannot keep (PostgreSQL's text cannot): "
    "drop it, or send binary data as base64"
)


def _lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
