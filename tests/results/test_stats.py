"""runner/results/stats.py, checked against statsmodels, scipy and hand-worked answers."""

from __future__ import annotations

import doctest
import itertools
import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import scipy.stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from evals.dataset import accuracy, pearson
from runner.results.paired import ScoreComparison, compare_scores, holm, paired_compare
from runner.results.stats import (
    MAX_RESAMPLE_SIZE,
    ScoreSummary,
    bootstrap_dataset_stat,
    latency_summary,
    summarize_score,
)
from runner.scoring import Log, Score


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(424242)


def test_all_is_sorted_and_docstring_examples_pass() -> None:
    import runner.results.paired

    attempted = 0
    for module in (runner.results.stats, runner.results.paired):  # the paired comparison has its own module
        assert module.__all__ == sorted(module.__all__)
        result = doctest.testmod(module)
        assert result.failed == 0
        attempted += result.attempted
    assert attempted >= 6


def test_import_does_not_load_numpy_or_scipy() -> None:
    # Whatever the package itself imports, importing the stats module adds neither.
    code = (
        "import sys, runner\n"
        "heavy = lambda: sorted(m for m in ('numpy', 'scipy') if m in sys.modules)\n"
        "before = heavy()\n"
        "import runner.results.stats\n"
        "print(before == heavy())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


# ScoreSummary


def test_format() -> None:
    s = ScoreSummary("em", 0.82, 0.1, 200, 0, 200, 0.7612, 0.8734, "wilson")
    assert s.format() == "0.820 [0.761, 0.873] n=200/200"
    s = ScoreSummary("em", 0.82, 0.1, 195, 5, 200, 0.76, 0.87, "bootstrap")
    assert s.format() == "0.820 [0.760, 0.870] n=195/200 (5 errors)"
    assert ScoreSummary("em", 1.0, 0.0, 1, 1, 2, 1.0, 1.0, "bootstrap").format() == "1.00 [1.00, 1.00] n=1/2 (1 error)"
    assert ScoreSummary("em", None, None, 0, 3, 3, None, None, None).format() == "n/a n=0/3 (3 errors)"
    assert ScoreSummary("ms", 1234.56, 1.0, 9, 0, 9, 1200.1, 1300.9, "bootstrap").format() == (
        "1235 [1200, 1301] n=9/9"
    )


def test_to_dict() -> None:
    s = summarize_score("em", [1, 0, 1], None, 0, 3)
    d = s.to_dict()
    assert d["name"] == "em" and d["n"] == 3 and d["ci_method"] == "wilson"
    assert set(d) == {"name", "mean", "std", "n", "n_errors", "n_total", "ci_low", "ci_high", "ci_method"}


# summarize_score: Wilson


@pytest.mark.parametrize(("k", "n"), [(0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (57, 200), (199, 200)])
@pytest.mark.parametrize("confidence", [0.95, 0.9, 0.99])
def test_wilson_equals_statsmodels(k: int, n: int, confidence: float) -> None:
    values = [1.0] * k + [0.0] * (n - k)
    s = summarize_score("em", values, [f"r{i}" for i in range(n)], 0, n, confidence=confidence)
    low, high = proportion_confint(k, n, alpha=1 - confidence, method="wilson")
    assert s.ci_method == "wilson"
    assert s.ci_low == pytest.approx(low, abs=1e-12)
    assert s.ci_high == pytest.approx(high, abs=1e-12)
    assert s.mean == pytest.approx(k / n)


def test_bools_and_ints_count_as_binary() -> None:
    s = summarize_score("em", [True, False, 1, 0], None, 0, 4)
    assert s.ci_method == "wilson"


def test_mean_and_std(rng: np.random.Generator) -> None:
    x = rng.normal(3, 2, size=50)
    s = summarize_score("x", x, None, 2, 52)
    assert s.mean == pytest.approx(float(np.mean(x)))
    assert s.std == pytest.approx(float(np.std(x, ddof=1)))
    assert (s.n, s.n_errors, s.n_total) == (50, 2, 52)
    assert s.ci_method == "bootstrap"
    assert s.ci_low is not None and s.ci_high is not None
    assert s.ci_low < float(np.mean(x)) < s.ci_high


def test_nothing_scored() -> None:
    s = summarize_score("x", [], [], 4, 4)
    assert (s.mean, s.std, s.ci_low, s.ci_high, s.ci_method) == (None, None, None, None, None)
    assert (s.n, s.n_errors, s.n_total) == (0, 4, 4)


@pytest.mark.parametrize(
    ("values", "clusters"),
    [
        ([0.7], None),
        ([0.3, 0.3, 0.3], None),
        ([0.2, 0.9, 0.4], ["a", "a", "a"]),  # one row: every resample is the same row
        ([0.2, 0.4, 0.1, 0.5], ["a", "a", "b", "b"]),  # rows with identical means
    ],
)
def test_degenerate_input_gives_a_point_interval_without_warnings(
    values: list[float], clusters: list[str] | None
) -> None:
    s = summarize_score("x", values, clusters, 0, len(values))  # warnings are errors in pytest
    assert s.ci_method == "bootstrap"
    assert s.ci_low == s.ci_high == pytest.approx(s.mean)
    if len(values) == 1:
        assert s.std == 0.0


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="clusters for 3 values"):
        summarize_score("x", [1, 2, 3], ["a"], 0, 3)
    with pytest.raises(ValueError, match="finite"):
        summarize_score("x", [1, math.nan], None, 0, 2)
    with pytest.raises(ValueError, match="n_total"):
        summarize_score("x", [1, 2], None, 0, 1)
    with pytest.raises(ValueError, match="confidence"):
        summarize_score("x", [1, 2], None, 0, 2, confidence=95)


# summarize_score: bootstrap


def test_bootstrap_equals_scipy_bca_for_independent_values(rng: np.random.Generator) -> None:
    x = rng.exponential(size=40)
    s = summarize_score("x", x, None, 0, 40, seed=3)
    ref = scipy.stats.bootstrap(
        (x,), np.mean, n_resamples=2000, method="BCa", vectorized=True, rng=np.random.default_rng(3)
    )
    # Same generator, same draws: only the (closed-form) jackknife differs, in the last bits.
    assert s.ci_low == pytest.approx(ref.confidence_interval.low, rel=1e-9)
    assert s.ci_high == pytest.approx(ref.confidence_interval.high, rel=1e-9)


def test_bootstrap_equals_scipy_bca_on_clusters_of_uneven_size(rng: np.random.Generator) -> None:
    # the interval is of the mean over rows of each row's mean over its trials
    rows = np.repeat(np.arange(30), rng.integers(1, 5, size=30))
    values = rng.random(len(rows))
    s = summarize_score("quality", values, [f"row{r}" for r in rows], 0, len(values))
    assert s.ci_method == "bootstrap"
    means = np.bincount(rows, weights=values) / np.bincount(rows)
    assert s.mean == pytest.approx(float(means.mean()), rel=1e-12)
    ref = scipy.stats.bootstrap(
        (means, np.ones(30)),
        lambda a, b, axis: a.sum(axis=axis) / b.sum(axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=2000,
        method="BCa",
        rng=np.random.default_rng(0),
    )
    assert s.ci_low == pytest.approx(ref.confidence_interval.low, rel=1e-9)
    assert s.ci_high == pytest.approx(ref.confidence_interval.high, rel=1e-9)


def test_bootstrap_is_deterministic_and_seeded(rng: np.random.Generator) -> None:
    x = list(rng.random(300))
    rows = [i // 3 for i in range(300)]
    first = summarize_score("x", x, rows, 0, 300)
    assert summarize_score("x", x, rows, 0, 300) == first
    assert summarize_score("x", x, rows, 0, 300, seed=1) != first


def test_duplicated_trials_do_not_shrink_the_interval(rng: np.random.Generator) -> None:
    x = rng.random(30)
    once = summarize_score("x", x, None, 0, 30)
    # Five identical trials per row carry no more information than one.
    five = np.repeat(x, 5)
    rows = np.repeat(np.arange(30), 5).tolist()
    clustered = summarize_score("x", five, rows, 0, 150)
    assert clustered.ci_low == pytest.approx(once.ci_low, rel=1e-12)
    assert clustered.ci_high == pytest.approx(once.ci_high, rel=1e-12)
    # Treated as 150 independent values the interval would be about sqrt(5) times narrower.
    naive = summarize_score("x", five, None, 0, 150)
    assert naive.ci_low is not None and naive.ci_high is not None
    assert clustered.ci_low is not None and clustered.ci_high is not None
    assert (naive.ci_high - naive.ci_low) < 0.6 * (clustered.ci_high - clustered.ci_low)


def test_binary_trials_get_wilson_on_the_design_effect_adjusted_n(rng: np.random.Generator) -> None:
    p_row = rng.random(40)
    values = (rng.random((40, 3)) < p_row[:, None]).astype(float).ravel()
    rows = np.repeat(np.arange(40), 3).tolist()
    s = summarize_score("em", values, rows, 0, 120)
    assert s.ci_method == "wilson-clustered"
    means = values.reshape(40, 3).mean(axis=1)
    p = float(means.mean())
    n_eff = min(120.0, max(40.0, p * (1 - p) / (means.var(ddof=1) / 40)))
    low, high = proportion_confint(p * n_eff, n_eff, alpha=0.05, method="wilson")
    assert (s.ci_low, s.ci_high) == pytest.approx((low, high), rel=1e-9)


def test_perfect_trials_do_not_make_a_perfect_score_certain() -> None:
    # 30 rows x 3 trials, all passed: trials of a row may be perfectly correlated, so the interval
    # is the one of 30 independent rows, never [1, 1] (issue 15)
    s = summarize_score("em", [1.0] * 90, [f"r{i // 3}" for i in range(90)], 0, 90)
    low, high = proportion_confint(30, 30, alpha=0.05, method="wilson")
    assert (s.ci_low, s.ci_high) == pytest.approx((low, high), rel=1e-9)
    assert s.ci_low < 0.9  # type: ignore[operator]
    zeros = summarize_score("em", [0.0] * 90, [f"r{i // 3}" for i in range(90)], 0, 90)
    assert (zeros.ci_low, zeros.ci_high) == pytest.approx(proportion_confint(0, 30, method="wilson"), abs=1e-12)


def test_one_estimand_mean_of_row_means_when_trials_fail_unevenly() -> None:
    # row a: 3 scored trials all 1; row b: 1 scored trial (two failed), 0. Pooled: 0.75; the
    # estimand (and what compare uses): (1 + 0) / 2 = 0.5, inside its own interval
    s = summarize_score("em", [1.0, 1.0, 1.0, 0.0], ["a", "a", "a", "b"], 2, 6)
    assert s.mean == 0.5
    assert s.ci_low is not None and s.ci_high is not None and s.ci_low <= 0.5 <= s.ci_high
    c = paired_compare("em", {"a": 1.0, "b": 0.0}, {"a": 1.0, "b": 0.0})
    assert c.mean_a == s.mean


@pytest.mark.parametrize("n_rows", [20_000, 100_000])
def test_large_inputs_are_vectorised_and_have_the_normal_theory_width(n_rows: int) -> None:
    # Above MAX_RESAMPLE_SIZE rows each resample draws a subset and rescales; the width must
    # still match the textbook standard error (and this must run in a fraction of a second).
    assert n_rows > MAX_RESAMPLE_SIZE
    gen = np.random.default_rng(5)
    x = gen.exponential(size=n_rows)
    s = summarize_score("x", x, None, 0, n_rows)
    assert s.ci_low is not None and s.ci_high is not None
    expected = 2 * 1.959964 * x.std(ddof=1) / math.sqrt(n_rows)
    assert (s.ci_high - s.ci_low) == pytest.approx(expected, rel=0.08)
    assert s.ci_low < float(x.mean()) < s.ci_high


def test_large_clustered_inputs(rng: np.random.Generator) -> None:
    n_rows, trials = 25_000, 4
    p_row = rng.random(n_rows)
    values = (rng.random((n_rows, trials)) < p_row[:, None]).astype(float)
    rows = np.repeat(np.arange(n_rows), trials).tolist()
    s = summarize_score("em", values.ravel(), rows, 0, n_rows * trials)
    row_means = values.mean(axis=1)
    expected = 2 * 1.959964 * row_means.std(ddof=1) / math.sqrt(n_rows)
    assert s.ci_low is not None and s.ci_high is not None
    assert (s.ci_high - s.ci_low) == pytest.approx(expected, rel=0.08)


def test_rescaled_interval_stays_within_the_data() -> None:
    x = np.zeros(50_000)
    x[:3] = 1.0
    rows = np.repeat(np.arange(25_000), 2).tolist()
    s = summarize_score("rare", x, rows, 0, 50_000)
    assert s.ci_low is not None and s.ci_low >= 0.0


# latency


def test_latency_summary(rng: np.random.Generator) -> None:
    lat = list(rng.exponential(2.0, size=101))
    got = latency_summary([*lat, None])
    assert got["mean"] == pytest.approx(np.mean(lat))
    assert got["p50"] == pytest.approx(np.median(lat))
    assert got["p95"] == pytest.approx(np.percentile(lat, 95))
    assert got["max"] == pytest.approx(max(lat))
    assert latency_summary([]) == {"mean": None, "p50": None, "p95": None, "max": None}
    assert latency_summary([None]) == {"mean": None, "p50": None, "p95": None, "max": None}
    assert latency_summary([0.25]) == {"mean": 0.25, "p50": 0.25, "p95": 0.25, "max": 0.25}


# bootstrap of dataset-level evals


def correlated_logs(gen: np.random.Generator, n_rows: int, trials: int = 1) -> list[Log]:
    x = gen.normal(size=n_rows)
    logs = []
    for t in range(trials):
        y = x + gen.normal(size=n_rows)
        for i in range(n_rows):
            logs.append(
                Log(
                    inputs={},
                    metadata={"row_id": f"r{i}", "trial": t},
                    scores=[Score("x", float(x[i])), Score("y", float(y[i]))],
                )
            )
    return logs


def test_bootstrap_dataset_stat(rng: np.random.Generator) -> None:
    logs = correlated_logs(rng, 80)
    rows = [lg.metadata["row_id"] for lg in logs]
    ev = pearson("x", "y")
    low, high = bootstrap_dataset_stat(ev.compute, logs, rows, n_resamples=400)
    assert low is not None and high is not None
    assert low < ev.compute(logs) < high
    assert bootstrap_dataset_stat(ev.compute, logs, rows, n_resamples=400) == (low, high)
    # comparable to the Fisher-z interval of r
    r = ev.compute(logs)
    z = math.atanh(r)
    fisher = (math.tanh(z - 1.96 / math.sqrt(77)), math.tanh(z + 1.96 / math.sqrt(77)))
    assert high - low == pytest.approx(fisher[1] - fisher[0], rel=0.35)


def test_bootstrap_dataset_stat_resamples_rows_with_their_trials(rng: np.random.Generator) -> None:
    logs = correlated_logs(rng, 60, trials=3)
    seen: list[int] = []

    def stat(sample: list[Any]) -> float:
        by_row: dict[str, int] = {}
        for lg in sample:
            by_row[lg.metadata["row_id"]] = by_row.get(lg.metadata["row_id"], 0) + 1
        seen.extend(by_row.values())
        return float(len(sample))

    rows = [lg.metadata["row_id"] for lg in logs]
    bootstrap_dataset_stat(stat, logs, rows, n_resamples=50)
    assert all(count % 3 == 0 for count in seen)  # a row always comes with all 3 trials


def test_bootstrap_dataset_stat_skips_failures_and_gives_up_when_most_fail(rng: np.random.Generator) -> None:
    logs = correlated_logs(rng, 30)
    rows = [lg.metadata["row_id"] for lg in logs]
    calls = iter(range(10**6))

    def flaky(sample: list[Any]) -> float:
        i = next(calls)
        if i % 4 == 0:
            raise ValueError("constant input")
        return math.nan if i % 4 == 1 else float(len(sample))

    assert bootstrap_dataset_stat(flaky, logs, rows, n_resamples=100) == (30.0, 30.0)

    def always_fails(sample: list[Any]) -> float:
        raise ValueError("nope")

    assert bootstrap_dataset_stat(always_fails, logs, rows) == (None, None)
    assert bootstrap_dataset_stat(len, logs[:1], rows[:1]) == (None, None)
    with pytest.raises(ValueError, match="clusters"):
        bootstrap_dataset_stat(len, logs, rows[:3])


# comparisons


def test_mcnemar_equals_statsmodels(rng: np.random.Generator) -> None:
    for trial in range(20):
        n = int(rng.integers(5, 80))
        a = (rng.random(n) < 0.6).astype(int)
        b = np.where(rng.random(n) < 0.3, 1 - a, a)
        keys = [f"r{i}" for i in range(n)]
        a_map = dict(zip(keys, a.tolist(), strict=True))
        b_map = dict(zip(keys, b.tolist(), strict=True))
        c = paired_compare("em", a_map, b_map, seed=trial)
        table = [
            [int(np.sum((a == 0) & (b == 0))), int(np.sum((a == 0) & (b == 1)))],
            [int(np.sum((a == 1) & (b == 0))), int(np.sum((a == 1) & (b == 1)))],
        ]
        assert c.test == "mcnemar-exact"
        assert c.p_value == pytest.approx(mcnemar(table, exact=True).pvalue, abs=1e-12)
        assert c.diff == pytest.approx(b.mean() - a.mean())
        assert (c.wins, c.ties, c.losses) == (table[0][1], table[0][0] + table[1][1], table[1][0])


def test_mcnemar_without_discordant_pairs() -> None:
    c = paired_compare("em", {"a": 1, "b": 0}, {"a": 1, "b": 0})
    assert c.p_value == 1.0
    assert (c.diff, c.diff_ci_low, c.diff_ci_high) == (0.0, 0.0, 0.0)


def continuous_pair(diffs: list[float]) -> tuple[dict[str, float], dict[str, float]]:
    a = {f"r{i}": 0.5 for i in range(len(diffs))}
    b = {f"r{i}": 0.5 + d for i, d in enumerate(diffs)}
    return a, b


def test_permutation_test_exact_hand_worked() -> None:
    # Differences 0.1, 0.2, 0.3 (and a tie, which sign flips cannot change). Of the 2^3 sign
    # patterns, the sums are ±0.6, ±0.4, ±0.2, 0, 0: only +0.6 and -0.6 are as extreme as 0.6.
    a, b = continuous_pair([0.1, 0.2, 0.3, 0.0])
    c = paired_compare("sim", a, b)
    assert c.test == "paired-permutation"
    assert c.p_value == pytest.approx(2 / 8)
    assert (c.wins, c.ties, c.losses, c.n_shared) == (3, 1, 0, 4)
    # 4 up, 1 down by the same amount: |sum| >= 3 for k in {0, 1, 4, 5} ups of 5 -> 12/32.
    a, b = continuous_pair([0.25, 0.25, 0.25, 0.25, -0.25])
    assert paired_compare("sim", a, b).p_value == pytest.approx(12 / 32)


def brute_force_sign_flip_p(d: np.ndarray) -> float:
    d = d[d != 0]
    observed = abs(d.sum())
    hits = sum(abs(np.dot(signs, d)) >= observed - 1e-12 for signs in itertools.product([1, -1], repeat=len(d)))
    return float(hits / 2 ** len(d))


def test_permutation_test_exact_on_random_data(rng: np.random.Generator) -> None:
    for _ in range(10):
        n = int(rng.integers(2, 13))
        va, vb = rng.random(n), rng.random(n)
        a = {f"r{i}": float(x) for i, x in enumerate(va)}
        b = {f"r{i}": float(x) for i, x in enumerate(vb)}
        assert paired_compare("s", a, b).p_value == pytest.approx(brute_force_sign_flip_p(vb - va))


@pytest.mark.parametrize("m", [17, 100, 1001])
def test_the_monte_carlo_permutation_test_is_its_sign_flips_summed_directly(m: int, rng: np.random.Generator) -> None:
    # The table of 8-row sums is only a faster way to add up the flipped rows: row 8g+j of flip
    # k is flipped when bit j of byte (g, k) is set, the bytes being the seed's raw random words.
    from runner.results.paired import N_PERMUTATIONS, _permutation_p

    d = np.round(rng.normal(0.05, 0.3, size=m), 3)
    d = d[d != 0]
    n = len(d)
    groups = -(-n // 8)
    words = np.random.default_rng(7).bit_generator.random_raw(-(-groups * N_PERMUTATIONS // 8))
    flips = words.view(np.uint8)[: groups * N_PERMUTATIONS].reshape(groups, N_PERMUTATIONS)
    flipped_rows = np.unpackbits(flips[:, None, :], axis=1, bitorder="little").reshape(groups * 8, -1)[:n]
    totals = d @ (1 - 2 * flipped_rows.astype(np.float64))
    threshold = abs(d.sum()) - 1e-9 * np.abs(d).sum()
    expected = (1 + np.count_nonzero(np.abs(totals) >= threshold)) / (1 + N_PERMUTATIONS)
    assert _permutation_p(d, 7) == expected


def test_permutation_test_monte_carlo_agrees_with_scipy(rng: np.random.Generator) -> None:
    va = rng.random(60)
    vb = np.clip(va + rng.normal(0.03, 0.12, size=60), 0, 1)
    a = {f"r{i}": float(x) for i, x in enumerate(va)}
    b = {f"r{i}": float(x) for i, x in enumerate(vb)}
    c = paired_compare("s", a, b)
    ref = scipy.stats.permutation_test(
        (vb - va,),
        np.mean,
        permutation_type="samples",
        n_resamples=20_000,
        vectorized=True,
        rng=np.random.default_rng(1),
    )
    assert c.test == "paired-permutation"
    assert c.p_value == pytest.approx(ref.pvalue, abs=0.02)
    assert paired_compare("s", a, b) == c  # seeded
    assert 0 < c.p_value < 1  # type: ignore[operator]


def test_paired_compare_rows_and_interval(rng: np.random.Generator) -> None:
    va = rng.random(100)
    vb = va + 0.1 + rng.normal(0, 0.05, size=100)
    a = {f"r{i}": float(x) for i, x in enumerate(va)}
    b = {f"r{i + 10}": float(x) for i, x in enumerate(vb)}  # rows r10..r109
    c = paired_compare("s", a, b)
    assert (c.n_shared, c.only_a, c.only_b) == (90, 10, 10)
    shared_a, shared_b = va[10:], vb[:90]
    assert c.mean_a == pytest.approx(shared_a.mean())
    assert c.mean_b == pytest.approx(shared_b.mean())
    assert c.diff == pytest.approx(c.mean_b - c.mean_a)  # type: ignore[operator]
    assert c.diff_ci_low is not None and c.diff_ci_high is not None
    assert c.diff_ci_low < c.diff < c.diff_ci_high  # type: ignore[operator]
    d = shared_b - shared_a
    ref = scipy.stats.bootstrap((d,), np.mean, n_resamples=2000, method="BCa", rng=np.random.default_rng(0))
    assert c.diff_ci_low == pytest.approx(ref.confidence_interval.low, rel=1e-9)
    assert c.diff_ci_high == pytest.approx(ref.confidence_interval.high, rel=1e-9)


def test_paired_compare_without_shared_rows() -> None:
    c = paired_compare("s", {"a": 1.0}, {"b": 0.0})
    assert (c.n_shared, c.only_a, c.only_b) == (0, 1, 1)
    assert c.p_value is None and c.diff is None and c.test is None


def test_holm_equals_statsmodels(rng: np.random.Generator) -> None:
    for n in [1, 2, 5, 12]:
        p = rng.random(n) ** 3
        p[0] = p[-1]  # a tie
        expected = multipletests(p, method="holm")[1]
        np.testing.assert_allclose(holm(list(p)), expected, rtol=1e-12)
    assert holm([]) == []
    assert holm([0.5, 0.9, 1.0]) == [1.0, 1.0, 1.0]


def test_compare_scores_adjusts_across_scores(rng: np.random.Generator) -> None:
    keys = [f"r{i}" for i in range(50)]
    a = {
        "em": dict(zip(keys, (rng.random(50) < 0.5).astype(float).tolist(), strict=True)),
        "sim": dict(zip(keys, rng.random(50).tolist(), strict=True)),
        "only_in_a": {"r0": 1.0},
    }
    b = {
        "em": dict(zip(keys, (rng.random(50) < 0.8).astype(float).tolist(), strict=True)),
        "sim": dict(zip(keys, (rng.random(50) * 0.9).tolist(), strict=True)),
        "only_in_b": {"r1": 0.0},
    }
    results = compare_scores(a, b)
    assert [r.name for r in results] == ["em", "sim", "only_in_a", "only_in_b"]
    assert all(isinstance(r, ScoreComparison) for r in results)
    tested = results[:2]
    p = [r.p_value for r in tested]
    assert None not in p
    expected = multipletests(p, method="holm")[1]
    assert [r.p_adjusted for r in tested] == pytest.approx(list(expected))
    assert [r.test for r in tested] == ["mcnemar-exact", "paired-permutation"]
    assert results[2].p_adjusted is None and results[2].only_a == 1
    assert results[3].p_adjusted is None and results[3].only_b == 1
    assert results[0].to_dict()["p_adjusted"] == results[0].p_adjusted


def test_averaged_trials_use_the_permutation_test() -> None:
    a = {"r1": 2 / 3, "r2": 1.0, "r3": 0.0}
    b = {"r1": 1.0, "r2": 1.0, "r3": 1 / 3}
    assert paired_compare("em", a, b).test == "paired-permutation"


def test_bootstrap_dataset_stat_uses_the_eval_resampler_with_the_same_result(rng: np.random.Generator) -> None:
    logs = correlated_logs(rng, 50, trials=2)
    rows = [lg.metadata["row_id"] for lg in logs]
    for lg in logs:
        lg.target, lg.output = "yes", "yes" if rng.random() < 0.7 else "no"
    for ev in [pearson("x", "y"), accuracy()]:

        def plain_compute(sample: list[Any], ev: Any = ev) -> float:
            return float(ev.compute(sample))  # a plain function: no resampler to find

        plain = bootstrap_dataset_stat(plain_compute, logs, rows, n_resamples=200)
        fast = bootstrap_dataset_stat(ev.compute, logs, rows, n_resamples=200)
        direct = bootstrap_dataset_stat(ev, logs, rows, n_resamples=200)
        assert plain[0] is not None and plain[1] is not None
        assert fast == pytest.approx(plain, rel=1e-12)
        assert direct == fast


def test_bootstrap_dataset_stat_falls_back_when_a_resampler_breaks(rng: np.random.Generator) -> None:
    class Broken:
        def resampler(self, logs: Any) -> Any:
            raise RuntimeError("bug")

        def compute(self, logs: Any) -> float:
            return float(len(logs))

    logs = correlated_logs(rng, 10)
    rows = [lg.metadata["row_id"] for lg in logs]
    assert bootstrap_dataset_stat(Broken().compute, logs, rows, n_resamples=20) == (10.0, 10.0)


def test_monte_carlo_permutation_agrees_with_full_enumeration(rng: np.random.Generator) -> None:
    # 18 differing rows: beyond exact enumeration in paired_compare, small enough to enumerate here.
    d = np.round(rng.normal(0.2, 0.5, size=18), 3)
    patterns = 1 - 2 * ((np.arange(2**18)[:, None] >> np.arange(18)) & 1).astype(np.int8)
    exact = float(np.mean(np.abs(patterns @ d) >= abs(d.sum()) - 1e-9))
    a = {f"r{i}": 0.0 for i in range(18)}
    b = {f"r{i}": float(x) for i, x in enumerate(d)}
    c = paired_compare("s", a, b, seed=11)
    assert c.test == "paired-permutation"
    assert c.p_value == pytest.approx(exact, abs=0.015)  # 10,000 flips: SE <= 0.005
    assert paired_compare("s", a, b, seed=11).p_value == c.p_value
