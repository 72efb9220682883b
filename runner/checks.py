"""Checks made before any row runs (and warnings given once), so that a mistake costs nothing.

:func:`preflight` runs in :meth:`Experiment.arun` before the backend is opened: a missing file,
an empty dataset, columns that do not fit the function, or a stored dataset asked of a store
that does not exist yet are refused there, and nothing (no ``.runner/runner.db``) is created.
:func:`warn_missing_target` and :func:`warn_once` say, once, what would otherwise pass silently:
scorers that read ``log.target`` on a dataset without a ``target`` column, short CSV rows.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import CodeType
from typing import TYPE_CHECKING, Any

from runner.errors import DatasetError

if TYPE_CHECKING:
    from runner.experiment import Experiment
    from runner.settings import Settings

__all__ = ["preflight", "warn_missing_target", "warn_once"]

_warned: set[tuple[str, str]] = set()


def warn_once(key: tuple[str, str], message: str) -> None:
    """Print ``warning: message`` on stderr, once per ``key`` in this process."""
    if key in _warned:
        return
    _warned.add(key)
    print(f"warning: {message}", file=sys.stderr, flush=True)


def preflight(exp: Experiment, settings: Settings) -> None:
    """Refuse what cannot run before anything is opened or created (see the module docstring)."""
    from runner.dataset import check_columns, is_dataset_file, iter_records

    data = exp.data
    stored_name = isinstance(data, int) and not isinstance(data, bool)
    stored_name = stored_name or (isinstance(data, str) and not is_dataset_file(data))
    if stored_name:
        path = Path(exp.db or settings.db_path)
        if not (exp.base_url or settings.base_url) and not path.exists():
            raise DatasetError(
                f"Experiment {exp.name!r}: data={data!r} names a stored dataset, but there is no store at {path} "
                f"yet; store it first (python -m runner datasets upload FILE --name {data}), or give a file path "
                "with its suffix (.csv, .jsonl, .json)"
            )
        return
    if not (isinstance(data, (str, Path, list, tuple)) or type(data).__name__ == "DataFrame"):
        return  # one-shot iterators are read once, by the run
    records = iter_records(data)
    try:
        first = next(records, None)
    finally:
        close = getattr(records, "close", None)
        if close is not None:
            close()
    if first is None:
        raise DatasetError(f"Experiment {exp.name!r}: the dataset has no rows")
    func_name = getattr(exp.func, "__name__", type(exp.func).__name__)
    check_columns(exp.func, [c for c in first if c != "target"], func_name)


def warn_missing_target(first: Mapping[str, Any], scorers: Sequence[Callable[..., Any]], where: str) -> None:
    """Warn when the dataset has no ``target`` column but scorers read ``log.target``."""
    if "target" in first:
        return
    from runner.scoring import scorer_name

    readers = [scorer_name(s) for s in scorers if _reads_target(s)]
    if readers:
        warn_once(
            ("target", where),
            f"{where}: the dataset has no `target` column, but {', '.join(readers)} read log.target "
            "(no score on rows without one); add a `target` column with the expected output, or drop them",
        )


def _reads_target(scorer: Any) -> bool:
    """Whether the scorer's code reads an attribute called ``target`` (the LLM judge only uses
    a target when the row has one, so it does not count)."""
    module = getattr(scorer, "__module__", None) or ""
    if module == "evals.judge":
        return False
    call = vars(type(scorer)).get("__call__")
    code = getattr(scorer, "__code__", None) or getattr(call, "__code__", None)
    return code is not None and any("target" in c.co_names for c in _codes(code))


def _codes(code: CodeType) -> Iterable[CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _codes(const)
