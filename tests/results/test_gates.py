"""Gates for CI: each gate's exit code through the real CLI (a subprocess), and Gates in code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from runner.errors import ConfigError
from runner.results.compare import compare_rows
from runner.results.gates import Gates, gated_comparisons, parse_assignment
from runner.results.result import Result
from runner.results.stats import summarize_score

# 40 rows; WRONG rows (from the end) answer wrongly, BOOM rows (from the start) raise, and with
# TYPO set the second scorer raises on every row.
CONFIG = """
import os
from runner import Experiment
from evals import exact_match

WRONG = int(os.environ.get("WRONG", "0"))
BOOM = int(os.environ.get("BOOM", "0"))
TYPO = os.environ.get("TYPO") == "1"

def answer(i):
    if i < BOOM:
        raise ValueError("boom")
    return "no" if i >= 40 - WRONG else "yes"

def polite(log):
    if TYPO:
        return log.outptu == "yes"
    return 1.0

gate = Experiment(
    name="gate", data=[{"i": i, "target": "yes"} for i in range(40)], func=answer, evals=[exact_match, polite]
)
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    (tmp_path / "cfg.py").write_text(textwrap.dedent(CONFIG), encoding="utf-8")
    return tmp_path


def run(
    cwd: Path, *args: str, wrong: int = 0, boom: int = 0, typo: bool = False
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", "cfg.py", "--quiet", *args],
        cwd=cwd,
        env={**os.environ, "WRONG": str(wrong), "BOOM": str(boom), "TYPO": "1" if typo else "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def gate_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("gate")]


# -- through the CLI ----------------------------------------------------------------------------------
def test_fail_under(cfg: Path) -> None:
    passed = run(cfg, "--fail-under", "exact_match=0.7", wrong=10)  # mean 0.75
    assert passed.returncode == 0, passed.stderr
    assert gate_lines(passed) == ["gates passed (1 checked)"]
    failed = run(cfg, "--fail-under", "exact_match=0.8", wrong=10)
    assert failed.returncode == 1
    assert gate_lines(failed) == ["gate failed: exact_match mean 0.75 < 0.8"]
    assert "gate · run" in failed.stdout  # the summary is still printed


def test_strict_fails_unless_the_lower_bound_clears_the_bar(cfg: Path) -> None:
    # 26/40 = 0.65: above 0.6, but the Wilson interval [0.495, 0.78] is not confidently above it
    plain = run(cfg, "--fail-under", "exact_match=0.6", wrong=14)
    assert plain.returncode == 0, plain.stderr
    strict = run(cfg, "--fail-under", "exact_match=0.6", "--strict", wrong=14)
    assert strict.returncode == 1
    low = summarize_score("em", [1] * 26 + [0] * 14, None, 0, 40).ci_low
    assert gate_lines(strict) == [f"gate failed: exact_match 95% CI lower bound {low:.3g} < 0.6 (mean 0.65, n=40/40)"]
    # below the bar: strict fails too (it used to pass when the interval reached above the bar)
    below = run(cfg, "--fail-under", "exact_match=0.7", "--strict", wrong=14)
    assert below.returncode == 1
    # 40/40: the interval [0.912, 1] clears 0.9
    assert run(cfg, "--fail-under", "exact_match=0.9", "--strict").returncode == 0


def test_max_regression_against_a_baseline(cfg: Path) -> None:
    assert run(cfg, "--run-name", "base").returncode == 0
    # 14 rows went wrong: a drop of 0.35, McNemar p = 2 / 2**14
    big = run(cfg, "--baseline", "base", "--max-regression", "exact_match=0.1", wrong=14)
    assert big.returncode == 1
    assert gate_lines(big) == [
        "gate failed: exact_match dropped 0.35 (1 → 0.65) vs base, more than 0.1, p=0.000122 "
        "(adjustment: none, one gated score)"
    ]
    assert "(B) vs base (A)" in big.stdout  # the comparison was printed after the run
    # the same drop within a tolerance of 0.5 passes
    tolerated = run(cfg, "--baseline", "base", "--max-regression", "exact_match=0.5", wrong=14)
    assert tolerated.returncode == 0, tolerated.stderr
    # 2 rows went wrong: a drop of 0.05 > 0.01, but p = 0.5: not evidence of a regression
    noise = run(cfg, "--baseline", "base", "--max-regression", "exact_match=0.01", "--markdown", wrong=2)
    assert noise.returncode == 0, noise.stderr
    assert "\n### " in noise.stdout and "| exact_match | 1.00 | 0.950 | -0.0500 |" in noise.stdout


def test_max_error_rate(cfg: Path) -> None:
    ok = run(cfg, "--max-error-rate", "0.1", boom=4)  # 4/40 = 0.1: not above
    assert ok.returncode == 0, ok.stderr
    failed = run(cfg, "--max-error-rate", "0.05", "--fail-under", "exact_match=0.99", boom=4)
    assert failed.returncode == 1
    # the 36 scored rows are all right: only the error rate fails (a mean never hides errors)
    assert gate_lines(failed) == ["gate failed: error rate 0.1 (4/40 row-trials) > 0.05"]


def test_gates_in_the_json_summary(cfg: Path) -> None:
    assert run(cfg, "--run-name", "base").returncode == 0
    proc = run(
        cfg, "--json", "--baseline", "base", "--fail-under", "exact_match=0.9", "--max-error-rate", "0.5", wrong=8
    )
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert data["gates"] == {"passed": False, "failed": ["gate failed: exact_match mean 0.8 < 0.9"]}
    comparison = data["experiments"][0]["comparison"]
    assert comparison["scores"][0]["losses"] == 8 and comparison["a"] == "base"
    assert "(B) vs base (A)" in proc.stderr  # human output, comparison included, on stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fail-under", "exact_match"], "argument --fail-under: 'exact_match': expected NAME=VALUE"),
        (["--fail-under", "exact_match=high"], "argument --fail-under: 'exact_match=high': 'high' is not a number"),
        (["--fail-under", "=0.5"], "expected NAME=VALUE"),
        (["--fail-under", "em=0.5", "--fail-under", "em=0.6"], "error: --fail-under em is given twice"),
        (["--max-error-rate", "5%"], "argument --max-error-rate: '5%' is not a number"),
        (["--max-error-rate", "1.5"], "'1.5' must be a fraction between 0 and 1"),
        (["--max-regression", "exact_match=0.1"], "error: --max-regression compares with a baseline run"),
        (["--max-regression", "exact_match=-0.1", "--baseline", "b"], "DELTA must be >= 0"),
        (["--strict"], "error: --strict changes how --fail-under is checked"),
        (["--markdown"], "error: --markdown formats the comparison with a baseline run"),
        (["--baseline", "nope"], "error: --baseline nope: there is no store at"),
    ],
)
def test_bad_gates_exit_2_before_running(cfg: Path, args: list[str], message: str) -> None:
    proc = run(cfg, *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""
    assert not (cfg / ".runner").exists() or args[0] == "--baseline"  # nothing ran


def test_unknown_score_names_exit_2(cfg: Path) -> None:
    proc = run(cfg, "--fail-under", "exact_mtach=0.5")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (  # refused before any row ran (issue 21)
        "error: gate on unknown score 'exact_mtach' (--fail-under): no scorer gives it "
        "(did you mean 'exact_match'? the scores are: exact_match, polite); nothing has run yet"
    )
    assert run(cfg, "--run-name", "base").returncode == 0
    unknown_baseline = run(cfg, "--baseline", "main-7")
    assert (
        unknown_baseline.returncode == 2 and "error: --baseline main-7: no run or experiment" in unknown_baseline.stderr
    )


def test_a_score_with_no_scored_rows_fails_its_gate_instead_of_being_unknown(cfg: Path) -> None:
    proc = run(cfg, "--fail-under", "exact_match=0.5", boom=40)
    assert proc.returncode == 1
    assert gate_lines(proc) == ["gate failed: exact_match has no scored rows (0/40)"]


def test_a_scorer_that_always_raises_fails_the_error_rate_gate(cfg: Path) -> None:
    # every call of `polite` raises AttributeError: no row errored, but the score has no value anywhere
    proc = run(cfg, "--max-error-rate", "0.02", typo=True)
    assert proc.returncode == 1, proc.stderr
    (line,) = gate_lines(proc)
    assert line.startswith(
        "gate failed: polite error rate 1 (40/40 row-trials without a value: 40 scorer failures, e.g. AttributeError"
    )
    assert line.endswith("> 0.02")
    # the same run gated on the score itself: no scored rows fails too
    on_score = run(cfg, "--fail-under", "polite=0.5", typo=True)
    assert on_score.returncode == 1 and gate_lines(on_score) == ["gate failed: polite has no scored rows (0/40)"]
    assert run(cfg, "--max-error-rate", "0.02").returncode == 0


def test_rows_that_lost_their_score_in_the_candidate_count_against_it(cfg: Path) -> None:
    assert run(cfg, "--run-name", "base").returncode == 0
    # 14 rows raise in the candidate: the 26 rows scored in both are unchanged (a difference of 0),
    # but the 14 lost rows count as 0 for the gate
    proc = run(cfg, "--baseline", "base", "--max-regression", "exact_match=0.1", boom=14)
    assert proc.returncode == 1, proc.stderr
    assert gate_lines(proc) == [
        "gate failed: exact_match dropped 0.35 (1 → 0.65) vs base, more than 0.1, p=0.000122 "
        "(adjustment: none, one gated score); 14 row(s) lost their score in the candidate and count as 0"
    ]


# -- in code ------------------------------------------------------------------------------------------
def result(values: list[float], n_errors: int = 0, **dataset_level: float) -> Result:
    n_total = len(values) + n_errors
    return Result(
        name="exp",
        experiment_uuid="u",
        run_name="r",
        project_name="p",
        status="completed",
        scores={"em": summarize_score("em", values, None, n_errors, n_total)},
        dataset_level_stats=dict(dataset_level),
        stats={},
        n_total=n_total,
        n_errors=n_errors,
        location="memory",
    )


def test_gates_in_code() -> None:
    r = result([1, 1, 0, 1], n_errors=1, pearson=0.4)
    assert Gates(fail_under={"em": 0.75}).check(r) == []
    assert Gates(fail_under={"em": 0.8}).check(r) == ["gate failed: em mean 0.75 < 0.8"]
    assert Gates(fail_under={"pearson": 0.5}).check(r) == ["gate failed: pearson mean 0.4 < 0.5"]
    assert Gates(max_error_rate=0.1).check(r) == ["gate failed: error rate 0.2 (1/5 row-trials) > 0.1"]
    assert not Gates() and Gates(max_error_rate=0.0)
    with pytest.raises(ConfigError, match="unknown score 'nope'"):
        Gates(fail_under={"nope": 1}).check(r)
    with pytest.raises(ConfigError, match="give --baseline"):
        Gates(max_regression={"em": 0.1}).check(r)
    with pytest.raises(ConfigError, match="a dataset-level stat has no paired test"):
        Gates(max_regression={"pearson": 0.1}).check(r, comparison=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="between 0 and 1"):
        Gates(max_error_rate=2)


def test_strict_in_code_two_of_five_against_point_seven() -> None:
    r = result([1, 1, 0, 0, 0])
    assert Gates(fail_under={"em": 0.7}).check(r) == ["gate failed: em mean 0.4 < 0.7"]
    (line,) = Gates(fail_under={"em": 0.7}, strict=True).check(r)
    assert line.startswith("gate failed: em 95% CI lower bound 0.118 < 0.7")
    # a dataset-level stat without an interval cannot be confidently above anything
    (no_ci,) = Gates(fail_under={"pearson": 0.3}, strict=True).check(result([1, 1], pearson=0.4))
    assert no_ci == "gate failed: pearson has no 95% CI (value 0.4): --strict needs its lower bound to clear 0.3"


def _rows(values: dict[str, list[float | None]]) -> list[dict[str, Any]]:
    """Root logs of 40 rows with the given per-row score values (None: the row errored)."""
    n = len(next(iter(values.values())))
    out = []
    for i in range(n):
        scores = [{"name": k, "score": v[i]} for k, v in values.items() if v[i] is not None]
        out.append({"metadata": {"row_id": f"r{i}"}, "scores": scores, "status": "success"})
    return out


def test_holm_adjusts_across_the_gated_scores_only() -> None:
    # em: 6 of 40 rows went from 1 to 0 (McNemar p = 0.031); four unchanged scores are compared too
    base = {"em": [1.0] * 40, **{f"other{k}": [1.0] * 40 for k in range(4)}}
    cand = {"em": [0.0] * 6 + [1.0] * 34, **{f"other{k}": [1.0] * 40 for k in range(4)}}
    cmp = compare_rows(_rows(base), _rows(cand), label_a="base", label_b="cand")  # type: ignore[arg-type]
    assert cmp.get("em").p_adjusted == pytest.approx(5 * 0.03125)  # type: ignore[union-attr]
    r = result([1.0] * 34 + [0.0] * 6)
    (line,) = Gates(max_regression={"em": 0.01}).check(r, cmp)
    assert line == (
        "gate failed: em dropped 0.15 (1 → 0.85) vs base, more than 0.01, p=0.0312 (adjustment: none, one gated score)"
    )
    two = gated_comparisons(cmp, ["em", "other0"])
    assert two["em"].adjustment == "Holm across 2 gated scores"
    assert two["em"].comparison.p_adjusted == pytest.approx(2 * 0.03125)


def test_lost_rows_of_a_continuous_score_count_as_its_lowest_value() -> None:
    base = {"len": [3.0, 5.0, 4.0, 6.0] * 5}
    cand = {"len": [None, 5.0, 4.0, 6.0] * 5}
    cmp = compare_rows(_rows(base), _rows(cand))  # type: ignore[arg-type]
    assert cmp.get("len").diff == 0  # type: ignore[union-attr]
    (g,) = gated_comparisons(cmp, ["len"]).values()
    assert (g.lost, g.worst) == (5, 3.0)
    assert g.comparison.diff == pytest.approx(0.0)  # 3 -> 3: the lowest value is what they had
    cand_b = {"len": [5.0, None, 4.0, 6.0] * 5}
    (g2,) = gated_comparisons(compare_rows(_rows(base), _rows(cand_b)), ["len"]).values()  # type: ignore[arg-type]
    assert g2.lost == 5 and g2.comparison.diff == pytest.approx((2 * 5 + -2 * 5) / 20)


def test_parse_assignment() -> None:
    assert parse_assignment("a=b=0.5") == ("a=b", 0.5)  # the last = splits: names may hold one
    assert parse_assignment(" em = 1 ") == ("em", 1.0)
    for bad in ("em", "=1", "em=", "em=nan", "em=inf"):
        with pytest.raises(ValueError):
            parse_assignment(bad)


def test_with_several_experiments_a_gate_applies_to_those_that_have_the_score(tmp_path: Path) -> None:
    (tmp_path / "cfg.py").write_text(
        textwrap.dedent(CONFIG)
        + "\nplain = Experiment(name='plain', data=[{'i': 1}], func=answer)\nexperiments = [gate, plain]\n",
        encoding="utf-8",
    )
    proc = run(tmp_path, "--fail-under", "exact_match=0.9", wrong=8)
    assert proc.returncode == 1
    assert gate_lines(proc) == ["gate failed: exact_match mean 0.8 < 0.9 (gate)"]
    unknown = run(tmp_path, "--fail-under", "nothing=0.9")
    assert unknown.returncode == 2
    assert "error: gate on unknown score 'nothing' (--fail-under): no scorer gives it" in unknown.stderr
