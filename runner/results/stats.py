"""Summary statistics and comparisons of runs: pure functions, no I/O.

Every summary carries its sample size, errors and a confidence interval, never a bare mean:

- :func:`summarize_score` — mean, std and a 95% interval of one score. 0/1 scores with one value
  per row get the Wilson score interval; anything else (continuous scores, or several trials per
  row) a bootstrap that resamples *rows*, because trials of one row are not independent samples.
- :func:`latency_summary` — mean, median, p95 and max latency.
- :func:`dataset_stat_interval` — the interval of a dataset-level eval: a proportion interval
  for accuracies, Fisher's z for correlations, else :func:`bootstrap_dataset_stat`, a row
  bootstrap.
- :func:`paired_compare` / :func:`compare_scores` (in :mod:`runner.results.paired`, re-exported
  here) — run B against run A on the rows they share: difference, its interval, an exact or
  permutation p-value, and Holm-adjusted p-values.

numpy and scipy are imported inside the functions, so ``import runner.results.stats`` stays cheap.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from runner.results.format import num as _fmt  # one number format everywhere
from runner.results.intervals import clustered_proportion_interval, fisher_z_interval, wilson_interval

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

__all__ = [
    "Resamplable",
    "ScoreSummary",
    "bootstrap_dataset_stat",
    "dataset_stat_interval",
    "fisher_z_interval",
    "latency_summary",
    "summarize_score",
]

CIMethod = Literal["wilson", "wilson-clustered", "bootstrap"]

#: Resamples drawn for score intervals and paired differences.
N_RESAMPLES = 2000
#: Above this many rows, each bootstrap resample draws this many rows and rescales (see below).
MAX_RESAMPLE_SIZE = 5000
#: Elements per chunk of vectorised resampling: bounds memory to a few MB whatever the data size.
_CHUNK = 1_000_000




@dataclass(frozen=True)
class ScoreSummary:
    """One score of one run, summarised honestly.

    >>> ScoreSummary("exact_match", 0.82, 0.38, 200, 0, 200, 0.7609, 0.8666, "wilson").format()
    '0.820 [0.761, 0.867] n=200/200'
    """

    #: the score's name
    name: str
    #: the mean over rows of each row's mean over its scored trials (with one trial per row, the
    #: mean of the values); None when nothing was scored
    mean: float | None
    #: sample standard deviation of the scored values (ddof=1; 0.0 for a single value); None
    #: when nothing was scored
    std: float | None
    #: number of scored values (row-trials that produced this score)
    n: int
    #: row-trials where the function or this scorer failed, so no value exists
    n_errors: int
    #: row-trials in the run
    n_total: int
    #: lower bound of the confidence interval of the mean; None when nothing was scored
    ci_low: float | None
    #: upper bound of the confidence interval of the mean; None when nothing was scored
    ci_high: float | None
    #: how the interval was computed: "wilson", "wilson-clustered" (0/1 with trials), "bootstrap",
    #: or None without an interval
    ci_method: CIMethod | None

    def format(self) -> str:
        """One line for a terminal, e.g. ``0.820 [0.760, 0.870] n=200/200 (5 errors)``."""
        if self.mean is None:
            text = "n/a"
        elif self.ci_low is None or self.ci_high is None:
            text = _fmt(self.mean)
        else:
            text = f"{_fmt(self.mean)} [{_fmt(self.ci_low)}, {_fmt(self.ci_high)}]"
        text += f" n={self.n}/{self.n_total}"
        if self.n_errors:
            text += f" ({self.n_errors} error{'s' if self.n_errors != 1 else ''})"
        return text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)


def _wilson(successes: float, n: int, confidence: float) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion."""
    return wilson_interval(successes / n, n, confidence)


