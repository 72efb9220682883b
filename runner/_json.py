"""The one JSON rendering of whatever user code returns (no pydantic here: the hot path uses it).

Functions, spans and scorers may return anything. What is stored is, in order of preference:

* plain JSON values as they are (``str``, ``int``, ``float``, ``bool``, ``None``, lists, dicts);
* a faithful JSON rendering of the common richer types (:func:`json_default`): numpy and pandas
  scalars and arrays, dataclasses, pydantic models, ``datetime``/``date``/``time`` (ISO 8601),
  ``bytes`` (the text if it is UTF-8, else ``"base64:..."``), sets (sorted when they can be),
  ``Decimal``, ``UUID``, ``Path`` and enums;
* anything else: its ``repr()``, cut at :data:`MAX_REPR` characters with a ``… [N more
  characters]`` marker (and ``<unrepresentable T: repr() raised ...>`` when even that raises).

What JSON cannot carry is repaired by :func:`sanitize` (only when plain encoding failed, so the
common case costs nothing): a lone UTF-16 surrogate becomes U+FFFD, and so does a NUL character
(PostgreSQL's text cannot hold one: :func:`without_nul` makes both stores keep the same text),
an integer beyond 64 bits becomes its decimal string, nesting deeper than :data:`MAX_DEPTH` and
reference cycles become a marker string. :func:`safe_log` applies that to a whole trace log;
:func:`error_log` is what is stored for a row whose log still cannot be stored: its ids,
``status: error`` and the reason.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import enum
import json
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import orjson

T = TypeVar("T", str, bytes)

__all__ = [
    "MAX_DEPTH", "MAX_REPR", "UNSTORABLE", "dumps_value", "error_log", "finite", "json_default", "json_text",
    "nul_free", "safe_log", "sanitize", "without_nul",
]

#: ``repr()`` of an object with no JSON rendering is cut past this many characters
MAX_REPR = 10_000
#: containers nested deeper than this are replaced by a marker string
MAX_DEPTH = 100
_INT64 = 2**63
#: how the error of a row whose log could not be stored begins (:func:`error_log`)
UNSTORABLE = "this row's result could not be stored"


def safe_repr(obj: Any) -> str:
    """``repr(obj)``, cut past :data:`MAX_REPR` characters; never raises."""
    try:
        text = repr(obj)
    except Exception as exc:
        try:
            detail = f"{type(exc).__name__}: {exc}"
        except Exception:
            detail = type(exc).__name__
        return f"<unrepresentable {type(obj).__qualname__}: repr() raised {detail}>"
    if not isinstance(text, str):  # pragma: no cover - a __repr__ returning a non-str raises TypeError
        return f"<unrepresentable {type(obj).__qualname__}>"
    if len(text) > MAX_REPR:
        text = f"{text[:MAX_REPR]}… [{len(text) - MAX_REPR} more characters]"
    return text


def json_default(obj: Any) -> Any:
    """The JSON rendering of a value the encoder does not know (the ``default=`` hook of
    ``json.dumps`` and ``orjson.dumps``); never raises."""
    try:
        return _render(obj)
    except Exception:
        return safe_repr(obj)


def _render(obj: Any) -> Any:
    if type(obj).__name__ in ("NAType", "NaTType"):  # pandas' missing values
        return None
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(raw).decode("ascii")
    if isinstance(obj, (set, frozenset)):
        try:
            return sorted(obj)
        except TypeError:
            return sorted(obj, key=repr)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, _dt.timedelta):
        return obj.total_seconds()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    module = type(obj).__module__.split(".", 1)[0]
    if module == "numpy":
        tolist = getattr(obj, "tolist", None)  # scalars (.item() too) and arrays
        if tolist is not None:
            return tolist()
    if module == "pandas":
        if hasattr(obj, "isoformat"):  # Timestamp
            return obj.isoformat()
        if hasattr(obj, "columns") and hasattr(obj, "to_dict"):  # a DataFrame: its records
            return obj.to_dict(orient="records")
        if hasattr(obj, "tolist"):  # Series, Index, arrays
            return obj.tolist()
        if hasattr(obj, "total_seconds"):  # Timedelta
            return obj.total_seconds()
    model_dump = getattr(obj, "model_dump", None)  # pydantic v2
    if callable(model_dump) and not isinstance(obj, type):
        return model_dump(mode="json")
    as_dict = getattr(obj, "dict", None)  # pydantic v1
    if callable(as_dict) and hasattr(obj, "__fields__") and not isinstance(obj, type):
        return as_dict()
    name = type(obj).__name__
    if name in ("Decimal", "UUID") or hasattr(obj, "__fspath__"):
        return str(obj)
    return safe_repr(obj)


def _fix_str(s: str) -> str:
    if "\x00" in s:  # NUL: what PostgreSQL's text cannot hold is U+FFFD on every store alike
        s = s.replace("\x00", "\ufffd")
    if s.isascii():
        return s
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (e.g. a model answer cut inside an escape)
        return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return s


def without_nul(value: Any) -> Any:
    """``value`` (plain JSON data, or one text) with every NUL character and lone UTF-16
    surrogate, in strings and keys, as U+FFFD: text both stores keep alike.

    PostgreSQL's text cannot hold NUL, SQLite's can, and neither can encode a lone surrogate:
    both stores (and the runner's HTTP client, whose server refuses both) store the same text
    this way. Called for data whose JSON holds a ``\\u0000`` escape or would not encode, and for
    each text bound to a statement that holds a NUL (:func:`runner.store.common.text_params`).
    Containers other than dicts, lists and tuples are left as they are.

    >>> without_nul({"k\\x00": ["a\\x00b", 1]})
    {'k\ufffd': ['a\ufffdb', 1]}
    """
    if isinstance(value, str):
        return _fix_str(value)
    if isinstance(value, Mapping):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nul(v) for v in value]
    return value


def nul_free(value: Any, encode: Callable[[Any], T]) -> tuple[T, Any]:
    """``encode(value)`` and ``value``, both with every NUL character and lone surrogate as
    U+FFFD (:func:`without_nul`) when the encoding (``str`` or ``bytes`` JSON) holds a
    ``\\u0000`` escape, or when orjson refused a lone surrogate: then the value is cleaned and
    encoded again. Otherwise it costs one substring search."""
    try:
        text = encode(value)
    except TypeError as exc:  # orjson: "str is not valid UTF-8: surrogates not allowed"
        if "surrogates" not in str(exc):
            raise
        value = without_nul(value)
        return encode(value), value
    if (b"\\u0000" if isinstance(text, bytes) else "\\u0000") in text:
        value = without_nul(orjson.loads(text))
        text = encode(value)
    return text, value


def sanitize(value: Any, _depth: int = 0, _path: frozenset[int] = frozenset()) -> Any:
    """``value`` as plain JSON data that any encoder accepts (see the module docstring)."""
    t = type(value)
    if value is None or t is bool:
        return value
    if t is str:
        return _fix_str(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        value = int(value)
        return value if -_INT64 <= value < _INT64 else str(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return _fix_str(str(value))
    if _depth >= MAX_DEPTH:
        return f"<nested deeper than {MAX_DEPTH} levels: {safe_repr(value)[:200]}>"
    if id(value) in _path:
        return f"<reference cycle: {type(value).__qualname__}>"
    path = _path | {id(value)}
    if isinstance(value, Mapping):
        try:
            items = list(value.items())
        except Exception:
            return safe_repr(value)
        return {
            (_fix_str(k) if isinstance(k, str) else _fix_str(str(sanitize(k, _depth + 1, path)))): sanitize(
                v, _depth + 1, path
            )
            for k, v in items
        }
    if isinstance(value, (list, tuple)):
        return [sanitize(v, _depth + 1, path) for v in value]
    rendered = json_default(value)
    if type(rendered) is str:
        return _fix_str(rendered)
    return sanitize(rendered, _depth + 1, path)


def dumps_value(value: Any) -> str | None:
    """Serialise a non-string output/target to a JSON string, as the Parea spec asks; never raises.

    >>> dumps_value({"a": 1})
    '{"a": 1}'
    >>> dumps_value({1, 2})
    '[1, 2]'
    """
    if value is None:
        return None
    if isinstance(value, str):
        return _fix_str(value)
    try:
        text = json.dumps(value, default=json_default, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError, OverflowError):
        text = json.dumps(sanitize(value), ensure_ascii=False)
    return _fix_str(text)


#: fields of a trace log that name it and place it in its tree, and the types they must have to
#: be kept by :func:`error_log`
_IDENTITY: dict[str, type | tuple[type, ...]] = {
    "trace_id": str, "parent_trace_id": str, "root_trace_id": str, "experiment_uuid": str,
    "project_uuid": str, "project_name": str, "trace_name": str, "start_timestamp": str,
    "end_timestamp": str, "latency": (int, float), "depth": int, "execution_order": int,
}


def safe_log(log: Mapping[str, Any]) -> dict[str, Any]:
    """A trace log every encoder and store accepts (strings repaired, big integers as strings,
    deep or cyclic values cut); the ids and numbers of a good log are unchanged."""
    return {str(k): sanitize(v, 1) for k, v in log.items()}


def error_log(log: Mapping[str, Any], reason: str) -> dict[str, Any]:
    """What is stored for a log that cannot be stored as it is: its ids, ``status: error``, and
    ``reason``; its metadata (row id and trial, so a resume finds the row) when that is safe."""
    out: dict[str, Any] = {
        k: sanitize(log[k], 1) for k, kind in _IDENTITY.items() if isinstance(log.get(k), kind)
    }
    out["status"] = "error"
    out["error"] = f"{UNSTORABLE}: {reason}"
    meta = log.get("metadata")
    if isinstance(meta, Mapping):
        out["metadata"] = {
            k: sanitize(meta[k], 1) for k in ("row_id", "row_index", "row_hash", "trial") if k in meta
        }
    return out


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities as ``None``, so that the JSON is valid everywhere."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def json_text(value: Any, *, indent: int | None = None, ascii_only: bool = True) -> str:
    """The JSON text of any value, for people and programs (``--json`` output, the web UI): the
    rendering values are stored with (:func:`json_default`), NaN and infinities as ``null`` (valid
    JSON everywhere), and what JSON cannot carry repaired as :func:`sanitize` does; never raises."""
    try:
        return json.dumps(finite(value), indent=indent, ensure_ascii=ascii_only, default=json_default, allow_nan=False)
    except (ValueError, TypeError, RecursionError):  # a cycle, a lone surrogate, nesting too deep ...
        return json.dumps(finite(sanitize(value)), indent=indent, ensure_ascii=ascii_only, default=json_default,
                          allow_nan=False)
