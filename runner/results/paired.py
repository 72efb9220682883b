"""Run B against run A, paired by row: the difference with its interval, a paired p-value
(McNemar's exact test for 0/1 scores, a paired permutation test otherwise) and Holm's
adjustment across scores. Pure functions; numpy and scipy load inside them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from runner.results.intervals import t_interval
from runner.results.stats import N_RESAMPLES, _bootstrap_ratio, _constant

if TYPE_CHECKING:
    from runner.results.stats import FloatArray

__all__ = ["ScoreComparison", "compare_scores", "holm", "paired_compare"]

TestName = Literal["mcnemar-exact", "paired-permutation"]

#: Up to this many rows with a nonzero difference, the permutation test enumerates every sign.
MAX_EXACT_PERMUTATION = 16
#: Sign flips drawn by the Monte Carlo permutation test.
N_PERMUTATIONS = 10_000
#: Below this many shared rows the interval of B − A is Student's t, not the bootstrap: a
#: bootstrap of 10 rows excludes 0 in about 11 % of A/A pairs, twice its nominal 5 % and twice
#: as often as the test rejects (benchmarks/coverage.py measures both).
MIN_BOOTSTRAP_ROWS = 50


@dataclass(frozen=True)
class ScoreComparison:
    """Run B against run A on one score, over the rows both runs scored.

    Means and the difference are over the shared rows only, so ``diff == mean_b - mean_a``; rows
    scored in one run only are counted in ``only_a`` / ``only_b``.
    """

    #: the score's name
    name: str
    #: mean of run A over the shared rows (None without shared rows)
    mean_a: float | None
    #: mean of run B over the shared rows (None without shared rows)
    mean_b: float | None
    #: mean_b - mean_a: positive means B scores higher
    diff: float | None
    #: interval of diff (see ``diff_ci_method``)
    diff_ci_low: float | None
    diff_ci_high: float | None
    #: two-sided p-value of "no difference" (None without shared rows)
    p_value: float | None
    #: "mcnemar-exact" when every value is 0/1, else "paired-permutation"
    test: TestName | None
    #: shared rows where B > A, B == A, B < A
    wins: int
    ties: int
    losses: int
    #: rows scored in both runs, in A only, in B only
    n_shared: int
    only_a: int
    only_b: int
    #: p_value adjusted for the scores compared together (Holm), filled by compare_scores
    p_adjusted: float | None = None
    #: how the interval of diff was computed: "t" (Student's t, below
    #: :data:`MIN_BOOTSTRAP_ROWS` shared rows), "bootstrap" (BCa, resampling shared rows), or
    #: "exact" (no variation: every row changed by the same amount)
    diff_ci_method: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)


def _mcnemar_exact(a: FloatArray, b: FloatArray) -> float:
    """Exact McNemar p-value: ``scipy.stats.binomtest(worse, worse + better, 0.5).pvalue``.

    At p = 1/2 the binomial is symmetric, so the two-sided p-value is twice the smaller tail,
    computed with ``scipy.special.bdtr``: the compare page then needs only ``scipy.special``,
    which imports in a third of the time ``scipy.stats`` takes.
    """
    import numpy as np
    from scipy.special import bdtr

    worse = int(np.count_nonzero((a == 1) & (b == 0)))
    better = int(np.count_nonzero((a == 0) & (b == 1)))
    n = worse + better
    if n == 0 or 2 * worse == n:
        return 1.0
    return min(1.0, 2.0 * float(bdtr(min(worse, better), n, 0.5)))


def _permutation_p(diffs: FloatArray, seed: int) -> float:
    """Two-sided paired permutation (sign-flip) test of mean difference zero.

    Rows with a zero difference are unchanged by a flip and dropped. With at most
    :data:`MAX_EXACT_PERMUTATION` left every sign pattern is enumerated (an exact p-value);
    otherwise :data:`N_PERMUTATIONS` seeded random flips give ``(1 + hits) / (1 + flips)``.
    """
    import numpy as np

    d = diffs[diffs != 0]
    m = len(d)
    if m == 0:
        return 1.0
    observed = abs(float(d.sum()))
    # Sums of the same numbers in another order differ in the last bits; count those as ties.
    threshold = observed - 1e-9 * float(np.abs(d).sum())
    if m <= MAX_EXACT_PERMUTATION:
        patterns = np.arange(2**m)[:, None] >> np.arange(m) & 1
        totals = (1 - 2 * patterns) @ d
        return float(np.count_nonzero(np.abs(totals) >= threshold) / 2**m)
    # Monte Carlo, 8 rows per random byte: table[g, byte] is the sum of the differences of group
    # g's rows whose bit is set (flipped), so a flip costs m/8 lookups instead of m products.
    # Groups are taken in blocks whose tables stay in cache, all flips at a time.
    groups = -(-m // 8)
    padded = np.zeros(groups * 8)
    padded[:m] = d
    bits = (np.arange(256)[:, None] >> np.arange(8)) & 1
    table = padded.reshape(groups, 8) @ bits.T
    block = 64
    offsets = (np.arange(block) * 256)[:, None]
    # The random bytes are the bit generator's raw words seen as bytes: for 10,000 flips these
    # are the bytes rng.integers(0, 256, dtype=np.uint8) gives, at a third of its cost.
    bits_source = np.random.default_rng(seed).bit_generator
    flipped = np.zeros(N_PERMUTATIONS)
    for g0 in range(0, groups, block):
        g1 = min(groups, g0 + block)
        n = (g1 - g0) * N_PERMUTATIONS
        flips = bits_source.random_raw(-(-n // 8)).view(np.uint8)[:n].reshape(g1 - g0, N_PERMUTATIONS)
        flipped += np.take(table[g0:g1].ravel(), flips + offsets[: g1 - g0]).sum(axis=0)
    hits = int(np.count_nonzero(np.abs(float(d.sum()) - 2 * flipped) >= threshold))
    return (1 + hits) / (1 + N_PERMUTATIONS)


def paired_compare(
    name: str,
    a: Mapping[str, float],
    b: Mapping[str, float],
    *,
    seed: int = 0,
    confidence: float = 0.95,
) -> ScoreComparison:
    """Compare one score of run B with run A, pairing values by row id.

    ``a`` and ``b`` map row id to the row's value (with several trials, average them per row
    first). On the shared rows: the means, ``diff = mean_b - mean_a`` with its interval
    (Student's t below :data:`MIN_BOOTSTRAP_ROWS` shared rows, where a bootstrap undercovers,
    else BCa),
    wins/ties/losses, and a two-sided p-value: McNemar's exact test when every value is 0/1, else
    a paired permutation test (exact up to 16 differing rows, else 10,000 seeded sign flips).

    >>> paired_compare("exact_match", {"r1": 0, "r2": 1}, {"r1": 1, "r2": 1}).diff
    0.5
    """
    import numpy as np

    shared = list(filter(b.__contains__, a))  # (map and filter: C loops over 100,000 rows)
    only_a = len(a) - len(shared)
    only_b = len(b) - len(shared)
    if not shared:
        return ScoreComparison(name, None, None, None, None, None, None, None, 0, 0, 0, 0, only_a, only_b)
    va = np.fromiter(map(a.__getitem__, shared), dtype=np.float64, count=len(shared))
    vb = np.fromiter(map(b.__getitem__, shared), dtype=np.float64, count=len(shared))
    if not (np.all(np.isfinite(va)) and np.all(np.isfinite(vb))):
        raise ValueError(f"paired_compare({name!r}): values must be finite numbers")
    d = vb - va
    mean_a, mean_b = float(va.mean()), float(vb.mean())
    diff = float(d.mean())
    ci_method: str
    if len(d) < 2 or _constant(d):
        ci_low, ci_high, ci_method = diff, diff, "exact"
    elif len(d) < MIN_BOOTSTRAP_ROWS:
        ci_low, ci_high = t_interval(d, confidence)
        ci_method = "t"
    else:
        ci_low, ci_high = _bootstrap_ratio(
            d, np.ones_like(d), confidence=confidence, n_resamples=N_RESAMPLES, seed=seed
        )
        ci_method = "bootstrap"
    binary = all(bool(np.all((x == 0) | (x == 1))) for x in (va, vb))
    test: TestName
    if binary:
        test, p = "mcnemar-exact", _mcnemar_exact(va, vb)
    else:
        test, p = "paired-permutation", _permutation_p(d, seed)
    return ScoreComparison(
        name=name,
        mean_a=mean_a,
        mean_b=mean_b,
        diff=diff,
        diff_ci_low=ci_low,
        diff_ci_high=ci_high,
        p_value=min(1.0, p),
        test=test,
        wins=int(np.count_nonzero(d > 0)),
        ties=int(np.count_nonzero(d == 0)),
        losses=int(np.count_nonzero(d < 0)),
        n_shared=len(shared),
        only_a=only_a,
        only_b=only_b,
        diff_ci_method=ci_method,
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order: monotone and at most 1.

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def compare_scores(
    a_scores: Mapping[str, Mapping[str, float]],
    b_scores: Mapping[str, Mapping[str, float]],
    *,
    seed: int = 0,
) -> list[ScoreComparison]:
    """Compare every score of two runs (score name -> row id -> value), Holm-adjusting p-values.

    Scores present in one run only are listed too, with no shared rows and no p-value; they are
    left out of the Holm family. Order: the scores of run A, then those only in run B.

    >>> [c.name for c in compare_scores({"em": {"r1": 1}}, {"em": {"r1": 0}, "len": {}})]
    ['em', 'len']
    """
    names = list(a_scores) + [n for n in b_scores if n not in a_scores]
    results = [paired_compare(n, a_scores.get(n, {}), b_scores.get(n, {}), seed=seed) for n in names]
    tested = [i for i, r in enumerate(results) if r.p_value is not None]
    adjusted = holm([results[i].p_value or 0.0 for i in tested])
    for i, p in zip(tested, adjusted, strict=True):
        results[i] = dataclasses.replace(results[i], p_adjusted=p)
    return results
