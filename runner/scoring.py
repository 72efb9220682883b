"""Scores, the log a scorer sees, and calling scorers.

A scorer is any callable ``f(log) -> float | bool | int | Score | list[Score] | None``, sync or
async. What it returns is normalised here into a list of :class:`Score`; what it raises, or a
NaN/infinite value, becomes a :class:`ScorerFailure` for that scorer on that row, so one broken
scorer never hides the others.
"""

from __future__ import annotations

import inspect
import math
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from runner.errors import FunctionError

__all__ = [
    "EvaluationResult",
    "Log",
    "Score",
    "ScorerFailure",
    "call_scorer",
    "drop_duplicate_scores",
    "merge_scores",
    "reject_factory",
    "scorer_factory",
    "scorer_name",
    "unique_scorer_names",
    "validate_scorers",
]


@dataclass(frozen=True, slots=True)
class Score:
    """One named score of one log.

    >>> Score("exact_match", 1.0, reason="identical")
    Score(name='exact_match', score=1.0, reason='identical')
    """

    name: str
    score: float
    reason: str | None = None


#: Parea's name for a score; the same class.
EvaluationResult = Score


@dataclass(frozen=True, slots=True)
class ScorerFailure:
    """A scorer that raised or returned something unusable on one log."""

    name: str
    error: str


@dataclass(slots=True)
class Log:
    """What a scorer (or a dataset-level eval) sees of one row-trial or span.

    ``output`` is the function's return value exactly as returned; ``target`` is the row's
    ``target`` column as in the dataset (``None`` if absent).
    """

    inputs: dict[str, Any]
    output: Any = None
    target: Any = None
    status: str = "success"
    error: str | None = None
    latency: float = 0.0
    trace_id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    scores: list[Score] = field(default_factory=list)
    #: scorer name -> error message, for scorers that failed on this log
    score_errors: dict[str, str] = field(default_factory=dict)

    def get_score(self, name: str) -> float | None:
        """The value of the score called ``name`` on this log, or ``None`` if it has none."""
        for s in self.scores:
            if s.name == name:
                return s.score
        return None


ScorerResult = float | bool | int | Score | Sequence[Score] | None


class Scorer(Protocol):
    """A per-row scorer: takes a :class:`Log`, returns a score or scores (or awaits them)."""

    def __call__(self, log: Log, /) -> ScorerResult | Awaitable[ScorerResult]: ...


def scorer_name(scorer: Callable[..., Any]) -> str:
    """The name a scorer's scores get when it returns a bare number."""
    name = getattr(scorer, "__name__", None)
    if not name or name == "<lambda>":
        name = type(scorer).__name__ if not inspect.isfunction(scorer) else "score"
    return str(name)


_F = TypeVar("_F", bound=Callable[..., Any])


def scorer_factory(example: str) -> Callable[[_F], _F]:
    """Mark a function that *builds* a scorer (``regex_match(pattern)``), so that passing the
    function itself where a scorer is expected fails before any row runs, with ``example`` (how
    to call it) in the message."""

    def mark(fn: _F) -> _F:
        fn.__scorer_factory__ = example  # type: ignore[attr-defined]
        return fn

    return mark


def reject_factory(obj: Any, what: str) -> None:
    """Raise :class:`FunctionError` when ``obj`` is a scorer factory rather than a scorer."""
    example = getattr(obj, "__scorer_factory__", None)
    if isinstance(example, str):
        name = getattr(obj, "__name__", repr(obj))
        raise FunctionError(
            f"{what}: {name} builds a scorer, it is not one: call it, e.g. {example} "
            f"(you passed {name} without parentheses)"
        )


def unique_scorer_names(scorers: Sequence[Callable[..., Any]]) -> list[str]:
    """The name each scorer's bare-number scores get: :func:`scorer_name`, with ``_2``, ``_3``, ...
    appended (in the order of ``evals``) to a name an earlier scorer has already taken, so two
    lambdas or two functions called ``accuracy`` never write into one score.

    >>> unique_scorer_names([lambda log: 1.0, lambda log: 0.0])
    ['score', 'score_2']
    """
    out: list[str] = []
    taken: set[str] = set()
    for s in scorers:
        base = name = scorer_name(s)
        k = 1
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        out.append(name)
    return out


