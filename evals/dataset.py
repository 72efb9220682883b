"""Dataset-level evals: one score computed over every root log of an experiment.

A dataset-level eval is a callable object ``eval(logs) -> Score``. It sees all root logs of the
experiment (one per row and trial), errored rows included, so each eval decides explicitly what
an error means: correlations skip rows without a value, accuracies count them as wrong.

Each eval also has ``compute(logs) -> float``, the bare value, which a bootstrap can call on
resampled logs to put a confidence interval on it, and ``resampler(logs)``, which reads every log
once and returns a vectorised function of a resample's log indices, so that a bootstrap of 1,000
resamples costs milliseconds instead of 1,000 passes over the logs
(:func:`runner.results.stats.bootstrap_dataset_stat` uses it when given ``eval`` or ``eval.compute``).
Bad data (too few rows, constant input) raises ``ValueError``; the runner records that as this
eval's error. numpy and scipy are imported when an eval runs, not when this module is imported.

>>> evals = [pearson("quality", "human_rating"), balanced_accuracy()]  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from runner.errors import FunctionError
from runner.results.format import num
from runner.scoring import Log, Score, scorer_factory

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Indices = npt.NDArray[np.intp]

__all__ = ["DatasetEval", "accuracy", "balanced_accuracy", "pearson", "spearman"]

#: What a correlation reads from a log: a score name, or a function of the log.
Value = str | Callable[[Log], Any]

_MAX_CLASSES_IN_REASON = 10


class DatasetEval:
    """Base class of dataset-level evals: ``eval(logs)`` is a :class:`Score` named ``eval.name``.

    Subclasses implement :meth:`evaluate`, returning the value and a human-readable reason.
    """

    __name__: str

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise FunctionError(f"{type(self).__name__}: name must be a non-empty string; got {name!r}")
        #: the name of the score this eval produces
        self.name = name
        self.__name__ = name

    def evaluate(self, logs: Sequence[Log]) -> tuple[float, str]:
        """The value and the reason; raise ``ValueError`` when the logs do not allow a value."""
        raise NotImplementedError

    def compute(self, logs: Sequence[Log]) -> float:
        """The bare value, e.g. for a bootstrap that re-evaluates resampled logs."""
        return self.evaluate(logs)[0]

    def resampler(self, logs: Sequence[Log]) -> Callable[[Indices], float]:
        """Prepare ``logs`` for many re-evaluations: ``f(indices)`` is ``compute`` of the logs at
        those indices (repeats allowed), raising ``ValueError`` where ``compute`` would.

        This default calls :meth:`compute`; the built-in evals read each log once here and
        evaluate a resample with a few numpy operations.
        """
        frozen = list(logs)
        return lambda idx: self.compute([frozen[i] for i in idx])

    def __call__(self, logs: Sequence[Log]) -> Score:
        value, reason = self.evaluate(logs)
        return Score(self.name, value, reason)


def _describe(value: Value) -> str:
    return repr(value) if isinstance(value, str) else getattr(value, "__name__", repr(value))


def _check_value(what: str, value: Any) -> Value:
    if isinstance(value, str):
        if not value:
            raise FunctionError(f"{what} must be a score name or a callable taking a log; got ''")
        return value
    if callable(value):
        return value  # type: ignore[no-any-return]
    raise FunctionError(
        f"{what} must be a score name (str) or a callable taking a log; got {value!r} ({type(value).__name__})"
    )


class _Extractor:
    """Reads one number per log; ``None`` means "no value", counting why."""

    def __init__(self, source: Value) -> None:
        self.source = source
        self.missing = 0
        self.failed = 0
        self.first_error: str | None = None

    def __call__(self, log: Log) -> float | None:
        if isinstance(self.source, str):
            raw: Any = log.get_score(self.source)
        else:
            try:
                raw = self.source(log)
            except Exception as exc:
                return self._fail(exc)
        if raw is None:
            self.missing += 1
            return None
        try:
            value = float(raw)
        except (TypeError, ValueError) as exc:
            return self._fail(exc)
        if not math.isfinite(value):
            self.missing += 1
            return None
        return value

    def _fail(self, exc: Exception) -> float | None:
        self.failed += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"
        return None


class _Correlation(DatasetEval):
    def __init__(self, method: str, x: Any, y: Any, name: str) -> None:
        super().__init__(name)
        self.method = method
        self.x: Value = _check_value(f"{method}(x=...)", x)
        self.y: Value = _check_value(f"{method}(y=...)", y)

    def pairs(self, logs: Sequence[Log]) -> tuple[list[float], list[float], str]:
        """The (x, y) pairs where both sides have a value, and a note on what was skipped."""
        fx, fy = _Extractor(self.x), _Extractor(self.y)
        xs: list[float] = []
        ys: list[float] = []
        for log in logs:
            vx, vy = fx(log), fy(log)
            if vx is not None and vy is not None:
                xs.append(vx)
                ys.append(vy)
        skipped = len(logs) - len(xs)
        note = ""
        if skipped:
            parts = []
            for label, f in (("x", fx), ("y", fy)):
                if f.missing:
                    parts.append(f"{label} missing on {f.missing}")
                if f.failed:
                    parts.append(f"{label} failed on {f.failed}: {f.first_error}")
            note = f"{skipped} row{'s' if skipped != 1 else ''} skipped: {'; '.join(parts)}"
        return xs, ys, note

    def evaluate(self, logs: Sequence[Log]) -> tuple[float, str]:
        xs, ys, note = self.pairs(logs)
        what = f"{self.name}: {self.method}({_describe(self.x)}, {_describe(self.y)})"
        if len(xs) < 2:
            raise ValueError(
                f"{what} needs at least 2 rows where both sides have a value; got {len(xs)}"
                + (f" ({note})" if note else "")
            )
        for label, values in (("x", xs), ("y", ys)):
            if _nearly_constant(values):
                raise ValueError(
                    f"{what} is undefined: {label} is constant ({values[0]!r}, up to rounding) "
                    f"on all {len(values)} rows"
                )
        import scipy.stats

        test = scipy.stats.pearsonr if self.method == "pearson" else scipy.stats.spearmanr
        res = test(xs, ys)
        r, p = float(res.statistic), float(res.pvalue)
        reason = f"r={num(r)} p={num(p)} n={len(xs)}" + (f" ({note})" if note else "")
        return r, reason

    #: how :meth:`interval` computes its bounds
    interval_method = "fisher-z"

    def interval(
        self, logs: Sequence[Log], clusters: Sequence[Any], confidence: float = 0.95
    ) -> tuple[float, float] | None:
        """Fisher's z interval of r (Fieller's variance for Spearman), on the number of distinct
        rows with both values (trials of one row are not independent pairs); ``None`` below 4."""
        from runner.results.intervals import fisher_z_interval

        r = self.compute(logs)
        fx, fy = _Extractor(self.x), _Extractor(self.y)
        rows = {c for log, c in zip(logs, clusters, strict=True) if fx(log) is not None and fy(log) is not None}
        return fisher_z_interval(r, len(rows), confidence, rank=self.method == "spearman")

    def resampler(self, logs: Sequence[Log]) -> Callable[[Indices], float]:
        import numpy as np

        fx, fy = _Extractor(self.x), _Extractor(self.y)
        nan = math.nan
        x = np.asarray([nan if (v := fx(log)) is None else v for log in logs], dtype=np.float64)
        y = np.asarray([nan if (v := fy(log)) is None else v for log in logs], dtype=np.float64)
        has_both = ~(np.isnan(x) | np.isnan(y))
        rank = self.method == "spearman"
        what = f"{self.name}: {self.method}({_describe(self.x)}, {_describe(self.y)})"

        def statistic(idx: Indices) -> float:
            keep = idx[has_both[idx]]
            return _correlation(what, x[keep], y[keep], rank=rank)

        return statistic

    def __repr__(self) -> str:
        return f"{self.method}({_describe(self.x)}, {_describe(self.y)}, name={self.name!r})"


def _correlation(what: str, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], *, rank: bool) -> float:
    """Pearson's r of x and y (of their average ranks for Spearman's rho), without a p-value."""
    import numpy as np

    if len(x) < 2:
        raise ValueError(f"{what} needs at least 2 rows where both sides have a value; got {len(x)}")
    if _nearly_constant(x) or _nearly_constant(y):
        raise ValueError(f"{what} is undefined: one side is constant (up to rounding) on all {len(x)} rows")
    if rank:
        x, y = _average_ranks(x), _average_ranks(y)
    return float(np.clip(np.corrcoef(x, y)[0, 1], -1.0, 1.0))


def _nearly_constant(values: Sequence[float] | npt.NDArray[np.float64]) -> bool:
    """Whether all values are equal up to rounding in the last bits (0.1 + 0.2 vs 0.3): a
    correlation with such a side is undefined, not a number computed from rounding noise."""
    import numpy as np

    a = np.asarray(values, dtype=np.float64)
    return bool(np.ptp(a) <= 1e-9 * max(1.0, float(np.max(np.abs(a)))))


def _average_ranks(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``scipy.stats.rankdata(a)`` (ties get their average rank), minus scipy's per-call overhead,
    which dominates a bootstrap's thousand small calls."""
    import numpy as np

    sorter = np.argsort(a, kind="mergesort")
    inverse = np.empty_like(sorter)
    inverse[sorter] = np.arange(len(a))
    ordered = a[sorter]
    first = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    dense = np.cumsum(first)[inverse]
    bounds = np.concatenate((np.nonzero(first)[0], [len(a)]))
    ranks: npt.NDArray[np.float64] = 0.5 * (bounds[dense] + bounds[dense - 1] + 1)
    return ranks


