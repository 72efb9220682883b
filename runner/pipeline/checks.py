"""Checks made before any row runs (and warnings given once), so that a mistake costs nothing.

:func:`preflight` runs in :meth:`runner.experiment.Experiment.arun` before the backend is opened: a missing file,
an empty dataset, columns that do not fit the function, or a stored dataset asked of a store
that does not exist yet are refused there, and nothing (no ``.runner/runner.db``) is created.
``warn_missing_target`` and :func:`runner.errors.warn_once` say, once, what would otherwise pass silently:
scorers that read ``log.target`` on a dataset without a ``target`` column, short CSV rows.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import CodeType
from typing import TYPE_CHECKING, Any, Protocol

from runner.errors import ConfigError, DatasetError, warn_once
from runner.pipeline.dataset import check_columns, is_dataset_file, iter_records

if TYPE_CHECKING:
    from runner.backends.target import Target
    from runner.results.gates import Gates

__all__ = ["check_gate_names", "declared_scores", "preflight", "warn_missing_target"]

def preflight(name: str, data: Any, func: Callable[..., Any], target: Target) -> None:
    """Refuse what cannot run before anything is opened or created (see the module docstring)."""
    stored_name = isinstance(data, int) and not isinstance(data, bool)
    stored_name = stored_name or (isinstance(data, str) and not is_dataset_file(data))
    if stored_name:
        if not target.store_exists:
            raise DatasetError(
                f"Experiment {name!r}: data={data!r} names a stored dataset, but there is no store at {target.db} "
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
        raise DatasetError(f"Experiment {name!r}: the dataset has no rows")
    func_name = getattr(func, "__name__", type(func).__name__)
    check_columns(func, [c for c in first if c != "target"], func_name)


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
    code = _code_of(scorer)
    return code is not None and any("target" in c.co_names for c in _codes(code))


def _code_of(scorer: Any) -> CodeType | None:
    """The code of a function, or of a callable object's ``__call__``."""
    call = vars(type(scorer)).get("__call__")
    code = getattr(scorer, "__code__", None) or getattr(call, "__code__", None)
    return code if isinstance(code, CodeType) else None


def _codes(code: CodeType) -> Iterable[CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _codes(const)


# -- gates on score names ---------------------------------------------------------------------
class Scored(Protocol):
    """What the gate checks read of an experiment: its checked scorers."""

    _evals: list[Callable[..., Any]]
    _dataset_evals: list[Callable[..., Any]]


def declared_scores(exp: Scored) -> set[str]:
    """The score names ``exp``'s scorers give when they return a bare number."""
    from runner.scoring import scorer_name

    names = {scorer_name(ev) for ev in exp._evals}
    names.update(getattr(ev, "name", None) or scorer_name(ev) for ev in exp._dataset_evals)
    return names


def check_gate_names(gates: Gates, experiments: Sequence[Scored]) -> None:
    """Refuse, before any row runs, a gate on a score no scorer gives.

    A scorer's score names are known up front when it returns bare numbers (named after the
    scorer) or comes from ``evals``; a scorer of your own may return ``Score`` objects of other
    names, known only once it ran. So an unknown name is refused now when it is close to a known
    one (a typo) or when every scorer's names are known; otherwise a note says it is checked
    after the run (where an unknown name is still refused, exit 2)."""
    import difflib

    gated = [("--fail-under", n) for n in gates.fail_under] + [("--max-regression", n) for n in gates.max_regression]
    if not gated:
        return
    known = set().union(*(declared_scores(e) for e in experiments))
    scorers = [ev for e in experiments for ev in (*e._evals, *e._dataset_evals)]
    opaque = [ev for ev in scorers if not _names_known(ev)]
    for flag, name in gated:
        if name in known or any(_mentions(ev, name) for ev in opaque):
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        if close or not opaque:
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"gate on unknown score {name!r} ({flag}): no scorer gives it ({hint}the scores are: "
                f"{', '.join(sorted(known)) or 'none'}); nothing has run yet"
            )
        from runner.scoring import scorer_name

        print(
            f"note: {flag} {name}: no scorer is called {name!r}; it is checked after the run, since "
            f"{', '.join(scorer_name(ev) for ev in opaque)} may return scores of other names",
            file=sys.stderr,
        )


def _names_known(scorer: Any) -> bool:
    """Whether a scorer's score names are known without running it: the ready-made ones of
    ``evals``, and functions whose code never mentions ``Score`` (they return bare numbers,
    named after the function)."""
    module = getattr(scorer, "__module__", None) or type(scorer).__module__
    if module == "evals" or module.startswith("evals."):
        return True
    code = _code_of(scorer)
    return code is not None and not any("Score" in c.co_names for c in _codes(code))


def _mentions(scorer: Any, name: str) -> bool:
    """Whether ``name`` is a string constant in the scorer's code (``Score(name, ...)``)."""
    code = _code_of(scorer)
    return code is not None and any(name in c.co_consts for c in _codes(code))
