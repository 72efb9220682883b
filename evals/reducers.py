"""Reducers over trials: one value per row from the row's ``n_trials`` values of a score.

With ``Experiment(n_trials=N)`` each row is run N times; a reducer turns the N values of one
score into one value per row, and the run reports the mean over rows with its interval, stored
and shown like any dataset-level stat (in the summary, ``show``, the finished experiment's
stats)::

    Experiment(..., evals=[exact_match], n_trials=5,
               dataset_level_evals=[reduce_trials("exact_match", "pass@2"),
                                    reduce_trials("exact_match", "majority")])

Reducers, as users of inspect_ai know them:

- ``"pass@K"`` — the unbiased estimator of the chance that at least one of K trials passes
  (Chen et al., 2021): ``1 - C(n - c, K) / C(n, K)`` for a row with ``c`` passes in ``n``
  trials. The score must be 0/1; a trial without the score (it errored, or its scorer failed)
  is a failed attempt. A row with fewer than K trials is an error.
- ``"majority"`` — the most frequent value over the row's trials (ties go to the lower value).
- ``"max"`` / ``"min"`` — the highest / lowest value over the row's trials.

``majority``, ``max`` and ``min`` skip trials without the score, and rows with none (the reason
says how many). The interval: Wilson's on the number of rows when every reduced value lies in
[0, 1] (exact for 0/1 values, conservative otherwise: no variable in [0, 1] has a larger
variance for its mean than a 0/1 one), else the row bootstrap.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from evals.dataset import DatasetEval
from runner.errors import FunctionError
from runner.scoring import Log, scorer_factory

__all__ = ["pass_at_k", "reduce_trials"]

_PASS_AT = re.compile(r"pass@(\d+)$")


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate for one row: ``c`` of ``n`` trials passed.

    >>> pass_at_k(5, 1, 2)
    0.4
    """
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n trials and 0 <= c <= n passes; got n={n}, c={c}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _majority(values: list[float]) -> float:
    counts: dict[float, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    top = max(counts.values())
    return min(v for v, c in counts.items() if c == top)


class _Reduced(DatasetEval):
    def __init__(self, score: str, reducer: str, name: str | None) -> None:
        if not isinstance(score, str) or not score:
            raise FunctionError(f"reduce_trials: score must be a score name (str); got {score!r}")
        match = _PASS_AT.match(reducer) if isinstance(reducer, str) else None
        if match is None and reducer not in ("majority", "max", "min"):
            raise FunctionError(
                f"reduce_trials({score!r}, {reducer!r}): the reducer is one of 'pass@K' (e.g. 'pass@2'), "
                "'majority', 'max', 'min'"
            )
        self.k = int(match.group(1)) if match else None
        if self.k is not None and self.k < 1:
            raise FunctionError(f"reduce_trials({score!r}, {reducer!r}): K in pass@K must be at least 1")
        super().__init__(name or f"{score}_{reducer}")
        self.score = score
        self.reducer = reducer

    def per_row(self, logs: Sequence[Log]) -> tuple[list[float], int]:
        """One reduced value per row (in order of first appearance), and the rows skipped."""
        rows: dict[Any, list[float | None]] = {}
        for log in logs:
            key = (log.metadata or {}).get("row_id", log.trace_id)
            rows.setdefault(key, []).append(log.get_score(self.score))
        out: list[float] = []
        skipped = 0
        for key, values in rows.items():
            if self.k is not None:
                present = [v for v in values if v is not None]
                if any(v not in (0.0, 1.0) for v in present):
                    raise ValueError(f"{self.name}: pass@{self.k} needs a 0/1 score; {self.score!r} is not 0/1")
                if len(values) < self.k:
                    raise ValueError(
                        f"{self.name}: pass@{self.k} needs at least {self.k} trials per row; "
                        f"row {key} has {len(values)} (set n_trials >= {self.k})"
                    )
                out.append(pass_at_k(len(values), int(sum(present)), self.k))
                continue
            present = [v for v in values if v is not None]
            if not present:
                skipped += 1
            elif self.reducer == "max":
                out.append(max(present))
            elif self.reducer == "min":
                out.append(min(present))
            else:
                out.append(_majority(present))
        return out, skipped

    def evaluate(self, logs: Sequence[Log]) -> tuple[float, str]:
        values, skipped = self.per_row(logs)
        if not values:
            raise ValueError(f"{self.name}: no row has a value of {self.score!r} to reduce")
        value = math.fsum(values) / len(values)
        note = f" ({skipped} row{'s' if skipped != 1 else ''} without {self.score} skipped)" if skipped else ""
        return value, f"{self.reducer} of {self.score} over trials, mean of {len(values)} rows{note}"

    #: how :meth:`interval` computes its bounds
    interval_method = "wilson over rows"

    def interval(
        self, logs: Sequence[Log], clusters: Sequence[Any], confidence: float = 0.95
    ) -> tuple[float, float] | None:
        """Wilson's interval on the number of rows when every reduced value is in [0, 1]."""
        from runner.results.intervals import wilson_interval

        values, _ = self.per_row(logs)
        if not values or any(not 0.0 <= v <= 1.0 for v in values):
            return None
        return wilson_interval(math.fsum(values) / len(values), len(values), confidence)

    def __repr__(self) -> str:
        return f"reduce_trials({self.score!r}, {self.reducer!r}, name={self.name!r})"


@scorer_factory('reduce_trials("exact_match", "pass@2")')
def reduce_trials(score: str, reducer: str, name: str | None = None) -> DatasetEval:
    """A dataset-level eval: ``reducer`` (``"pass@K"``, ``"majority"``, ``"max"``, ``"min"``)
    applied to each row's trials of ``score``, averaged over rows; named ``f"{score}_{reducer}"``
    unless ``name`` is given. See the module docstring.

    >>> reduce_trials("exact_match", "pass@2").name
    'exact_match_pass@2'
    """
    return _Reduced(score, reducer, name)
