"""evals/reducers.py: pass@k, majority, max, min over trials, against references and in a run."""

from __future__ import annotations

import itertools
import random
import statistics

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint

from evals import exact_match
from evals.reducers import pass_at_k, reduce_trials
from runner import Experiment
from runner.errors import FunctionError
from runner.scoring import Log, Score
from runner.store import Store


def chen_pass_at_k(n: int, c: int, k: int) -> float:
    """The numerically stable form from Chen et al. (2021), the reference implementation."""
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


@pytest.mark.parametrize(("n", "k"), [(1, 1), (3, 1), (5, 2), (10, 3), (10, 10)])
def test_pass_at_k_matches_the_reference(n: int, k: int) -> None:
    for c in range(n + 1):
        assert pass_at_k(n, c, k) == pytest.approx(chen_pass_at_k(n, c, k), abs=1e-12)
    # and the definition: the chance that a random k-subset of the trials holds a pass
    trials = [1] * 2 + [0] * (n - 2) if n >= 2 else [1]
    subsets = list(itertools.combinations(trials, k))
    assert pass_at_k(n, sum(trials), k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def logs_of(rows: dict[str, list[float | None]], score: str = "em") -> list[Log]:
    return [
        Log(inputs={}, metadata={"row_id": rid, "trial": t}, scores=[] if v is None else [Score(score, v)])
        for rid, values in rows.items()
        for t, v in enumerate(values)
    ]


def test_reducers_against_numpy_and_statistics() -> None:
    rng = random.Random(3)
    rows: dict[str, list[float | None]] = {f"r{i}": [float(rng.random() < 0.6) for _ in range(5)] for i in range(30)}
    logs = logs_of(rows)
    per_row = {rid: [v for v in vals if v is not None] for rid, vals in rows.items()}
    expected = {
        "max": np.mean([max(v) for v in per_row.values()]),
        "min": np.mean([min(v) for v in per_row.values()]),
        "majority": np.mean([statistics.mode(v) for v in per_row.values()]),  # 5 trials: no ties
        "pass@2": np.mean([chen_pass_at_k(5, int(sum(v)), 2) for v in per_row.values()]),
    }
    for reducer, value in expected.items():
        ev = reduce_trials("em", reducer)
        assert ev.name == f"em_{reducer}"
        assert ev(logs).score == pytest.approx(float(value), abs=1e-12)
        low, high = ev.interval(logs, [log.metadata["row_id"] for log in logs])  # type: ignore[attr-defined]
        ref = proportion_confint(float(value) * 30, 30, alpha=0.05, method="wilson")
        assert (low, high) == pytest.approx(ref, abs=1e-12)


def test_missing_trials_fail_pass_at_k_and_are_skipped_by_the_others() -> None:
    logs = logs_of({"a": [1.0, None, 0.0], "b": [None, None, None], "c": [2.0, 2.0, 3.0]}, "len")
    assert reduce_trials("len", "max")(logs).score == pytest.approx((1 + 3) / 2)
    assert "1 row without len skipped" in (reduce_trials("len", "max")(logs).reason or "")
    assert reduce_trials("len", "majority")(logs).score == pytest.approx((0 + 2) / 2)  # a tie goes low
    # values outside [0, 1]: no Wilson interval (the run falls back to the bootstrap)
    assert reduce_trials("len", "max").interval(logs, [g.metadata["row_id"] for g in logs]) is None  # type: ignore[attr-defined]
    binary = logs_of({"a": [1.0, None, 0.0], "b": [None, None, None]})
    # a: 1 pass of 3 trials (an errored trial is a failed attempt); b: 0 of 3
    assert reduce_trials("em", "pass@2")(binary).score == pytest.approx((pass_at_k(3, 1, 2) + 0) / 2)
    with pytest.raises(ValueError, match="needs at least 4 trials per row"):
        reduce_trials("em", "pass@4")(binary)
    with pytest.raises(ValueError, match="needs a 0/1 score"):
        reduce_trials("len", "pass@1")(logs)


@pytest.mark.parametrize("bad", ["pass@", "pass@0", "mean", "best", 3])
def test_a_bad_reducer_is_refused_when_defined(bad: object) -> None:
    with pytest.raises(FunctionError, match=r"reducer is one of|at least 1"):
        reduce_trials("em", bad)  # type: ignore[arg-type]


def test_reducers_are_shown_and_stored_like_any_dataset_level_stat() -> None:
    rng = random.Random(7)

    def answer(q: str) -> str:
        return q if rng.random() < 0.5 else "?"

    exp = Experiment(
        name="trials",
        data=[{"q": str(i), "target": str(i)} for i in range(20)],
        func=answer,
        evals=[exact_match],
        n_trials=4,
        dataset_level_evals=[reduce_trials("exact_match", "pass@2"), reduce_trials("exact_match", "min")],
    )
    result = exp.run(quiet=True)
    assert set(result.dataset_level_stats) == {"exact_match_pass@2", "exact_match_min"}
    assert result.dataset_level_ci["exact_match_pass@2"][0] is not None
    assert "dataset-level exact_match_pass@2:" in result.summary_text()
    store = Store(".runner/runner.db")
    try:
        stored = store.get_experiment(result.experiment_uuid)
    finally:
        store.close()
    names = {s["name"]: s for s in stored["dataset_level_stats"]}
    assert names["exact_match_pass@2"]["score"] == pytest.approx(result.dataset_level_stats["exact_match_pass@2"])
    assert "(wilson over rows)" in names["exact_match_min"]["reason"]
    with pytest.raises(FunctionError, match="builds a scorer"):
        Experiment(name="x", data=[{"q": 1}], func=answer, dataset_level_evals=[reduce_trials])
