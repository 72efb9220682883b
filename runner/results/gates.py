"""Gates for CI: fail a run whose scores are too low, dropped too far, or errored too often.

A :class:`Gates` holds the thresholds; :meth:`Gates.check` returns one line per failed gate
(an empty list when every gate passes). The command line builds one from ``--fail-under``,
``--strict``, ``--max-regression`` and ``--max-error-rate`` and exits 1 when a line comes back;
code and notebooks can use the same object:

>>> gates = Gates(fail_under={"exact_match": 0.7}, max_error_rate=0.05)
>>> for line in gates.check(result):          # doctest: +SKIP
...     print(line)
gate failed: exact_match mean 0.62 < 0.7

What each gate compares:

- ``fail_under[NAME] = VALUE``: the score's mean must be at least VALUE. With ``strict=True``
  the run must be *confidently* above the bar: the gate fails unless the lower bound of the
  score's 95 % interval is at least VALUE (2 of 5 correct, interval [0.12, 0.77], fails a bar of
  0.3 under ``strict`` though its mean 0.4 passes it). NAME may also be a dataset-level stat (its
  value, and its interval; without an interval ``strict`` fails and says so). A gated score
  with no scored rows fails.
- ``max_regression[NAME] = DELTA``: needs the comparison with a baseline; fails when the score
  dropped by more than DELTA (``mean_b - mean_a < -DELTA``) *and* the paired test says the drop
  is real: p < ``alpha`` (0.05). Rows that ran in the candidate but lost their score there (the
  function or the scorer failed) count as the score's worst value (0 for a 0/1 score, else the
  lowest value seen in either run), so a candidate cannot pass by failing. p-values are
  Holm-adjusted across the gated scores only (scores nobody gates do not weaken the gate), and
  the failure line says which adjustment was used.
- ``max_error_rate = RATE``: fails when more than RATE (a fraction, 0 to 1) of the row-trials
  errored, and, per score, when more than RATE of the row-trials have no value for that score
  because the function or its scorer failed: a scorer that raises on every row fails the gate.

A gate naming a score the run does not have is a configuration mistake, not a failed gate:
:meth:`Gates.check` raises :class:`~runner.errors.ConfigError` for it (exit code 2 on the CLI).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runner.errors import ConfigError
from runner.results.format import compact
from runner.results.paired import ScoreComparison, holm, paired_compare

if TYPE_CHECKING:
    from runner.results.compare import Comparison
    from runner.results.result import Result

__all__ = ["GatedComparison", "Gates", "gated_comparisons", "parse_assignment"]

#: significance level of ``max_regression``
ALPHA = 0.05


def parse_assignment(text: str, flag: str = "gate") -> tuple[str, float]:
    """``"NAME=VALUE"`` as ``(NAME, VALUE)``; ``ValueError`` naming the problem otherwise.

    >>> parse_assignment("exact_match=0.7")
    ('exact_match', 0.7)
    """
    name, sep, raw = text.rpartition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"{flag} {text!r}: expected NAME=VALUE, e.g. exact_match=0.7")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{flag} {text!r}: {raw.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{flag} {text!r}: the value must be a finite number")
    return name, value


#: gate messages write the numbers they compare compactly (runner.results.format.compact)
_num = compact


@dataclass(frozen=True)
class Gates:
    """Thresholds a run must meet (see the module docstring for what each one compares)."""

    #: score name -> minimum mean (or, with ``strict``, the bar the CI lower bound must clear)
    fail_under: Mapping[str, float] = field(default_factory=dict)
    #: ``fail_under`` fails unless the lower bound of the 95 % interval clears the value
    strict: bool = False
    #: score name -> largest drop against the baseline tolerated when the drop is significant
    max_regression: Mapping[str, float] = field(default_factory=dict)
    #: largest tolerated fraction of errored row-trials (None: no limit)
    max_error_rate: float | None = None
    #: significance level of ``max_regression``
    alpha: float = ALPHA

    def __post_init__(self) -> None:
        for name, delta in self.max_regression.items():
            if not delta >= 0:
                raise ConfigError(f"--max-regression {name}={delta}: DELTA must be >= 0 (a drop, as a positive number)")
        if self.max_error_rate is not None and not 0 <= self.max_error_rate <= 1:
            raise ConfigError(f"--max-error-rate {self.max_error_rate}: RATE is a fraction between 0 and 1")
        if self.strict and not self.fail_under:
            raise ConfigError("--strict changes how --fail-under is checked; give --fail-under NAME=VALUE too")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must be between 0 and 1, got {self.alpha}")

    def __bool__(self) -> bool:
        return bool(self.fail_under or self.max_regression or self.max_error_rate is not None)

    @property
    def names(self) -> set[str]:
        """Every score name a gate refers to."""
        return set(self.fail_under) | set(self.max_regression)

    def unknown(self, result: Result, known: Iterable[str] = ()) -> list[str]:
        """Gate names that are neither a score nor a dataset-level stat of ``result`` (nor in ``known``)."""
        have = set(result.scores) | set(result.dataset_level_stats) | set(result.dataset_level_errors) | set(known)
        return sorted(self.names - have)

    def check(
        self,
        result: Result,
        comparison: Comparison | None = None,
        *,
        known: Iterable[str] = (),
        skip_missing: bool = False,
    ) -> list[str]:
        """One ``gate failed: ...`` line per failed gate of ``result`` (empty: all passed).

        ``comparison`` is ``result`` against the baseline (needed by ``max_regression``).
        ``known`` are names the run could have produced (its scorers' names): a gate on one of
        them that has no value fails instead of being an unknown name. A gate on a name the run
        does not know raises :class:`ConfigError`, unless ``skip_missing`` (used when several
        experiments ran and the name belongs to another one).
        """
        missing = self.unknown(result, known)
        if missing and not skip_missing:
            have = sorted(set(result.scores) | set(result.dataset_level_stats))
            raise ConfigError(
                f"gate on unknown score {missing[0]!r}: {result.name!r} has "
                + (", ".join(repr(n) for n in have) if have else "no scores")
            )
        if self.max_regression and comparison is None:
            raise ConfigError("--max-regression compares with a baseline run: give --baseline RUN")
        per_run = sorted(n for n in self.max_regression if n in result.dataset_level_stats and n not in result.scores)
        if per_run:
            raise ConfigError(
                f"--max-regression {per_run[0]}: a dataset-level stat has no paired test; "
                "use --fail-under for it, or --max-regression on a per-row score"
            )
        suffix = f" ({result.name})" if skip_missing else ""
        failed: list[str] = []
        for name, bar in self.fail_under.items():
            if name in missing:
                continue
            line = self._fail_under(result, name, bar)
            if line:
                failed.append(f"gate failed: {line}{suffix}")
        if self.max_regression:
            assert comparison is not None
            gated = gated_comparisons(comparison, [n for n in self.max_regression if n not in missing])
            for name, delta in self.max_regression.items():
                if name in missing:
                    continue
                line = self._regression(comparison.label_a, gated[name], delta)
                if line:
                    failed.append(f"gate failed: {line}{suffix}")
        if self.max_error_rate is not None and result.n_total:
            failed += [f"gate failed: {line}{suffix}" for line in self._error_rates(result, self.max_error_rate)]
        return failed

    @staticmethod
    def _error_rates(result: Result, limit: float) -> list[str]:
        """The row error rate, then each score's: row-trials without its value because the
        function or its scorer failed."""
        lines = []
        rate = result.n_errors / result.n_total
        if rate > limit:
            lines.append(f"error rate {compact(rate)} ({result.n_errors}/{result.n_total} row-trials) > {limit:g}")
        for name, s in result.scores.items():
            if s.n_total and s.n_errors > result.n_errors and s.n_errors / s.n_total > limit:
                example = result.scorer_errors.get(name)
                why = f", e.g. {_short(example)}" if example else ""
                lines.append(
                    f"{name} error rate {compact(s.n_errors / s.n_total)} ({s.n_errors}/{s.n_total} row-trials "
                    f"without a value: {s.n_errors - result.n_errors} scorer failures{why}) > {limit:g}"
                )
        return lines

    def _fail_under(self, result: Result, name: str, bar: float) -> str | None:
        summary = result.scores.get(name)
        if summary is not None:
            mean, low, n, total = summary.mean, summary.ci_low, summary.n, summary.n_total
        elif name in result.dataset_level_stats:
            mean, n, total = result.dataset_level_stats[name], 1, 1
            low = result.dataset_level_ci.get(name, (None, None))[0]
        else:  # a known scorer that scored nothing, or a dataset-level eval that failed
            mean = low = None
            n, total = 0, result.n_total
        if mean is None:
            why = result.dataset_level_errors.get(name)
            return f"{name} has no value ({why})" if why else f"{name} has no scored rows (0/{total})"
        if self.strict:
            if low is None:
                return f"{name} has no 95% CI (value {_num(mean)}): --strict needs its lower bound to clear {bar:g}"
            if low < bar:
                return f"{name} 95% CI lower bound {_num(low)} < {bar:g} (mean {_num(mean)}, n={n}/{total})"
            return None
        if mean < bar:
            return f"{name} mean {_num(mean)} < {bar:g}"
        return None

    def _regression(self, label_a: str, gated: GatedComparison, delta: float) -> str | None:
        c = gated.comparison
        if c.diff is None or c.p_value is None:
            # a gate that cannot be checked must not pass quietly
            return f"{c.name} cannot be compared with {label_a}: no rows scored in both runs"
        p = c.p_adjusted if c.p_adjusted is not None else c.p_value
        if -c.diff > delta and p < self.alpha:
            lost = (
                f"; {gated.lost} row(s) lost their score in the candidate and count as {_num(gated.worst)}"
                if gated.lost
                else ""
            )
            return (
                f"{c.name} dropped {_num(-c.diff)} ({_num(c.mean_a)} → {_num(c.mean_b)}) vs {label_a}, "
                f"more than {delta:g}, p={compact(p)} (adjustment: {gated.adjustment}){lost}"
            )
        return None


@dataclass(frozen=True)
class GatedComparison:
    """One score compared for a ``max_regression`` gate (see :func:`gated_comparisons`)."""

    #: the paired comparison, lost rows included; ``p_adjusted`` is Holm's across the gated scores
    comparison: ScoreComparison
    #: rows scored in A that ran in B without this score
    lost: int
    #: the value a lost row counts as (None when nothing was lost)
    worst: float | None
    #: how the gated family's p-values were adjusted, e.g. "Holm across 2 gated scores"
    adjustment: str


def gated_comparisons(comparison: Comparison, names: Iterable[str]) -> dict[str, GatedComparison]:
    """What a ``max_regression`` gate checks for each gated score of ``comparison``.

    A row scored in the baseline (A) that ran in the candidate (B) without the score (the
    function or the scorer failed) counts as the score's worst value: 0 for a 0/1 score, else
    the lowest value seen in either run. p-values are Holm-adjusted across ``names`` only.

    >>> gated_comparisons(cmp, ["exact_match"])["exact_match"].lost  # doctest: +SKIP
    3
    """
    wanted = list(dict.fromkeys(names))
    found: dict[str, tuple[ScoreComparison, int, float | None]] = {}
    for name in wanted:
        a = comparison.per_row_a.get(name, {})
        b = dict(comparison.per_row_b.get(name, {}))
        lost_ids = [rid for rid in a if rid in comparison.rows_b and rid not in b]
        worst: float | None = None
        if lost_ids and b:
            values = [*a.values(), *b.values()]
            worst = 0.0 if all(v in (0.0, 1.0) for v in values) else min(values)
        elif lost_ids:  # nothing scored in B at all: no pairs, the gate says so
            lost_ids = []
        if worst is not None:
            for rid in lost_ids:
                b[rid] = worst
            b = {rid: b[rid] for rid in sorted(b)}
        found[name] = (paired_compare(name, a, b, seed=comparison.seed), len(lost_ids), worst)
    tested = [n for n in wanted if found[n][0].p_value is not None]
    adjusted = holm([found[n][0].p_value or 0.0 for n in tested])
    how = f"Holm across {len(tested)} gated scores" if len(tested) > 1 else "none, one gated score"
    out: dict[str, GatedComparison] = {}
    for name in wanted:
        c, lost, worst = found[name]
        if name in tested:
            c = dataclasses.replace(c, p_adjusted=adjusted[tested.index(name)])
        out[name] = GatedComparison(c, lost, worst, how)
    return out


def _short(text: str, n: int = 80) -> str:
    line = " ".join(text.split())
    return line if len(line) <= n else line[: n - 1] + "…"