@scorer_factory('pearson("judge", "human_rating")')
def pearson(x: Value, y: Value, name: str = "pearson") -> DatasetEval:
    """Pearson's r between two per-row values, with ``scipy.stats.pearsonr``.

    ``x`` and ``y`` are each a score name (the value is ``log.get_score(name)``) or a callable
    on a log returning a number. Rows where either side is missing (``None``, NaN) or the callable
    raises are skipped, and the reason says how many and why. Fewer than two rows left, or a
    constant side, raise ``ValueError``.

    >>> pearson("llm_judge", lambda log: float(log.target), name="judge_vs_human")  # doctest: +SKIP
    """
    return _Correlation("pearson", x, y, name)


@scorer_factory('spearman("judge", "human_rating")')
def spearman(x: Value, y: Value, name: str = "spearman") -> DatasetEval:
    """Spearman's rank correlation between two per-row values, with ``scipy.stats.spearmanr``.

    Takes ``x`` and ``y`` like :func:`pearson` and skips rows the same way.

    >>> spearman("llm_judge", "human_rating")  # doctest: +SKIP
    """
    return _Correlation("spearman", x, y, name)


def _label(value: Any) -> str:
    return str(value).strip()


def _is_error(log: Log) -> bool:
    return log.status == "error"


def _no_labels(name: str, n_logs: int) -> ValueError:
    return ValueError(f"{name}: none of the {n_logs} logs has a target to compare with")


