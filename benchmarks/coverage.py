"""Seeded coverage simulations of every interval the runner reports (issue 15).

For each scenario it draws many synthetic runs with a known truth, computes the interval the
runner would report for it, and prints how often the 95 % interval covers the truth (or, for the
A/A comparisons, how often the difference interval excludes 0 and how often the test rejects at
0.05: the type-I error, whose goal is <= 0.07, i.e. coverage >= 0.93).

    python benchmarks/coverage.py                 # every scenario, ~1-2 minutes on 2 cores
    python benchmarks/coverage.py --reps 200      # quicker, noisier
    python benchmarks/coverage.py --json out.json

It calls only the public functions the run uses (``summarize_score``, the dataset-level evals and
their interval, ``paired_compare``), so the same script runs against an older checkout
(``PYTHONPATH=/path/to/old python benchmarks/coverage.py``) to give a before/after table: where a
newer entry point is missing it falls back to what the older runner called. Not part of the test
suite (``tests/test_coverage_smoke.py`` runs it once with a handful of repetitions).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from evals.dataset import accuracy, balanced_accuracy, pearson
from runner.results import stats
from runner.results.paired import paired_compare
from runner.results.stats import summarize_score
from runner.scoring import Log, Score

Interval = tuple[float | None, float | None]


def _covers(ci: Interval, truth: float) -> bool:
    lo, hi = ci
    return lo is not None and hi is not None and lo - 1e-12 <= truth <= hi + 1e-12


def _dataset_interval(ev: Any, logs: list[Log], rows: list[str]) -> Interval:
    """The interval the run reports for a dataset-level eval (new entry point, else the old one)."""
    fn = getattr(stats, "dataset_stat_interval", None)
    if fn is not None:
        lo, hi, _method = fn(ev, logs, rows)
        return lo, hi
    return stats.bootstrap_dataset_stat(ev.compute, logs, rows)  # type: ignore[no-any-return]


def binary_scores(rng: np.random.Generator, p: float, n_rows: int, n_trials: int, icc: bool) -> float:
    """Coverage of the score interval of a 0/1 score with true mean ``p``; with ``icc`` each row
    has its own pass rate (Beta around p, intra-row correlation 0.5), else trials are iid."""
    values: list[float] = []
    clusters: list[str] = []
    # Beta(a, b) with mean p and a + b = 1: intra-class correlation 1 / (a + b + 1) = 0.5
    row_p = rng.beta(p, 1 - p, size=n_rows) if icc else np.full(n_rows, p)
    for i in range(n_rows):
        for _ in range(n_trials):
            values.append(float(rng.random() < row_p[i]))
            clusters.append(f"r{i}")
    s = summarize_score("s", values, clusters, 0, len(values))
    return float(_covers((s.ci_low, s.ci_high), p))


def dataset_accuracy(rng: np.random.Generator, p: float, n_rows: int, balanced: bool) -> float:
    logs = []
    rows = []
    for i in range(n_rows):
        target = "a" if (not balanced or i % 2 == 0) else "b"
        other = "b" if target == "a" else "a"
        output = target if rng.random() < p else other
        logs.append(Log(inputs={}, output=output, target=target))
        rows.append(f"r{i}")
    ev = balanced_accuracy() if balanced else accuracy()
    return float(_covers(_dataset_interval(ev, logs, rows), p))


def dataset_pearson(rng: np.random.Generator, rho: float, n_rows: int) -> float:
    cov = [[1.0, rho], [rho, 1.0]]
    xy = rng.multivariate_normal([0.0, 0.0], cov, size=n_rows)
    logs = [Log(inputs={}, scores=[Score("x", float(x)), Score("y", float(y))]) for x, y in xy]
    rows = [f"r{i}" for i in range(n_rows)]
    return float(_covers(_dataset_interval(pearson("x", "y"), logs, rows), rho))


def aa_compare(rng: np.random.Generator, n_rows: int, kind: str) -> tuple[float, float]:
    """A/A: both runs from the same distribution. Returns (interval excludes 0, p < 0.05)."""
    if kind == "binary":
        # per-row difficulty shared by both runs (the pairing matters), mean 0.7
        row_p = rng.beta(2.8, 1.2, size=n_rows)
        a = (rng.random(n_rows) < row_p).astype(float)
        b = (rng.random(n_rows) < row_p).astype(float)
    else:
        base = rng.normal(0, 1, size=n_rows)
        a = base + rng.normal(0, 1, size=n_rows)
        b = base + rng.normal(0, 1, size=n_rows)
    c = paired_compare("s", {f"r{i}": a[i] for i in range(n_rows)}, {f"r{i}": b[i] for i in range(n_rows)})
    excludes = c.diff_ci_low is not None and c.diff_ci_high is not None and not (c.diff_ci_low <= 0 <= c.diff_ci_high)
    rejects = c.p_value is not None and c.p_value < 0.05
    return float(excludes), float(rejects)


def scenarios() -> list[tuple[str, Callable[[np.random.Generator], Any]]]:
    out: list[tuple[str, Callable[[np.random.Generator], Any]]] = []
    for p in (0.02, 0.98):
        out.append((f"0/1 score, p={p}, 30 rows x 1 trial", lambda g, p=p: binary_scores(g, p, 30, 1, False)))
        out.append((f"0/1 score, p={p}, 30 rows x 3 iid trials", lambda g, p=p: binary_scores(g, p, 30, 3, False)))
        out.append(
            (f"0/1 score, p={p}, 30 rows x 3 correlated trials", lambda g, p=p: binary_scores(g, p, 30, 3, True))
        )
    out.append(("0/1 score, p=0.7, 30 rows x 3 correlated trials", lambda g: binary_scores(g, 0.7, 30, 3, True)))
    for p in (0.9, 0.98):
        out.append((f"accuracy(), p={p}, n=30", lambda g, p=p: dataset_accuracy(g, p, 30, False)))
        out.append((f"balanced_accuracy(), 2 classes, p={p}, n=30", lambda g, p=p: dataset_accuracy(g, p, 30, True)))
    for n in (5, 10, 30):
        out.append((f"pearson, rho=0.5, n={n}", lambda g, n=n: dataset_pearson(g, 0.5, n)))
    out.append(("pearson, rho=0.9, n=10", lambda g: dataset_pearson(g, 0.9, 10)))
    for n in (10, 30, 100):
        for kind in ("continuous", "binary"):
            out.append((f"A/A {kind}, n={n}", lambda g, n=n, kind=kind: aa_compare(g, n, kind)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=500, help="simulated runs per scenario (default 500)")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--only", default="", help="run the scenarios whose name contains this text")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    print(f"runner from {stats.__file__}, {args.reps} repetitions per scenario, seed {args.seed}\n")
    print("| scenario | reps | 95% interval covers | test rejects at 0.05 | seconds |")
    print("|---|---|---|---|---|")
    for i, (name, fn) in enumerate(scenarios()):
        if args.only and args.only not in name:
            continue
        rng = np.random.default_rng([args.seed, i])
        started = time.perf_counter()
        got = [fn(rng) for _ in range(args.reps)]
        seconds = time.perf_counter() - started
        if isinstance(got[0], tuple):
            excl = float(np.mean([g[0] for g in got]))
            rej = float(np.mean([g[1] for g in got]))
            row = {"scenario": name, "reps": args.reps, "coverage": 1 - excl, "type1_test": rej}
            print(f"| {name} | {args.reps} | {1 - excl:.3f} (excludes 0: {excl:.3f}) | {rej:.3f} | {seconds:.1f} |")
        else:
            cov = float(np.mean(got))
            row = {"scenario": name, "reps": args.reps, "coverage": cov, "type1_test": None}
            print(f"| {name} | {args.reps} | {cov:.3f} | | {seconds:.1f} |")
        sys.stdout.flush()
        results.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    low = [r["scenario"] for r in results if r["coverage"] < 0.93 or (r["type1_test"] or 0) > 0.07]
    print(f"\nbelow the goal (coverage < 0.93 or type-I > 0.07): {', '.join(low) if low else 'none'}")
    return 0 if math.isfinite(len(results)) else 1


if __name__ == "__main__":
    sys.exit(main())