def drop_duplicate_scores(scores: Sequence[Score]) -> tuple[list[Score], list[ScorerFailure]]:
    """Scores of one log with each name once: a name given twice (one scorer returning it twice,
    or two scorers returning ``Score`` objects of the same name) is dropped from the log and
    becomes that score's error on this row, so no mean silently mixes two different scores."""
    if len(scores) < 2:
        return list(scores), []
    counts: dict[str, int] = {}
    for sc in scores:
        counts[sc.name] = counts.get(sc.name, 0) + 1
    if all(n == 1 for n in counts.values()):
        return list(scores), []
    failures = [
        ScorerFailure(
            name,
            f"{n} scores named {name!r} on this row (a scorer returned that name twice, or two scorers "
            "gave it); none of them is counted: give each score its own name, e.g. Score(name=...)",
        )
        for name, n in counts.items()
        if n > 1
    ]
    return [sc for sc in scores if counts[sc.name] == 1], failures


def validate_scorers(scorers: Sequence[Any], what: str) -> list[Callable[..., Any]]:
    """Check each scorer is callable with one argument; raise naming the bad one."""
    out: list[Callable[..., Any]] = []
    for s in scorers:
        reject_factory(s, what)
        if not callable(s):
            raise FunctionError(f"{what} must be callables taking a log; got {s!r} ({type(s).__name__})")
        try:
            sig = inspect.signature(s)
        except (TypeError, ValueError):
            out.append(s)
            continue
        try:
            sig.bind(None)
        except TypeError:
            raise FunctionError(
                f"{what}: {scorer_name(s)}{sig} cannot be called with one argument (the log); "
                "a scorer takes exactly one positional argument"
            ) from None
        out.append(s)
    return out


def _check_number(name: str, value: Any) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if not isinstance(value, (int, float)):
        try:
            import numpy as np  # numpy scalars are common in scorer code

            if isinstance(value, (np.integer, np.floating, np.bool_)):
                value = value.item()
            else:
                raise TypeError
        except (ImportError, TypeError):
            raise ValueError(
                f"returned {type(value).__name__} {value!r}; a scorer returns a number, a bool, "
                "a Score, a list of Scores or None"
            ) from None
    f = float(value)
    if math.isnan(f) or math.isinf(f):
        raise ValueError(f"returned {f}, which is not a finite number")
    return f


def normalise(name: str, value: Any) -> list[Score]:
    """Turn what a scorer returned into scores; raise ``ValueError`` for anything unusable."""
    if value is None:
        return []
    if type(value) is float and math.isfinite(value):  # the common case, first
        return [Score(name, value)]
    if isinstance(value, Score):
        return [Score(value.name, _check_number(value.name, value.score), value.reason)]
    if isinstance(value, Mapping) and "score" in value:
        return [
            Score(
                str(value.get("name") or name),
                _check_number(name, value["score"]),
                value.get("reason"),
            )
        ]
    if isinstance(value, (list, tuple)):
        out: list[Score] = []
        for v in value:
            if not isinstance(v, Score):
                raise ValueError(f"returned a list containing {type(v).__name__}; lists must hold Score objects")
            out.extend(normalise(name, v))
        return out
    return [Score(name, _check_number(name, value))]


def _format_exc(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def call_scorer_sync(
    scorer: Callable[..., Any], log: Log, name: str | None = None
) -> tuple[list[Score], list[ScorerFailure]]:
    """Run a sync scorer; never raises for the scorer's own failures."""
    name = name or scorer_name(scorer)
    try:
        return normalise(name, scorer(log)), []
    except Exception as exc:
        return [], [ScorerFailure(name, _format_exc(exc))]


async def call_scorer(
    scorer: Callable[..., Any], log: Log, name: str | None = None
) -> tuple[list[Score], list[ScorerFailure]]:
    """Run a sync or async scorer; never raises for the scorer's own failures."""
    name = name or scorer_name(scorer)
    try:
        value = scorer(log)
        if inspect.isawaitable(value):
            value = await value
        return normalise(name, value), []
    except Exception as exc:
        return [], [ScorerFailure(name, _format_exc(exc))]


def merge_scores(own: Sequence[Mapping[str, Any]], descendants: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A span's own scores, then the mean of each other score name over its descendants: the one
    roll-up of scores (the engine for a row, the store for what it holds, the pages, compare)."""
    out = [dict(s) for s in own]
    seen = {s["name"] for s in own}
    acc: dict[str, list[float]] = {}
    for s in descendants:
        if s["name"] not in seen:
            acc.setdefault(s["name"], []).append(float(s["score"]))
    out.extend({"name": k, "score": sum(v) / len(v)} for k, v in acc.items())
    return out