class _Accuracy(DatasetEval):
    def evaluate(self, logs: Sequence[Log]) -> tuple[float, str]:
        labelled = [log for log in logs if log.target is not None]
        if not labelled:
            raise _no_labels(self.name, len(logs))
        errored = sum(1 for log in labelled if _is_error(log))
        correct = sum(1 for log in labelled if not _is_error(log) and _label(log.output) == _label(log.target))
        notes = []
        if errored:
            notes.append(f"{errored} errored counted as wrong")
        if len(labelled) < len(logs):
            notes.append(f"{len(logs) - len(labelled)} without target skipped")
        reason = f"{correct}/{len(labelled)} correct" + (f" ({', '.join(notes)})" if notes else "")
        return correct / len(labelled), reason

    def resampler(self, logs: Sequence[Log]) -> Callable[[Indices], float]:
        import numpy as np

        labelled = np.asarray([log.target is not None for log in logs], dtype=bool)
        correct = np.asarray(
            [
                log.target is not None and not _is_error(log) and _label(log.output) == _label(log.target)
                for log in logs
            ],
            dtype=np.float64,
        )

        def statistic(idx: Indices) -> float:
            n = int(np.count_nonzero(labelled[idx]))
            if n == 0:
                raise _no_labels(self.name, len(idx))
            return float(correct[idx].sum() / n)

        return statistic

    #: how :meth:`interval` computes its bounds
    interval_method = "wilson"

    def interval(
        self, logs: Sequence[Log], clusters: Sequence[Any], confidence: float = 0.95
    ) -> tuple[float, float] | None:
        """Wilson's interval of the proportion correct; with several trials per row, on the
        design-effect-adjusted sample size (see :mod:`runner.results.intervals`)."""
        from runner.results.intervals import clustered_proportion_interval, row_means

        hits = []
        rows = []
        for log, c in zip(logs, clusters, strict=True):
            if log.target is not None:
                hits.append(float(not _is_error(log) and _label(log.output) == _label(log.target)))
                rows.append(c)
        if not hits:
            return None
        means = row_means(hits, rows)
        low, high = clustered_proportion_interval(means, len(hits), confidence)
        value = self.compute(logs)
        return min(low, value), max(high, value)

    def __repr__(self) -> str:
        return f"accuracy(name={self.name!r})"


@scorer_factory('accuracy()')
def accuracy(name: str = "accuracy") -> DatasetEval:
    """The fraction of rows whose output equals the target, compared as labels.

    Labels are compared as ``str(value).strip()``. Rows without a target are skipped; errored rows
    count as wrong (a failure is not an abstention).

    >>> accuracy()(logs).score  # doctest: +SKIP
    0.84
    """
    return _Accuracy(name)


