"""Dataset-level evals (evals/dataset.py), checked against scipy and scikit-learn."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import accuracy_score, balanced_accuracy_score

import evals.dataset
from evals import exact_match
from evals.dataset import DatasetEval, accuracy, balanced_accuracy, pearson, spearman
from runner.errors import FunctionError
from runner.results.format import num
from runner.scoring import Log, Score


def make_log(
    row: int,
    *,
    output: Any = None,
    target: Any = None,
    scores: dict[str, float] | None = None,
    status: str = "success",
    trial: int = 0,
) -> Log:
    return Log(
        inputs={"q": f"question {row}"},
        output=output,
        target=target,
        status=status,
        error="Traceback ..." if status == "error" else None,
        metadata={"row_id": f"r{row}", "trial": trial},
        scores=[Score(k, v) for k, v in (scores or {}).items()],
    )


def scored_logs(x: np.ndarray, y: np.ndarray) -> list[Log]:
    return [make_log(i, scores={"x": float(a), "y": float(b)}) for i, (a, b) in enumerate(zip(x, y, strict=True))]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240601)


def test_all_is_sorted() -> None:
    assert evals.dataset.__all__ == sorted(evals.dataset.__all__)


# correlations


@pytest.mark.parametrize(("factory", "reference"), [(pearson, scipy.stats.pearsonr), (spearman, scipy.stats.spearmanr)])
def test_correlations_equal_scipy_on_random_data(factory: Any, reference: Any, rng: np.random.Generator) -> None:
    x = rng.normal(size=60)
    y = 0.6 * x + rng.normal(size=60)
    y[::7] = np.round(y[::7])  # some ties for the rank correlation
    ev = factory("x", "y")
    score = ev(scored_logs(x, y))
    expected = reference(x, y)
    assert isinstance(score, Score)
    assert score.name == factory.__name__
    assert score.score == pytest.approx(expected.statistic, rel=1e-12)
    assert score.reason == f"r={num(expected.statistic)} p={num(expected.pvalue)} n=60"
    assert ev.compute(scored_logs(x, y)) == score.score


def test_correlation_skips_missing_values_errors_and_failing_callables(rng: np.random.Generator) -> None:
    x = rng.normal(size=40)
    y = x + rng.normal(size=40)
    logs = scored_logs(x, y)
    # rows 0-2: y missing (errored rows have no scores); row 3: x missing
    for i in range(3):
        logs[i] = make_log(i, scores={"x": float(x[i])}, status="error")
    logs[3] = make_log(3, scores={"y": float(y[3])})

    def y_of(log: Log) -> float | None:
        if log.metadata["row_id"] == "r5":
            raise KeyError("no rating")
        return log.get_score("y")

    score = pearson("x", y_of, name="x_vs_y")(logs)
    keep = [i for i in range(40) if i not in (0, 1, 2, 3, 5)]
    expected = scipy.stats.pearsonr(x[keep], y[keep])
    assert score.name == "x_vs_y"
    assert score.score == pytest.approx(expected.statistic, rel=1e-12)
    assert score.reason is not None
    assert score.reason.startswith(f"r={num(expected.statistic)} p={num(expected.pvalue)} n=35 (5 rows skipped:")
    assert "x missing on 1" in score.reason
    assert "y missing on 3" in score.reason
    assert "y failed on 1: KeyError" in score.reason


def test_correlation_of_a_score_with_the_target(rng: np.random.Generator) -> None:
    x = rng.normal(size=30)
    target = np.round(2 * x + rng.normal(size=30), 1)
    logs = [
        make_log(i, target=str(t), scores={"judge": float(a)}) for i, (a, t) in enumerate(zip(x, target, strict=True))
    ]
    score = spearman("judge", lambda log: float(log.target))(logs)
    assert score.score == pytest.approx(scipy.stats.spearmanr(x, target).statistic, rel=1e-12)


def test_correlation_skips_nan_and_non_numeric_values() -> None:
    logs = scored_logs(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 5.0]))
    values = {"r0": math.nan, "r1": "n/a"}
    score = pearson("x", lambda log: values.get(log.metadata["row_id"], log.get_score("y")))(logs)
    assert score.score == pytest.approx(scipy.stats.pearsonr([3.0, 4.0], [2.0, 5.0]).statistic)
    assert score.reason is not None and "2 rows skipped" in score.reason


def test_correlation_with_too_few_pairs_raises() -> None:
    logs = scored_logs(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    logs[1] = make_log(1, status="error")
    with pytest.raises(ValueError, match=r"at least 2 rows .* got 1 \(1 row skipped: x missing on 1; y missing on 1\)"):
        pearson("x", "y")(logs)
    with pytest.raises(ValueError, match="got 0"):
        spearman("x", "y")([])


def test_correlation_with_constant_input_raises_without_warning() -> None:
    logs = scored_logs(np.array([1.0, 1.0, 1.0]), np.array([3.0, 4.0, 5.0]))
    with pytest.raises(ValueError, match="x is constant"):
        pearson("x", "y")(logs)
    with pytest.raises(ValueError, match="x is constant"):
        spearman("x", "y").compute(logs)


@pytest.mark.parametrize("bad", [None, 3, ""])
def test_correlation_rejects_bad_sources(bad: Any) -> None:
    with pytest.raises(FunctionError, match="score name"):
        pearson(bad, "y")
    with pytest.raises(FunctionError, match="score name"):
        spearman("x", bad)


def test_eval_objects_are_named() -> None:
    for ev, name in [
        (pearson("a", "b"), "pearson"),
        (spearman("a", "b", name="rank"), "rank"),
        (accuracy(), "accuracy"),
        (balanced_accuracy(name="bal"), "bal"),
    ]:
        assert isinstance(ev, DatasetEval)
        assert ev.name == name
        assert ev.__name__ == name
        assert name in repr(ev)
    with pytest.raises(FunctionError):
        accuracy(name="")


# accuracy


def label_logs(y_true: list[Any], y_pred: list[Any]) -> list[Log]:
    return [make_log(i, output=p, target=t) for i, (t, p) in enumerate(zip(y_true, y_pred, strict=True))]


def test_accuracy_equals_sklearn(rng: np.random.Generator) -> None:
    y_true = list(rng.choice(["cat", "dog", "bird"], size=200, p=[0.6, 0.3, 0.1]))
    y_pred = [t if rng.random() < 0.7 else rng.choice(["cat", "dog", "bird"]) for t in y_true]
    score = accuracy()(label_logs(y_true, y_pred))
    assert score.score == pytest.approx(accuracy_score(y_true, y_pred), rel=1e-12)
    correct = sum(t == p for t, p in zip(y_true, y_pred, strict=True))
    assert score.reason == f"{correct}/200 correct"


def test_accuracy_compares_labels_as_stripped_strings() -> None:
    logs = label_logs([1, "yes", "no"], ["1", " yes\n", "No"])
    assert accuracy()(logs).score == pytest.approx(2 / 3)


def test_accuracy_counts_errored_rows_as_wrong_and_skips_rows_without_target() -> None:
    logs = label_logs(["a", "b", "a", "b"], ["a", "b", "a", "a"])
    logs.append(make_log(4, output="a", target="a", status="error"))  # right output, but errored
    logs.append(make_log(5, output="b", target=None))
    score = accuracy()(logs)
    assert score.score == pytest.approx(3 / 5)
    assert score.reason == "3/5 correct (1 errored counted as wrong, 1 without target skipped)"


def test_accuracy_without_targets_raises() -> None:
    with pytest.raises(ValueError, match="none of the 2 logs has a target"):
        accuracy()(label_logs([None, None], ["a", "b"]))


# balanced accuracy


def test_balanced_accuracy_equals_sklearn(rng: np.random.Generator) -> None:
    classes = ["neg", "neu", "pos"]
    y_true = list(rng.choice(classes, size=300, p=[0.7, 0.2, 0.1]))
    y_pred = [t if rng.random() < 0.6 else rng.choice(classes) for t in y_true]
    score = balanced_accuracy()(label_logs(y_true, y_pred))
    assert score.score == pytest.approx(balanced_accuracy_score(y_true, y_pred), rel=1e-12)
    assert score.reason is not None and score.reason.startswith("recall averaged over 3 classes: neg=")


def test_balanced_accuracy_counts_errored_rows_as_wrong(rng: np.random.Generator) -> None:
    y_true = list(rng.choice(["a", "b"], size=100, p=[0.8, 0.2]))
    y_pred = [t if rng.random() < 0.8 else ("b" if t == "a" else "a") for t in y_true]
    logs = label_logs(y_true, y_pred)
    errored = set(range(0, 100, 9))
    for i in errored:
        logs[i].status = "error"
    # an errored row predicted nothing: a label outside the true classes, always wrong
    y_failed = ["<error>" if i in errored else p for i, p in enumerate(y_pred)]
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        expected = balanced_accuracy_score(y_true, y_failed)
    assert balanced_accuracy().compute(logs) == pytest.approx(expected, rel=1e-12)


def test_balanced_accuracy_of_a_score_equals_sklearn_on_the_labels(rng: np.random.Generator) -> None:
    classes = ["A", "B", "C", "D"]
    y_true = list(rng.choice(classes, size=250, p=[0.4, 0.3, 0.2, 0.1]))
    y_pred = [t if rng.random() < 0.55 else rng.choice(classes) for t in y_true]
    logs = label_logs(y_true, y_pred)
    for lg in logs:
        value = exact_match(lg)
        assert value is not None
        lg.scores.append(Score("exact_match", value))
    score = balanced_accuracy(score_name="exact_match")(logs)
    assert score.score == pytest.approx(balanced_accuracy_score(y_true, y_pred), rel=1e-12)
    assert score.reason is not None and score.reason.startswith("mean exact_match averaged over 4 classes")


def test_balanced_accuracy_of_a_score_counts_missing_scores_as_zero() -> None:
    logs = [
        make_log(0, target="x", scores={"ok": 1.0}),
        make_log(1, target="x", status="error"),  # no score: 0 in class x
        make_log(2, target="y", scores={"ok": 1.0}),
        make_log(3, target="y", scores={"ok": 0.0}),
        make_log(4, target=None, scores={"ok": 0.0}),  # no target: skipped
    ]
    assert balanced_accuracy("ok").compute(logs) == pytest.approx((0.5 + 0.5) / 2)


def test_balanced_accuracy_lists_at_most_ten_classes() -> None:
    logs = label_logs([f"c{i:02d}" for i in range(12)], [f"c{i:02d}" for i in range(12)])
    score = balanced_accuracy()(logs)
    assert score.score == 1.0
    assert score.reason is not None and score.reason.endswith("… 2 more")


def test_balanced_accuracy_bad_input() -> None:
    with pytest.raises(ValueError, match="target"):
        balanced_accuracy()([make_log(0, output="a")])
    with pytest.raises(FunctionError, match="score_name"):
        balanced_accuracy(score_name=3)  # type: ignore[arg-type]


def test_evals_see_every_trial(rng: np.random.Generator) -> None:
    # Trials are separate logs of the same row: each counts once, as the runner passes them.
    y_true = list(rng.choice(["a", "b"], size=20))
    logs = [
        make_log(i, output=t if trial == 0 else "a", target=t, trial=trial)
        for trial in range(2)
        for i, t in enumerate(y_true)
    ]
    preds = y_true + ["a"] * 20
    assert accuracy().compute(logs) == pytest.approx(accuracy_score(y_true * 2, preds))


# resampler: the vectorised path a bootstrap uses must give compute's value on any resample


def mixed_logs(gen: np.random.Generator, n: int) -> list[Log]:
    logs = []
    for i in range(n):
        status = "error" if gen.random() < 0.1 else "success"
        scores = {} if status == "error" else {"x": float(gen.normal()), "ok": float(gen.random() < 0.6)}
        if status == "success" and gen.random() < 0.8:
            scores["y"] = float(np.round(scores["x"] + gen.normal(), 1))
        target = None if gen.random() < 0.1 else str(gen.choice(["a", "b", "c"], p=[0.6, 0.3, 0.1]))
        output = str(gen.choice(["a", "b", "c"]))
        logs.append(make_log(i, output=output, target=target, scores=scores, status=status))
    return logs


@pytest.mark.parametrize(
    "ev",
    [
        pearson("x", "y"),
        spearman("x", "y"),
        spearman("x", lambda log: float(log.target == "a") if log.target else None),
        accuracy(),
        balanced_accuracy(),
        balanced_accuracy(score_name="ok"),
    ],
    ids=repr,
)
def test_resampler_equals_compute_on_resamples(ev: DatasetEval, rng: np.random.Generator) -> None:
    logs = mixed_logs(rng, 80)
    statistic = ev.resampler(logs)
    for _ in range(30):
        idx = rng.integers(0, len(logs), size=int(rng.integers(3, 120)))
        try:
            expected = ev.compute([logs[i] for i in idx])
        except ValueError:
            with pytest.raises(ValueError):
                statistic(idx)
            continue
        assert statistic(idx) == pytest.approx(expected, rel=1e-12, abs=1e-14)


def test_resampler_raises_where_compute_does() -> None:
    logs = scored_logs(np.array([1.0, 1.0, 2.0]), np.array([3.0, 4.0, 5.0]))
    statistic = pearson("x", "y").resampler(logs)
    with pytest.raises(ValueError, match="constant"):
        statistic(np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="at least 2"):
        statistic(np.array([2]))
    with pytest.raises(ValueError, match="target"):
        accuracy().resampler(logs)(np.array([0, 1]))


def test_the_default_resampler_calls_compute() -> None:
    class CountOutputs(DatasetEval):
        def evaluate(self, logs: Any) -> tuple[float, str]:
            return float(sum(1 for lg in logs if lg.output)), "counted"

    ev = CountOutputs("count")
    logs = label_logs(["a", "b", "c"], ["x", "", "y"])
    assert ev(logs) == Score("count", 2.0, "counted")
    assert ev.resampler(logs)(np.array([0, 0, 1, 2])) == 3.0
