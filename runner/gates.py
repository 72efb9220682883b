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
  the gate fails only when the upper bound of the score's 95 % interval is below VALUE, i.e.
  when the shortfall is more than sampling noise (a small run whose mean dips just under the bar
  passes). NAME may also be a dataset-level stat (its value, and its interval when one exists).
- ``max_regression[NAME] = DELTA``: needs the comparison with a baseline; fails when the score
  dropped by more than DELTA (``mean_b - mean_a < -DELTA`` over the shared rows) *and* the paired
  test says the drop is real: p < ``alpha`` (0.05), Holm-adjusted when several scores were
  compared.
- ``max_error_rate = RATE``: fails when more than RATE (a fraction, 0 to 1) of the row-trials
  errored.

A gate naming a score the run does not have is a configuration mistake, not a failed gate:
:meth:`Gates.check` raises :class:`~runner.errors.ConfigError` for it (exit code 2 on the CLI).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runner.errors import ConfigError

if TYPE_CHECKING:
    from runner.compare import Comparison
    from runner.result import Result

__all__ = ["Gates", "parse_assignment"]

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


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


@dataclass(frozen=True)
class Gates:
    """Thresholds a run must meet (see the module docstring for what each one compares)."""

    #: score name -> minimum mean (or, with ``strict``, the bound the CI upper bound must reach)
    fail_under: Mapping[str, float] = field(default_factory=dict)
    #: ``fail_under`` fails only when the whole 95 % interval is below the value
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
        for name, delta in self.max_regression.items():
            if name in missing:
                continue
            assert comparison is not None
            line = self._regression(comparison, name, delta)
            if line:
                failed.append(f"gate failed: {line}{suffix}")
        if self.max_error_rate is not None and result.n_total:
            rate = result.n_errors / result.n_total
            if rate > self.max_error_rate:
                failed.append(
                    f"gate failed: error rate {rate:.3g} ({result.n_errors}/{result.n_total} row-trials) "
                    f"> {self.max_error_rate:g}{suffix}"
                )
        return failed

    def _fail_under(self, result: Result, name: str, bar: float) -> str | None:
        summary = result.scores.get(name)
        if summary is not None:
            mean, high, n, total = summary.mean, summary.ci_high, summary.n, summary.n_total
        elif name in result.dataset_level_stats:
            mean, n, total = result.dataset_level_stats[name], 1, 1
            high = result.dataset_level_ci.get(name, (None, None))[1]
        else:  # a known scorer that scored nothing, or a dataset-level eval that failed
            mean = high = None
            n, total = 0, result.n_total
        if mean is None:
            why = result.dataset_level_errors.get(name)
            return f"{name} has no value ({why})" if why else f"{name} has no scored rows (0/{total})"
        if self.strict:
            if high is None:
                high = mean  # no interval (a dataset-level stat without one): the value is all we know
            if high < bar:
                return f"{name} 95% CI upper bound {_num(high)} < {bar:g} (mean {_num(mean)}, n={n}/{total})"
            return None
        if mean < bar:
            return f"{name} mean {_num(mean)} < {bar:g}"
        return None

    def _regression(self, comparison: Comparison, name: str, delta: float) -> str | None:
        c = comparison.get(name)
        if c is None or c.diff is None or c.p_value is None:
            # a gate that cannot be checked must not pass quietly
            return f"{name} cannot be compared with {comparison.label_a}: no rows scored in both runs"
        p = c.p_adjusted if c.p_adjusted is not None else c.p_value
        if -c.diff > delta and p < self.alpha:
            holm = " (Holm-adjusted)" if comparison.n_tested > 1 else ""
            return (
                f"{name} dropped {_num(-c.diff)} ({_num(c.mean_a)} → {_num(c.mean_b)}) vs {comparison.label_a}, "
                f"more than {delta:g}, p={p:.3g}{holm}"
            )
        return None
