"""Every input format becomes one :class:`Row` type, streamed.

Accepted: a list (or any iterable) of dicts, a pandas DataFrame, a path to a ``.csv``,
``.jsonl``/``.ndjson`` or ``.json`` file (str or Path), or the name (or integer id) of a dataset
stored on the backend. Files are read lazily, row by row (a ``.json`` array is the exception: it
is parsed whole).

The ``target`` column is the ground truth and is not passed to the function. A row's id is its
``id`` column when the dataset has one (as text: ``1`` and ``"1"`` are the same id; two rows with
the same id are a :class:`DatasetError`), else a hash of its content (identical rows get ``-2``,
``-3``, ... in order), so ids stay stable when a file is reordered.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from runner._json import json_default, sanitize
from runner.errors import DatasetError, warn_once

__all__ = [
    "FILE_SUFFIXES",
    "Row",
    "RowSource",
    "check_columns",
    "check_unique_ids",
    "is_dataset_file",
    "iter_records",
    "row_id_of",
]

FILE_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".json")
_HASH_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


@dataclass(slots=True)
class Row:
    """One dataset row: what the function gets (``inputs``) and the ground truth (``target``)."""

    id: str
    index: int
    inputs: dict[str, Any]
    target: Any = None
    #: hash of the row's content (inputs and target): tells a changed row from an unchanged one
    hash: str = ""


def is_dataset_file(data: Any) -> bool:
    """Whether ``data`` names a file (rather than a dataset stored on the backend)."""
    if isinstance(data, Path):
        return True
    if isinstance(data, str):
        return data.lower().endswith(FILE_SUFFIXES) or "/" in data or "\\" in data or Path(data).is_file()
    return False


def _iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{lineno}: not valid JSON ({exc}); fix or remove that line") from None
            if not isinstance(rec, dict):
                raise DatasetError(f"{path}:{lineno}: each line must be a JSON object, got {type(rec).__name__}")
            yield rec


def _iter_csv(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            return
        if len(set(reader.fieldnames)) != len(reader.fieldnames):
            raise DatasetError(f"{path}: the header has duplicate column names: {reader.fieldnames}")
        for lineno, rec in enumerate(reader, 2):
            if None in rec:
                raise DatasetError(f"{path}:{lineno}: more values than columns in the header")
            if None in rec.values():  # a short row: csv fills the missing columns with None
                n = sum(v is not None for v in rec.values())
                warn_once(
                    (str(path), "short-row"),
                    f"{path}:{lineno}: {n} value(s) for {len(reader.fieldnames)} columns; the missing ones "
                    "are None (later short rows of this file are not reported)",
                )
            yield dict(rec)


def _iter_json(path: Path) -> Iterator[dict[str, Any]]:
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict):
        for key in ("rows", "data", "test_cases", "examples"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
    if not isinstance(data, list):
        raise DatasetError(f"{path}: a .json dataset must be a list of objects (or {{'rows': [...]}})")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise DatasetError(f"{path}: item {i} is {type(rec).__name__}, expected an object")
        yield rec


def _iter_file(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        where = "" if path.is_absolute() else f" (looked in {Path.cwd()}: a relative path is from the current folder)"
        raise DatasetError(f"dataset file {path} does not exist{where}")
    if path.is_dir():
        raise DatasetError(f"dataset path {path} is a directory; give a .csv, .jsonl or .json file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _iter_csv(path)
    if suffix in (".jsonl", ".ndjson"):
        return _iter_jsonl(path)
    if suffix == ".json":
        return _iter_json(path)
    raise DatasetError(f"dataset file {path} has suffix {suffix!r}; use .csv, .jsonl or .json")


def _iter_dataframe(df: Any) -> Iterator[dict[str, Any]]:
    columns = [str(c) for c in df.columns]
    if len(set(columns)) != len(columns):
        raise DatasetError(f"the DataFrame has duplicate column names: {columns}")
    for values in df.itertuples(index=False, name=None):
        yield {c: (None if v != v else v) if isinstance(v, float) else v for c, v in zip(columns, values, strict=True)}


def _iter_iterable(data: Iterable[Any]) -> Iterator[dict[str, Any]]:
    for i, rec in enumerate(data):
        if not isinstance(rec, Mapping):
            raise DatasetError(f"dataset item {i} is {type(rec).__name__} {rec!r:.80}; every row must be a dict")
        yield dict(rec)


def iter_records(data: Any) -> Iterator[dict[str, Any]]:
    """Plain dict records from any local data source (not backend datasets)."""
    if isinstance(data, (str, Path)):
        return _iter_file(Path(data))
    if type(data).__name__ == "DataFrame" and hasattr(data, "itertuples"):
        return _iter_dataframe(data)
    if isinstance(data, Mapping):
        raise DatasetError("data is a single dict; give a list of dicts (one per row)")
    if isinstance(data, Iterable):
        return _iter_iterable(data)
    raise DatasetError(
        f"cannot read data of type {type(data).__name__}; give a list of dicts, a DataFrame, a "
        ".csv/.jsonl/.json path or the name of a stored dataset"
    )


def collection_records(collection: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Records from a backend dataset (``GetTestCaseCollectionResponseSchema``)."""
    out = []
    for tc in collection.get("test_cases", {}).values():
        rec = dict(tc.get("inputs") or {})
        if tc.get("target") is not None:
            rec["target"] = tc["target"]
        out.append(rec)
    return out