def _bootstrap_ratio(
    sums: FloatArray,
    counts: FloatArray,
    *,
    confidence: float,
    n_resamples: int,
    seed: int,
) -> tuple[float, float]:
    """Bootstrap interval of ``sum(sums) / sum(counts)``, resampling the clusters (rows).

    Each cluster contributes its sum of values and its number of values, so a resample of rows
    keeps every row's trials together. For up to :data:`MAX_RESAMPLE_SIZE` clusters this is the
    BCa interval of ``scipy.stats.bootstrap(..., paired=True, method="BCa")`` (the same draws for
    the same seed; the jackknife is computed in closed form instead of in O(K²)), falling back
    to the percentile interval when BCa is undefined. Above that, each resample draws
    ``m = MAX_RESAMPLE_SIZE`` clusters and its deviation from the estimate is scaled by
    ``sqrt(m / K)`` (a rescaled m-out-of-n bootstrap): the spread of the resampled means stays
    exactly right and the cost bounded, while the shape error, O(1/sqrt(m)), is far below the
    Monte Carlo error of 2,000 resamples. Callers handle the degenerate cases.
    """
    import numpy as np
    from scipy.special import ndtr, ndtri

    k = len(sums)
    estimate = float(sums.sum() / counts.sum())
    rng = np.random.default_rng(seed)
    draw = min(k, MAX_RESAMPLE_SIZE)
    theta = np.empty(n_resamples)
    rows_per_chunk = max(1, _CHUNK // draw)
    # one value per cluster (a paired compare's differences): a resample's count is ``draw``,
    # exactly, so the counts need not be gathered and summed
    unit = bool(np.all(counts == 1))
    for start in range(0, n_resamples, rows_per_chunk):
        stop = min(n_resamples, start + rows_per_chunk)
        idx = rng.integers(0, k, size=(stop - start, draw))
        theta[start:stop] = sums[idx].sum(axis=1) / (draw if unit else counts[idx].sum(axis=1))

    alpha = (1 - confidence) / 2
    levels = np.array([alpha, 1 - alpha])
    if draw < k:
        theta = estimate + (theta - estimate) * math.sqrt(draw / k)
    else:
        # BCa: bias correction from where the estimate falls among the resamples, acceleration
        # from the jackknife (leave one cluster out), as Efron & Tibshirani (14.3, 15.4).
        below = np.count_nonzero(theta < estimate) + np.count_nonzero(theta <= estimate)
        z0 = ndtri(below / (2 * n_resamples))
        jack = (sums.sum() - sums) / (counts.sum() - counts)
        u = (k - 1) * (jack.mean() - jack)
        denom = float(np.sum(u**2)) ** 1.5
        accel = float(np.sum(u**3)) / denom / 6 if denom > 0 else 0.0
        z = ndtri(levels)
        with np.errstate(all="ignore"):
            bca = ndtr(z0 + (z0 + z) / (1 - accel * (z0 + z)))
        # All resamples on one side of the estimate make z0 infinite: BCa is undefined there.
        if np.isfinite(z0) and np.all(np.isfinite(bca)):
            levels = bca
    low, high = np.quantile(theta, levels)
    # A rescaled resample can overshoot the range of the data (e.g. below 0 for rare successes).
    lo_bound, hi_bound = float(np.min(sums / counts)), float(np.max(sums / counts))
    return max(lo_bound, float(low)), min(hi_bound, float(high))


def _constant(x: FloatArray) -> bool:
    """Whether all values are equal, up to rounding in the last bits (0.1 + 0.2 vs 0.3)."""
    import numpy as np

    return bool(np.ptp(x) <= 1e-12 * max(1.0, float(np.max(np.abs(x)))))


def _cluster_codes(clusters: Sequence[Hashable]) -> tuple[list[int], int]:
    codes: dict[Hashable, int] = {}
    out = [codes.setdefault(c, len(codes)) for c in clusters]
    return out, len(codes)


def summarize_score(
    name: str,
    values: Sequence[float] | npt.NDArray[Any],
    clusters: Sequence[Hashable] | None,
    n_errors: int,
    n_total: int,
    *,
    confidence: float = 0.95,
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
) -> ScoreSummary:
    """Summarise one score: mean, std, and a confidence interval of the mean.

    ``values`` holds one value per scored row-trial; ``clusters[i]`` is the row id of
    ``values[i]`` (``None``: every value is its own row). ``n_errors`` and ``n_total`` are carried
    into the summary so that a mean never hides the rows it could not score.

    The mean is the one estimand used everywhere a run is summarised or compared: the mean over
    rows of each row's mean over its scored trials (a row whose trials failed unevenly weighs as
    much as any other row; with one trial per row it is the plain mean of the values).

    The interval is of that mean. 0/1 values with one value per row get the Wilson score
    interval; 0/1 values with several trials per row get Wilson on the design-effect-adjusted
    sample size (between the number of rows and the number of trials, see
    :func:`runner.results.intervals.clustered_proportion_interval`), which neither shrinks to a
    point when every trial passed nor pretends that trials of one row are independent.
    Continuous values get a seeded BCa bootstrap of the row means that resamples rows.
    All-identical continuous row means (or a single row) give ``[v, v]``. Deterministic for the
    same input and seed; vectorised, so 100,000 values take a fraction of a second.

    >>> summarize_score("exact_match", [1, 0, 1, 1], None, n_errors=1, n_total=5).format()
    '0.750 [0.301, 0.954] n=4/5 (1 error)'
    """
    import numpy as np

    if not 0 < confidence < 1:
        raise ValueError(f"summarize_score({name!r}): confidence must be between 0 and 1; got {confidence}")
    v = np.asarray(values, dtype=np.float64).ravel()
    n = len(v)
    if clusters is not None and len(clusters) != n:
        raise ValueError(
            f"summarize_score({name!r}): {len(clusters)} clusters for {n} values; give one row id per value"
        )
    if n and not np.all(np.isfinite(v)):
        raise ValueError(f"summarize_score({name!r}): values must be finite numbers; got NaN or infinity")
    if n_errors < 0 or n_total < n:
        raise ValueError(f"summarize_score({name!r}): n_errors={n_errors} and n_total={n_total} do not fit {n} values")
    if n == 0:
        return ScoreSummary(name, None, None, 0, n_errors, n_total, None, None, None)

    std = float(v.std(ddof=1)) if n > 1 else 0.0
    if clusters is None:
        codes = np.arange(n)
        k = n
    else:
        code_list, k = _cluster_codes(clusters)
        codes = np.asarray(code_list, dtype=np.intp)

    sums = np.bincount(codes, weights=v, minlength=k).astype(np.float64)
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    row_means = sums / counts
    # the estimand: the mean over rows of each row's mean over its scored trials
    mean = float(row_means.mean())
    binary = bool(np.all((v == 0) | (v == 1)))
    if binary:
        if k == n:
            low, high = _wilson(float(v.sum()), n, confidence)
            return ScoreSummary(name, mean, std, n, n_errors, n_total, low, high, "wilson")
        low, high = clustered_proportion_interval(row_means, n, confidence)
        return ScoreSummary(name, mean, std, n, n_errors, n_total, low, high, "wilson-clustered")

    if k == 1 or _constant(row_means):
        # Every resample of rows has the same mean: the interval is the point.
        return ScoreSummary(name, mean, std, n, n_errors, n_total, mean, mean, "bootstrap")
    low, high = _bootstrap_ratio(row_means, np.ones(k), confidence=confidence, n_resamples=n_resamples, seed=seed)
    return ScoreSummary(name, mean, std, n, n_errors, n_total, low, high, "bootstrap")


def latency_summary(latencies: Sequence[float | None]) -> dict[str, float | None]:
    """Mean, median (p50), 95th percentile and maximum of latencies, in their unit.

    ``None`` entries (no latency recorded) are ignored; with none left every value is ``None``.

    >>> latency_summary([0.5, 1.0, 1.5])["p50"]
    1.0
    """
    import numpy as np

    x = np.asarray([t for t in latencies if t is not None], dtype=np.float64)
    if len(x) == 0:
        return {"mean": None, "p50": None, "p95": None, "max": None}
    p50, p95 = np.percentile(x, [50, 95])
    return {"mean": float(x.mean()), "p50": float(p50), "p95": float(p95), "max": float(x.max())}


class Resamplable(Protocol):
    """A dataset-level statistic that can prepare logs once for cheap re-evaluation.

    ``resampler(logs)`` returns ``f(indices) -> float``: the statistic of the logs at those
    indices (with repeats). Every eval in :mod:`evals.dataset` has one.
    """

    def resampler(self, logs: Sequence[Any], /) -> Callable[[npt.NDArray[np.intp]], float]: ...


def _prepare(
    fn: Callable[[list[Any]], float] | Resamplable, logs: Sequence[Any]
) -> Callable[[npt.NDArray[np.intp]], float]:
    """The statistic as a function of log indices, through ``resampler`` when there is one."""
    owner = fn if hasattr(fn, "resampler") else None
    if owner is None and getattr(fn, "__name__", None) == "compute":
        owner = getattr(fn, "__self__", None)  # eval.compute: its eval may have a resampler
    make = getattr(owner, "resampler", None)
    if callable(make):
        try:
            prepared: Callable[[npt.NDArray[np.intp]], float] = make(logs)
            return prepared
        except Exception:
            pass  # a broken resampler is no reason to give up: re-run the plain function below
    if not callable(fn):
        raise TypeError(f"bootstrap_dataset_stat: {fn!r} is neither callable nor has a resampler")
    frozen = list(logs)
    plain = fn
    return lambda idx: plain([frozen[i] for i in idx])


def bootstrap_dataset_stat(
    fn: Callable[[list[Any]], float] | Resamplable,
    logs: Sequence[Any],
    clusters: Sequence[Hashable],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of a dataset-level statistic, resampling rows.

    ``fn`` computes the statistic from a list of logs (e.g. ``eval.compute``); ``clusters[i]`` is
    the row id of ``logs[i]``, and a resample draws rows with replacement, keeping all trials of
    each. When ``fn`` is an eval with a ``resampler`` (see :class:`Resamplable`), or its
    ``compute`` method, each log is read once and a resample is a vectorised evaluation; the
    result is the same. Resamples where the statistic raises or is NaN/infinite are skipped (e.g.
    a correlation on a resample with a constant side); if fewer than half succeed, the interval
    would describe only the lucky resamples, so the result is ``(None, None)``.

    >>> bootstrap_dataset_stat(pearson("a", "b").compute, logs, rows)  # doctest: +SKIP
    (0.71, 0.88)
    """
    import numpy as np

    if len(clusters) != len(logs):
        raise ValueError(f"bootstrap_dataset_stat: {len(clusters)} clusters for {len(logs)} logs")
    code_list, k = _cluster_codes(clusters)
    if k < 2 or n_resamples < 1:
        return None, None
    statistic = _prepare(fn, logs)
    # Rows as slices of the logs sorted by row: a resample of rows becomes one index array.
    codes = np.asarray(code_list, dtype=np.intp)
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes, minlength=k)
    starts = np.cumsum(sizes) - sizes
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, k, size=(n_resamples, k))
    stats: list[float] = []
    for rows in draws:
        lengths = sizes[rows]
        ends = np.cumsum(lengths)
        positions = np.arange(ends[-1]) + np.repeat(starts[rows] - (ends - lengths), lengths)
        try:
            value = float(statistic(order[positions]))
        except Exception:
            continue
        if math.isfinite(value):
            stats.append(value)
    if len(stats) < max(2, math.ceil(n_resamples / 2)):
        return None, None
    alpha = (1 - confidence) / 2
    low, high = np.quantile(np.asarray(stats), [alpha, 1 - alpha])
    return float(low), float(high)


def dataset_stat_interval(
    ev: Any,
    logs: Sequence[Any],
    clusters: Sequence[Hashable],
    *,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float | None, float | None, str | None]:
    """The interval of a dataset-level eval, and how it was computed.

    An eval with an ``interval(logs, clusters, confidence)`` method that returns bounds gets them
    (``method`` is then its ``interval_method``): the built-in evals give proportion intervals
    for accuracies (Wilson, ceiling- and cluster-aware) and Fisher's z for correlations, where a
    bootstrap collapses at the ceiling or undercovers at small n. An eval without one (or whose
    ``interval`` returns ``None``) gets the row bootstrap of :func:`bootstrap_dataset_stat` on
    ``ev.compute`` (``"bootstrap"``); an eval without ``compute`` gets no interval.

    >>> dataset_stat_interval(accuracy(), logs, rows)  # doctest: +SKIP
    (0.886, 1.0, 'wilson')
    """
    interval = getattr(ev, "interval", None)
    if callable(interval):
        got = interval(logs, clusters, confidence)
        if got is not None:
            low, high = got
            return float(low), float(high), str(getattr(ev, "interval_method", "closed-form"))
    compute = getattr(ev, "compute", None)
    if compute is None or len(logs) < 3:
        return None, None, None
    low, high = bootstrap_dataset_stat(compute, logs, clusters, seed=seed, confidence=confidence)
    return low, high, ("bootstrap" if low is not None else None)