class _BalancedAccuracy(DatasetEval):
    def __init__(self, score_name: str | None, name: str) -> None:
        super().__init__(name)
        if score_name is not None and (not isinstance(score_name, str) or not score_name):
            raise FunctionError(f"balanced_accuracy: score_name must be a score name (str); got {score_name!r}")
        self.score_name = score_name

    def _hit(self, log: Log, cls: str) -> float:
        """What a log contributes to its true class's mean."""
        if self.score_name is None:
            return 0.0 if _is_error(log) else float(_label(log.output) == cls)
        return log.get_score(self.score_name) or 0.0

    def evaluate(self, logs: Sequence[Log]) -> tuple[float, str]:
        totals: dict[str, float] = {}
        counts: dict[str, int] = {}
        for log in logs:
            if log.target is None:
                continue
            cls = _label(log.target)
            totals[cls] = totals.get(cls, 0.0) + self._hit(log, cls)
            counts[cls] = counts.get(cls, 0) + 1
        if not counts:
            raise _no_labels(self.name, len(logs))
        per_class = {cls: totals[cls] / counts[cls] for cls in sorted(counts)}
        value = math.fsum(per_class.values()) / len(per_class)
        what = "recall" if self.score_name is None else f"mean {self.score_name}"
        shown = [f"{cls}={num(v)} (n={counts[cls]})" for cls, v in per_class.items()]
        if len(shown) > _MAX_CLASSES_IN_REASON:
            shown = [*shown[:_MAX_CLASSES_IN_REASON], f"… {len(shown) - _MAX_CLASSES_IN_REASON} more"]
        reason = f"{what} averaged over {len(per_class)} classes: {', '.join(shown)}"
        return value, reason

    def resampler(self, logs: Sequence[Log]) -> Callable[[Indices], float]:
        import numpy as np

        codes: dict[str, int] = {}
        cls_of = np.full(len(logs), -1, dtype=np.intp)
        hits = np.zeros(len(logs), dtype=np.float64)
        for i, log in enumerate(logs):
            if log.target is not None:
                cls = _label(log.target)
                cls_of[i] = codes.setdefault(cls, len(codes))
                hits[i] = self._hit(log, cls)
        k = len(codes)

        def statistic(idx: Indices) -> float:
            c = cls_of[idx]
            labelled = c >= 0
            if not labelled.any():
                raise _no_labels(self.name, len(idx))
            counts = np.bincount(c[labelled], minlength=k)
            totals = np.bincount(c[labelled], weights=hits[idx][labelled], minlength=k)
            present = counts > 0
            return float(np.mean(totals[present] / counts[present]))

        return statistic

    #: how :meth:`interval` computes its bounds
    interval_method = "wilson"

    def interval(
        self, logs: Sequence[Log], clusters: Sequence[Any], confidence: float = 0.95
    ) -> tuple[float, float] | None:
        """A proportion interval of the mean of per-class recalls (see
        :func:`runner.results.intervals.balanced_accuracy_interval`); ``None`` (a bootstrap
        instead) when a ``score_name`` score is not 0/1."""
        from runner.results.intervals import balanced_accuracy_interval, row_means

        per_class: dict[str, tuple[list[float], list[Any]]] = {}
        for log, c in zip(logs, clusters, strict=True):
            if log.target is None:
                continue
            cls = _label(log.target)
            hits, rows = per_class.setdefault(cls, ([], []))
            hits.append(self._hit(log, cls))
            rows.append(c)
        if not per_class or any(h not in (0.0, 1.0) for hits, _ in per_class.values() for h in hits):
            return None
        classes = [(row_means(hits, rows), len(hits)) for hits, rows in per_class.values()]
        value = self.compute(logs)
        low, high = balanced_accuracy_interval(classes, value, confidence)
        return min(low, value), max(high, value)

    def __repr__(self) -> str:
        return f"balanced_accuracy(score_name={self.score_name!r}, name={self.name!r})"


@scorer_factory('balanced_accuracy()')
def balanced_accuracy(score_name: str | None = None, name: str = "balanced_accuracy") -> DatasetEval:
    """Accuracy averaged over the true classes (the target), so a rare class counts as much as a
    common one.

    Without ``score_name``: the output is the predicted label and the target the true one
    (compared as ``str(value).strip()``); the value is the mean over true classes of the recall,
    as ``sklearn.metrics.balanced_accuracy_score``. Errored rows count as wrong.

    With ``score_name``: the mean of that (0/1) score within each target class, averaged over the
    classes. Rows without that score, such as errored rows, count as 0 in their class.

    Rows without a target are skipped in both cases.

    >>> balanced_accuracy(score_name="exact_match")  # doctest: +SKIP
    """
    return _BalancedAccuracy(score_name, name)
