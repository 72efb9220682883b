"""Closed-form intervals that stay honest where a bootstrap does not: at the ceiling, with
repeated trials of one row, and at small n. Pure functions; numpy and scipy load inside them.

- :func:`wilson_interval` — the Wilson score interval for a proportion, for a possibly fractional
  (design-effect-adjusted) sample size.
- :func:`clustered_proportion_interval` — a 0/1 score with several trials per row: Wilson on the
  design-effect-adjusted number of rows, bounded between the number of rows (trials of a row
  perfectly correlated) and the number of trials (independent), so that it never collapses to
  ``[1, 1]`` when every trial passed.
- :func:`balanced_accuracy_interval` — the mean of per-class proportions, the same way.
- :func:`fisher_z_interval` — Pearson's (or Spearman's) r through Fisher's z transform.
- :func:`t_interval` — the Student t interval of a mean (of paired differences, at small n).

Used by :func:`runner.results.stats.summarize_score`, the dataset-level evals of :mod:`evals.dataset` and
:func:`runner.results.paired.paired_compare`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "balanced_accuracy_interval",
    "clustered_proportion_interval",
    "fisher_z_interval",
    "row_means",
    "t_interval",
    "wilson_interval",
]


def _z(confidence: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(p: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``p`` observed on ``n`` (possibly fractional)
    independent trials; as ``statsmodels.stats.proportion.proportion_confint(.., method="wilson")``.

    >>> [round(x, 3) for x in wilson_interval(1.0, 30)]
    [0.886, 1.0]
    """
    if n <= 0:
        raise ValueError(f"wilson_interval: n must be positive; got {n}")
    z = _z(confidence)
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(max(0.0, p * (1 - p)) / n + z2n / (4 * n)) / (1 + z2n)
    return max(0.0, centre - half), min(1.0, centre + half)


def row_means(values: Sequence[float] | npt.NDArray[Any], clusters: Sequence[Hashable]) -> npt.NDArray[np.float64]:
    """The mean of each row's values (``clusters[i]`` is the row of ``values[i]``), in order of
    first appearance."""
    import numpy as np

    codes: dict[Hashable, int] = {}
    code = np.asarray([codes.setdefault(c, len(codes)) for c in clusters], dtype=np.intp)
    v = np.asarray(values, dtype=np.float64)
    sums = np.bincount(code, weights=v, minlength=len(codes))
    counts = np.bincount(code, minlength=len(codes))
    means: npt.NDArray[np.float64] = sums / counts
    return means


def effective_n(means: npt.NDArray[np.float64], n_values: int) -> float:
    """The design-effect-adjusted sample size of the mean of 0/1 row means.

    ``p(1-p) / Var(mean)`` with the variance estimated from the spread of the row means, bounded
    by the number of rows (trials of a row perfectly correlated, the worst case) and by the
    number of values (independent trials). Where the spread says nothing (every row at 0 or every
    row at 1) the worst case is taken: the number of rows.
    """
    k = len(means)
    if k == n_values:
        return float(k)
    p = float(means.mean())
    if k < 2 or p <= 0 or p >= 1:
        return float(k)
    var = float(means.var(ddof=1)) / k
    if var <= 0:
        return float(n_values)
    return min(float(n_values), max(float(k), p * (1 - p) / var))


def clustered_proportion_interval(
    means: npt.NDArray[np.float64], n_values: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Wilson interval of the mean of 0/1 row means (each row's mean over its trials), on the
    design-effect-adjusted sample size (:func:`effective_n`).

    >>> import numpy as np
    >>> [round(x, 3) for x in clustered_proportion_interval(np.ones(30), 90)]
    [0.886, 1.0]
    """
    return wilson_interval(float(means.mean()), effective_n(means, n_values), confidence)


def balanced_accuracy_interval(
    classes: Sequence[tuple[npt.NDArray[np.float64], int]], value: float, confidence: float = 0.95
) -> tuple[float, float]:
    """Interval of the mean of per-class proportions (balanced accuracy).

    ``classes`` holds, per class, its 0/1 row means and its number of values. Each class's
    variance is the Agresti–Coull one on its effective sample size (never zero at the ceiling);
    the balanced accuracy's variance is their mean over classes squared, and the interval is
    Wilson's around ``value`` on the sample size that variance implies (at most the number of
    values).
    """
    if not classes:
        raise ValueError("balanced_accuracy_interval: no classes")
    z2 = _z(confidence) ** 2
    adjusted = []
    variances = []
    for means, n_values in classes:
        n = effective_n(means, n_values)
        p_adj = (float(means.mean()) * n + z2 / 2) / (n + z2)
        adjusted.append(p_adj)
        variances.append(p_adj * (1 - p_adj) / (n + z2))
    c = len(classes)
    var = sum(variances) / c**2
    p_adj = sum(adjusted) / c
    total = sum(n for _, n in classes)
    n_eff = min(float(total), p_adj * (1 - p_adj) / var)
    return wilson_interval(value, n_eff, confidence)


def fisher_z_interval(r: float, n: int, confidence: float = 0.95, *, rank: bool = False) -> tuple[float, float] | None:
    """Interval of a correlation through Fisher's z: ``tanh(atanh(r) ± z · se)``, with
    ``se = 1/sqrt(n-3)`` for Pearson's r and Fieller's ``sqrt(1.06/(n-3))`` for Spearman's rho.
    ``None`` below 4 pairs (no interval). ``|r| = 1`` gives ``[r, r]``.

    >>> [round(x, 3) for x in fisher_z_interval(0.5, 30)]
    [0.17, 0.729]
    """
    if n < 4:
        return None
    if abs(r) >= 1:
        return (r, r)
    se = math.sqrt((1.06 if rank else 1.0) / (n - 3))
    z = math.atanh(r)
    half = _z(confidence) * se
    return math.tanh(z - half), math.tanh(z + half)


def t_interval(d: npt.NDArray[np.float64], confidence: float = 0.95) -> tuple[float, float]:
    """Student t interval of the mean of ``d``; as ``scipy.stats.ttest_1samp(d, 0).confidence_interval()``.

    The quantile is ``scipy.special.stdtrit``, which ``scipy.stats.t.ppf`` calls: the compare
    page need not import ``scipy.stats``."""
    import numpy as np
    from scipy.special import stdtrit

    n = len(d)
    mean = float(np.mean(d))
    se = float(np.std(d, ddof=1)) / math.sqrt(n)
    half = float(stdtrit(n - 1, 0.5 + confidence / 2)) * se
    return mean - half, mean + half