class RowSource:
    """Rows from records, with stable ids; iterates lazily once."""

    def __init__(self, records: Iterator[dict[str, Any]], *, limit: int | None = None) -> None:
        self._records = records
        self._limit = limit
        self._seen: set[int] = set()  # content hashes met once; duplicates are counted apart
        self._ids: dict[str, int] = {}  # explicit ids met so far -> the index of their row
        self._dups: dict[int, int] = {}
        self._peeked: list[dict[str, Any]] = []

    def peek(self) -> dict[str, Any] | None:
        """The first record, without consuming it (``None`` for an empty dataset)."""
        if not self._peeked:
            try:
                self._peeked.append(next(self._records))
            except StopIteration:
                return None
        return self._peeked[0]

    def _row_id(self, rec: dict[str, Any], index: int) -> tuple[str, str]:
        """(row id, content hash) of a record."""
        try:
            blob = orjson.dumps(rec, default=json_default, option=_HASH_OPTIONS)
        except TypeError:  # what JSON cannot carry (an int beyond 64 bits, a lone surrogate)
            blob = orjson.dumps(sanitize(rec), option=_HASH_OPTIONS)
        digest = hashlib.blake2b(blob, digest_size=8).digest()
        hexid = digest.hex()
        explicit = row_id_of(rec)
        if explicit is not None:
            first = self._ids.setdefault(explicit, index)
            if first != index:
                raise duplicate_id(explicit, first, index)
            return explicit, hexid
        key = int.from_bytes(digest, "big")
        if key not in self._seen:
            self._seen.add(key)
            return hexid, hexid
        n = self._dups[key] = self._dups.get(key, 1) + 1
        return f"{hexid}-{n}", hexid

    def __iter__(self) -> Iterator[Row]:
        def records() -> Iterator[dict[str, Any]]:
            yield from self._peeked
            self._peeked = []
            yield from self._records

        for index, rec in enumerate(records()):
            if self._limit is not None and index >= self._limit:
                return
            target = rec.pop("target", None)
            row_id, digest = self._row_id({**rec, "target": target} if target is not None else rec, index)
            yield Row(row_id, index, rec, target, digest)


def row_id_of(rec: Mapping[str, Any]) -> str | None:
    """A record's own id: its ``id`` column as text (``1`` and ``"1"`` are the same id), or
    ``None`` when it has none (then the row's id is a hash of its content)."""
    rid = rec.get("id")
    if rid is None or rid == "":
        return None
    return str(rid)


def duplicate_id(row_id: str, first: int, again: int) -> DatasetError:
    return DatasetError(
        f"rows {first + 1} and {again + 1} (counting from 1) have the same id {row_id!r}; the id column "
        "names each row (resume and compare match rows by it; 1 and '1' are the same id), so every "
        "row needs its own: fix or drop the duplicate, or remove the id column to let rows be named "
        "by their content"
    )


def check_unique_ids(records: Iterable[Mapping[str, Any]]) -> None:
    """Raise :class:`DatasetError` naming the id and both row numbers if two records share an id."""
    seen: dict[str, int] = {}
    for index, rec in enumerate(records):
        rid = row_id_of(rec)
        if rid is not None:
            first = seen.setdefault(rid, index)
            if first != index:
                raise duplicate_id(rid, first, index)


def check_columns(
    func: Callable[..., Any], columns: Iterable[str], func_name: str
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Check a row's columns fit ``func``'s parameters; return how to make its keyword arguments.

    Raises :class:`DatasetError` naming the column and the function when one does not fit.
    """
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return dict
    params = sig.parameters
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = {
        n for n, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    cols = list(columns)
    drop_id = "id" in cols and "id" not in accepted and not var_kw
    if not var_kw:
        unknown = [c for c in cols if c not in accepted and not (c == "id" and drop_id)]
        if unknown:
            raise DatasetError(
                f"dataset column {unknown[0]!r} is not a parameter of {func_name}{sig}; rename the column, "
                f"add a parameter called {unknown[0]!r} (or **kwargs) to {func_name}, or drop the column"
            )
    required = [
        n for n, p in params.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    missing = [n for n in required if n not in cols]
    if missing:
        raise DatasetError(
            f"{func_name}{sig} needs parameter {missing[0]!r}, but the dataset has no such column "
            f"(columns: {', '.join(cols) or 'none'})"
        )
    if drop_id:
        return lambda inputs: {k: v for k, v in inputs.items() if k != "id"}
    return lambda inputs: inputs


