"""runner/results/intervals.py and the intervals built on it, checked against statsmodels and scipy."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import scipy.stats
from statsmodels.stats.proportion import proportion_confint

import runner.results.intervals
from evals.dataset import accuracy, balanced_accuracy, pearson, spearman
from runner.results.intervals import (
    balanced_accuracy_interval,
    clustered_proportion_interval,
    fisher_z_interval,
    t_interval,
    wilson_interval,
)
from runner.results.paired import paired_compare
from runner.results.stats import dataset_stat_interval
from runner.scoring import Log, Score


def test_doctests() -> None:
    assert doctest.testmod(runner.results.intervals).failed == 0


@pytest.mark.parametrize(("count", "n"), [(0, 5), (1, 5), (29, 30), (30, 30), (7, 40), (500, 1000)])
def test_wilson_matches_statsmodels(count: int, n: int) -> None:
    for confidence in (0.9, 0.95, 0.99):
        ref = proportion_confint(count, n, alpha=1 - confidence, method="wilson")
        assert wilson_interval(count / n, n, confidence) == pytest.approx(ref, abs=1e-12)
    # a fractional (design-effect-adjusted) n too
    assert wilson_interval(0.9, 37.5) == pytest.approx(proportion_confint(0.9 * 37.5, 37.5, method="wilson"), abs=1e-12)


def test_clustered_interval_lies_between_rows_and_trials() -> None:
    rng = np.random.default_rng(1)
    means = rng.integers(0, 4, size=40) / 3  # 40 rows x 3 trials
    p = float(means.mean())
    low, high = clustered_proportion_interval(means, 120)
    by_rows = proportion_confint(p * 40, 40, method="wilson")
    by_trials = proportion_confint(p * 120, 120, method="wilson")
    assert by_rows[0] - 1e-12 <= low <= by_trials[0] + 1e-12 and by_trials[1] - 1e-12 <= high <= by_rows[1] + 1e-12


def logs(outputs: list[str], targets: list[str], rows: list[str] | None = None) -> tuple[list[Log], list[str]]:
    rows = rows or [f"r{i}" for i in range(len(outputs))]
    return [Log(inputs={}, output=o, target=t) for o, t in zip(outputs, targets, strict=True)], rows


@pytest.mark.parametrize("correct", [30, 29, 20, 0])
def test_accuracy_interval_is_wilson(correct: int) -> None:
    lg, rows = logs(["a"] * correct + ["b"] * (30 - correct), ["a"] * 30)
    low, high, method = dataset_stat_interval(accuracy(), lg, rows)
    assert method == "wilson"
    assert (low, high) == pytest.approx(proportion_confint(correct, 30, method="wilson"), abs=1e-12)
    if correct == 30:
        assert low is not None and low < 0.9  # 30/30 no longer reads [1, 1]


def test_accuracy_with_trials_uses_the_design_effect() -> None:
    # 10 rows x 3 trials, every trial right: the interval is that of 10 rows, not of 30 trials
    lg, rows = logs(["a"] * 30, ["a"] * 30, [f"r{i // 3}" for i in range(30)])
    low, high, _ = dataset_stat_interval(accuracy(), lg, rows)
    assert (low, high) == pytest.approx(proportion_confint(10, 10, method="wilson"), abs=1e-12)


def test_balanced_accuracy_interval_at_the_ceiling_and_by_hand() -> None:
    outputs = ["a"] * 15 + ["b"] * 15
    lg, rows = logs(outputs, outputs)
    low, high, method = dataset_stat_interval(balanced_accuracy(), lg, rows)
    assert method == "wilson" and high == 1.0 and low is not None and 0.8 < low < 0.95
    # by hand: Agresti-Coull-adjusted per-class variances, Wilson on the n they imply (at most 30)
    z2 = scipy.stats.norm.ppf(0.975) ** 2
    p_adj = (15 + z2 / 2) / (15 + z2)
    var = 2 * (p_adj * (1 - p_adj) / (15 + z2)) / 4
    n_eff = min(30.0, p_adj * (1 - p_adj) / var)
    assert (low, high) == pytest.approx(proportion_confint(n_eff, n_eff, method="wilson"), abs=1e-12)
    classes = [(np.ones(15), 15), (np.ones(15), 15)]
    assert balanced_accuracy_interval(classes, 1.0) == pytest.approx((low, high), abs=1e-12)
    # a non-0/1 score_name falls back to the bootstrap
    scored = [Log(inputs={}, target=t, scores=[Score("s", 0.5)]) for t in ["a", "b"] * 5]
    _, _, how = dataset_stat_interval(balanced_accuracy(score_name="s"), scored, [f"r{i}" for i in range(10)])
    assert how == "bootstrap"


def corr_logs(x: np.ndarray, y: np.ndarray) -> tuple[list[Log], list[str]]:
    lg = [Log(inputs={}, scores=[Score("x", float(a)), Score("y", float(b))]) for a, b in zip(x, y, strict=True)]
    return lg, [f"r{i}" for i in range(len(lg))]


@pytest.mark.parametrize("n", [5, 10, 30])
def test_pearson_interval_is_scipys_fisher_z(n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.normal(size=n)
    y = 0.5 * x + rng.normal(size=n)
    lg, rows = corr_logs(x, y)
    low, high, method = dataset_stat_interval(pearson("x", "y"), lg, rows)
    ref = scipy.stats.pearsonr(x, y).confidence_interval(0.95)
    assert method == "fisher-z"
    assert (low, high) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_spearman_interval_uses_fiellers_variance() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=20)
    y = x + rng.normal(size=20)
    lg, rows = corr_logs(x, y)
    rho = float(scipy.stats.spearmanr(x, y).statistic)
    low, high, _ = dataset_stat_interval(spearman("x", "y"), lg, rows)
    half = scipy.stats.norm.ppf(0.975) * math.sqrt(1.06 / 17)
    assert (low, high) == pytest.approx((math.tanh(math.atanh(rho) - half), math.tanh(math.atanh(rho) + half)))
    assert fisher_z_interval(0.3, 3) is None  # fewer than 4 pairs: no interval


def test_a_side_constant_up_to_rounding_is_undefined() -> None:
    x = np.array([0.3, 0.1 + 0.2, 0.3, 0.30000000000000004, 0.3])
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    lg, _ = corr_logs(x, y)
    with pytest.raises(ValueError, match="undefined: x is constant"):
        pearson("x", "y")(lg)
    with pytest.raises(ValueError, match="undefined"):
        pearson("x", "y").resampler(lg)(np.arange(5))


@pytest.mark.parametrize("n", [3, 10, 49])
def test_small_n_difference_interval_is_scipys_paired_t(n: int) -> None:
    rng = np.random.default_rng(n)
    a = rng.normal(size=n)
    b = a + rng.normal(0.2, 1, size=n)
    c = paired_compare("s", {f"r{i}": a[i] for i in range(n)}, {f"r{i}": b[i] for i in range(n)})
    ref = scipy.stats.ttest_rel(b, a).confidence_interval(0.95)
    assert c.diff_ci_method == "t"
    assert (c.diff_ci_low, c.diff_ci_high) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert t_interval(b - a) == pytest.approx((ref.low, ref.high), abs=1e-12)
    big = paired_compare("s", {f"r{i}": float(i % 3) for i in range(60)}, {f"r{i}": float(i % 4) for i in range(60)})
    assert big.diff_ci_method == "bootstrap"
