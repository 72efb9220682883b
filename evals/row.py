"""Row-level evals: scorers that look at one log's ``output`` and ``target``.

Each is a plain scorer (``f(log) -> float | None``) to pass in ``scores=[...]``. Those that compare
with the target return ``None`` (no score) when the row has no target, so a dataset without a
``target`` column does not fill the summary with zeros.
"""

from __future__ import annotations

import json
import re
from typing import Any

from runner.errors import FunctionError
from runner.inline import inline
from runner.scoring import Log, scorer_factory

__all__ = ["contains", "exact_match", "json_valid", "levenshtein", "regex_match"]


def _text(value: Any) -> str:
    """The text of an output or target; ``None`` (no output) is the empty string."""
    return "" if value is None else str(value)


@inline
def exact_match(log: Log) -> float | None:
    """1.0 if the output equals the target once both are stripped of surrounding whitespace.

    Compares ``str(output).strip()`` with ``str(target).strip()``; no score without a target.

    >>> exact_match(Log(inputs={}, output=" Paris\\n", target="Paris"))
    1.0
    """
    if log.target is None:
        return None
    if log.output is None:
        return 0.0
    return 1.0 if str(log.output).strip() == str(log.target).strip() else 0.0


def edit_distance(a: str, b: str) -> int:
    """The Levenshtein distance between ``a`` and ``b`` (insertions, deletions, substitutions).

    Uses Myers' bit-parallel algorithm (in Hyyrö's formulation for the global distance), with a
    Python int as the bit vector: O(len(a) * len(b) / 64) machine operations, so comparing two
    4,000-character answers costs milliseconds rather than the seconds of a pure-Python DP table.

    >>> edit_distance("kitten", "sitting")
    3
    """
    if a == b:
        return 0
    # The common prefix and suffix never cost anything; dropping them shrinks the work.
    start = 0
    end_a, end_b = len(a), len(b)
    while start < end_a and start < end_b and a[start] == b[start]:
        start += 1
    while end_a > start and end_b > start and a[end_a - 1] == b[end_b - 1]:
        end_a -= 1
        end_b -= 1
    a, b = a[start:end_a], b[start:end_b]
    if len(a) > len(b):
        a, b = b, a  # the shorter string is the bit vector
    m = len(a)
    if m == 0:
        return len(b)

    peq: dict[str, int] = {}
    for i, ch in enumerate(a):
        peq[ch] = peq.get(ch, 0) | (1 << i)
    mask = (1 << m) - 1
    last = 1 << (m - 1)
    pv, mv, dist = mask, 0, m
    for ch in b:
        eq = peq.get(ch, 0)
        xv = eq | mv
        xh = ((((eq & pv) + pv) & mask) ^ pv) | eq
        ph = (mv | ~(xh | pv)) & mask
        mh = pv & xh
        if ph & last:
            dist += 1
        elif mh & last:
            dist -= 1
        # "| 1": the first row of the DP table is 0, 1, 2, ... (a global, not a search, distance)
        ph = ((ph << 1) | 1) & mask
        mh = (mh << 1) & mask
        pv = (mh | ~(xv | ph)) & mask
        mv = ph & xv
    return dist


def levenshtein(log: Log) -> float | None:
    """Normalised Levenshtein similarity of output and target, in [0, 1].

    ``1 - distance / max(len(output), len(target))``, on ``str()`` of each; 1.0 for two empty
    strings and no score without a target.

    >>> levenshtein(Log(inputs={}, output="kitten", target="sitting"))  # 1 - 3/7
    0.5714285714285714
    """
    if log.target is None:
        return None
    a, b = _text(log.output), str(log.target)
    longest = max(len(a), len(b))
    if longest == 0:
        return 1.0
    return 1.0 - edit_distance(a, b) / longest


@inline
def contains(log: Log) -> float | None:
    """1.0 if the target occurs in the output, ignoring case; no score without a target.

    >>> contains(Log(inputs={}, output="The capital is Paris.", target="paris"))
    1.0
    """
    if log.target is None:
        return None
    return 1.0 if str(log.target).casefold() in _text(log.output).casefold() else 0.0


class RegexMatch:
    """A scorer: 1.0 if a regular expression matches anywhere in ``str(output)``.

    Made by :func:`regex_match`; its ``__name__`` (the score's name) is the name given there.
    """

    __name__: str

    def __init__(self, pattern: str | re.Pattern[str], flags: int = 0, name: str = "regex_match"):
        if not isinstance(name, str) or not name:
            raise FunctionError(f"regex_match: name must be a non-empty string; got {name!r}")
        try:
            self.pattern: re.Pattern[str] = re.compile(pattern, flags)
        except (re.error, TypeError, ValueError) as exc:
            raise FunctionError(f"regex_match {name!r}: invalid regular expression {pattern!r}: {exc}") from None
        self.name = name
        self.__name__ = name

    def __call__(self, log: Log) -> float:
        return 1.0 if self.pattern.search(_text(log.output)) else 0.0

    def __repr__(self) -> str:
        return f"regex_match({self.pattern.pattern!r}, flags={self.pattern.flags!r}, name={self.name!r})"


@scorer_factory('regex_match(r"\\d+", name="has_number")')
def regex_match(pattern: str | re.Pattern[str], flags: int = 0, name: str = "regex_match") -> RegexMatch:
    """A scorer giving 1.0 when ``re.search(pattern, str(output))`` matches, else 0.0.

    The pattern is compiled here, so a typo fails when the experiment is defined (with a
    :class:`~runner.errors.FunctionError` naming the pattern), not on every row. A ``None``
    output is searched as the empty string.

    >>> regex_match(r"\\d{4}", name="has_year")(Log(inputs={}, output="Founded in 1998"))
    1.0
    """
    return RegexMatch(pattern, flags, name)


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


@inline
def json_valid(log: Log) -> float:
    """1.0 if the output is JSON: a dict or list, or a string (or bytes) that parses as JSON.

    Strict JSON: ``NaN`` and ``Infinity``, which Python's parser would accept, do not count.

    >>> json_valid(Log(inputs={}, output='{"answer": 42}'))
    1.0
    """
    out = log.output
    if isinstance(out, (dict, list)):
        return 1.0
    if isinstance(out, (str, bytes, bytearray)):
        try:
            json.loads(out, parse_constant=_reject_constant)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            return 0.0
        return 1.0
    return 0.0
